"""Text turns against the real embedded model (SmolLM2 through the Ollama protocol), end to end."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from realtime.client import RealtimeClient
from realtime.protocol.codec import Encoding
from tests.conftest import ServerFactory
from tests.support.local_ollama import start_local_ollama
from tests.support.server import ServerProcess, free_port


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.value)
async def test_text_turn_streams_token_by_token(server: ServerProcess, encoding: Encoding) -> None:
    """A typed question gets a streamed answer from the real model; the deltas add up to response.done's text."""
    async with await RealtimeClient.connect(server.ws_url, server.token(), encoding=encoding) as client:
        assert client.session["encoding"] == encoding.value
        result = await client.ask("What is the capital of France?", temperature=0.0)
    assert result.status == "completed", result.done
    deltas = [e for e in result.events if e["type"] == "response.text.delta"]
    assert len(deltas) >= 3
    assert "Paris" in result.text
    done = result.done["response"]
    assert done["output_text"] == result.text
    assert done["usage"]["input_tokens"] > 10 and done["usage"]["output_tokens"] >= len(deltas) - 1
    assert 0 < done["metrics"]["first_token_ms"] <= done["metrics"]["total_ms"]


async def test_history_feeds_the_next_turn(server: ServerProcess) -> None:
    """The session keeps its conversation: the second turn sees the first (the model repeats a given word)."""
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        await client.send({"type": "session.update", "session": {"temperature": 0.0, "max_output_tokens": 24}})
        await client.recv()
        first = await client.ask("Remember this code word: Zanzibar.")
        assert first.status in ("completed", "incomplete")
        second = await client.ask("What was the code word I told you? Answer with the word only.")
    assert "zanzibar" in second.text.lower()


async def test_cancel_real_model_mid_stream(server: ServerProcess) -> None:
    """Cancelling a long real generation stops it at once, and the next turn is served right away."""
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        started = time.monotonic()
        assert (await client.ask("Say hi.", max_output_tokens=8)).text
        baseline = time.monotonic() - started  # the same short turn on an idle upstream, on this machine now
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "Tell a long story."}]},
            }
        )
        await client.send({"type": "response.create", "response": {"max_output_tokens": 2000}})
        seen = 0
        while seen < 3:
            seen += (await client.recv())["type"] == "response.text.delta"
        sent = time.monotonic()
        await client.send({"type": "response.cancel"})
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        assert time.monotonic() - sent < 0.5
        started = time.monotonic()
        again = await client.ask("Say hi.", max_output_tokens=8)
        assert again.status in ("completed", "incomplete") and again.text
        # served promptly: the cancelled generation (up to 2000 tokens) is not still running upstream
        assert time.monotonic() - started < 3 * baseline + 2


async def test_reasoning_on_a_model_that_cannot_think_is_a_clear_error(server: ServerProcess) -> None:
    """Asking SmolLM2 to reason is refused by the upstream; the client gets upstream_rejected saying why."""
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        result = await client.ask("Hi", reasoning=True)
    assert result.status == "failed"
    error = result.errors[0]["error"]
    assert error["code"] == "upstream_rejected" and "thinking" in error["message"]


async def test_unknown_model_is_model_not_found(server: ServerProcess) -> None:
    """A model the upstream does not have: model_not_found naming it."""
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        result = await client.ask("Hi", model="no-such-model:7b")
    assert result.errors[0]["error"]["code"] == "model_not_found"
    assert "no-such-model:7b" in result.errors[0]["error"]["message"]


async def test_upstream_killed_mid_stream(server_factory: ServerFactory) -> None:
    """The LLM process killed mid-reply: an error event, response failed, the session carries on and recovers."""
    port = free_port()
    llm = start_local_ollama(port)
    try:
        srv = server_factory(ollama_url=llm.url, llm_model="smollm2:135m")
        async with await RealtimeClient.connect(srv.ws_url, srv.token()) as client:
            await client.send(
                {
                    "type": "conversation.item.create",
                    "item": {"role": "user", "content": [{"type": "input_text", "text": "Count to 500."}]},
                }
            )
            await client.send({"type": "response.create", "response": {"max_output_tokens": 2000}})
            seen = 0
            while seen < 3:
                seen += (await client.recv())["type"] == "response.text.delta"
            llm.process.send_signal(signal.SIGKILL)
            result = await client.collect_response()
            assert result.status == "failed"
            assert result.errors and result.errors[0]["error"]["code"].startswith("upstream")
            await client.send({"type": "ping", "ts": 7})
            assert (await client.recv())["type"] == "pong"
            llm.stop()
            llm = await asyncio.to_thread(start_local_ollama, port)
            again = await client.ask("Say hi.", max_output_tokens=8)
            assert again.status in ("completed", "incomplete") and again.text
    finally:
        llm.stop()
