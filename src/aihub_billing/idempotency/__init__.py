"""Idempotency-Key handling for creating POSTs: one effect, the first response replayed."""
