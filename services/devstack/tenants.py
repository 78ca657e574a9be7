"""Tenants of the dev stack (`WA_TENANTS="acme globex" make run`): one NATS account each,
with a service user for the gateway's processes and a client user for the tenant, their
passwords, and the `accounts` block of the embedded nats-server's config.

A tenant's secrets are made once and kept under `<data dir>/tenants/<tenant>/` (0600), so a
tenant's URL keeps working across restarts; `<data dir>/tenants/<tenant>.url` is the client
user's URL, usable as-is by nats-py, nats.js and the `nats` CLI (`wactl --tenant` reads it).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.permissions import tenant_client
from contracts.subjects import Subjects

# A tenant names an account, a database (`wa_<tenant>`), files and folders.
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
TENANTS_DIR = "tenants"


def parse_tenants(value: str) -> list[str]:
    """`"acme globex"` (spaces or commas) as a list of tenant names, each checked once."""
    names = [name for name in re.split(r"[\s,]+", value.strip()) if name]
    for name in names:
        if not TENANT_PATTERN.match(name):
            raise ValueError(f"tenant name must match {TENANT_PATTERN.pattern}, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"a tenant is named twice in {value!r}")
    return names


@dataclass(frozen=True)
class Tenant:
    name: str
    folder: Path  # its data folder: service data, secrets
    service_password: str
    client_password: str

    @property
    def service_user(self) -> str:
        return f"{self.name}-service"

    @property
    def client_user(self) -> str:
        return self.name

    @property
    def service_password_file(self) -> Path:
        return self.folder / "service-password"

    @property
    def mongo_db(self) -> str:
        return tenant_db(self.name)

    def client_url(self, server_url: str) -> str:
        """The client user's URL (passwords are URL-safe: no quoting needed)."""
        scheme, _, rest = server_url.partition("://")
        return f"{scheme}://{self.client_user}:{self.client_password}@{rest}"


def tenant_url_file(data_dir: Path, name: str) -> Path:
    return data_dir / TENANTS_DIR / f"{name}.url"


def tenant_folder(data_dir: Path, name: str) -> Path:
    return data_dir / TENANTS_DIR / name


def tenant_db(name: str) -> str:
    return f"wa_{name}"


def load_tenant(data_dir: Path, name: str) -> Tenant:
    """The tenant's secrets, made on first use and kept."""
    folder = tenant_folder(data_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    return Tenant(name, folder, _kept_secret(folder / "service-password"), _kept_secret(folder / "client-password"))


def write_client_url(data_dir: Path, tenant: Tenant, server_url: str) -> Path:
    path = tenant_url_file(data_dir, tenant.name)
    path.touch(mode=0o600)
    path.write_text(tenant.client_url(server_url) + "\n")
    return path


def accounts_config(tenants: list[Tenant], subjects: Subjects, simulator: bool) -> str:
    """The nats-server `accounts` block: an account per tenant with JetStream, its service
    user (everything in the account) and its client user (the public contract only). With
    accounts and users configured the server refuses anonymous connections."""
    permissions = client_permissions(subjects, simulator)
    blocks = []
    for tenant in tenants:
        client = {"user": tenant.client_user, "password": tenant.client_password, "permissions": permissions}
        service = {"user": tenant.service_user, "password": tenant.service_password}
        account = {"jetstream": "enabled", "users": [service, client]}
        # The server's config format reads JSON; quoted strings keep `$JS...` literal.
        blocks.append(f"  {json.dumps(tenant.name)}: {json.dumps(account)}")
    return "accounts {\n" + "\n".join(blocks) + "\n}\n"


def client_permissions(subjects: Subjects, simulator: bool) -> dict[str, Any]:
    """A tenant client user's `permissions` block of a nats-server config."""
    permissions = tenant_client(subjects, simulator=simulator)
    return {"publish": {"allow": list(permissions.publish)}, "subscribe": {"allow": list(permissions.subscribe)}}


def _kept_secret(path: Path) -> str:
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()
