"""Operator-mode NATS credentials for tests, made the way `nsc` makes them: an operator, an
account and a user, each an nkey pair, with JWTs signed by their issuer, and a `.creds`
file (the user's JWT and seed)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import nkeys

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    def __init__(self, prefix: int) -> None:
        self.seed = nkeys.encode_seed(os.urandom(32), prefix)
        self.pair = nkeys.from_seed(bytearray(self.seed))
        self.public = self.pair.public_key.decode()

    def sign_jwt(self, subject: str, name: str, nats: dict) -> str:
        claims = {"jti": _b64(os.urandom(16)), "iat": int(time.time()), "iss": self.public, "name": name, "sub": subject, "nats": nats}
        unsigned = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
        return f"{unsigned}.{_b64(self.pair.sign(unsigned.encode()))}"


class Operator:
    """An operator with one account (JetStream unlimited) whose users it can issue."""

    def __init__(self) -> None:
        self.key = Key(nkeys.PREFIX_BYTE_OPERATOR)
        self.jwt = self.key.sign_jwt(self.key.public, "test-operator", {"type": "operator", "version": 2})
        self.account = Key(nkeys.PREFIX_BYTE_ACCOUNT)
        limits = {
            "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED, "imports": UNLIMITED, "exports": UNLIMITED,
            "wildcards": True, "conn": UNLIMITED, "leaf": UNLIMITED, "mem_storage": UNLIMITED,
            "disk_storage": UNLIMITED, "streams": UNLIMITED, "consumer": UNLIMITED,
        }  # fmt: skip
        self.account_jwt = self.key.sign_jwt(self.account.public, "gateway", {"type": "account", "version": 2, "limits": limits})
        # JetStream needs the server's system account in operator mode.
        self.system = Key(nkeys.PREFIX_BYTE_ACCOUNT)
        self.system_jwt = self.key.sign_jwt(self.system.public, "SYS", {"type": "account", "version": 2})

    def server_config(self) -> str:
        preload = f'{self.account.public}: "{self.account_jwt}", {self.system.public}: "{self.system_jwt}"'
        return (
            f'operator: "{self.jwt}"\nsystem_account: {self.system.public}\n'
            f"resolver: MEMORY\nresolver_preload: {{ {preload} }}\n"
        )

    def creds_file(self, path: Path, name: str = "gateway") -> Path:
        user = Key(nkeys.PREFIX_BYTE_USER)
        limits = {"subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED, "pub": {}, "sub": {}}
        jwt = self.account.sign_jwt(user.public, name, {"type": "user", "version": 2, **limits})
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
        )
        return path
