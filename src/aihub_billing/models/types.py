"""Column types that keep money and time exact on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """`timestamptz` on PostgreSQL; on SQLite an ISO string read back as aware UTC.

    Naive datetimes are refused on the way in: a naive value is a bug, not a local time.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: use aware UTC datetimes")
        value = value.astimezone(UTC)
        # SQLite keeps the text as given; store it without offset so ordering is lexical.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class PreciseDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL; TEXT on SQLite, whose NUMERIC would round-trip through a float."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 38, scale: int = 18) -> None:
        # The impl carries them too: repr() (what autogenerate renders) is built from the impl.
        super().__init__(precision, scale)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, (float, bool)):
            raise TypeError("PreciseDecimal refuses float and bool; pass a Decimal")
        value = Decimal(value)
        if not value.is_finite():
            raise ValueError("PreciseDecimal refuses NaN and infinity")
        # Refuse what NUMERIC(p, s) would round or reject, so both backends store the same.
        exponent = int(value.as_tuple().exponent)
        if exponent < -self.scale and value != value.quantize(Decimal(1).scaleb(-self.scale)):
            raise ValueError(f"more than {self.scale} decimal places: {value}")
        if value.adjusted() >= self.precision - self.scale:
            raise ValueError(f"more than {self.precision - self.scale} integer digits: {value}")
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return canonical_decimal(value if isinstance(value, Decimal) else Decimal(str(value)))


def canonical_decimal(value: Decimal) -> Decimal:
    """Drops the scale padding NUMERIC adds (1.500000 -> 1.5); whole numbers stay plain.

    str() of a value below 1e-6 is still exponent form: JSON goes through JsonDecimal.

    Exact at any length: the default context (28 digits) would round a NUMERIC(38, 18).
    """
    if not value.is_finite():
        return value
    _, digits, exponent = value.as_tuple()
    exact = Context(prec=len(digits) + max(int(exponent), 0))
    if value == value.to_integral_value():
        return value.quantize(Decimal(1), context=exact)
    return value.normalize(context=exact)
