"""Provider billing: provider price ids on plan prices, provider_billed on subscriptions.

Revision ID: 9a7c64d2e387
Revises: 7e5a42b0c165
Create Date: 2026-11-25 10:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9a7c64d2e387"
down_revision: str | None = "7e5a42b0c165"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plan_prices") as batch:
        batch.add_column(sa.Column("stripe_price_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("paypal_plan_id", sa.String(length=255), nullable=True))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column(
                "provider_billed", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("provider_billed")
    with op.batch_alter_table("plan_prices") as batch:
        batch.drop_column("paypal_plan_id")
        batch.drop_column("stripe_price_id")
