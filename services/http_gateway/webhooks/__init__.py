"""Webhook subscriptions: each one a durable JetStream consumer on the events stream whose
events are posted, signed, to a URL (see deliverer.py for the guarantees)."""
