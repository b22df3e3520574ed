"""The `documents` block of BillingConfig: env names, validation, the seller party."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from aihub_billing.config import BillingConfig, InvoiceDocumentConfig
from aihub_billing.documents import Party, render_html
from tests.documents.helpers import invoice


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("AIHUB_BILLING_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    documents = BillingConfig(environment="test").documents
    assert documents.template == "classic"
    assert documents.locale == "en_US"
    assert documents.templates_dir is None and documents.logo_path is None
    assert documents.seller() == Party("aihub-billing")


def test_env_vars(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    logo = isolated_env / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>')
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__TEMPLATE", "compact")
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__LOCALE", "de_AT")
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__TEMPLATES_DIR", str(isolated_env))
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__LOGO_PATH", str(logo))
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__SELLER_NAME", "AIHub GmbH")
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__SELLER_EMAIL", "billing@aihub.example")
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__SELLER_ADDRESS", '["Ring 1", "1010 Wien"]')
    monkeypatch.setenv("AIHUB_BILLING_DOCUMENTS__SELLER_TAX_ID", "ATU12345678")
    documents = BillingConfig(environment="test").documents
    assert (documents.template, documents.locale) == ("compact", "de_AT")
    assert documents.templates_dir == isolated_env
    assert documents.seller() == Party(
        "AIHub GmbH", "billing@aihub.example", ("Ring 1", "1010 Wien"), "ATU12345678"
    )
    html = render_html(
        invoice(seller=documents.seller()),
        template=documents.template,
        locale=documents.locale,
        templates_dir=documents.templates_dir,
        logo=documents.logo_path,
    )
    assert "ATU12345678" in html and "Rechnung" in html and "data:image/svg+xml" in html


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("locale", "xx_YY", "unknown locale"),
        ("locale", "ja_JP", "no invoice labels"),
        ("template", "../classic", "should match pattern"),
        ("template", "fancy", "not a template here"),
        ("templates_dir", "/nonexistent/templates", "not a directory"),
        ("logo_path", "/nonexistent/logo.png", "not a file"),
    ],
)
def test_bad_settings_are_refused_at_start(field: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InvoiceDocumentConfig.model_validate({field: value})


def test_a_template_of_the_templates_dir_is_accepted(isolated_env: Path) -> None:
    (isolated_env / "fancy.html").write_text("{{ doc.number }}")
    documents = InvoiceDocumentConfig(template="fancy", templates_dir=isolated_env)
    assert documents.template == "fancy"
