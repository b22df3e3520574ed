"""Payments: provider customers, payment methods, payments, refunds and disputes."""
