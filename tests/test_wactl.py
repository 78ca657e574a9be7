"""wactl, run as a real subprocess (`python -m services.wactl`) against real services."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import segno
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError

from contracts.alerts import AlertEvent
from contracts.events import MessageEvent, StatusEvent
from contracts.types import SessionState
from services.api_keys.store import ApiKeyStore
from services.common.bus import EventPublisher, new_id
from services.common.config import Settings
from services.credentials.vault import CredentialVault, Keyring, new_key_entry
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import REPO_ROOT, settings_env
from services.devstack.scenarios import pair, start_sending_stack
from services.devstack.servers import free_port
from services.wactl import render

QR_GLYPHS = set("\u2580\u2584\u2588")
pytestmark = pytest.mark.timeout(60)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Wactl:
    """A running `wactl` whose output can be read line by line while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, settings: Settings, *args: str, **env: Any) -> Wactl:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.wactl",
            *args,
            cwd=REPO_ROOT,
            env=settings_env(settings, **env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def line_matching(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Read output until a line matches `pattern`."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"wactl ended before printing {pattern!r}: {self.lines}"
                self.lines.append(raw.decode().rstrip("\n"))
                if match := re.search(pattern, self.lines[-1]):
                    return match

    async def finish(self, timeout: float = 15.0) -> Result:
        async with asyncio.timeout(timeout):
            out, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return Result(self.proc.returncode, "\n".join([*self.lines, out.decode()]), err.decode())


async def wactl(settings: Settings, *args: str, **env: Any) -> Result:
    return await (await Wactl.start(settings, *args, **env)).finish()


async def answering(nc: NatsClient, *subjects: str) -> None:
    """Wait until a service answers each subject (with any envelope)."""
    for subject in subjects:

        async def answers(subject: str = subject) -> bool:
            try:
                await call(nc, subject, {}, timeout=2)
            except (NoRespondersError, TimeoutError):
                return False
            return True

        await wait_until(answers, timeout=30, interval=0.1, what=f"an answer on {subject}")


def ok(result: Result) -> str:
    assert result.code == 0, f"exit {result.code}: {result.err or result.out}"
    assert "Traceback" not in result.err
    return result.out


# ---------------------------------------------------------------------- no services


async def test_unreachable_nats_is_a_clean_error(settings) -> None:
    result = await wactl(settings, "session", "list", nats_url=f"nats://127.0.0.1:{free_port()}")
    assert result.code == 3
    assert (
        result.err.startswith("cannot connect to NATS at nats://127.0.0.1:") and "Traceback" not in result.err
    )
    # A request nobody answers, and a malformed argument, are clean errors too.
    result = await wactl(settings, "session", "get", "alice")
    assert result.code == 3 and "no service answers" in result.err and "session-actor" in result.err
    result = await wactl(settings, "send", "alice", "123", "hi")
    assert result.code == 1
    assert result.err.startswith("error invalid_request: to: expected digits of an E.164 number")


async def test_events_tail_from_start_and_from_now(settings, nc) -> None:
    publisher = EventPublisher(nc.jetstream(), settings.subjects)

    async def status(sid: str, state: SessionState) -> None:
        await publisher.publish(
            StatusEvent(event_id=new_id(), session_id=sid, at=datetime.now(UTC), state=state)
        )

    await status("ann", "created")
    await status("bob", "created")
    await publisher.publish(
        MessageEvent(
            event_id=new_id(),
            session_id="ann",
            at=datetime.now(UTC),
            message_id="M1",
            chat="15550001111@s.whatsapp.net",
            sender="15550001111@s.whatsapp.net",
            from_me=False,
            type="text",
            timestamp=datetime.now(UTC),
            text="hello there",
        )
    )
    out = ok(await wactl(settings, "events", "--from-start", "--session", "ann", "--count", "2"))
    lines = out.splitlines()
    assert len(lines) == 2
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z  ann  status    state=created$", lines[0]), lines[0]
    assert "message   from=15550001111@s.whatsapp.net" in lines[1] and 'text="hello there"' in lines[1]

    banned = AlertEvent(event_id=new_id(), session_id="bob", at=datetime.now(UTC), kind="banned", severity="critical",
                        message="temporary_ban: code 402, lifts in 60s", state="banned")  # fmt: skip
    await publisher.publish(banned)
    alert = ok(await wactl(settings, "events", "--from-start", "--kind", "alert", "--count", "1"))
    assert alert.rstrip().endswith('bob  alert     kind=banned severity=critical message="temporary_ban: code 402, lifts in 60s"')

    out = ok(await wactl(settings, "events", "--from-start", "--kind", "status", "--count", "2", "--json"))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["event"]["session_id"]) for r in rows] == [("status", "ann"), ("status", "bob")]
    assert rows[0]["subject"] == settings.subjects.event("ann", "status")

    # From now on (the default): only what is published after it started.
    tail = await Wactl.start(settings, "events", "--kind", "status", "--count", "1")
    while tail.proc.returncode is None:
        await status("cid", "connecting")
        try:
            await asyncio.wait_for(asyncio.shield(tail.proc.wait()), 0.3)
        except TimeoutError:
            pass
    out = ok(await tail.finish())
    assert out.strip().endswith("cid  status    state=connecting") and len(out.strip().splitlines()) == 1

    # Without --count it runs until Ctrl-C, which ends it quietly.
    tail = await Wactl.start(settings, "events", "--session", "dan")
    printed = asyncio.create_task(tail.line_matching(r"dan  status"))
    while not printed.done():
        await status("dan", "connecting")
        await asyncio.wait([printed], timeout=0.3)
    await printed
    tail.proc.send_signal(signal.SIGINT)
    result = await tail.finish()
    assert (result.code, result.err) == (130, "")


