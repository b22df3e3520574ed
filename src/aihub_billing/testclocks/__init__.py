"""Test clocks: the operator moves an account's time forward; its jobs fire on the way."""
