"""`python -m aihub_billing.cli`: the `aihub-billing` command."""

import os

from aihub_billing.cli import app

os.environ.setdefault("AIHUB_BILLING_ENVIRONMENT", "development")
app()
