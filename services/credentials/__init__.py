"""WhatsApp credentials at rest: the encrypted, versioned vault and the import of existing
stores. Used by the session-actor (restore, save), and by operators' tools (`wactl creds
rotate-key`, `wactl import`) and `make run` (a dev key) as their admin library.
"""

# The table that holds the linked device in each adapter's store (the adapters read it
# from here), by WA_ADAPTER: here so that the admin tools never import an adapter (neonize
# loads a Go library), and cheap to import (the vault loads the crypto stack).
DEVICE_TABLES = {"sim": "sim_device", "neonize": "whatsmeow_device"}
