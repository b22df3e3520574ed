"""Long operator and customer texts stay on the page: an unbroken word (a model id, a URL, a
name without spaces) wraps inside its box instead of pushing the amounts off the paper."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import weasyprint

from aihub_billing.documents import Party, render_html, render_pdf
from tests.documents.helpers import invoice, lines, pdf_text

LONG = "x" * 250


def _overflow(html: str) -> float:
    """How far (CSS px) any laid-out text reaches past the right edge of its page."""
    worst = 0.0
    for page in weasyprint.HTML(string=html).render().pages:
        stack: list[Any] = [page._page_box]
        while stack:
            box = stack.pop()
            if hasattr(box, "text"):
                worst = max(worst, box.position_x + box.width - page.width)
            stack.extend(getattr(box, "children", ()) or ())
    return worst


def _cases() -> dict[str, dict[str, Any]]:
    first, second = lines(2)
    return {
        "description": {"lines": (replace(first, description=f"model-{LONG}"), second)},
        "customer name": {"customer": Party(LONG)},
        "customer email": {"customer": Party("C", f"{LONG}@example.com")},
        "customer address": {"customer": Party("C", None, (LONG,))},
        "customer tax id": {"customer": Party("C", None, (), LONG)},
        "seller name": {"seller": Party(LONG)},
        "memo": {"memo": LONG * 2},
    }


@pytest.mark.parametrize("template", ["classic", "compact"])
@pytest.mark.parametrize("field", list(_cases()))
def test_long_unbroken_texts_stay_on_the_page(template: str, field: str) -> None:
    doc = invoice(**_cases()[field])
    assert _overflow(render_html(doc, template=template)) <= 0


def test_a_long_description_keeps_the_amounts_readable() -> None:
    first, second = lines(2)
    doc = invoice(lines=(replace(first, description=f"model-{LONG}"), second))
    text = pdf_text(render_pdf(doc))
    assert "Amount due $1,247.95" in text
    assert "$1.85" in text and "$12.50" in text
