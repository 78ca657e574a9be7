"""One settings object for every service, read from `WA_*` environment variables."""

from __future__ import annotations

import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.subjects import Subjects


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_", extra="ignore")

    # -- where things are -------------------------------------------------------------
    # One or more seed URLs of a NATS cluster, comma separated: a client connects to any one
    # that answers (and learns the others from it).
    nats_url: str = "nats://127.0.0.1:4222"
    # Replicas of every stream and bucket: 1 on a single server, 3 on a NATS cluster of three
    # or more (one server can then be lost, disk included, without losing a message).
    js_replicas: int = Field(default=1, ge=1, le=5)
    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "wa_gateway"
    prefix: str = "wa"
    sim_prefix: str = "wasim"
    data_dir: Path = Path(".data")
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"
    # The process that started this one (`make run`, a test): when it is gone, this one stops
    # too, gracefully, instead of running on as an orphan.
    supervisor_pid: int | None = None
    # The tenant this deployment serves: one NATS account, one MongoDB database, one set of
    # service processes. The http-gateway's API keys are bound to it.
    tenant: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")

    # -- NATS authentication and TLS: whatever the NATS operator hands out ---------------
    # At most one of: a user and password (or the password in a file), a token (or in a
    # file), an nkey seed file, a `.creds` file (user JWT and seed, from nsc). A URL may also
    # carry `user:password@`. None of them: no authentication (the embedded dev server).
    nats_user: str | None = None
    nats_password: SecretStr = SecretStr("")
    nats_password_file: Path | None = None
    nats_token: SecretStr = SecretStr("")
    nats_token_file: Path | None = None
    nats_nkey_seed_file: Path | None = None
    nats_creds_file: Path | None = None
    # TLS to NATS: the CA that signed the servers' certificates, and for mutual TLS this
    # client's certificate and key. A `tls://` URL turns TLS on with the system's CAs.
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
    # MongoDB credentials and TLS options go in its URL (`mongodb://user:pass@host/?tls=true`);
    # the CA of its servers' certificates here.
    mongo_tls_ca_file: Path | None = None

    # -- session-actor node -----------------------------------------------------------
    adapter: Literal["sim", "neonize"] = "sim"
    node_name: str = Field(default_factory=socket.gethostname)
    node_capacity: int = Field(default=1000, ge=1)
    # Server-side expiry of a node lease (whole seconds: NATS per-message TTLs are seconds).
    lease_ttl: int = Field(default=6, ge=2)
    lease_renew_interval: float = Field(default=1.0, gt=0)
    # A node stops all its actors when it has not renewed for this long. Must leave room,
    # before the lease can expire elsewhere, for the WhatsApp side to notice the dead
    # connection (see `sim_keepalive_timeout`): lease_self_stop + keepalive <= lease_ttl.
    lease_self_stop: float = Field(default=3.0, gt=0)
    # At most this many sessions move off an over-full node per rebalance round.
    rebalance_batch: int = Field(default=10, ge=1)
    rebalance_interval: float = Field(default=1.0, gt=0)
    # Connection attempts per second per node, so a restore of S sessions is staggered.
    connect_rate: float = Field(default=100.0, gt=0)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    # A folder of existing neonize/simulator store files (*.db, *.sqlite, *.sqlite3) a node
    # imports at startup as sessions, once each (see services/credentials/importer.py).
    import_dir: Path | None = None

    # -- credential vault (see services/credentials/vault.py) -----------------------
    # `id:base64-32-byte-key` entries, comma or newline separated; the first one encrypts.
    vault_keys: SecretStr = SecretStr("")
    vault_key_file: Path | None = None

    # -- reconnect policy -------------------------------------------------------------
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    flap_disconnects: int = 5
    flap_window: float = 300.0
    flap_backoff_floor: float = 120.0
    pairing_timeout: float = 180.0
    # Pair requests a session may make in any window of this many seconds; more are answered
    # `rate_limited` with the time to wait (WhatsApp restricts numbers that pair too often).
    pair_rate_limit: int = Field(default=3, ge=1)
    pair_rate_window: float = Field(default=120.0, gt=0)

    # -- sending: default pacing of every session (each can have its own policy) -------
    pacing_enabled: bool = True
    pacing_per_minute: float = Field(default=10.0, gt=0)
    pacing_burst: int = Field(default=5, ge=1)
    pacing_min_gap: float = Field(default=2.0, ge=0)
    pacing_jitter: float = Field(default=1.0, ge=0)
    pacing_daily_cap: int | None = Field(default=None, ge=1)
    pacing_typing_seconds: float = Field(default=0.0, ge=0, le=30)
    send_max_attempts: int = Field(default=5, ge=1)
    send_retry_base: float = Field(default=1.0, gt=0)
    send_retry_cap: float = Field(default=60.0, gt=0)
    # Sends waiting per session beyond which intake answers `rate_limited`.
    queue_limit: int = Field(default=10_000, ge=1)

    # -- media sends (see services/common/media.py) -------------------------------------
    # Inline (base64) files, decoded. They travel inside the request and the queued send,
    # both NATS messages (1 MiB max payload by default, base64 adds a third): 700 KiB
    # leaves room for the caption and the envelope. Larger files go by URL. Intake also
    # refuses any send whose queued message would not fit the server's actual max payload.
    media_inline_max: int = Field(default=700 * 1024, ge=1)
    # Files fetched by URL, per kind, enforced while downloading (the body is streamed and
    # the download stops at the limit). WhatsApp's own limits are 16 MB for images and
    # voice/audio, larger for video (64 MB here) and documents (2 GB at WhatsApp; 100 MB
    # here because a file is held in memory while it is uploaded).
    media_max_image: int = Field(default=16 * 1024 * 1024, ge=1)
    media_max_audio: int = Field(default=16 * 1024 * 1024, ge=1)
    media_max_video: int = Field(default=64 * 1024 * 1024, ge=1)
    media_max_document: int = Field(default=100 * 1024 * 1024, ge=1)
    # A whole download (connect, redirects, body); the actor keeps the send in progress
    # meanwhile. Connect and read (between two chunks) timeouts are shorter.
    media_download_timeout: float = Field(default=120.0, gt=0)
    media_connect_timeout: float = Field(default=10.0, gt=0)
    media_read_timeout: float = Field(default=30.0, gt=0)
    # Media sends prepared at once per node (each holds its file in memory).
    media_concurrency: int = Field(default=4, ge=1)
    # Whether URLs may point at loopback, private, link-local or otherwise non-public
    # addresses. Off: a user of the send API could otherwise make the gateway fetch internal
    # services (cloud metadata, admin endpoints) and send the answer to any number.
    media_fetch_private: bool = False

    # -- inbound media (see services/session_actor/inbound.py) --------------------------
    # How long files stay in the media bucket (WA_MEDIA); their events may outlive them.
    media_retention_days: float = Field(default=7.0, gt=0)
    # Files larger than this (declared, or once downloaded) are not stored: the event says
    # `media_too_large`. Images and stickers, video, audio and voice notes, documents.
    inbound_media_max_image: int = Field(default=16 * 1024 * 1024, ge=1)
    inbound_media_max_video: int = Field(default=64 * 1024 * 1024, ge=1)
    inbound_media_max_audio: int = Field(default=16 * 1024 * 1024, ge=1)
    inbound_media_max_document: int = Field(default=100 * 1024 * 1024, ge=1)
    # A download (or its store) that fails is tried again with capped, jittered backoff;
    # after the last attempt the event goes out with `media.error`.
    inbound_media_attempts: int = Field(default=4, ge=1)
    inbound_media_retry_base: float = Field(default=0.5, gt=0)
    inbound_media_retry_cap: float = Field(default=5.0, gt=0)
    # Files downloaded at once per node (each is held in memory until stored).
    inbound_media_concurrency: int = Field(default=4, ge=1)

    # -- retention --------------------------------------------------------------------
    events_max_age_days: float = 7.0
    outbound_retention_days: float = 7.0

    # -- health-monitor and its dashboard --------------------------------------------
    health_host: str = "127.0.0.1"
    health_port: int = 8080
    # The dashboard at `/` asks for this token (link `/?token=...`, a login form, or an
    # `Authorization: Bearer` header); unset, the dashboard is off. `make run` makes one.
    dashboard_token: SecretStr = SecretStr("")

    # -- http-gateway: the HTTP API and webhooks (services/http_gateway/) -------------
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8081, ge=1, le=65535)
    # A webhook POST that has not answered by then counts as failed (and is tried again).
    webhook_timeout: float = Field(default=10.0, gt=0)
    # Failed deliveries are tried again after capped, jittered exponential backoff ...
    webhook_retry_base: float = Field(default=1.0, gt=0)
    webhook_retry_cap: float = Field(default=300.0, gt=0)
    # ... and a subscription whose receiver has failed for this long is paused (an alert
    # says so); its backlog waits in the events stream (WA_EVENTS_MAX_AGE_DAYS) until resumed.
    webhook_pause_after: float = Field(default=86400.0, gt=0)
    # Whether webhook URLs may point at loopback, private, link-local or otherwise non-public
    # addresses (the rule of media URLs, `media_fetch_private`). Off: whoever may create a
    # subscription could otherwise make the gateway post to internal services.
    webhook_private_urls: bool = False
    # How often each replica reads the subscriptions to start or stop delivering them.
    webhook_sync_interval: float = Field(default=2.0, gt=0)

    # -- Prometheus metrics -------------------------------------------------------------
    # Services without an HTTP port of their own (session-actor, outbound-queue,
    # persistence, wa-sim) serve /metrics here; 0: not at all. Each process on one machine
    # needs its own port (`make run` and the test harness give each a free one).
    # health-monitor serves /metrics on health_port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Queue depth and age of the oldest send per session as well as in total: one series
    # per session, so off by default (10,000 sessions would be 20,000 series).
    metrics_per_session: bool = False
    # How often the gauges read from NATS (queues, dead letters, backlogs) are refreshed.
    metrics_interval: float = Field(default=10.0, gt=0)

    # -- simulated WhatsApp -----------------------------------------------------------
    sim_qr_first: float = 60.0
    sim_qr_next: float = 20.0
    sim_qr_codes: int = 6
    sim_keepalive_interval: float = 1.0
    sim_keepalive_timeout: float = 3.0
    sim_receipt_delay: float = 0.05
    # Simulated recipients read every message this long after delivery (0: never by themselves).
    sim_read_after: float = 0.0

    @field_validator(
        "import_dir",
        "vault_key_file",
        "nats_user",
        "nats_password_file",
        "nats_token_file",
        "nats_nkey_seed_file",
        "nats_creds_file",
        "nats_tls_ca_file",
        "nats_tls_cert_file",
        "nats_tls_key_file",
        "mongo_tls_ca_file",
        mode="before",
    )
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value  # WA_IMPORT_DIR= must not mean "."

    @model_validator(mode="after")
    def _check(self) -> Settings:
        Subjects(self.prefix, self.sim_prefix)  # validates both prefixes
        if not self.nats_servers:
            raise ValueError("nats_url: at least one NATS URL is needed")
        if self.lease_self_stop + self.sim_keepalive_timeout > self.lease_ttl:
            raise ValueError(
                "lease_self_stop + sim_keepalive_timeout must not exceed lease_ttl, or a frozen "
                "owner's connection could outlive its lease"
            )
        if self.lease_renew_interval >= self.lease_self_stop:
            raise ValueError("lease_renew_interval must be shorter than lease_self_stop")
        ways = {
            "nats_user": self.nats_user is not None,
            "nats_token": bool(self.nats_token.get_secret_value()) or self.nats_token_file is not None,
            "nats_nkey_seed_file": self.nats_nkey_seed_file is not None,
            "nats_creds_file": self.nats_creds_file is not None,
        }
        if (bool(self.nats_password.get_secret_value()) or self.nats_password_file is not None) and not ways["nats_user"]:
            raise ValueError("nats_password needs nats_user")
        if sum(ways.values()) > 1:
            raise ValueError(f"give one way to authenticate to NATS, not {' and '.join(k for k, v in ways.items() if v)}")
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("nats_tls_cert_file and nats_tls_key_file go together (a client certificate and its key)")
        return self

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @cached_property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix, self.sim_prefix)
