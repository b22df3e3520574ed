"""Invoice PDFs: the text pypdf reads back from what WeasyPrint produced."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from babel.dates import format_date
from babel.numbers import format_currency
from PIL import Image

from aihub_billing.documents import (
    DocumentError,
    InvalidLogo,
    TemplateFailed,
    UnknownTemplate,
    UnsupportedLocale,
    render_html,
    render_pdf,
)
from aihub_billing.documents.render import available_templates
from aihub_billing.kit.money import CurrencyError
from tests.documents.helpers import (
    DUE,
    ISSUED,
    invoice,
    lines,
    normalize,
    pdf_fonts,
    pdf_image_count,
    pdf_text,
    require_cjk_font,
)


def expected_money(amount: str, currency: str, locale: str) -> str:
    return normalize(format_currency(Decimal(amount), currency, locale=locale))


@pytest.fixture(scope="module")
def en_classic() -> str:
    return pdf_text(render_pdf(invoice()))


def test_english_invoice_shows_its_content(en_classic: str) -> None:
    text = en_classic
    for expected in (
        "Invoice",
        "INV-2026-0042",
        "November 25, 2026",
        "December 25, 2026",
        "Period Nov 1 – 30, 2026",
        "Seat plan 1 Nov 15 – 30, 2026",  # a line's own period, when it differs
        "AIHub Inc.",
        "Acme Robotics GmbH",
        "10115 Berlin",
        "Tax ID: DE999",
        "gpt-x input tokens",
        "1,234,567",
        "$0.0000015",  # the per-token price with all its digits
        "Seat plan 9",
        "$112.50",
        "19%",
        "Subtotal $1,234.50",
        "Tax $23.45",
        "Total $1,257.95",
        "Balance applied -$10.00",
        "Amount due $1,247.95",
        "Thank you for your business.",
    ):
        assert expected in text, expected
    assert "DRAFT" not in text
    assert text.count("Nov 1 – 30, 2026") == 1  # lines of the invoice's period repeat nothing
    assert "$0.00 " not in text  # the per-token price is not rounded to cents


def test_german_invoice() -> None:
    text = pdf_text(render_pdf(invoice(), locale="de_DE"))
    for expected in (
        "Rechnung",
        "Rechnungsnummer INV-2026-0042",
        "25. November 2026",
        "Fällig am 25. Dezember 2026",
        "1.–30. Nov. 2026",
        "Einzelpreis",
        "0,0000015 $",
        "1.234.567",
        "Zwischensumme 1.234,50 $",
        "Fälliger Betrag 1.247,95 $",
        expected_money("1234.50", "USD", "de_DE"),
        normalize(format_date(ISSUED, "long", locale="de_DE")),
    ):
        assert expected in text, expected
    assert "$1,234.50" not in text


def test_german_invoice_in_euro() -> None:
    text = pdf_text(render_pdf(invoice(currency="EUR"), locale="de_DE", template="compact"))
    assert "Gesamt 1.257,95 €" in text
    assert "0,0000015 €" in text
    assert expected_money("1247.95", "EUR", "de_DE") in text


def test_austrian_locale_prints_german_labels_with_austrian_rules() -> None:
    text = pdf_text(render_pdf(invoice(currency="EUR"), locale="de_AT"))
    assert "Rechnung" in text
    assert "Gesamt € 1.257,95" in text
    assert expected_money("1257.95", "EUR", "de_AT") in text


def test_chinese_invoice_uses_a_cjk_font() -> None:
    require_cjk_font()
    pdf = render_pdf(invoice(), locale="zh_CN")
    text = pdf_text(pdf)
    for expected in (
        "发票",
        "发票号码 INV-2026-0042",
        "开票日期 2026年11月25日",
        "到期日 2026年12月25日",
        "2026年11月1日至30日",
        "US$0.0000015",
        "小计 US$1,234.50",
        "应付金额 US$1,247.95",
        expected_money("1257.95", "USD", "zh_CN"),
        format_date(DUE, "long", locale="zh_CN"),
    ):
        assert expected in text, expected
    # The Chinese glyphs come from a real CJK font, not from empty .notdef boxes.
    latin_only = {"DejaVu", "Liberation", "Bitstream"}
    assert any(not any(name in font for name in latin_only) for font in pdf_fonts(pdf)), pdf_fonts(
        pdf
    )


def test_yen_has_no_decimals() -> None:
    doc = invoice(
        currency="JPY",
        lines=lines(1),
        subtotal_minor=123450,
        tax_minor=0,
        total_minor=123450,
        balance_applied_minor=0,
        amount_due_minor=123450,
    )
    text = pdf_text(render_pdf(doc))
    assert "Total ¥123,450" in text
    assert "Amount due ¥123,450" in text
    assert "¥123,450.0" not in text
    assert "¥0.0000015" in text
    assert "¥185" in text  # the line: 185 minor units are 185 yen


def test_kuwaiti_dinar_has_three_decimals() -> None:
    doc = invoice(currency="KWD", subtotal_minor=1234567, total_minor=1234567, tax_minor=0)
    text = pdf_text(render_pdf(doc, template="compact"))
    assert "Total KWD1,234.567" in text
    assert "KWD0.185" in text  # the line: 185 fils
    assert "KWD0.0000015" in text
    de = pdf_text(render_pdf(doc, locale="de_DE"))
    assert "Gesamt 1.234,567 KWD" in de


def test_draft_is_marked_and_has_no_number() -> None:
    draft = invoice(number=None, status="draft", issued_at=None, due_at=None)
    for template in ("classic", "compact"):
        text = pdf_text(render_pdf(draft, template=template))
        assert "DRAFT" in text, template
        assert "Invoice number" not in text
        assert "INV-" not in text
    german = pdf_text(render_pdf(draft, locale="de_DE"))
    assert "ENTWURF" in german
    assert "DRAFT" not in german


def test_void_and_paid_marks() -> None:
    assert "VOID" in pdf_text(render_pdf(invoice(status="void")))
    paid = pdf_text(render_pdf(invoice(status="paid", amount_paid_minor=124795)))
    assert "PAID" in paid
    assert "Amount paid $1,247.95" in paid


def test_compact_is_a_different_layout(en_classic: str) -> None:
    compact = pdf_text(render_pdf(invoice(), template="compact"))
    for expected in ("INV-2026-0042", "November 25, 2026", "$0.0000015", "Amount due $1,247.95"):
        assert expected in compact, expected
    assert "Quantity × Unit price" in compact
    assert "1,234,567 × $0.0000015" in compact
    assert "Seat plan 1 · Nov 15 – 30, 2026" in compact
    assert "Quantity × Unit price" not in en_classic
    assert "Invoice number" in en_classic and "Invoice number" not in compact
    assert available_templates() == ["classic", "compact"]


def test_many_lines_flow_onto_more_pages() -> None:
    doc = invoice(lines=lines(80))
    text = pdf_text(render_pdf(doc, template="compact"))
    assert "Seat plan 79" in text
    assert "Amount due $1,247.95" in text
    assert "1 / 2" in text  # page counter


# --- operator templates ----------------------------------------------------------------------


def test_templates_dir_overrides_a_packaged_template(tmp_path: Path) -> None:
    (tmp_path / "classic.html").write_text(
        "<html><body><p class='who'>Custom layout for {{ doc.customer.name }}</p>"
        "<p>{{ _('Amount due') }}: {{ doc.amount_due_minor|money }}</p></body></html>"
    )
    (tmp_path / "classic.css").write_text(".who::after { content: ' / styled by the operator'; }")
    text = pdf_text(render_pdf(invoice(), templates_dir=tmp_path, locale="de_DE"))
    assert "Custom layout for Acme Robotics GmbH / styled by the operator" in text
    assert "Fälliger Betrag: 1.247,95 $" in text
    # The packaged templates stay available beside the override.
    compact = pdf_text(render_pdf(invoice(), template="compact", templates_dir=tmp_path))
    assert "Quantity × Unit price" in compact
    # And without templates_dir nothing changed.
    assert "Custom layout" not in pdf_text(render_pdf(invoice()))


def test_templates_dir_adds_templates_and_reloads_edits(tmp_path: Path) -> None:
    letter = tmp_path / "letter.html"
    letter.write_text("<p>Letter v1 {{ doc.number }}</p>")
    assert "Letter v1 INV-2026-0042" in pdf_text(
        render_pdf(invoice(), template="letter", templates_dir=tmp_path)
    )
    letter.write_text("<p>Letter version two {{ doc.number }}</p>")
    html = render_html(invoice(), template="letter", templates_dir=str(tmp_path))
    assert "Letter version two INV-2026-0042" in html
    assert available_templates(tmp_path) == ["classic", "compact", "letter"]


def test_operator_template_errors_are_template_failed(tmp_path: Path) -> None:
    (tmp_path / "broken.html").write_text("{% if %}")
    (tmp_path / "typo.html").write_text("{{ doc.no_such_field }}")
    for name in ("broken", "typo"):
        with pytest.raises(TemplateFailed) as raised:
            render_html(invoice(), template=name, templates_dir=tmp_path)
        assert raised.value.status == 500


def test_missing_templates_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownTemplate):
        render_pdf(invoice(), templates_dir=tmp_path / "nope")


def test_templates_do_not_fetch_remote_urls(tmp_path: Path) -> None:
    png = _png()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *_: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/logo.png"
        (tmp_path / "remote.html").write_text(f'<p>Remote test</p><img src="{url}">')
        pdf = render_pdf(invoice(), template="remote", templates_dir=tmp_path)
        local = tmp_path / "local.png"
        local.write_bytes(png)
        (tmp_path / "local.html").write_text('<p>Local test</p><img src="local.png">')
        with_local = render_pdf(invoice(), template="local", templates_dir=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert "Remote test" in pdf_text(pdf)
    assert requests == []
    assert pdf_image_count(pdf) == 0
    # Files beside the operator's templates do load.
    assert pdf_image_count(with_local) == 1


# --- logo -------------------------------------------------------------------------------------


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 40), (31, 78, 121)).save(out, format="PNG")
    return out.getvalue()


SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="60" height="20">'
    b'<rect width="60" height="20" fill="#1f4e79"/></svg>'
)


@pytest.mark.parametrize("kind", ["bytes", "path", "str path", "data uri"])
def test_logo_is_drawn(kind: str, tmp_path: Path) -> None:
    png = _png()
    path = tmp_path / "logo.png"
    path.write_bytes(png)
    logo: bytes | str | Path = {
        "bytes": png,
        "path": path,
        "str path": str(path),
        "data uri": "data:image/png;base64," + base64.b64encode(png).decode(),
    }[kind]
    assert pdf_image_count(render_pdf(invoice())) == 0
    for template in ("classic", "compact"):
        pdf = render_pdf(invoice(), template=template, logo=logo)
        assert pdf_image_count(pdf) == 1, template
        assert "INV-2026-0042" in pdf_text(pdf)


def test_svg_logo_is_accepted() -> None:
    html = render_html(invoice(), logo=SVG)
    assert 'src="data:image/svg+xml;base64,' in html
    assert render_pdf(invoice(), logo=SVG).startswith(b"%PDF-")


@pytest.mark.parametrize(
    "logo",
    [b"not an image", "/nonexistent/logo.png", "data:text/html,<script>", 42],
)
def test_bad_logo_is_refused(logo: object) -> None:
    with pytest.raises(InvalidLogo) as raised:
        render_pdf(invoice(), logo=logo)  # type: ignore[arg-type]
    assert raised.value.code == "invalid_logo"


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../classic", "classic.html", "/etc/passwd", "", "_macros", "a/b", "..", "x" * 65, "nope"],
)
def test_bad_template_names_are_refused(name: str) -> None:
    with pytest.raises(UnknownTemplate) as raised:
        render_pdf(invoice(), template=name)
    assert raised.value.code == "unknown_template"
    assert raised.value.status == 400


def test_unknown_template_lists_the_available_ones() -> None:
    with pytest.raises(UnknownTemplate, match="available: classic, compact"):
        render_html(invoice(), template="nope")


@pytest.mark.parametrize("locale", ["xx_YY", "ja_JP", "zh_TW", "klingon"])
def test_unknown_locale_is_refused(locale: str) -> None:
    with pytest.raises(UnsupportedLocale) as raised:
        render_pdf(invoice(), locale=locale)
    assert isinstance(raised.value, DocumentError)
    assert raised.value.code == "unsupported_locale"


def test_document_values_are_checked() -> None:
    assert invoice(currency="jpy").currency == "JPY"
    with pytest.raises(CurrencyError):
        invoice(currency="XYZ")
    with pytest.raises(TypeError, match="unit_price must be Decimal"):
        replace(lines(1)[0], unit_price=0.0000015)
    with pytest.raises(TypeError, match="amount_minor must be int"):
        replace(lines(1)[0], amount_minor=Decimal("1.85"))


# --- HTML -------------------------------------------------------------------------------------


def test_html_is_self_contained_and_escaped() -> None:
    doc = invoice(
        memo="<script>alert(1)</script>",
        customer=invoice().customer.__class__(name="Robert <b>'); DROP TABLE", address=("A & B",)),
    )
    html = render_html(doc)
    assert "<style>" in html and "<link" not in html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Robert &lt;b&gt;&#39;); DROP TABLE" in html
    assert "A &amp; B" in html
    assert '<html lang="en-US">' in html


def test_pdf_and_html_show_the_same_document() -> None:
    html = render_html(invoice(), locale="de_DE")
    import weasyprint

    bare = pdf_text(weasyprint.HTML(string=html).write_pdf())
    assert bare == pdf_text(render_pdf(invoice(), locale="de_DE"))


def test_renders_in_parallel_threads() -> None:
    results: dict[str, str] = {}

    def work(locale: str) -> Callable[[], None]:
        def run() -> None:
            results[locale] = pdf_text(render_pdf(invoice(), locale=locale))

        return run

    threads = [threading.Thread(target=work(loc)) for loc in ("en_US", "de_DE", "fr_FR")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "Amount due $1,247.95" in results["en_US"]
    assert "Fälliger Betrag 1.247,95 $" in results["de_DE"]
    assert "Montant dû 1 247,95 $US" in results["fr_FR"]


def test_both_templates_show_each_lines_tax_amount() -> None:
    # SPEC §6: tax shown per line and in total. The first line: 19 % tax, 35 minor units.
    for template in ("classic", "compact"):
        text = pdf_text(render_pdf(invoice(), template=template))
        assert "$0.35" in text, template
