"""Heartbeats over a real link: silent peers are closed, live ones (and long silent thinking) are not."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.client import RealtimeClient
from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def quick_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", ping_interval="0.3", ping_timeout="1.0")


async def test_silent_client_is_closed_after_timeout(quick_server: ServerProcess) -> None:
    """A client that never answers pings is closed with 4000 (ping timeout) after ping_timeout."""
    client = await RealtimeClient.connect(quick_server.ws_url, quick_server.token(), auto_pong=False)
    started = time.monotonic()
    pings = 0
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            event = await client.recv(skip_pings=False)
            pings += event["type"] == "ping"
    elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert 0.9 <= elapsed < 2.5
    assert pings >= 2


async def test_answering_client_stays_open(quick_server: ServerProcess) -> None:
    """A client that answers pings stays connected well past ping_timeout, and pings carry a timestamp."""
    async with await RealtimeClient.connect(quick_server.ws_url, quick_server.token()) as client:
        seen = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            event = await client.recv(skip_pings=False)
            if event["type"] == "ping":
                seen.append(event["ts"])
        assert len(seen) >= 6 and seen == sorted(seen)
        assert (await client.ask("alive")).text == "You said: alive"


async def test_slow_thinking_model_keeps_the_link_alive(quick_server: ServerProcess) -> None:
    """A model silent for 3 s (3x ping_timeout) does not look like a dead link: pings flow, the reply arrives."""
    async with await RealtimeClient.connect(quick_server.ws_url, quick_server.token()) as client:
        await client.send({"type": "session.update", "session": {"model": "slow-3000"}})
        await client.recv()
        before = client.pings
        result = await client.ask("take your time")
        assert result.status == "completed" and result.text == "Done thinking."
        assert client.pings - before >= 6
        assert result.done["response"]["metrics"]["first_token_ms"] >= 2900


async def test_client_ping_gets_pong(quick_server: ServerProcess) -> None:
    """A client ping is answered with a pong echoing its ts and naming its event_id."""
    async with await RealtimeClient.connect(quick_server.ws_url, quick_server.token()) as client:
        await client.send({"type": "ping", "ts": 123456, "event_id": "p1"})
        pong = await client.recv()
    assert pong["type"] == "pong" and pong["ts"] == 123456 and pong["reply_to"] == "p1"


async def test_rtt_is_measured_from_pongs(quick_server: ServerProcess) -> None:
    """After a ping round trip, responses report the link's round-trip time."""
    async with await RealtimeClient.connect(quick_server.ws_url, quick_server.token()) as client:
        while client.pings < 2:
            await client.recv(skip_pings=False)
        await asyncio.sleep(0.05)
        result = await client.ask("rtt?")
    rtt = result.done["response"]["metrics"]["rtt_ms"]
    assert rtt is not None and 0 <= rtt < 200


async def test_shutdown_during_a_turn_closes_cleanly(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """SIGTERM while a response streams: close 1001 after the queued events, then a clean shutdown."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="endless")
    client = await RealtimeClient.connect(srv.ws_url, srv.token())
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
        }
    )
    await client.send({"type": "response.create"})
    await client.recv_until("response.text.delta")
    stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    # uvicorn re-raises the signal it handled once shut down, so the status is -SIGTERM, not a kill
    assert await stopping in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in srv.log_text()