def store_with_device(path: Path, jid: str) -> bytes:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sim_device (jid TEXT)")
    db.execute("INSERT INTO sim_device VALUES (?)", (jid,))
    db.commit()
    db.close()
    return path.read_bytes()


async def test_creds_rotate_key_reseals_under_the_new_key(settings, db, tmp_path) -> None:
    old, new = new_key_entry("old"), new_key_entry("new")
    vault = CredentialVault(db, Keyring.parse(old), "sim_device")
    first = await vault.save("ann", "t1", store_with_device(tmp_path / "a1.db", "1@s.whatsapp.net"))
    await vault.save("ann", "t1", store_with_device(tmp_path / "a2.db", "2@s.whatsapp.net"), last=first)
    await vault.save("bob", "t1", store_with_device(tmp_path / "b.db", "3@s.whatsapp.net"))

    out = ok(await wactl(settings, "creds", "rotate-key", vault_keys=f"{new},{old}"))
    assert out.strip() == "re-sealed 3 credential version(s) of 2 session(s) with key 'new'"

    only_new = CredentialVault(db, Keyring.parse(new), "sim_device")
    for sid in ("ann", "bob"):
        restored = await only_new.restore(sid)
        assert (
            restored is not None and restored.skipped == [] and restored.version == (2 if sid == "ann" else 1)
        )
        assert {v["key_id"] for v in await only_new.versions(sid)} == {"new"}
    # Nothing left to do; a keyring without the old key is a clean error, not a traceback.
    assert "re-sealed 0" in ok(await wactl(settings, "creds", "rotate-key", vault_keys=f"{new},{old}"))
    await vault.save("cid", "t1", store_with_device(tmp_path / "c.db", "4@s.whatsapp.net"))
    result = await wactl(settings, "creds", "rotate-key", vault_keys=new)
    assert result.code == 1 and "rotation stopped" in result.err and "'old'" in result.err
    assert "Traceback" not in result.err


