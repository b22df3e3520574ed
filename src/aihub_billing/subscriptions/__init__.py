"""Subscriptions: lifecycle, proration, renewals and the pending invoice items they create."""
