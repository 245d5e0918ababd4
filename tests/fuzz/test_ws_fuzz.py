"""Fuzzing a real running server over real websockets: mutated messages and malformed frames.

Each mutated message must get the error event the local decoder predicts (or, when it is a valid event,
only documented events), each malformed frame a documented close code; the server must never fail
(1011, a traceback in its log) or hang, and a well-behaved session on the same server must still
complete a turn afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from realtime.client import RealtimeClient
from realtime.errors import ClientError
from realtime.protocol.client_events import Limits, parse_client_event
from realtime.protocol.codec import Encoding, decode_frame, encode_frame
from tests.conftest import ServerFactory
from tests.fuzz.harness import documented_close_codes, documented_error_codes
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess
from tests.vectors.build import client_vectors

SEED = int(os.environ.get("FUZZ_SEED", "20261125"))
MESSAGES_PER_ENCODING = 150
RAW_FRAMES = 60
SERVER_LIMITS = Limits()  # the server's defaults (max_text_chars 32 000, audio ≤ 1 MiB)
MAX_MESSAGE_SIZE = 1 << 20
MARKER_BASE = 7_000_000_000
FIELD_NAMES = ["event_id", "session", "item", "response", "response_id", "audio", "ts", "item_id", "audio_end_ms", "k"]
ERRORS_PER_LINK = 35  # stay under the invalid-message burst (50), so every answer can be checked


@pytest.fixture(scope="module")
def fuzzed(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off")


# ---- inputs -----------------------------------------------------------------------------------------


def _seeds(encoding: Encoding) -> list[bytes | str]:
    return [encode_frame(event.to_wire(), encoding) for _, event in client_vectors()]


def _mutate(rng: random.Random, frame: bytes | str, others: list[bytes | str]) -> bytes | str:
    """One mutation of a frame: flip, insert, delete, cut, splice, or a fresh random value."""
    data = bytearray(frame.encode() if isinstance(frame, str) else frame)
    how = rng.randrange(7)
    if how == 0 and data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == 1:
        pos = rng.randint(0, len(data))
        data[pos:pos] = rng.randbytes(rng.randint(1, 8))
    elif how == 2 and data:
        del data[rng.randrange(len(data))]
    elif how == 3:
        data = data[: rng.randint(0, len(data))]
    elif how == 4:
        other = rng.choice(others)
        other_b = other.encode() if isinstance(other, str) else other
        data = data[: rng.randint(0, len(data))] + other_b[rng.randint(0, len(other_b)) :]
    elif how == 5:
        data = bytearray(rng.randbytes(rng.randint(0, 64)))
    else:
        data = bytearray(_random_map(rng, isinstance(frame, str)))
    if isinstance(frame, str):
        return data.decode("utf-8", "replace")  # a text frame is valid UTF-8 by the websocket layer
    return bytes(data)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "float", "str", "bin"] + (["list", "map"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, 2**53, -(2**63), 2**64 - 1, rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e308, 2.5, 1e-300])
    if kind == "str":
        return rng.choice(["", "x" * rng.randint(0, 70), "session.update", "ping", "\u0000", "é東🎉", "model"])
    if kind == "bin":
        return rng.randbytes(rng.randint(0, 9))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["type", "event_id", "session", "item", "ts", "audio", "k"]): _random_value(rng, depth + 1)}


def _random_map(rng: random.Random, as_json: bool) -> bytes:
    types = [name for name, _ in client_vectors()] + ["bogus"]
    event = {"type": rng.choice([t.split()[0] for t in types])}
    for _ in range(rng.randint(0, 3)):
        event[rng.choice(FIELD_NAMES)] = _random_value(rng)
    if as_json:

        def plain(v: Any) -> Any:
            if isinstance(v, bytes):
                return v.hex()
            if isinstance(v, list):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return json.dumps(plain(event)).encode()
    return encode_frame(event, Encoding.MSGPACK)  # type: ignore[return-value]


def _verdict(frame: bytes | str, encoding: Encoding) -> str | None:
    """The error code the server must answer with, from the same sans-I/O code; None for a valid event."""
    try:
        raw = decode_frame(frame, encoding, max_size=MAX_MESSAGE_SIZE)
        parse_client_event(raw, base64_binary=encoding is Encoding.JSON, limits=SERVER_LIMITS)
    except ClientError as exc:
        return exc.code
    return None


# ---- the link ---------------------------------------------------------------------------------------


async def _until_marker(client: RealtimeClient, ts: int) -> list[dict[str, Any]]:
    """Events up to the pong that answers our marker ping."""
    await client.send({"type": "ping", "ts": ts})
    events = []
    async with asyncio.timeout(10):
        while True:
            event = await client.recv()
            if event["type"] == "pong" and event["ts"] == ts:
                return events
            events.append(event)


def _check_documented(events: list[dict[str, Any]]) -> int:
    errors = [e for e in events if e["type"] == "error"]
    for event in errors:
        assert event["error"]["code"] in documented_error_codes(), event
    return len(errors)


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.value)
async def test_mutated_messages_get_the_predicted_answer(fuzzed: ServerProcess, encoding: Encoding) -> None:
    """Every mutated message is answered: its error code as predicted, or documented events if it is valid."""
    rng = random.Random(f"{SEED}-{encoding.value}")
    seeds = _seeds(encoding)
    bystander = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("bystander"))
    client = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("fuzzer"), encoding=encoding)
    errors_on_link, refused = 0, 0
    try:
        for n in range(MESSAGES_PER_ENCODING):
            frame = _mutate(rng, rng.choice(seeds), seeds)
            expected = _verdict(frame, encoding)
            await client.send_raw(frame)
            events = await _until_marker(client, MARKER_BASE + n)
            errors_on_link += _check_documented(events)
            if expected is not None:
                refused += 1
                codes = [e["error"]["code"] for e in events if e["type"] == "error"]
                assert expected in codes, f"frame {frame!r}: expected {expected}, got {events}"
            if errors_on_link >= ERRORS_PER_LINK:
                await client.close()
                client = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("fuzzer"), encoding=encoding)
                errors_on_link = 0
        assert refused > MESSAGES_PER_ENCODING // 2  # the mutations mostly produce invalid input
        result = await bystander.ask("still there?")
        assert result.status == "completed" and result.text == "You said: still there?"
    finally:
        await client.close()
        await bystander.close()


async def test_an_error_flood_closes_with_4003(fuzzed: ServerProcess) -> None:
    """Garbage faster than the invalid-message budget refills: errors for each, then close 4003."""
    client = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("flooder"))
    errors = 0
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(80):
            await client.send_raw(b"\xc1")
        while True:
            event = await client.recv()
            assert event["type"] == "error" and event["error"]["code"] == "malformed_frame"
            errors += 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
    assert errors >= 50


def _raw_frame(rng: random.Random) -> tuple[str, bytes]:
    """A websocket frame with one violation (or none), with a correct length so nothing waits for bytes."""
    kind = rng.choice(["unmasked", "opcode", "rsv", "control_fragmented", "control_long", "continuation", "close"])
    fin, rsv, opcode, masked = 1, 0, rng.choice([1, 2]), True
    payload = rng.randbytes(rng.randint(0, 40))
    if kind == "unmasked":
        masked = False
    elif kind == "opcode":
        opcode = rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
    elif kind == "rsv":
        rsv = rng.choice([1, 2, 4, 3, 7])
    elif kind == "control_fragmented":
        fin, opcode = 0, rng.choice([8, 9, 10])
    elif kind == "control_long":
        opcode, payload = rng.choice([8, 9, 10]), rng.randbytes(rng.randint(126, 300))
    elif kind == "continuation":
        opcode = 0
    else:
        opcode = 8
        payload = rng.choice([b"\x03", struct.pack("!H", rng.choice([0, 999, 1004, 1005, 1006, 1015, 2000, 5000]))])
    head = bytes([(fin << 7) | (rsv << 4) | opcode])
    size = len(payload)
    length = bytes([size]) if size < 126 else bytes([126]) + struct.pack("!H", size)
    if not masked:
        return kind, head + length + payload
    mask = rng.randbytes(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return kind, head + bytes([length[0] | 0x80]) + length[1:] + mask + body


async def test_malformed_frames_get_documented_close_codes(fuzzed: ServerProcess) -> None:
    """Frames that break RFC 6455 close the link with 1002; an oversized message 1009, invalid UTF-8 1007."""
    rng = random.Random(f"{SEED}-raw")
    allowed = documented_close_codes() - {1011}
    seen: dict[str, set[int]] = {}
    for _ in range(RAW_FRAMES):
        kind, frame = _raw_frame(rng)
        client = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("framer"))
        client.ws.transport.write(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await _until_marker(client, 1)
        code = closed.value.rcvd.code if closed.value.rcvd is not None else None
        assert code in allowed, f"{kind} frame {frame.hex()}: close {code}"
        seen.setdefault(kind, set()).add(code)
    assert seen == {kind: {1002} for kind in seen} and len(seen) == 7  # every kind, each a protocol error

    # over max_message_size: only the header is sent, so the server has nothing unread when it fails the
    # link (unread bytes would make its TCP close a reset that can overtake the close frame)
    too_big = bytes([0x82, 0xFF]) + struct.pack("!Q", MAX_MESSAGE_SIZE + 1) + rng.randbytes(4)
    client = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("framer"))
    client.ws.transport.write(too_big)
    with pytest.raises(ConnectionClosed) as closed:
        await _until_marker(client, 2)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    client = await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("framer"), encoding=Encoding.JSON)
    with pytest.raises(ConnectionClosed) as closed:
        await client.ws.send(b'{"type":"ping","ts":1,"x":"\xff"}', text=True)  # invalid UTF-8 in a text frame
        await _until_marker(client, 3)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


async def test_server_is_healthy_after_the_fuzzing(fuzzed: ServerProcess) -> None:
    """After everything above: a new session completes a turn, /healthz answers, the log has no failure."""
    async with await RealtimeClient.connect(fuzzed.ws_url, fuzzed.token("after")) as client:
        result = await client.ask("hello again")
    assert result.status == "completed" and result.text == "You said: hello again"
    async with httpx.AsyncClient() as http:
        assert (await http.get(fuzzed.url + "/healthz")).status_code == 200
    log = fuzzed.log_text()
    assert "Traceback" not in log and " ERROR " not in log and "internal error" not in log
