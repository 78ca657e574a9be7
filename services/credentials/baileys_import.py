"""A Baileys auth folder made into a whatsmeow store for the importer: read
(`baileys_auth`), mapped (`baileys_device`), checked (`linked_device.check`: nothing is
built, let alone stored, from keys that do not hold together), built (`whatsmeow_store`).

Signal sessions, group sender keys and app-state versions are left out: Baileys keeps
them in libsignal-node's own JSON records, and whatsmeow re-establishes all three (a
message that arrives for a missing session is answered with a retry receipt, and the
sender starts a new one; app state is synced again from the phone's keys).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from services.credentials import baileys_auth, baileys_device, linked_device, whatsmeow_store

# How an outcome names what was left out, by Baileys key category.
LEFT_OUT_NAMES = {
    "session": "Signal sessions",
    "sender-key": "group sender keys",
    "app-state-sync-version": "app-state versions",
}


def find_folders(directory: Path) -> list[Path]:
    """The Baileys auth folders (holding creds.json) directly in `directory`, sorted."""
    return sorted(p for p in directory.iterdir() if p.is_dir() and baileys_auth.is_auth_folder(p))


def store_from_folder(folder: Path, creds: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """The whatsmeow store of a Baileys auth folder, and what was carried over and left out.

    `creds` stands in for a missing creds.json (Evolution API v2). Raises
    linked_device.Unusable, saying why.
    """
    auth = baileys_auth.read_folder(folder, creds)
    device = baileys_device.linked_device(auth)
    linked_device.check(device)
    store = whatsmeow_store.build_store(device)
    return store, _summary(device, auth.left_out)


def _summary(device: linked_device.LinkedDevice, left_out: Counter[str]) -> str:
    kept = (
        f"from Baileys: {device.jid}, {len(device.pre_keys)} pre-keys, "
        f"{len(device.app_state_keys)} app-state keys, {len(device.identities)} contact identities"
    )
    dropped = [f"{left_out[category]} {name}" for category, name in LEFT_OUT_NAMES.items() if left_out[category]]
    if not dropped:
        return kept
    return f"{kept}; left out (whatsmeow re-establishes them): {', '.join(dropped)}"
