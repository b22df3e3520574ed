"""Helpers with no domain and no web layer: money, clock, periods, ids, pagination, db."""
