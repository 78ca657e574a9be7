"""The pairing of a session as HTTP shows it: the state and the QR code (or pair code) of
its latest status event, and the QR code as a PNG or SVG image. Plain code, no I/O."""

from __future__ import annotations

import io
from datetime import datetime

import msgspec
import segno

from contracts.events import StatusEvent
from contracts.types import SessionState

# Modules per pixel, and the quiet zone: a code a phone camera reads off a screen at once.
SCALE = 8
BORDER = 4


class Pairing(msgspec.Struct, omit_defaults=True, kw_only=True):
    """`GET /v1/sessions/<sid>/qr`: poll it after `pair` until `state` is `connected`."""

    session_id: str
    state: SessionState
    at: datetime
    # While pairing by QR: the code to show (it rotates: poll again).
    qr: str | None = None
    # While pairing by phone number: the code to type on the phone.
    pair_code: str | None = None
    reason: str | None = None


def pairing(status: StatusEvent) -> Pairing:
    return Pairing(
        session_id=status.session_id,
        state=status.state,
        at=status.at,
        qr=status.qr if status.state == "pairing" else None,
        pair_code=status.pair_code if status.state == "pairing" else None,
        reason=status.reason,
    )


def png(code: str) -> bytes:
    out = io.BytesIO()
    segno.make_qr(code).save(out, kind="png", scale=SCALE, border=BORDER)
    return out.getvalue()


def svg(code: str) -> bytes:
    out = io.BytesIO()
    segno.make_qr(code).save(out, kind="svg", scale=SCALE, border=BORDER, xmldecl=False)
    return out.getvalue()
