"""Sessions over real websockets against a scriptable external upstream: reasoning, cancel, faults, limits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.client import RealtimeClient
from realtime.protocol.codec import Encoding
from tests.conftest import ServerFactory
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess

VECTORS = Path(__file__).resolve().parent / "vectors"


async def _client(server: ServerProcess, encoding: Encoding = Encoding.MSGPACK, **kw: Any) -> RealtimeClient:
    return await RealtimeClient.connect(server.ws_url, server.token(kw.pop("user", "alice")), encoding=encoding, **kw)


async def _use_model(client: RealtimeClient, model: str) -> None:
    await client.send({"type": "session.update", "session": {"model": model}})
    updated = await client.recv()
    assert updated["type"] == "session.updated" and updated["session"]["model"] == model


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.value)
@pytest.mark.parametrize("model", ["think-tags", "think-field"])
async def test_reasoning_is_kept_apart(fake_server: ServerProcess, encoding: Encoding, model: str) -> None:
    """Reasoning arrives only as reasoning deltas (tags split across chunks or Ollama's thinking field)."""
    async with await _client(fake_server, encoding) as client:
        await _use_model(client, model)
        result = await client.ask("Hi")
    assert result.status == "completed"
    if model == "think-tags":
        assert (result.reasoning, result.text) == ("The user greets me.", "Hello there!")
    else:
        assert (result.reasoning, result.text) == ("Let me think.", "Four.")
    assert "<think>" not in result.text and "think>" not in result.text
    done = result.done["response"]
    assert (done["output_text"], done["reasoning_text"]) == (result.text, result.reasoning)
    deltas = [e for e in result.events if e["type"].endswith(".delta")]
    assert all(e["response_id"] == result.response_id for e in deltas)
    assert all(e["type"] == "response.reasoning.delta" for e in deltas[:1])


async def test_tokens_arriving_together_are_one_delta(fake_server: ServerProcess) -> None:
    """Forty tokens in one network write reach the client as one delta (not forty messages), text intact;
    reasoning and answer arriving together stay apart and in order."""
    async with await _client(fake_server) as client:
        await _use_model(client, "burst-40")
        result = await client.ask("Hi")
        await _use_model(client, "think-burst")
        mixed = await client.ask("Hi")
    assert result.status == "completed" and result.text == "".join(f"t{i} " for i in range(40))
    assert len([e for e in result.events if e["type"] == "response.text.delta"]) == 1
    assert (mixed.reasoning, mixed.text) == ("Let me see.  Done.", "Four.")
    kinds = [e["type"] for e in mixed.events if e["type"].endswith(".delta")]
    assert kinds == ["response.reasoning.delta", "response.text.delta", "response.reasoning.delta"]


async def test_every_server_event_has_an_id_and_increasing_seq(fake_server: ServerProcess) -> None:
    """Each server event carries event_id and seq; seq counts up by one per event."""
    async with await _client(fake_server) as client:
        result = await client.ask("one two three")
    seqs = [e["seq"] for e in result.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert all(e["event_id"] == f"evt_{e['seq']}" for e in result.events)
    assert result.text == "You said: one two three"


async def test_cancel_stops_tokens_promptly_and_session_goes_on(
    fake_server: ServerProcess, fake_ollama: FakeOllama
) -> None:
    """response.cancel ends the response at once (upstream closed, nothing after done); the session stays usable."""
    async with await _client(fake_server) as client:
        await _use_model(client, "endless")
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
            }
        )
        await client.send({"type": "response.create"})
        deltas = 0
        while deltas < 5:
            if (await client.recv())["type"] == "response.text.delta":
                deltas += 1
        sent = time.monotonic()
        await client.send({"type": "response.cancel", "event_id": "stop-1"})
        events = await client.recv_until("response.done")
        elapsed = time.monotonic() - sent
        done = events[-1]["response"]
        assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
        assert done["output_text"].startswith("tok1 tok2 tok3 tok4 tok5")
        assert elapsed < 1.0
        # nothing of the cancelled response after its done event
        await client.send({"type": "ping", "ts": 1})
        after = await client.recv()
        assert after["type"] == "pong"
        for _ in range(50):
            if fake_ollama.stats.open_streams == 0:
                break
            await asyncio.sleep(0.02)
        assert fake_ollama.stats.open_streams == 0, "upstream stream still open after cancel"
        await _use_model(client, "echo")
        again = await client.ask("still here")
        assert again.status == "completed" and again.text == "You said: still here"


