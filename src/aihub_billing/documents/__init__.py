"""Invoice documents: pure rendering of an InvoiceDocument to HTML and PDF. No database.

WeasyPrint is imported on the first `render_pdf` call, not on import.
"""

from aihub_billing.documents.errors import (
    DocumentError,
    InvalidLogo,
    TemplateFailed,
    UnknownTemplate,
    UnsupportedLocale,
)
from aihub_billing.documents.invoice import DocumentLine, InvoiceDocument, Party
from aihub_billing.documents.render import render_html, render_pdf

__all__ = [
    "DocumentError",
    "DocumentLine",
    "InvalidLogo",
    "InvoiceDocument",
    "Party",
    "TemplateFailed",
    "UnknownTemplate",
    "UnsupportedLocale",
    "render_html",
    "render_pdf",
]
