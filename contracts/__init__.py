"""Contract v1 of the WhatsApp session gateway: every message on NATS, as msgspec Structs."""

__version__ = "1.0.0"
