"""Collecting finalized invoices: the automatic charge and dunning when it fails."""
