"""WhatsApp credentials at rest: the encrypted, versioned vault and the import of existing
stores. Used by the session-actor (restore, save), and by operators' tools (`wactl creds
rotate-key`, `wactl import`) and `make run` (a dev key) as their admin library.
"""
