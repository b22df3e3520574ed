"""The audit log of every state change."""
