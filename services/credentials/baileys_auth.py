"""Baileys auth states as they are stored, read into plain values.

Baileys' `useMultiFileAuthState` keeps one linked device in a folder: `creds.json` (the
device's keys and identity) and one file per key, `<category>-<id>.json` (`/` in an id
written `__`, `:` written `-`), every file `JSON.stringify(value, BufferJSON.replacer)`.
The same folders are kept by WAHA's NOWEB engine (`<sessions>/noweb/<name>`, WAHA core
names it `<name>-<md5 of name>`) and by Evolution API v1 (`instances/<name>`).

Evolution API v2 keeps the key files in `instances/<instance id>/` too, but `creds` in the
`creds` column of its database's `Session` table (`sessionId` = the instance id), as
`JSON.stringify` of the BufferJSON text: read from an export of that table
(`read_evolution_sessions`).

Buffers: Baileys writes `{"type": "Buffer", "data": "<base64>"}`; its reviver also takes
`data` (or `value`, with `"buffer": true`) as an array of byte values, and an object of
numbered byte values (a Uint8Array stringified without the replacer). `revive` takes the
same. Protobuf objects (`account`, app-state keys) go through protobufjs' toJSON first:
their bytes fields are plain base64 strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.credentials.linked_device import Unusable

CREDS = "creds.json"
# The key categories whose files an import reads (the others are counted, see `AuthState`).
READ = ("pre-key", "app-state-sync-key", "lid-mapping", "identity-key")
# Every category Baileys keeps (SignalDataTypeMap), longest first: "sender-key-memory-1"
# must not be taken for a "sender-key" with id "memory-1".
CATEGORIES = sorted(
    (
        *READ,
        "session",
        "sender-key",
        "sender-key-memory",
        "app-state-sync-version",
        "device-list",
        "tctoken",
    ),
    key=len,
    reverse=True,
)
_WAHA_FOLDER = re.compile(r"(?P<name>.+)-(?P<md5>[0-9a-f]{32})")


@dataclass(frozen=True)
class AuthState:
    creds: dict[str, Any]
    # The categories in READ: id -> value, Buffers revived into bytes.
    keys: dict[str, dict[str, Any]]
    # Files of the other categories (Signal sessions, sender keys, app-state versions, ...)
    # and unknown files, by category: not imported.
    left_out: Counter[str] = field(default_factory=Counter)


def revive(value: dict[str, Any]) -> Any:
    """BufferJSON.reviver, as a `json.loads` object hook."""
    if value.get("type") == "Buffer" or value.get("buffer") is True:
        data = value.get("data") or value.get("value") or []
        if isinstance(data, str):
            return base64.b64decode(data + "=" * (-len(data) % 4))
        return bytes(data)
    if value and all(key.isdigit() for key in value) and all(isinstance(v, int) for v in value.values()):
        return bytes(value[key] for key in sorted(value, key=int))
    return value


def parse(text: str, what: str) -> Any:
    """One stored value: JSON with Baileys' Buffers revived. Raises Unusable."""
    try:
        return json.loads(text, object_hook=revive)
    except json.JSONDecodeError as exc:
        raise Unusable(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, binascii.Error) as exc:  # a Buffer that does not decode
        raise Unusable(f"{what} holds a damaged Buffer ({exc})") from None


def is_auth_folder(path: Path) -> bool:
    return (path / CREDS).is_file()


def folder_name(path: Path) -> str:
    """The name a folder gives its session: WAHA core's `<name>-<md5 of name>` gives `name`."""
    waha = _WAHA_FOLDER.fullmatch(path.name)
    if waha and hashlib.md5(waha["name"].encode()).hexdigest() == waha["md5"]:
        return waha["name"]
    return path.name


def read_folder(folder: Path, creds: dict[str, Any] | None = None) -> AuthState:
    """A multi-file auth folder; `creds` stands in for a missing creds.json (Evolution v2)."""
    if not folder.is_dir():
        raise Unusable(f"{folder} is not a folder")
    creds_file = folder / CREDS
    if creds_file.is_file():
        creds = parse(creds_file.read_text(errors="replace"), CREDS)
    elif creds is None:
        raise Unusable(f"no {CREDS} in {folder}: not a Baileys auth folder (or its creds are elsewhere)")
    if not isinstance(creds, dict):
        raise Unusable(f"{CREDS} does not hold an object")
    keys: dict[str, dict[str, Any]] = {category: {} for category in READ}
    left_out: Counter[str] = Counter()
    for path in sorted(folder.iterdir()):
        if path.name == CREDS or not path.is_file():
            continue
        category, key_id = _category_of(path.name)
        if category in keys:
            keys[category][key_id] = parse(path.read_text(errors="replace"), path.name)
        else:
            left_out[category] += 1
    return AuthState(creds, keys, left_out)


def _category_of(name: str) -> tuple[str, str]:
    """(category, key id) of a key file's name; ("other", name) for anything else."""
    if name.endswith(".json"):
        stem = name.removesuffix(".json")
        for category in CATEGORIES:
            if stem.startswith(category + "-"):
                return category, stem.removeprefix(category + "-").replace("__", "/")
    return "other", name


def read_evolution_sessions(path: Path) -> dict[str, dict[str, Any]]:
    """Evolution API v2's `Session` rows, exported as JSON, as creds by session id.

    Takes a JSON array of rows (`SELECT json_agg(s) FROM "Session" s`) or one row per line
    (`SELECT row_to_json(s) ...`); `creds` as stored (a JSON string of the creds' text), or
    already decoded. Raises Unusable.
    """
    text = path.read_text(errors="replace")
    try:
        loaded = json.loads(text)
        rows = loaded if isinstance(loaded, list) else [loaded]
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise Unusable(f"{path.name} is neither JSON nor JSON lines ({exc.msg})") from None
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("sessionId"), str) or row.get("creds") is None:
            raise Unusable(f"{path.name}: a row without sessionId and creds; export Evolution's Session table")
        sid = row["sessionId"]
        what = f"the creds of session {sid!r} in {path.name}"
        creds = row["creds"]
        if isinstance(creds, dict):  # decoded by the export: its Buffers are still JSON
            creds = json.dumps(creds)
        while isinstance(creds, str):  # Evolution stores JSON.stringify of the JSON text
            creds = parse(creds, what)
        if not isinstance(creds, dict):
            raise Unusable(f"{what} are not an object")
        found[sid] = creds
    return found