def test_qr_rendering_is_the_symbol_module_for_module() -> None:
    code = "2@" + "A" * 120 + ",Zm9vYmFy,YmF6cXV4,1"
    matrix = [[bool(b) for b in row] for row in segno.make(code, micro=False).matrix_iter(border=4)]

    # Colour mode: U+2580 with the top module as foreground, the bottom one as background.
    modules: list[list[bool]] = []
    for line in render.qr(code, ansi=True).splitlines():
        top: list[bool] = []
        bottom: list[bool] = []
        fg = bg = None
        for match in re.finditer(r"\x1b\[38;5;(\d+);48;5;(\d+)m|(\u2580)|\x1b\[0m", line):
            if match[1]:
                fg, bg = match[1] == "16", match[2] == "16"
            elif match[3]:
                top.append(bool(fg))
                bottom.append(bool(bg))
        modules += [top, bottom]
    assert modules[: len(matrix)] == matrix
    assert all(not dark for row in modules[len(matrix) :] for dark in row)  # padding row is light

    # Text mode (segno's compact form): light modules drawn, dark ones blank.
    halves = {" ": (True, True), "\u2580": (False, True), "\u2584": (True, False), "\u2588": (False, False)}
    modules = []
    for line in render.qr(code, ansi=False).splitlines():
        modules += [[halves[c][0] for c in line], [halves[c][1] for c in line]]
    assert modules[: len(matrix)] == matrix


def test_screen_replaces_the_previous_qr_code_on_a_terminal() -> None:
    out = io.StringIO()
    screen = render.Screen(out, interactive=True)
    screen.line("pairing")
    screen.show_qr("first", "caption")
    height = render.qr("first", ansi=True).count("\n") + 2  # the code and its caption
    screen.line("still pairing")
    screen.show_qr("second", "caption")
    assert out.getvalue().count(f"\x1b[{height + 1}F\x1b[J") == 1
    assert out.getvalue().startswith("pairing\n")


def test_what_a_contact_sends_cannot_drive_the_terminal() -> None:
    at = datetime(2025, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)
    event = MessageEvent(
        event_id="e",
        session_id="ann",
        at=at,
        message_id="M1",
        chat="1@s.whatsapp.net",
        sender="1@s.whatsapp.net",
        from_me=False,
        type="text",
        timestamp=at,
        text='two\nlines \x1b[2J"quoted"',
    )
    line = render.event_line("message", event)
    assert line == (
        "2025-01-31T12:00:00.123Z  ann  message   from=1@s.whatsapp.net chat=1@s.whatsapp.net id=M1 "
        'text="two\\nlines \\x1b[2J\\"quoted\\""'
    )
    table = render.message_table([event])
    assert len(table.splitlines()) == 2 and "\x1b" not in table


# ------------------------------------------------------------------- with services


async def test_history_queries_and_an_error_reply(settings, nc, stack) -> None:
    stack.start("persistence")
    publisher = EventPublisher(nc.jetstream(), settings.subjects)
    at = datetime.now(UTC)
    for n in range(3):
        await publisher.publish(
            MessageEvent(
                event_id=new_id(),
                session_id="ann",
                at=at,
                message_id=f"M{n}",
                chat="15550001111@s.whatsapp.net",
                sender="15550001111@s.whatsapp.net",
                from_me=False,
                type="text",
                timestamp=at,
                text=f"message {n}",
            )
        )
    subject = settings.subjects.history("ann", "messages")

    async def stored() -> bool:
        try:
            return len((await call_ok(nc, subject, {}, timeout=2))["messages"]) == 3
        except Exception:
            return False

    await wait_until(stored, timeout=20, what="persistence storing the messages")
    out = ok(await wactl(settings, "history", "messages", "ann", "--limit", "2"))
    lines = out.splitlines()
    assert lines[0].split() == ["TIME", "CHAT", "FROM", "MESSAGE", "ID", "MESSAGE"]
    assert "M2" in lines[1] and "message 2" in lines[1] and "M1" in lines[2]
    cursor = re.fullmatch(r"more: --before (\S+)", lines[3])
    assert cursor is not None
    page = json.loads(
        ok(await wactl(settings, "history", "messages", "ann", "--before", cursor[1], "--json"))
    )
    assert [m["message_id"] for m in page["messages"]] == ["M0"] and "next" not in page

    result = await wactl(settings, "history", "messages", "ann", "--before", "nonsense")
    assert result.code == 1
    assert result.err.strip() == "error invalid_request: before: not a cursor returned by this API"
    assert result.out == ""


