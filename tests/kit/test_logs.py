"""Structured logs never carry secrets, keys or card numbers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from aihub_billing.kit.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    configure_logging("INFO", json=True)
    log = structlog.get_logger("test")
    log.info(
        "payment.attempt",
        api_key="sk_live_abcdefghijklmnop",
        headers={"Authorization": "Bearer ahb_secretsecretsecret", "Accept": "json"},
        note="customer pasted 4242 4242 4242 4242 into the memo",
        amount_minor=2999,
        key_prefix="ahb_ab",
    )
    log.info("other", message="retrying with sk_test_51Habc and ahb_0123456789abcdef")
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_secret_fields_and_values_are_masked(log_lines: list[dict[str, object]]) -> None:
    first, second = log_lines
    assert first["api_key"] == "***"
    assert first["headers"] == {"Authorization": "***", "Accept": "json"}
    assert first["note"] == "customer pasted *** into the memo"
    assert first["amount_minor"] == 2999
    assert "sk_test" not in json.dumps(second) and "ahb_0123" not in json.dumps(second)


def test_log_lines_are_json_with_level_and_time(log_lines: list[dict[str, object]]) -> None:
    assert {"event", "level", "timestamp"} <= set(log_lines[0])
    assert log_lines[0]["event"] == "payment.attempt"


def test_metering_fields_are_not_mistaken_for_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    structlog.get_logger("test").info(
        "usage", input_tokens=100, output_tokens=50, company="Acme", idempotency_key="k1"
    )
    line = json.loads(capsys.readouterr().err.strip())
    assert (line["input_tokens"], line["output_tokens"], line["company"]) == (100, 50, "Acme")
    assert line["idempotency_key"] == "k1"


def test_bearer_tokens_and_client_secrets_in_values_are_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=True)
    structlog.get_logger("test").info(
        "provider", note="sent Bearer A21AAFakeToken-123.x and pi_3Mx_secret_Ab12 back"
    )
    line = json.loads(capsys.readouterr().err.strip())
    assert line["note"] == "sent Bearer *** and *** back"


class _Writes:
    """A stderr that keeps each write call apart, as a pipe shared by several processes
    (uvicorn's workers) does: another process's line may land between two writes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_each_line_is_one_write_with_its_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _Writes()
    monkeypatch.setattr("sys.stderr", stderr)
    configure_logging("INFO", json=True)
    structlog.get_logger("test").warning("ours", amount_minor=1)
    logging.getLogger("uvicorn.error").warning("the standard library's")
    assert len(stderr.calls) == 2
    for call in stderr.calls:
        assert call.endswith("\n") and call.count("\n") == 1
        json.loads(call)
