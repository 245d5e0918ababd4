"""Fuzz targets shared by the atheris runs (bench/fuzz_protocol.py), the corpus replay and hypothesis.

Each target takes one input (bytes) and raises `Finding` when the server would misbehave on it: a
decoder raising anything but a documented ClientError, an event that does not survive a round trip,
an error event that cannot be encoded or names an undocumented code, or a session that fails
internally (close 1011, an ERROR log) or does not end. Bad input is expected; only findings are bugs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path
from typing import Any

from realtime.config import Settings, load_settings
from realtime.errors import ClientError, CloseCode
from realtime.protocol import server_events as ev
from realtime.protocol.client_events import ClientEvent, Limits, parse_client_event, peek_ids
from realtime.protocol.codec import Encoding, decode_frame, encode_frame
from realtime.session import PeerClosed, Session
from realtime.stages.llm import ChatDelta, ChatDone, ChatRequest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_SIZE = 1 << 16  # the decoders' size limit in these targets (the server's default is 1 MiB)
LIMITS = Limits(max_text_chars=2_000, max_audio_bytes=4_096)
FRAME_SEPARATOR = b"\n--\n"  # session inputs: one byte choosing the encoding, then frames split by this
MAX_SESSION_FRAMES = 64
SESSION_TIMEOUT = 5.0  # bench/fuzz_protocol.py's libFuzzer -timeout is longer


class Finding(AssertionError):
    """The server would misbehave on this input."""


# ---- what the docs promise ----------------------------------------------------------------------


def _section(title: str) -> list[str]:
    text = (ROOT / "docs" / "protocol.md").read_text()
    start = text.index(f"\n## {title}")
    end = text.index("\n## ", start + 1)
    return text[start:end].splitlines()


@cache
def documented_error_codes() -> frozenset[str]:
    """Every `code` listed in docs/protocol.md §8 (first column of the error table)."""
    codes: set[str] = set()
    for line in _section("8. Errors"):
        if line.startswith("| `"):
            codes.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return frozenset(codes)


@cache
def documented_close_codes() -> frozenset[int]:
    """Every close code listed in docs/protocol.md §9."""
    return frozenset(int(m.group(1)) for line in _section("9. Close codes") if (m := re.match(r"\| (\d{4}) \|", line)))


# ---- decoders -----------------------------------------------------------------------------------


def _check_error(exc: ClientError, raw: dict[str, Any] | None, encoding: Encoding) -> None:
    if exc.code not in documented_error_codes():
        raise Finding(f"undocumented error code {exc.code!r}") from exc
    event_id, event_type = peek_ids(raw) if raw is not None else (None, None)
    wire = ev.error(exc.code, exc.message, event_id=event_id, event_type=event_type, param=exc.param).to_wire(1)
    try:
        encode_frame(wire, encoding)  # what we echo back must itself be sendable
    except Exception as enc_exc:
        raise Finding(f"error event for {exc.code} cannot be encoded: {enc_exc!r}") from enc_exc


def _round_trip(event: ClientEvent) -> None:
    """A parsed event encodes in both encodings and parses back to an equal event."""
    for encoding in Encoding:
        data = encode_frame(event.to_wire(), encoding)
        again = parse_client_event(
            decode_frame(data, encoding, max_size=1 << 30), base64_binary=encoding is Encoding.JSON, limits=LIMITS
        )
        if again != event:
            raise Finding(f"{encoding.value} round trip changed the event: {event!r} -> {again!r}")


def decode_and_parse(data: bytes | str, encoding: Encoding) -> ClientEvent | None:
    """One inbound frame through the decoder and the parser; None when it was (correctly) refused."""
    raw: dict[str, Any] | None = None
    try:
        raw = decode_frame(data, encoding, max_size=MAX_SIZE)
        event = parse_client_event(raw, base64_binary=encoding is Encoding.JSON, limits=LIMITS)
    except ClientError as exc:
        _check_error(exc, raw, encoding)
        return None
    except Exception as exc:
        raise Finding(f"{encoding.value} frame raised {exc!r}, not a ClientError") from exc
    try:
        _round_trip(event)
    except ClientError as exc:
        raise Finding(f"a parsed event was refused after its own round trip: {exc!r}") from exc
    return event


def target_msgpack(data: bytes) -> None:
    """Bytes as a binary frame on a msgpack link (and, wrongly, on a JSON link)."""
    decode_and_parse(data, Encoding.MSGPACK)
    decode_and_parse(data, Encoding.JSON)  # a binary frame on a JSON link: wrong_frame_type, always


def target_json(data: bytes) -> None:
    """Bytes as the text of a JSON frame (websocket text is valid UTF-8; lone surrogates come from escapes)."""
    text = data.decode("utf-8", "replace")
    decode_and_parse(text, Encoding.JSON)
    decode_and_parse(text, Encoding.MSGPACK)  # a text frame on a msgpack link: wrong_frame_type, always


# ---- a real Session over an in-memory link --------------------------------------------------------


class EchoLLM:
    """A tiny instant LLM: reasoning tags, then the last user message back."""

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatDelta | ChatDone]:
        last = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        yield ChatDelta(content="<think>hm</think>")
        yield ChatDelta(content=f"You said: {last[:40]}")
        yield ChatDone("stop", 1, 1)


class MemoryTransport:
    """The client side of a link: queued frames in, every frame the server sends kept.

    After the last frame it sends a ping marker; once the server has answered it (and any response has
    finished), it "closes" with 1000. The session closing the link first is recorded in `closed`.
    """

    MARKER = 987_654_321

    def __init__(self, frames: list[bytes | str], encoding: Encoding, idle: Callable[[], bool]) -> None:
        self._frames = deque(frames)
        self._frames.append(encode_frame({"type": "ping", "ts": self.MARKER}, encoding))
        self._encoding = encoding
        self._idle = idle
        self._answered = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> bytes | str:
        if self._frames:
            await asyncio.sleep(0)
            return self._frames.popleft()
        await self._answered.wait()
        for _ in range(200):  # let a running response finish (bounded)
            if self._idle():
                break
            await asyncio.sleep(0.005)
        raise PeerClosed(CloseCode.NORMAL)

    async def send(self, data: bytes | str) -> None:
        event = decode_frame(data, self._encoding, max_size=1 << 30)
        self.sent.append(event)
        if event.get("type") == "pong" and event.get("ts") == self.MARKER:
            self._answered.set()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)
        self._answered.set()


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@cache
def _session_settings() -> Settings:
    return load_settings(
        {},
        ping_interval=None,
        ping_timeout=None,
        resume_grace=None,
        max_text_chars=LIMITS.max_text_chars,
        max_message_size=MAX_SIZE,
        send_timeout=2.0,
    )


def split_session_input(data: bytes) -> tuple[Encoding, list[bytes | str]]:
    """First byte: the encoding (even: msgpack, odd: JSON); the rest: frames between separators."""
    if not data:
        return Encoding.MSGPACK, []
    encoding = Encoding.MSGPACK if data[0] % 2 == 0 else Encoding.JSON
    parts = data[1:].split(FRAME_SEPARATOR)[:MAX_SESSION_FRAMES]
    if encoding is Encoding.JSON:
        return encoding, [p.decode("utf-8", "replace") for p in parts]
    return encoding, list(parts)


def join_session_input(encoding: Encoding, frames: list[bytes | str]) -> bytes:
    head = bytes([0 if encoding is Encoding.MSGPACK else 1])
    return head + FRAME_SEPARATOR.join(f if isinstance(f, bytes) else f.encode() for f in frames)


async def run_session(encoding: Encoding, frames: list[bytes | str]) -> MemoryTransport:
    """Serve `frames` to a real Session; raise Finding on an internal failure, a hang or a bad event."""
    handler = _Errors()
    logger = logging.getLogger("realtime")
    logger.addHandler(handler)
    session = Session(user="fuzz", settings=_session_settings(), llm=EchoLLM())
    transport = MemoryTransport(frames, encoding, idle=lambda: session.response is None)
    try:
        async with asyncio.timeout(SESSION_TIMEOUT):
            session.start(encoding)
            await session.serve(transport, encoding)
            await session.wait_ended()
    except TimeoutError as exc:
        raise Finding(f"the session did not end within {SESSION_TIMEOUT}s") from exc
    finally:
        logger.removeHandler(handler)
    if handler.records:
        record = handler.records[0]
        raise Finding(f"the session logged an error: {record.getMessage()}") from (
            record.exc_info[1] if record.exc_info else None
        )
    if transport.closed is not None:
        code = transport.closed[0]
        if code == CloseCode.INTERNAL_ERROR or code not in documented_close_codes():
            raise Finding(f"the session closed the link with {transport.closed}")
    for event in transport.sent:
        if event.get("type") == "error" and event["error"]["code"] not in documented_error_codes():
            raise Finding(f"undocumented error code in {event}")
    if not transport.sent or transport.sent[0].get("type") != "session.created":
        raise Finding(f"the session did not start with session.created: {transport.sent[:1]}")
    return transport


def target_session(data: bytes) -> None:
    """Frames from `data` through a real Session, on a fresh event loop; a task left behind is a leak."""
    encoding, frames = split_session_input(data)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run_session(encoding, frames))
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if left:
            raise Finding(f"tasks outlived the session: {[t.get_name() for t in left]}")
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "msgpack": target_msgpack,
    "json": target_json,
    "session": target_session,
}
