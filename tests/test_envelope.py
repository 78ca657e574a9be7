"""Strict request decoding and readable errors (contract v1)."""

from __future__ import annotations

import pytest

from contracts.envelope import ContractError, decode
from contracts.queue import DlqSelect
from contracts.sending import SendText
from contracts.sessions import Empty, PairByCode, PairByQr, PairRequest, SessionCreate


def error_of(body: bytes, type_: type) -> str:
    with pytest.raises(ContractError) as info:
        decode(body, type_)
    assert info.value.code == "invalid_request"
    return info.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id":"1","to":"abc","text":"hi"}', "to: expected digits of an E.164 number (6-15 digits), or a full JID, got 'abc'"),
        (b'{"id":"1","to":"15550001111","text":""}', "text: too short"),
        (b'{"id":"1","to":"15550001111","text":"' + b"x" * 65537 + b'"}', "text: too long: at most 65536 characters allowed, got 65537"),
        (b'{"id":"' + b"i" * 129 + b'","to":"15550001111","text":"x"}', "id: too long: at most 128"),
        (b'{"id":5,"to":"15550001111","text":"x"}', "id: expected str, got int 5"),
        (b'{"to":"15550001111","text":"x"}', "id: required field is missing"),
        (b'{"id":"1","to":"15550001111","text":"x","send_at":"2026-01-01T00:00:00"}', "send_at: expected `datetime` with a timezone"),
        (b"{nope", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"", "empty body"),
        (b"[1,2]", "body: expected object, got array"),
    ],
)
def test_send_errors_name_the_field(body: bytes, message: str) -> None:
    assert message in error_of(body, SendText)


def test_valid_sends_decode_numbers_and_jids() -> None:
    assert decode(b'{"id":"a","to":"15550001111","text":"hi"}', SendText).to == "15550001111"
    assert decode(b'{"id":"a","to":"120363@g.us","text":"hi","extra":1}', SendText).to == "120363@g.us"


def test_session_ids_and_pair_methods() -> None:
    assert "session_id: expected a session id" in error_of(b'{"session_id":"a b"}', SessionCreate)
    assert "session_id: expected a session id" in error_of(b'{"session_id":"' + b"a" * 65 + b'"}', SessionCreate)
    assert decode(b'{"method":"qr"}', PairRequest) == PairByQr()
    assert decode(b'{"method":"code","phone":"15551234567"}', PairRequest) == PairByCode(phone="15551234567")
    assert "method: invalid value 'sms'" in error_of(b'{"method":"sms"}', PairRequest)
    assert "phone: expected digits" in error_of(b'{"method":"code","phone":"+1"}', PairRequest)


def test_json_nested_too_deeply_is_an_invalid_request_not_an_internal_error() -> None:
    deep = b'{"id":"1","to":"15550001111","text":"x","extra":' + b'{"a":' * 100_000
    assert "nested too deeply" in error_of(deep, SendText)
    assert "nested too deeply" in error_of(b'{"a":' * 100_000, Empty)


def test_a_dead_letter_seq_beyond_what_a_stream_can_hold_is_refused() -> None:
    assert decode(b'{"seq": 9223372036854775807}', DlqSelect).seq == 2**63 - 1
    assert "seq: expected `int` <= 9223372036854775807" in error_of(b'{"seq": 9223372036854775808}', DlqSelect)
    assert "seq" in error_of(b'{"seq": 99999999999999999999999}', DlqSelect)
