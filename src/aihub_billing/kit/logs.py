"""Structured logging (structlog) with request ids bound per request and secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any

import structlog

# Whole words of a key name, so "input_tokens" or "company" stay visible.
_SENSITIVE_KEYS = re.compile(
    r"(?:^|[_-])(authorization|api[_-]?key|secret|password|passwd|token|cookie|card|"
    r"card[_-]?number|cvc|cvv|pan|signature)(?:$|[_-])",
    re.I,
)
# Card-number-like digit runs and secret formats, wherever they appear in a value.
_SENSITIVE_VALUES = re.compile(
    r"\b\d(?:[ -]?\d){12,18}\b|ahb_[A-Za-z0-9_-]{8,}|[sr]k_(?:live|test)_\w+|whsec_\w+"
    # Bearer credentials (PayPal access tokens) and Stripe client secrets (pi_…_secret_…).
    r"|(?<=Bearer )[\w.~+/-]+=*|\b\w+_secret_\w+"
)
# No match of _SENSITIVE_VALUES is shorter ("whsec_x"): shorter strings need no scan.
_SHORTEST_MATCH = 7
MASK = "***"


@lru_cache(maxsize=1024)
def _sensitive_key(key: str) -> bool:
    # Keys repeat (a handful per event name): one regex search per distinct key.
    return _SENSITIVE_KEYS.search(key) is not None


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) < _SHORTEST_MATCH else _SENSITIVE_VALUES.sub(MASK, value)
    if isinstance(value, dict):
        return {k: MASK if _sensitive_key(str(k)) else _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(v) for v in value]
    return value


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = MASK if _sensitive_key(key) else _mask_value(value)
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.WriteLogger:
    # One write per line (PrintLogger's print() makes two: the line, then its newline), so
    # another process on the same stderr (serve --workers N) cannot land between them.
    return structlog.WriteLogger(sys.stderr)


class _StderrHandler(logging.Handler):
    """The standard library's records (uvicorn, libraries), rendered as ours; sys.stderr is
    resolved per record, as for structlog's loggers."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class _NotTheServersCopy(logging.Filter):
    """Drops the ASGI server's report of an exception that left the app: the app's error
    handler logged it already (`request.unhandled`), masked and with its request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "uvicorn.error"
            and str(record.msg).startswith("Exception in ASGI application")
        )


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    # Masked after format_exc_info, so an exception's text is masked too, and before the level
    # and time are added: they are ours, and scanning them costs every line.
    final: list[Any] = [
        structlog.processors.format_exc_info,
        mask_secrets,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *final, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Resolve sys.stderr when a logger is made, not once: it may be swapped (tests, daemons).
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Records of the standard library's loggers that reach the root (their own levels decide
    # which do) come out in the same format: one JSON object per line with `json`.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *final,
                renderer,
            ],
        )
    )
    handler.addFilter(_NotTheServersCopy())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