async def test_new_turn_supersedes_running_response(fake_server: ServerProcess) -> None:
    """A new user message during a response cancels it (reason superseded) before the new item is created."""
    async with await _client(fake_server) as client:
        await _use_model(client, "endless")
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
            }
        )
        await client.send({"type": "response.create"})
        await client.recv_until("response.text.delta")
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "stop that"}]},
            }
        )
        events = await client.recv_until("conversation.item.created")
        types = [e["type"] for e in events]
        done = next(e for e in events if e["type"] == "response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "superseded"
        assert types.index("response.done") < types.index("conversation.item.created")


async def test_cancel_without_response_is_an_error(fake_server: ServerProcess) -> None:
    """response.cancel with nothing running gets response_not_active naming the event."""
    async with await _client(fake_server) as client:
        await client.send({"type": "response.cancel", "event_id": "c-1"})
        err = await client.recv()
    assert err["type"] == "error"
    assert err["error"]["code"] == "response_not_active" and err["error"]["event_id"] == "c-1"


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("garbage", "upstream_bad_response"),
        ("die", "upstream_error"),
        ("error-mid", "upstream_error"),
        ("no-such-model", "model_not_found"),
    ],
)
async def test_broken_upstream_gives_error_event_and_session_goes_on(
    fake_server: ServerProcess, model: str, code: str
) -> None:
    """A broken upstream: an error event with a stable code and no internals, response failed, session usable."""
    async with await _client(fake_server) as client:
        await _use_model(client, model)
        result = await client.ask("hi")
        assert result.status == "failed"
        assert [e["error"]["code"] for e in result.errors] == [code]
        assert result.errors[0]["response_id"] == result.response_id
        message = result.errors[0]["error"]["message"]
        assert "secret" not in message and "Traceback" not in message and "CUDA" not in message
        assert result.done["response"]["status_details"]["error"]["code"] == code
        await _use_model(client, "echo")
        assert (await client.ask("again")).text == "You said: again"


async def test_upstream_down_gives_unavailable(server_factory: ServerFactory) -> None:
    """No upstream listening: upstream_unavailable, quickly, and the session stays open."""
    from tests.support.server import free_port

    srv = server_factory(ollama_url=f"http://127.0.0.1:{free_port()}", llm_model="echo")
    async with await _client(srv) as client:
        started = time.monotonic()
        result = await client.ask("hello?")
        assert time.monotonic() - started < 5
        assert result.status == "failed" and result.errors[0]["error"]["code"] == "upstream_unavailable"
        await client.send({"type": "ping", "ts": 5})
        assert (await client.recv())["type"] == "pong"


async def test_twenty_concurrent_sessions_get_only_their_own_replies(fake_server: ServerProcess) -> None:
    """20 sessions (10 users) talking at once each receive exactly their own replies."""

    async def one(i: int) -> list[str]:
        async with await _client(fake_server, user=f"user{i % 10}") as client:
            texts = []
            for turn in range(3):
                result = await client.ask(f"nonce-{i}-{turn}")
                assert result.status == "completed"
                texts.append(result.text)
                for event in result.events:
                    blob = json.dumps(event)
                    assert all(f"nonce-{j}-" not in blob for j in range(20) if j != i)
            return texts

    results = await asyncio.gather(*(one(i) for i in range(20)))
    for i, texts in enumerate(results):
        assert texts == [f"You said: nonce-{i}-{t}" for t in range(3)]


async def test_invalid_frames_get_their_documented_errors(fake_server: ServerProcess) -> None:
    """Each shared invalid-frame vector, sent over a real link, gets its error; the session then still works."""
    vectors = json.loads((VECTORS / "invalid_client_frames.json").read_text())
    for encoding in Encoding:
        async with await _client(fake_server, encoding) as client:
            for vector in [v for v in vectors if v["encoding"] == encoding.value]:
                frame = bytes.fromhex(vector["frame_hex"]) if "frame_hex" in vector else vector["frame_text"]
                await client.send_raw(frame)
                event = await client.recv()
                assert event["type"] == "error", vector["name"]
                for key, value in vector["error"].items():
                    assert event["error"][key] == value, (vector["name"], event)
                await asyncio.sleep(0.06)  # stay under the invalid-message rate limit
            result = await client.ask("still fine")
            assert result.text == "You said: still fine"