async def test_session_create_list_get_delete(settings, nc, stack) -> None:
    stack.start("session-actor")
    await answering(nc, settings.subjects.session_list)
    out = ok(await wactl(settings, "session", "create", "ann", "--label", "front desk"))
    assert "session  ann" in out and "label    front desk" in out and "state    created" in out
    table = ok(await wactl(settings, "session", "list")).splitlines()
    assert table[0].split()[:2] == ["SESSION", "STATE"] and table[1].split()[:2] == ["ann", "created"]
    got = json.loads(ok(await wactl(settings, "session", "get", "ann", "--json")))
    assert (got["session_id"], got["label"], got["state"]) == ("ann", "front desk", "created")

    # Error replies: the code and message on stderr, nothing on stdout, exit status 1.
    result = await wactl(settings, "session", "create", "ann")
    assert (result.code, result.out) == (1, "") and result.err.startswith("error conflict: ")
    result = await wactl(settings, "session", "get", "bob")
    assert (result.code, result.out, result.err) == (1, "", "error not_found: no session 'bob'\n")

    result = await wactl(settings, "--timeout", "5", "session", "delete", "ann")
    assert ok(result).strip() == "deleted ann"
    result = await wactl(settings, "session", "get", "ann")
    assert (result.code, result.err) == (1, "error not_found: no session 'ann'\n")
    assert ok(await wactl(settings, "session", "list")).strip() == "no sessions"


async def test_pair_shows_the_qr_code_and_ends_when_scanned(settings, nc, stack) -> None:
    stack.start("wa-sim")
    stack.start("session-actor")
    await answering(nc, settings.subjects.session_list, settings.subjects.sim_stats)
    ok(await wactl(settings, "session", "create", "ann"))
    pairing = await Wactl.start(settings, "session", "pair", "ann", "--timeout", "30")
    await pairing.line_matching(r"Scan with WhatsApp")
    qr_lines = [line for line in pairing.lines if set(line) & QR_GLYPHS]
    assert len(qr_lines) > 20 and len({len(line) for line in qr_lines}) == 1  # a square block of modules

    assert ok(await wactl(settings, "sim", "scan", "ann")).startswith("scanned: linked as ")
    result = await pairing.finish()
    assert ok(result).splitlines()[-1].startswith("connected: ann is linked as ")

    # Pairing by code: the code is shown instead of QR codes.
    assert "state    logged_out" in ok(await wactl(settings, "session", "logout", "ann"))
    by_code = await Wactl.start(
        settings, "session", "pair", "ann", "--phone", "15551234567", "--timeout", "20"
    )
    # The reply carries the code, so it is the first line (status lines follow it).
    first = await by_code.line_matching(r"^(pairing code: \S+|ann: )", timeout=15)
    assert first[1].startswith("pairing code"), first
    assert not [line for line in by_code.lines if set(line) & QR_GLYPHS]
    ok(await wactl(settings, "sim", "scan", "ann"))
    assert ok(await by_code.finish()).splitlines()[-1].startswith("connected: ann is linked as ")


