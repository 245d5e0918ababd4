"""The shared protocol vectors: exact bytes in both encodings, and the error each invalid frame gets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from realtime.errors import ClientError
from realtime.protocol.client_events import parse_client_event, peek_ids
from realtime.protocol.codec import Encoding, decode_frame, encode_frame
from tests.vectors.build import build

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> list[dict[str, Any]]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def _base64(value: Any) -> Any:
    """Binary values as the JSON encoding carries them (base64 strings)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _base64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_base64(v) for v in value]
    return value


def _frame(vector: dict[str, Any]) -> bytes | str:
    return bytes.fromhex(vector["frame_hex"]) if "frame_hex" in vector else vector["frame_text"]


def test_committed_vectors_match_the_code() -> None:
    """The committed vector files are exactly what the codec produces now (wire changes are deliberate)."""
    for name, text in build().items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, f"{name} is stale: python -m tests.vectors.build"


@pytest.mark.parametrize("vector", _load("client_events.json"), ids=lambda v: v["name"])
def test_client_event_vectors_round_trip(vector: dict[str, Any]) -> None:
    """A client event encodes to the exact bytes in both encodings, and those bytes parse back to it."""
    event = _untag(vector["event"])
    assert encode_frame(event, Encoding.MSGPACK) == bytes.fromhex(vector["msgpack_hex"])
    assert encode_frame(event, Encoding.JSON) == vector["json"]
    from_msgpack = parse_client_event(
        decode_frame(bytes.fromhex(vector["msgpack_hex"]), Encoding.MSGPACK, max_size=1 << 20)
    )
    from_json = parse_client_event(decode_frame(vector["json"], Encoding.JSON, max_size=1 << 20), base64_binary=True)
    assert from_msgpack == from_json
    assert from_msgpack.to_wire() == event


@pytest.mark.parametrize("vector", _load("server_events.json"), ids=lambda v: v["name"])
def test_server_event_vectors_round_trip(vector: dict[str, Any]) -> None:
    """A server event encodes to the exact bytes in both encodings and decodes back to the same map."""
    event = _untag(vector["event"])
    assert encode_frame(event, Encoding.MSGPACK) == bytes.fromhex(vector["msgpack_hex"])
    assert encode_frame(event, Encoding.JSON) == vector["json"]
    assert decode_frame(bytes.fromhex(vector["msgpack_hex"]), Encoding.MSGPACK, max_size=1 << 20) == event
    assert decode_frame(vector["json"], Encoding.JSON, max_size=1 << 20) == _base64(event)
    assert list(event)[:3] == ["type", "event_id", "seq"]


@pytest.mark.parametrize("vector", _load("invalid_client_frames.json"), ids=lambda v: v["name"])
def test_invalid_frame_vectors_get_their_error(vector: dict[str, Any]) -> None:
    """Each invalid frame raises the client error with the documented code and param, never anything else."""
    encoding = Encoding(vector["encoding"])
    raw = None
    with pytest.raises(ClientError) as caught:
        raw = decode_frame(_frame(vector), encoding, max_size=1 << 20)
        parse_client_event(raw, base64_binary=encoding is Encoding.JSON)
    expected = vector["error"]
    assert caught.value.code == expected["code"]
    assert caught.value.param == expected.get("param")
    if "event_id" in expected:
        assert raw is not None and peek_ids(raw)[0] == expected["event_id"]
