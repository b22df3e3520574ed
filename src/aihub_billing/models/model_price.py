"""Model prices: per-model token prices per 1M tokens, versioned by a half-open effective time."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aihub_billing.models.base import Base, id_column
from aihub_billing.models.types import PreciseDecimal

# 12 places per 1M tokens keep a token count times a price within NUMERIC(38, 18) exactly.
PRICE_SCALE = 12


class ModelPrice(Base):
    """One price of a model, valid on [effective_from, effective_to); NULL end = open."""

    __tablename__ = "model_prices"
    __table_args__ = (
        UniqueConstraint("model", "effective_from"),
        CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from", name="effective_range"
        ),
    )

    id: Mapped[str] = id_column()
    model: Mapped[str] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(3))
    # Major units of `currency` per 1,000,000 tokens.
    input_per_1m: Mapped[Decimal] = mapped_column(PreciseDecimal(38, PRICE_SCALE))
    output_per_1m: Mapped[Decimal] = mapped_column(PreciseDecimal(38, PRICE_SCALE))
    # NULL = cached input tokens cost the input price.
    cached_input_per_1m: Mapped[Decimal | None] = mapped_column(PreciseDecimal(38, PRICE_SCALE))
    effective_from: Mapped[datetime]
    effective_to: Mapped[datetime | None]
    created_at: Mapped[datetime]