async def test_send_wait_follows_the_send_until_the_state_asked_for(settings, nc, stack) -> None:
    for service in ("wa-sim", "session-actor", "outbound-queue", "persistence"):
        stack.start(service)
    s = settings.subjects
    await answering(nc, s.session_list, s.sim_stats, s.send("probe"), s.history("probe", "status"))
    tap = await EventTap(nc, settings).start()
    await pair(nc, settings, tap, "ann")

    # As the README shows it: queued -> sent -> delivered, then done (nobody reads it here).
    plain = ok(await wactl(settings, "send", "ann", "15550002222", "hi there", "--id", "note-1", "--wait"))
    assert re.findall(r"^queued note-1$|state=(\w+)", plain, re.M) == ["", "sent", "delivered"]
    sent_only = ok(await wactl(settings, "send", "ann", "15550002222", "bye", "--wait", "--until", "sent"))
    assert re.findall(r"state=(\w+)", sent_only) == ["sent"]

    send = await Wactl.start(
        settings, "send", "ann", "15550001111", "hello", "--id", "order-1", "--wait", "--until", "read"
    )
    await send.line_matching(r"^queued order-1$")
    sent = await send.line_matching(r"  ann  outbound  id=order-1 state=sent message_id=(\S+)$")
    await send.line_matching(r"  ann  outbound  id=order-1 state=delivered message_id=")
    assert ok(await wactl(settings, "sim", "read", "ann", sent[1])).strip() == f"read {sent[1]}"
    out = ok(await send.finish())
    assert re.findall(r"^queued order-1$|state=(\w+)", out, re.M) == ["", "sent", "delivered", "read"]

    # The same id again: a duplicate, not sent again; with --wait its states come from history.
    again = ok(await wactl(settings, "send", "ann", "15550001111", "hello", "--id", "order-1"))
    assert again.strip() == "queued order-1 (duplicate: accepted before, sent at most once)"

    async def recorded() -> bool:
        record = await call_ok(nc, s.history("ann", "outbound"), {"id": "order-1"})
        return record["state"] == "read"

    await wait_until(recorded, what="persistence recording the read send")
    again = ok(
        await wactl(settings, "send", "ann", "15550001111", "hello", "--id", "order-1", "--wait", "--until", "read")
    )
    assert again.splitlines()[0].endswith("(duplicate: accepted before, sent at most once)")
    assert re.findall(r"state=(\w+)", again) == ["sent", "delivered", "read"]
    # The history names each send's recipient.
    history = ok(await wactl(settings, "history", "outbound", "ann")).splitlines()
    assert re.search(r" order-1 +15550001111 +read ", next(line for line in history if "order-1" in line))
    assert re.search(r" note-1 +15550002222 +delivered ", next(line for line in history if "note-1" in line))
    stats = json.loads(ok(await wactl(settings, "sim", "stats", "--session", "ann", "--json")))
    assert stats["sessions"]["ann"]["received"]["order-1"] == 1
    await tap.stop()


async def test_policy_queue_and_dead_letters(settings, nc, stack) -> None:
    for service in ("wa-sim", "session-actor", "outbound-queue"):
        stack.start(service)
    s = settings.subjects
    await answering(nc, s.session_list, s.sim_stats, s.dlq("list"))
    tap = await EventTap(nc, settings).start()
    await pair(nc, settings, tap, "ops")

    shown = ok(
        await wactl(
            settings, "session", "policy", "ops", "--set", '{"pacing": {"per_minute": 1, "burst": 1}}'
        )
    )
    assert re.search(r"^pacing +1/min, burst 1$", shown, re.M)
    bad = await wactl(settings, "session", "policy", "ops", "--set", '{"pacing": {"per_minute": -1}}')
    assert bad.code == 1 and "per_minute" in bad.err
    # One send goes at once (burst 1), the next waits a minute in the queue.
    for n in (1, 2):
        ok(await wactl(settings, "send", "ops", "15550001111", f"m{n}", "--id", f"m{n}"))
    await tap.wait_for("ops", "outbound", lambda e: e["id"] == "m1" and e["state"] == "sent", 15)
    stats = ok(await wactl(settings, "queue", "stats", "ops"))
    assert re.search(r"^queued +1$", stats, re.M) and re.search(r"^oldest +\d+\.\d s$", stats, re.M)
    reset = ok(await wactl(settings, "session", "policy", "ops", "--reset"))  # the one in force now
    assert re.search(rf"^pacing +{settings.pacing_per_minute:g}/min, burst {settings.pacing_burst}$", reset, re.M)
    await tap.wait_for("ops", "outbound", lambda e: e["id"] == "m2" and e["state"] == "sent", 15)

    # Every attempt fails at WhatsApp's servers: retried, then dead-lettered.
    await call_ok(nc, s.sim("ops", "faults"), {"send_errors": settings.send_max_attempts})
    ok(await wactl(settings, "send", "ops", "15550001111", "doomed", "--id", "doomed"))
    await tap.wait_for("ops", "outbound", lambda e: e["id"] == "doomed" and e["state"] == "failed", 45)
    listed = ok(await wactl(settings, "dlq", "list", "--session", "ops"))
    row = next(line for line in listed.splitlines() if " doomed " in line)
    assert " ops " in row and f" {settings.send_max_attempts} " in row
    seq = row.split()[0]
    retried = ok(await wactl(settings, "dlq", "retry", seq))
    assert re.search(rf"^{seq} +doomed +doomed~r{seq}$", retried, re.M)
    await tap.wait_for("ops", "outbound", lambda e: e["id"] == f"doomed~r{seq}" and e["state"] == "sent", 30)
    assert ok(await wactl(settings, "dlq", "list")).strip() == "no dead letters"
    usage = await wactl(settings, "dlq", "purge")
    assert usage.code == 1 and "exactly one of SEQ, --session or --all" in usage.err
    assert ok(await wactl(settings, "dlq", "purge", "--all")).strip() == "purged 0"
    await tap.stop()


