"""Pure price calculators: no database, no web."""
