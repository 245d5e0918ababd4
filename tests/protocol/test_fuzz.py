"""Fuzzing the decoders (hypothesis): whatever arrives, only a ClientError can come out, never a crash."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.errors import ClientError
from realtime.protocol.client_events import parse_client_event, peek_ids
from realtime.protocol.codec import Encoding, decode_frame, encode_frame
from tests.vectors.build import client_vectors

LIMIT = 1 << 16
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
TYPES = [
    "session.update",
    "conversation.item.create",
    "response.create",
    "response.cancel",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.truncate",
    "models.status",
    "ping",
    "pong",
    "bogus",
]
events = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        "event_id": values,
        "item": values,
        "session": values,
        "response": values,
        "response_id": values,
        "ts": values,
        "audio": values,
        "item_id": values,
        "audio_end_ms": values,
    },
)


def _decode_and_parse(data: bytes | str, encoding: Encoding) -> None:
    raw: dict[str, Any] | None = None
    try:
        raw = decode_frame(data, encoding, max_size=LIMIT)
        event = parse_client_event(raw, base64_binary=encoding is Encoding.JSON)
        encode_frame(event.to_wire(), encoding)  # whatever parsed must encode back
    except ClientError as exc:
        assert exc.code and exc.message
        if raw is not None:
            eid, typ = peek_ids(raw)
            # what we echo back in an error must itself be encodable
            encode_frame({"event_id": eid, "type": typ, "message": exc.message, "param": exc.param}, encoding)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_msgpack(data: bytes) -> None:
    """Arbitrary bytes on a msgpack link give a client error or a valid event."""
    _decode_and_parse(data, Encoding.MSGPACK)


@FUZZ
@given(st.text(max_size=256))
def test_random_text_json(data: str) -> None:
    """Arbitrary text on a JSON link give a client error or a valid event."""
    _decode_and_parse(data, Encoding.JSON)


@FUZZ
@given(events)
def test_structured_msgpack(event: dict[str, Any]) -> None:
    """Well-formed msgpack maps of any shape give a client error or a valid event."""
    _decode_and_parse(msgpack.packb(event, use_bin_type=True), Encoding.MSGPACK)


@FUZZ
@given(events)
def test_structured_json(event: dict[str, Any]) -> None:
    """Well-formed JSON objects of any shape give a client error or a valid event."""

    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    try:
        text = json.dumps(plain(event))
    except ValueError:
        return
    _decode_and_parse(text, Encoding.JSON)


@FUZZ
@given(st.sampled_from([e.to_wire() for _, e in client_vectors()]), st.integers(0, 400), st.integers(0, 255))
def test_mutated_valid_frames(event: dict[str, Any], position: int, byte: int) -> None:
    """A valid frame with one byte changed, cut short or extended never escapes as a crash."""
    data = bytearray(msgpack.packb(event, use_bin_type=True))
    pos = position % (len(data) + 1)
    _decode_and_parse(bytes(data[:pos]), Encoding.MSGPACK)
    if pos < len(data):
        data[pos] = byte
    _decode_and_parse(bytes(data), Encoding.MSGPACK)
    _decode_and_parse(bytes(data) + bytes([byte]), Encoding.MSGPACK)


def test_deep_nesting_is_a_client_error() -> None:
    """Pathologically deep nesting is refused as malformed, in both encodings."""
    deep_json = "[" * 100_000 + "]" * 100_000
    deep_msgpack = b"\x91" * 60_000 + b"\xc0"
    deep_map = b"\x81\xa1k" * 60_000 + b"\xc0"
    cases = ((deep_json, Encoding.JSON), (deep_msgpack, Encoding.MSGPACK), (deep_map, Encoding.MSGPACK))
    for data, enc in cases:
        with pytest.raises(ClientError) as caught:
            decode_frame(data, enc, max_size=1 << 20)
        assert caught.value.code == "malformed_frame"
