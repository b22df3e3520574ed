"""Invoices: period close, finalization with gapless numbers, states, the upcoming preview."""