def test_messages_of_every_kind_read_in_a_line_and_a_table_cell() -> None:
    at = datetime(2025, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)

    def message(**fields: Any) -> MessageEvent:
        base: dict[str, Any] = {"event_id": "e", "session_id": "ann", "at": at, "message_id": "M1", "chat": "1@s.whatsapp.net",
                                "sender": "1@s.whatsapp.net", "from_me": False, "type": "text", "timestamp": at}  # fmt: skip
        return msgspec.convert({**base, **fields}, MessageEvent)

    photo = message(type="image", text="look", quoted={"message_id": "Q1"},
                    media={"media_id": "ann/M1", "mime": "image/png", "size": 102_400, "sha256": "ab" * 32})  # fmt: skip
    assert render.message_summary(photo) == "(reply to Q1) <image 102,400 bytes (100 KiB) ann/M1> look"
    line = render.event_fields(photo)
    assert "type=image reply_to=Q1 media_id=ann/M1 mime=image/png" in line and 'size="102,400 bytes (100 KiB)"' in line
    lost = message(type="voice", media={"mime": "audio/ogg", "size": 5, "error": {"code": "media_download_failed", "message": "gave up"}})
    assert render.message_summary(lost) == "<voice: media_download_failed>"
    assert 'media_error="media_download_failed: gave up"' in render.event_fields(lost)
    cases = [
        (message(type="reaction", reaction={"target_id": "M0", "emoji": ""}), "<reaction removed on M0>", "target=M0 emoji=(removed)"),
        (message(type="edit", edit={"target_id": "M0", "text": "fixed"}), "<edit of M0> fixed", "target=M0 new_text=fixed"),
        (message(type="revoke", revoke={"target_id": "M0"}), "<revoke of M0>", "target=M0"),
        (message(type="location", location={"lat": 52.5, "lon": 13.4, "name": "Shop"}), "<location 52.5,13.4> Shop", "lat=52.5 lon=13.4 name=Shop"),
        (message(type="contact", contact={"name": "Ada", "vcard": "BEGIN:VCARD\nEND:VCARD"}), "<contact Ada>", 'contact=Ada vcard="2 lines"'),
        (message(type="poll", poll={"name": "When?", "options": ["Mon", "Tue"]}), "<poll When?: Mon / Tue>", 'poll=When? options="Mon / Tue"'),
        (message(type="unknown"), "<unknown>", "type=unknown"),
    ]  # fmt: skip
    for event, summary, parts in cases:
        assert render.message_summary(event) == summary
        assert parts in render.event_fields(event)


