"""A realistic invoice to render, and the text of a PDF as pypdf reads it."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from aihub_billing.documents import DocumentLine, InvoiceDocument, Party
from tests.backends import IN_CI

NOV = datetime(2026, 11, 1, tzinfo=UTC)
MID_NOV = datetime(2026, 11, 15, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
ISSUED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
DUE = datetime(2026, 12, 25, tzinfo=UTC)

SELLER = Party("AIHub Inc.", "billing@aihub.example", ("1 Main St", "Springfield"), "US-42-1234567")
CUSTOMER = Party("Acme Robotics GmbH", "ap@acme.example", ("Hauptstr. 1", "10115 Berlin"), "DE999")

TOKEN_PRICE = Decimal("0.0000015")


def lines(n: int = 10) -> tuple[DocumentLine, ...]:
    """n lines: a per-token usage line first, then flat and per-request lines."""
    out = [
        DocumentLine(
            "gpt-x input tokens",
            Decimal(1_234_567),
            TOKEN_PRICE,
            185,
            Decimal("0.19"),
            35,
            NOV,
            DEC,
        )
    ]
    for i in range(1, n):
        start = MID_NOV if i == 1 else NOV  # a seat added mid-period: its own, shorter period
        out.append(
            DocumentLine(
                f"Seat plan {i}", Decimal(i), Decimal("12.5"), 1250 * i, None, 0, start, DEC
            )
        )
    return tuple(out)


def invoice(**changes: Any) -> InvoiceDocument:
    doc = InvoiceDocument(
        number="INV-2026-0042",
        status="open",
        currency="USD",
        issued_at=ISSUED,
        due_at=DUE,
        period_start=NOV,
        period_end=DEC,
        seller=SELLER,
        customer=CUSTOMER,
        lines=lines(),
        subtotal_minor=123450,
        tax_minor=2345,
        total_minor=125795,
        balance_applied_minor=1000,
        amount_due_minor=124795,
        memo="Thank you for your business.",
    )
    return replace(doc, **changes)


# Babel separates numbers, symbols and interval parts with no-break and thin spaces.
_SPACES = str.maketrans({"\xa0": " ", "\u202f": " ", "\u2009": " ", "\u200a": " "})


def normalize(text: str) -> str:
    return " ".join(text.translate(_SPACES).split())


def pdf_text(pdf: bytes) -> str:
    """All pages' text, whitespace collapsed, so "1.234,50\\xa0$" reads "1.234,50 $"."""
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    return normalize(" ".join(page.extract_text() for page in reader.pages))


def pdf_fonts(pdf: bytes) -> set[str]:
    reader = PdfReader(io.BytesIO(pdf))
    names = set()
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            names.add(str(font.get_object()["/BaseFont"]))
    return names


def pdf_image_count(pdf: bytes) -> int:
    """Distinct images; pages may share one resource dictionary that lists them all."""
    reader = PdfReader(io.BytesIO(pdf))
    return len({image.data for page in reader.pages for image in page.images})


def _cjk_font_error() -> str | None:
    if shutil.which("fc-list") is None:
        return "fc-list (fontconfig) not found"
    found = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return None if found else "fc-list :lang=zh lists no font"


def require_cjk_font() -> None:
    """Skips without a CJK font (`make system-deps` installs one), except under CI=true."""
    error = _cjk_font_error()
    if error is None:
        return
    message = f"no CJK font ({error}); zh_CN PDFs would print empty boxes"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
    pytest.skip(message)
