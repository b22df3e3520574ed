"""Payment provider adapters behind the PaymentProcessor protocol."""