async def test_overlong_text_is_refused_with_an_error(fake_server: ServerProcess) -> None:
    """A message longer than max_text_chars gets message_too_large; nothing is sent upstream."""
    async with await _client(fake_server) as client:
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "x" * 32_001}]},
            }
        )
        event = await client.recv()
    assert event["error"]["code"] == "message_too_large"


async def test_oversized_frame_closes_with_1009(fake_server: ServerProcess) -> None:
    """A frame over max_message_size closes the link with 1009; other sessions are unaffected."""
    async with await _client(fake_server) as bystander, await _client(fake_server) as client:
        await client.send_raw(msgpack.packb({"type": "ping", "ts": 1, "pad": "x" * (1 << 20)}))
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await bystander.ask("ok?")).text == "You said: ok?"


async def test_error_flood_closes_the_link(fake_server: ServerProcess) -> None:
    """A flood of invalid messages is answered with errors, then closed with 4003."""
    async with await _client(fake_server) as client:
        for _ in range(60):
            await client.send_raw(b"\xc1")
        codes = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                codes.append((await client.recv())["error"]["code"])
    assert set(codes) == {"malformed_frame"} and len(codes) >= 50
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003


async def test_max_response_chars_cuts_the_reply(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """A reply longer than max_response_chars is cut there: status incomplete, upstream stream closed."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="big-500", max_response_chars="5000")
    async with await _client(srv) as client:
        result = await client.ask("talk a lot")
    assert result.status == "incomplete"
    assert result.done["response"]["status_details"]["reason"] == "max_response_chars"
    assert len(result.text) == 5000


async def test_session_limits_refuse_clearly(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """Over the per-user limit: an error event and close 1013; other users still get in."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="echo", max_sessions_per_user="2", max_sessions="3")
    first, second = await _client(srv, user="bob"), await _client(srv, user="bob")
    try:
        async with connect(
            srv.ws_url,
            subprotocols=["realtime.v1.msgpack"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {srv.token('bob')}"},
        ) as ws:
            event = msgpack.unpackb(await ws.recv())
            assert event["type"] == "error" and event["error"]["code"] == "too_many_sessions"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        carol = await _client(srv, user="carol")
        assert (await carol.ask("hi")).text == "You said: hi"
        await carol.close()
    finally:
        await first.close()
        await second.close()


async def test_unsupported_subprotocol_is_refused(fake_server: ServerProcess) -> None:
    """A client offering only subprotocols we do not speak is refused at the handshake with HTTP 400."""
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        await connect(
            fake_server.ws_url,
            subprotocols=["realtime.v9.xml"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {fake_server.token()}"},
        )
    assert refused.value.response.status_code == 400
    assert b"unsupported_subprotocol" in refused.value.response.body


async def test_no_subprotocol_means_msgpack(fake_server: ServerProcess) -> None:
    """Without a subprotocol the link speaks msgpack."""
    async with connect(fake_server.ws_url, additional_headers={"Authorization": f"Bearer {fake_server.token()}"}) as ws:
        first = await ws.recv()
        assert isinstance(first, bytes) and msgpack.unpackb(first)["type"] == "session.created"


async def test_slow_consumer_is_closed(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """A client that stops reading is closed with 4001 once its buffer stays full for send_timeout."""
    srv = server_factory(
        ollama_url=fake_ollama.url,
        llm_model="wide-20000",
        max_response_chars="200000000",
        send_timeout="1",
        outbound_queue_size="64",
    )
    client = await _client(srv, max_queue=4)
    try:
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "flood me"}]},
            }
        )
        await client.send({"type": "response.create"})
        await asyncio.sleep(4.0)  # not reading
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    finally:
        await client.close()
    async with httpx.AsyncClient() as http:
        health = (await http.get(srv.url + "/healthz")).json()
    assert health["sessions"] == 0
