"""Errors of invoice document rendering (bad template, locale or logo; a failing template)."""

from aihub_billing.errors import BillingError, InvalidRequest


class DocumentError(InvalidRequest):
    """Base of the document errors: the request asked for a document we cannot render."""

    code = "document_error"
    title = "The document cannot be rendered as asked"


class UnknownTemplate(DocumentError):
    code = "unknown_template"
    title = "Unknown or invalid invoice template name"


class UnsupportedLocale(DocumentError):
    code = "unsupported_locale"
    title = "Invoice documents are not available in this locale"


class InvalidLogo(DocumentError):
    code = "invalid_logo"
    title = "The logo is not a readable PNG, JPEG, GIF, WebP or SVG image"


class TemplateFailed(BillingError):
    """An (operator-supplied) template failed to parse or render: a setup fault."""

    code = "document_template_failed"
    status = 500
    title = "The invoice template failed to render"
