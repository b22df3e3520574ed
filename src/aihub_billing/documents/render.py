"""Render an InvoiceDocument to HTML (Jinja2 + Babel) and to PDF (WeasyPrint). No database.

Templates are `<name>.html` with an optional `<name>.css` beside it, looked up first in the
operator's `templates_dir`, then in the packaged `documents/templates/`. The Jinja
environment is cached per templates_dir; each thread keeps one WeasyPrint FontConfiguration,
the parsed stylesheets and decoded images, so only the document itself is laid out per call.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from babel import Locale

from aihub_billing.documents.errors import InvalidLogo, TemplateFailed, UnknownTemplate
from aihub_billing.documents.i18n import (
    format_day,
    format_money,
    format_period,
    format_price,
    format_quantity,
    format_rate,
    label,
    resolve_locale,
)
from aihub_billing.documents.invoice import InvoiceDocument

if TYPE_CHECKING:
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

__all__ = [
    "PACKAGED_TEMPLATES",
    "TEMPLATE_NAME_PATTERN",
    "Logo",
    "available_templates",
    "check_template_name",
    "render_html",
    "render_pdf",
]

PACKAGED_TEMPLATES = Path(__file__).parent / "templates"
# A bare name: no dots, slashes or leading underscore (partials such as _macros.html).
TEMPLATE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_TEMPLATE_NAME = re.compile(TEMPLATE_NAME_PATTERN)

# A file path, raw image bytes, or a ready "data:image/..." URI.
Logo = str | Path | bytes
_MAX_LOGO_BYTES = 2 * 1024 * 1024


def check_template_name(name: str) -> str:
    """`name` if it is a bare template name (no path), else UnknownTemplate."""
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        raise UnknownTemplate(
            f"invalid template name {name!r}: letters, digits, '-' and '_' only, no path"
        )
    return name


# --- Jinja ------------------------------------------------------------------------------------


def _ctx_locale(ctx: jinja2.runtime.Context) -> Locale:
    locale: Locale = ctx["locale"]
    return locale


@jinja2.pass_context
def _f_money(ctx: jinja2.runtime.Context, amount_minor: int, currency: str | None = None) -> str:
    return format_money(amount_minor, currency or ctx["currency"], _ctx_locale(ctx))


@jinja2.pass_context
def _f_price(ctx: jinja2.runtime.Context, value: Any, currency: str | None = None) -> str:
    return format_price(value, currency or ctx["currency"], _ctx_locale(ctx))


@jinja2.pass_context
def _f_quantity(ctx: jinja2.runtime.Context, value: Any) -> str:
    return format_quantity(value, _ctx_locale(ctx))


@jinja2.pass_context
def _f_rate(ctx: jinja2.runtime.Context, value: Any) -> str:
    return format_rate(value, _ctx_locale(ctx))


@jinja2.pass_context
def _f_date(ctx: jinja2.runtime.Context, value: Any) -> str:
    return format_day(value, _ctx_locale(ctx))


@jinja2.pass_context
def _f_period(ctx: jinja2.runtime.Context, start: Any, end: Any) -> str:
    return format_period(start, end, _ctx_locale(ctx))


@jinja2.pass_context
def _f_label(ctx: jinja2.runtime.Context, msgid: str) -> str:
    return label(_ctx_locale(ctx), msgid)


_FILTERS: dict[str, Callable[..., str]] = {
    "money": _f_money,
    "price": _f_price,
    "quantity": _f_quantity,
    "rate": _f_rate,
    "date": _f_date,
}


@lru_cache(maxsize=16)
def _environment(templates_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGED_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=templates_dir is not None,
    )
    env.filters.update(_FILTERS)
    env.globals["_"] = _f_label
    env.globals["period"] = _f_period
    return env


def _templates_dir_key(templates_dir: str | Path | None) -> str | None:
    if templates_dir is None:
        return None
    path = Path(templates_dir)
    if not path.is_dir():
        raise UnknownTemplate(f"templates_dir is not a directory: {path}")
    return str(path.resolve())


def available_templates(templates_dir: str | Path | None = None) -> list[str]:
    """Names usable as `template=`: packaged ones plus those of the override directory."""
    env = _environment(_templates_dir_key(templates_dir))
    names = {
        name[: -len(".html")]
        for name in env.list_templates(extensions=["html"])
        if "/" not in name and _TEMPLATE_NAME.fullmatch(name[: -len(".html")])
    }
    return sorted(names)


def _stylesheet(env: jinja2.Environment, name: str) -> tuple[str, str] | None:
    """(css text, its directory) of `<name>.css`, or None when the template has none."""
    assert env.loader is not None
    try:
        source, filename, _ = env.loader.get_source(env, f"{name}.css")
    except jinja2.TemplateNotFound:
        return None
    return source, str(Path(filename).parent) if filename else str(PACKAGED_TEMPLATES)


# --- logo -------------------------------------------------------------------------------------


def _sniff_image(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "image/svg+xml"
    raise InvalidLogo("the logo is not a PNG, JPEG, GIF, WebP or SVG image")


@lru_cache(maxsize=8)
def _bytes_to_uri(data: bytes) -> str:
    if len(data) > _MAX_LOGO_BYTES:
        raise InvalidLogo(f"the logo is larger than {_MAX_LOGO_BYTES // 1024} KiB")
    mime = _sniff_image(data)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@lru_cache(maxsize=8)
def _file_to_uri(path: str, _mtime_ns: int, _size: int) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidLogo(f"cannot read the logo {path}: {exc.strerror}") from None
    return _bytes_to_uri(data)


def _logo_uri(logo: Logo | None) -> str | None:
    if logo is None:
        return None
    if isinstance(logo, bytes):
        return _bytes_to_uri(logo)
    if isinstance(logo, str) and logo.startswith("data:"):
        if not logo.startswith("data:image/"):
            raise InvalidLogo("a logo data URI must be data:image/...")
        return logo
    if not isinstance(logo, (str, Path)):
        raise InvalidLogo(f"logo must be a path, bytes or a data URI, not {type(logo).__name__}")
    path = Path(logo)
    try:
        stat = path.stat()
    except OSError:
        raise InvalidLogo(f"logo file not found: {path}") from None
    if not path.is_file():
        raise InvalidLogo(f"logo is not a file: {path}")
    return _file_to_uri(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


# --- HTML -------------------------------------------------------------------------------------


def _render(
    doc: InvoiceDocument,
    *,
    template: str,
    locale: str,
    templates_dir: str | Path | None,
    logo: Logo | None,
    inline_css: bool,
) -> tuple[str, tuple[str, str] | None, str]:
    """(html, (css, css base dir) or None, base url) of the document."""
    name = check_template_name(template)
    babel_locale = resolve_locale(locale)
    dir_key = _templates_dir_key(templates_dir)
    env = _environment(dir_key)
    try:
        tmpl = env.get_template(f"{name}.html")
    except jinja2.TemplateNotFound:
        known = ", ".join(available_templates(templates_dir))
        raise UnknownTemplate(f"no template {name!r}; available: {known}") from None
    except jinja2.TemplateError as exc:
        raise TemplateFailed(f"template {name!r} does not parse: {exc}") from exc
    stylesheet = _stylesheet(env, name)
    base_url = str(Path(tmpl.filename).parent) if tmpl.filename else str(PACKAGED_TEMPLATES)
    context = {
        "doc": doc,
        "locale": babel_locale,
        "lang": babel_locale.language,
        "html_lang": str(babel_locale).replace("_", "-"),
        "currency": doc.currency,
        "logo": _logo_uri(logo),
        "css": stylesheet[0] if (inline_css and stylesheet) else None,
        "is_draft": doc.is_draft,
    }
    try:
        html = tmpl.render(context)
    except jinja2.TemplateError as exc:
        raise TemplateFailed(f"template {name!r} failed: {exc}") from exc
    return html, stylesheet, base_url


def render_html(
    doc: InvoiceDocument,
    *,
    template: str = "classic",
    locale: str = "en_US",
    templates_dir: str | Path | None = None,
    logo: Logo | None = None,
) -> str:
    """The document as one self-contained HTML page (stylesheet and logo inlined)."""
    html, _, _ = _render(
        doc,
        template=template,
        locale=locale,
        templates_dir=templates_dir,
        logo=logo,
        inline_css=True,
    )
    return html


# --- PDF --------------------------------------------------------------------------------------


class _PdfState(threading.local):
    """Per thread: WeasyPrint's font configuration and caches are not shared across threads."""

    def __init__(self) -> None:
        self.font_config: FontConfiguration | None = None
        self.stylesheets: dict[tuple[str, str], CSS] = {}
        self.images: dict[str, Any] = {}
        self.url_fetcher: Any = None


