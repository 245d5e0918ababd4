"""Slowloris: a connection whose request headers do not arrive in time is closed; other clients get in."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from realtime.client import RealtimeClient
from realtime.config import load_settings
from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def strict_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off", handshake_timeout=str(TIMEOUT))


async def _open(server: ServerProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed_after(reader: asyncio.StreamReader, started: float, limit: float = 10.0) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it closed it (s after `started`)."""
    received = await asyncio.wait_for(reader.read(), limit)
    return received, time.monotonic() - started


def test_the_default_is_ten_seconds() -> None:
    """REALTIME_HANDSHAKE_TIMEOUT defaults to 10 s and `none` disables it."""
    assert load_settings({}).handshake_timeout == 10.0
    assert load_settings({"REALTIME_HANDSHAKE_TIMEOUT": "none"}).handshake_timeout is None


async def test_half_a_request_is_closed_after_the_timeout_and_others_get_in(strict_server: ServerProcess) -> None:
    """Half a websocket handshake, and a connection sending nothing, are closed without an answer after the
    timeout; a client connecting meanwhile opens its session and completes a turn."""
    started = time.monotonic()
    half_reader, half_writer = await _open(strict_server)
    mute_reader, mute_writer = await _open(strict_server)
    try:
        half_writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # never ends
        await half_writer.drain()
        async with await RealtimeClient.connect(strict_server.ws_url, strict_server.token()) as client:
            assert (await client.ask("still open for business?")).text == "You said: still open for business?"
        (half, half_at), (mute, mute_at) = await asyncio.gather(
            _closed_after(half_reader, started), _closed_after(mute_reader, started)
        )
    finally:
        for writer in (half_writer, mute_writer):
            writer.close()
    assert half == b"" and mute == b""  # closed, nothing answered
    assert TIMEOUT * 0.9 <= half_at < TIMEOUT + 2.0, half_at
    assert TIMEOUT * 0.9 <= mute_at < TIMEOUT + 2.0, mute_at
    async with httpx.AsyncClient() as http:
        assert (await http.get(strict_server.url + "/healthz")).json()["sessions"] == 0
    log = strict_server.log_text()
    assert log.count("no complete request within") >= 2
    assert " ERROR " not in log and "Traceback" not in log


async def test_headers_completed_in_time_are_answered(strict_server: ServerProcess) -> None:
    """A request whose headers arrive in pieces, all within the timeout, is answered normally."""
    reader, writer = await _open(strict_server)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.sleep(TIMEOUT / 2)
        writer.write(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in answer


async def test_a_kept_alive_connection_gets_the_deadline_for_its_next_request(strict_server: ServerProcess) -> None:
    """After an answered request, the first bytes of a next request start the deadline again: half of one
    is closed after the timeout (uvicorn's keep-alive timeout stops counting once bytes arrive)."""
    reader, writer = await _open(strict_server)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
        await reader.readexactly(int(fields[b"content-length"]))
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        await writer.drain()
        rest, closed_at = await _closed_after(reader, started)
    finally:
        writer.close()
    assert rest == b""
    assert TIMEOUT * 0.9 <= closed_at < TIMEOUT + 2.0, closed_at
