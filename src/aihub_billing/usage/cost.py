"""The cost of one call from per-1M-token prices (pure, exact Decimal)."""

from __future__ import annotations

from decimal import Decimal, localcontext

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
