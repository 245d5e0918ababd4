"""The replay buffer keeps msgpack frames; a link that speaks JSON gets them transcoded. Whatever an event
holds, the transcoded frame must be the one `encode_frame` makes for JSON directly."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.protocol import server_events as ev
from realtime.protocol.codec import Encoding, encode_frame, transcode

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),  # the JSON encoder refuses the others
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=6), st.integers(min_value=1, max_value=2**40))
def test_transcoded_frame_is_the_direct_json_frame(fields: dict[str, Any], seq: int) -> None:
    wire = ev.ServerEvent("response.audio.delta", fields).to_wire(seq)
    packed = encode_frame(wire, Encoding.MSGPACK)
    assert isinstance(packed, bytes)
    assert transcode(packed, Encoding.JSON) == encode_frame(wire, Encoding.JSON)
    assert transcode(packed, Encoding.MSGPACK) is packed


def test_audio_and_text_survive_the_trip() -> None:
    """Audio (bytes: base64 in JSON), text with non-ASCII, floats, key order."""
    wire = {"type": "response.audio.delta", "seq": 7, "delta": b"\x00\xff" * 10, "text": "Grüße 👋", "at": 0.1}
    text = transcode(encode_frame(wire, Encoding.MSGPACK), Encoding.JSON)  # type: ignore[arg-type]
    assert isinstance(text, str)
    decoded = json.loads(text)
    assert list(decoded) == ["type", "seq", "delta", "text", "at"]
    assert decoded["delta"] == "AP8A/wD/AP8A/wD/AP8A/wD/AP8=" and decoded["text"] == "Grüße 👋" and decoded["at"] == 0.1
