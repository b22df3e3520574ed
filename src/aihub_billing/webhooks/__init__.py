"""Inbound provider webhooks: verify, store once, process asynchronously."""
