"""The two wire encodings of the same events, chosen per connection by websocket subprotocol.

msgpack in binary frames (the default): binary payloads are raw `bin` values.
JSON in text frames (for wscat and debugging): binary payloads are base64 strings.
Pure functions; decode never raises anything but ClientError subclasses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

import msgpack

from realtime.errors import MalformedFrame, MessageTooLarge, WrongFrameType

PROTOCOL_VERSION = "v1"


class Encoding(Enum):
    MSGPACK = "msgpack"
    JSON = "json"

    @property
    def subprotocol(self) -> str:
        return f"realtime.{PROTOCOL_VERSION}.{self.value}"

    @property
    def binary_frames(self) -> bool:
        return self is Encoding.MSGPACK


SUBPROTOCOLS: dict[str, Encoding] = {e.subprotocol: e for e in Encoding}


def choose_encoding(offered: list[str]) -> Encoding | None:
    """Pick the encoding from the client's subprotocol list (its order is its preference).

    No subprotocol offered means msgpack; offers that name none of ours get None (refuse the handshake).
    """
    if not offered:
        return Encoding.MSGPACK
    for name in offered:
        enc = SUBPROTOCOLS.get(name.strip())
        if enc is not None:
            return enc
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_frame(data: bytes | str, encoding: Encoding, *, max_size: int) -> dict[str, Any]:
    """Bytes or text of one websocket message -> a map. Raises MalformedFrame, WrongFrameType, MessageTooLarge."""
    if encoding is Encoding.MSGPACK:
        if not isinstance(data, bytes | bytearray):
            raise WrongFrameType("this connection speaks msgpack in binary frames; got a text frame")
        if len(data) > max_size:
            raise MessageTooLarge(f"message of {len(data)} bytes exceeds the limit of {max_size}")
        try:
            obj = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                use_list=True,
                timestamp=0,
            )  # unpackb bounds every string/array/map length by len(data), already checked above
        except (ValueError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, StackError, bad UTF-8
            raise MalformedFrame("message is not valid msgpack") from exc
    else:
        if not isinstance(data, str):
            raise WrongFrameType("this connection speaks JSON in text frames; got a binary frame")
        if len(data) > max_size:
            raise MessageTooLarge(f"message of {len(data)} characters exceeds the limit of {max_size}")
        try:
            obj = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise MalformedFrame("message is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise MalformedFrame("message must be an object (a map with a 'type' field)")
    return obj


def _binary_as_base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not part of the protocol")


# One encoder for every frame; bytes (the only non-JSON type we send) become base64 via `default`.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_binary_as_base64)
_PACKER_OPTIONS = {"use_bin_type": True}


def encode_frame(event: Mapping[str, Any], encoding: Encoding) -> bytes | str:
    """A map -> bytes (msgpack) or text (JSON). Key order is kept, so output is deterministic."""
    if encoding is Encoding.MSGPACK:
        return msgpack.packb(event, **_PACKER_OPTIONS)
    return _JSON.encode(event)


def transcode(packed: bytes, encoding: Encoding) -> bytes | str:
    """A frame `encode_frame` made as msgpack -> the same frame in `encoding`, as `encode_frame` would have
    made it from the map (msgpack keeps bytes apart from strings, key order, and floats exactly)."""
    if encoding is Encoding.MSGPACK:
        return packed
    return encode_frame(msgpack.unpackb(packed, raw=False, strict_map_key=False), encoding)