_pdf_state = _PdfState()
_MAX_CACHED = 32


def render_pdf(
    doc: InvoiceDocument,
    *,
    template: str = "classic",
    locale: str = "en_US",
    templates_dir: str | Path | None = None,
    logo: Logo | None = None,
) -> bytes:
    """The document as an A4 PDF (WeasyPrint); the same page as `render_html`."""
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration
    from weasyprint.urls import URLFetcher

    html, stylesheet, base_url = _render(
        doc,
        template=template,
        locale=locale,
        templates_dir=templates_dir,
        logo=logo,
        inline_css=False,
    )
    state = _pdf_state
    if state.font_config is None:
        state.font_config = FontConfiguration()
        # Documents load only data: URIs and local files (fonts, images), never the network.
        state.url_fetcher = URLFetcher(allowed_protocols=("data", "file"))
    stylesheets = []
    if stylesheet is not None:
        css = state.stylesheets.get(stylesheet)
        if css is None:
            if len(state.stylesheets) >= _MAX_CACHED:
                state.stylesheets.clear()
            css = CSS(
                string=stylesheet[0],
                base_url=stylesheet[1] + "/",
                font_config=state.font_config,
                url_fetcher=state.url_fetcher,
            )
            state.stylesheets[stylesheet] = css
        stylesheets.append(css)
    if len(state.images) >= _MAX_CACHED:
        state.images.clear()
    pdf: bytes = HTML(
        string=html, base_url=base_url + "/", url_fetcher=state.url_fetcher
    ).write_pdf(stylesheets=stylesheets, font_config=state.font_config, cache=state.images)
    return pdf
