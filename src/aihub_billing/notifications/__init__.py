"""Signed event notifications to an account's webhook URL (and an email hook)."""
