"""API keys: issuing, hashing and resolving them to an actor."""