async def test_files_reactions_and_read_marks_from_the_command_line(settings, nc, stack, tmp_path) -> None:
    tap = await start_sending_stack(stack, nc, settings, ["ann"])
    photo = tmp_path / "damage.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 50)

    sent = ok(await wactl(settings, "sim", "inbound", "ann", "--from", "15550002222", "--file", str(photo), "--text", "look"))
    message_id = sent.split()[-1]
    event = await tap.wait_for("ann", "message", lambda e: e["message_id"] == message_id)
    media_id = event["media"]["media_id"]
    line = ok(await wactl(settings, "events", "--from-start", "--session", "ann", "--kind", "message", "--count", "1"))
    assert f"type=image media_id={media_id} mime=image/png" in line and "text=look" in line

    async def listed() -> str:
        out = ok(await wactl(settings, "history", "messages", "ann"))
        return out if media_id in out else ""

    table = await wait_until(listed, what="the message in history")
    assert f"<image 12,808 bytes (12.5 KiB) {media_id}> look" in table
    saved = tmp_path / "saved.png"
    result = await wactl(settings, "media", "get", "ann", media_id, "-o", str(saved))
    assert result.code == 0 and result.err.strip() == f"saved {media_id} (image/png, 12,808 bytes (12.5 KiB)) to {saved}"
    assert saved.read_bytes() == photo.read_bytes()
    other = await wactl(settings, "media", "get", "bob", media_id, "-o", str(saved))
    assert (other.code, other.err.strip()) == (1, f"{media_id!r} is not a file of session 'bob'")
    missing = await wactl(settings, "media", "get", "ann", "ann/nothing", "-o", str(saved))
    assert missing.code == 1 and "no file 'ann/nothing'" in missing.err

    react = ok(await wactl(settings, "send", "ann", "15550002222", "👍", "--react", message_id, "--id", "r1"))
    assert react.strip() == "queued r1"
    await tap.wait_for("ann", "outbound", lambda e: e["id"] == "r1" and e["state"] == "sent")
    assert ok(await wactl(settings, "session", "read", "ann", "15550002222", message_id)).strip() == (
        f"marked read in 15550002222@s.whatsapp.net: {message_id}"
    )
    stats = json.loads(ok(await wactl(settings, "sim", "stats", "--session", "ann", "--json")))["sessions"]["ann"]
    assert stats["kinds"] == {"reaction": 1, "read": 1} and stats["targets"] == {"r1": message_id}
    both = await wactl(settings, "send", "ann", "15550002222", "x", "--react", message_id, "--revoke", message_id)
    assert both.code == 1 and "give at most one of --react, --edit, --revoke" in both.err
    await tap.stop()


async def test_api_keys_and_webhook_subscriptions_from_the_command_line(settings, nc, db, stack) -> None:
    made = await wactl(settings, "apikey", "create", "--label", "crm")
    token = ok(made).strip()
    assert token.startswith("wak_") and "shown once" in made.err
    key_id = token.split("_")[1]
    assert await ApiKeyStore(db).verify(token, settings.tenant) is not None
    listed = ok(await wactl(settings, "apikey", "list"))
    assert re.search(rf"^{key_id}\s+default\s+crm\s+\S+Z\s+-$", listed, re.M), listed
    assert ok(await wactl(settings, "apikey", "revoke", key_id)).strip() == f"revoked {key_id}"
    assert await ApiKeyStore(db).verify(token, settings.tenant) is None
    assert (await wactl(settings, "apikey", "revoke", "0123456789ab")).code == 1

    stack.start("http-gateway", webhook_private_urls=True)
    await answering(nc, settings.subjects.webhook_list)
    created = ok(await wactl(settings, "webhook", "create", "http://127.0.0.1:9/in", "--session", "ann", "--kind", "message"))
    wid = re.search(r"^webhook\s+(wh_[0-9a-f]{12})$", created, re.M)
    assert wid is not None and re.search(r"^secret\s+whsec_", created, re.M), created
    table = ok(await wactl(settings, "webhook", "list"))
    assert re.search(rf"^{wid[1]}\s+active\s+0\s+-\s+http://127.0.0.1:9/in\s+ann\s+message$", table, re.M), table
    assert "paused by request" in ok(await wactl(settings, "webhook", "pause", wid[1]))
    assert re.search(r"^state\s+active$", ok(await wactl(settings, "webhook", "resume", wid[1])), re.M)
    assert ok(await wactl(settings, "webhook", "delete", wid[1])).strip() == f"deleted {wid[1]}"
    gone = await wactl(settings, "webhook", "get", wid[1])
    assert gone.code == 1 and gone.err.startswith("error not_found: webhook subscription")
    bad = await wactl(settings, "webhook", "create", "ftp://example.com/x")
    assert bad.code == 1 and "url: expected an http:// or https:// URL" in bad.err
