"""Accounts, their members and their API keys."""
