"""The billing summary of an account (the seed's /summary) and its forecast."""
