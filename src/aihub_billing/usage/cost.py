"""The cost of one call from per-1M-token prices (pure, exact Decimal)."""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

TOKENS_PER_PRICE_UNIT = 1_000_000


def token_cost(
    *,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    input_per_1m: Decimal,
    output_per_1m: Decimal,
    cached_input_per_1m: Decimal | None,
) -> Decimal:
    """Unrounded cost; cached tokens are the part of the input served from the cache.

    Exact: integer counts times Decimal prices, then a shift by six places.
    """
    if not 0 <= cached_input_tokens <= input_tokens or output_tokens < 0:
        raise ValueError("token counts must be >= 0 and cached <= input")
    cached_price = input_per_1m if cached_input_per_1m is None else cached_input_per_1m
    with localcontext() as ctx:
        ctx.prec = 100  # far above any count x price digits: nothing is rounded
        total = (
            (input_tokens - cached_input_tokens) * input_per_1m
            + cached_input_tokens * cached_price
            + output_tokens * output_per_1m
        )
        return total.scaleb(-6)


class ScaledPrices:
    """One price row's per-1M prices as integers, for costing many events with int math.

    Gives exactly `canonical_decimal(token_cost(...))`: the prices are scaled by 10**places
    (enough for every digit), so the sum is an exact integer until one Decimal at the end.
    """

    __slots__ = ("_cached", "_input", "_output", "_places")

    def __init__(
        self, input_per_1m: Decimal, output_per_1m: Decimal, cached_input_per_1m: Decimal | None
    ) -> None:
        cached = input_per_1m if cached_input_per_1m is None else cached_input_per_1m
        prices = (input_per_1m, output_per_1m, cached)
        if not all(p.is_finite() and p >= 0 for p in prices):
            raise ValueError("prices must be finite and >= 0")
        places = max(0, *(-int(p.as_tuple().exponent) for p in prices))
        self._input, self._output, self._cached = (int(p.scaleb(places, _EXACT)) for p in prices)
        self._places = places + 6  # and per 1M tokens

    def _scaled(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> int:
        """The cost times 10**self._places, exactly."""
        if not 0 <= cached_input_tokens <= input_tokens or output_tokens < 0:
            raise ValueError("token counts must be >= 0 and cached <= input")
        return (
            (input_tokens - cached_input_tokens) * self._input
            + cached_input_tokens * self._cached
            + output_tokens * self._output
        )

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> Decimal:
        total = self._scaled(input_tokens, cached_input_tokens, output_tokens)
        if total == 0:
            return _ZERO
        places = self._places
        while places and total % 10 == 0:  # canonical form: no trailing zeros
            total //= 10
            places -= 1
        return Decimal(f"{total}E-{places}")  # construction from a string is exact

    def cost_text(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> str:
        """The same exact value as plain decimal text, `format(cost(...), "f")`: what the
        batch path stores (NUMERIC parses it exactly) and answers, with no Decimal per event."""
        total = self._scaled(input_tokens, cached_input_tokens, output_tokens)
        places = self._places
        digits = str(total)
        if len(digits) <= places:
            digits = "0" * (places - len(digits) + 1) + digits
        # Digits and point placed by hand; trailing zeros (and a bare point) dropped.
        return f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")


_ZERO = Decimal(0)
_EXACT = Context(prec=200)
