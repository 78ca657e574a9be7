"""A tenant client's NATS permissions, derived from the subjects of a prefix: exactly the
public contract (docs/asyncapi.json), nothing internal. (test_tenants.py checks that the
server enforces them.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.permissions import tenant_client
from contracts.subjects import Subjects

ASYNCAPI = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest (one token or more)."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(got) == len(want)


def allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(matches(p, subject) for p in patterns)


def documented_subjects() -> list[str]:
    channels = json.loads(ASYNCAPI.read_text())["channels"].values()
    return [channel["address"].replace("{sid}", "alice").replace("{wid}", "w1") for channel in channels]


@pytest.mark.parametrize("prefix", ["wa", "acme-1"])
def test_every_public_request_is_allowed_and_nothing_internal(prefix: str) -> None:
    s = Subjects(prefix, "wasim")
    client = tenant_client(s)
    for subject in documented_subjects():
        subject = subject.replace("wa.", f"{prefix}.", 1) if subject.startswith("wa.") else subject
        if subject.startswith(f"{prefix}.evt.") or subject == s.webhook_alert("w1"):  # events
            assert allowed(client.subscribe, subject) and not allowed(client.publish, subject), subject
        elif subject.startswith("wasim."):
            assert not allowed(client.publish, subject), subject  # the simulator: dev stack only
        else:
            assert allowed(client.publish, subject), subject
    internal = [
        s.actor("alice", "logout"), s.outbound("alice"), s.scheduled("alice", "k"), s.expiry("alice"),
        s.dead_letter("alice"), s.heartbeat("n1"), s.node("n1", "release"), s.event("alice", "status"),
        f"$KV.{s.leases_bucket}.own.alice", f"$KV.{s.sends_bucket}.alice.x", f"$O.{s.media_bucket}.C.x",
        f"$JS.API.STREAM.CREATE.{s.events_stream}", f"$JS.API.STREAM.DELETE.{s.events_stream}",
        f"$JS.API.STREAM.UPDATE.{s.events_stream}", f"$JS.API.STREAM.PURGE.{s.events_stream}",
        f"$JS.API.STREAM.MSG.DELETE.{s.events_stream}", f"$JS.API.CONSUMER.DELETE.{s.events_stream}.c",
        f"$JS.API.STREAM.INFO.KV_{s.leases_bucket}", f"$JS.API.CONSUMER.CREATE.{s.outbound_stream}",
        f"$JS.API.STREAM.INFO.{s.dead_letter_stream}", "$SYS.REQ.SERVER.PING", s.sim_wire("send"),
    ]  # fmt: skip
    for subject in internal:
        assert not allowed(client.publish, subject), subject
    for subject in (s.outbound("alice"), s.heartbeat("n1"), f"$KV.{s.leases_bucket}.own.alice", s.sim_wire("send")):
        assert not allowed(client.subscribe, subject), subject


def test_the_dev_stack_adds_the_simulators_controls_only() -> None:
    s = Subjects()
    plain, with_sim = tenant_client(s), tenant_client(s, simulator=True)
    extra = set(with_sim.publish) - set(plain.publish)
    assert all(p.startswith("wasim.") and "_wire" not in p for p in extra)
    for op in ("scan", "inbound", "read", "unlink", "drop", "ban", "faults"):
        assert allowed(with_sim.publish, s.sim("alice", op))
    assert allowed(with_sim.publish, s.sim_stats) and not allowed(with_sim.publish, s.sim_wire("connect"))
