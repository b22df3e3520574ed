"""Invoice PDFs: render_pdf (Jinja, Babel, WeasyPrint) against bare WeasyPrint, same HTML."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from PIL import Image
from rich.console import Console

from aihub_billing.documents import DocumentLine, InvoiceDocument, Party, render_html, render_pdf
from aihub_billing.kit.clock import monotonic
from bench.common import Result

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
SELLER = Party("AIHub Inc.", "billing@aihub.example", ("1 Main St", "Springfield, IL"), "US-42")
MODELS = (
    ("gpt-x input tokens", "0.0000015"),
    ("gpt-x output tokens", "0.000006"),
    ("gpt-x cached input tokens", "0.00000075"),
    ("embed-3 tokens", "0.00000002"),
    ("image-gen 1024px", "0.04"),
    ("whisper-2 seconds", "0.0001"),
)


def _logo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (240, 80), (31, 78, 121)).save(out, format="PNG")
    return out.getvalue()


def _invoice(i: int, currency: str) -> InvoiceDocument:
    """A realistic monthly invoice: a plan fee, seats and 6-10 metered lines."""
    lines = [
        DocumentLine("Pro plan (monthly)", Decimal(1), Decimal("49"), 4900, Decimal("0.19"), 931),
        DocumentLine("Extra seats", Decimal(3), Decimal("12.5"), 3750, Decimal("0.19"), 713),
    ]
    for k in range(6 + i % 5):
        name, price = MODELS[k % len(MODELS)]
        quantity = Decimal(1_000_000 + 7919 * i * (k + 1))
        amount = int(quantity * Decimal(price) * 100)
        lines.append(
            DocumentLine(
                name,
                quantity,
                Decimal(price),
                amount,
                Decimal("0.19"),
                amount * 19 // 100,
                NOV,
                DEC,
            )
        )
    subtotal = sum(line.amount_minor for line in lines)
    tax = sum(line.tax_minor for line in lines)
    return InvoiceDocument(
        number=f"INV-2026-{i:05d}",
        status="open",
        currency=currency,
        issued_at=DEC,
        due_at=datetime(2026, 12, 31, tzinfo=UTC),
        period_start=NOV,
        period_end=DEC,
        seller=SELLER,
        customer=Party(f"Customer {i} Ltd", f"ap{i}@example.com", (f"{i} Market St", "Berlin")),
        lines=tuple(lines),
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax,
        amount_due_minor=subtotal + tax,
    )


@dataclass
class _Timing:
    ours: float = 0.0
    bare: float = 0.0


def _measure(n: int, template: str, locale: str, currency: str, with_logo: bool) -> _Timing:
    import weasyprint

    logo = _logo() if with_logo else None
    docs = [_invoice(i, currency) for i in range(n)]
    # The baseline gets the finished, self-contained HTML (stylesheet and logo inlined).
    htmls = [render_html(d, template=template, locale=locale, logo=logo) for d in docs]
    for d, html in zip(docs[:3], htmls[:3], strict=True):  # warm both paths up
        render_pdf(d, template=template, locale=locale, logo=logo)
        weasyprint.HTML(string=html).write_pdf()
    timing = _Timing()
    # Interleaved, so a noisy neighbour slows both sides alike, and in alternating order, so
    # neither side always runs right after the other (whose garbage it would collect).
    for k, (d, html) in enumerate(zip(docs, htmls, strict=True)):
        for side in ("ours", "bare") if k % 2 == 0 else ("bare", "ours"):
            started = monotonic()
            if side == "ours":
                pdf = render_pdf(d, template=template, locale=locale, logo=logo)
                timing.ours += monotonic() - started
            else:
                pdf = weasyprint.HTML(string=html).write_pdf()
                timing.bare += monotonic() - started
            assert pdf.startswith(b"%PDF-")
    return timing


async def run(*, quick: bool, console: Console) -> list[Result]:
    results = []
    cases = (
        ("classic", "en_US", "USD", 30 if quick else 200, True),
        ("classic", "en_US", "USD", 10 if quick else 100, False),
        ("compact", "zh_CN", "CNY", 10 if quick else 50, True),
    )
    for template, locale, currency, n, with_logo in cases:
        timing = _measure(n, template, locale, currency, with_logo)
        logo_text = "with logo" if with_logo else "no logo"
        ours_ms, bare_ms = 1000 * timing.ours / n, 1000 * timing.bare / n
        console.print(
            f"   {template}/{locale} {logo_text}: {n} invoices, "
            f"render_pdf {ours_ms:.1f} ms/invoice, bare WeasyPrint {bare_ms:.1f} ms/invoice, "
            f"ratio {ours_ms / bare_ms:.2f}x"
        )
        results.append(
            Result(
                name=f"invoice PDF {template} {locale} {logo_text}, 8-12 lines",
                backend="-",
                figure=ours_ms,
                unit="ms/invoice",
                baseline="bare WeasyPrint, same HTML",
                baseline_figure=bare_ms,
                target="<= 1.2x",
            )
        )
    return results
