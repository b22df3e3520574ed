"""Durable background jobs: outbox table, registry, worker loop and periodic scheduler."""
