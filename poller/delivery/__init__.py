"""Delivery: the dispatcher that drains the outbox, its retry policy, holds and results."""
