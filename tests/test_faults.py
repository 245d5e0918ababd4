"""Faults against the real server, each with a bystander session and, where there is one, the stored history:
the upstream LLM killed mid-stream or too slow, the database restarted mid-reply, a client vanishing
mid-reply, a half-open link, and the server's shutdown mid-reply. docs/reliability.md §5 lists every fault
with its test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from db import EmbeddedPostgres
from realtime.client import RealtimeClient
from tests.conftest import ServerFactory, create_database
from tests.support.fake_ollama import STORY, FakeOllama
from tests.support.server import ServerProcess, free_port

GRACE = 6.0  # resume_grace of the module's server (s): longer than the story (2.4 s)


@pytest.fixture(scope="module")
async def faults_server(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> ServerProcess:
    """A server with a database and a short resume window."""
    url = await create_database(postgres)
    return server_factory(
        ollama_url=fake_ollama.url,
        llm_model="echo",
        voice="off",
        database_url=url,
        history_retry_for="30",
        resume_grace=str(GRACE),
    )


async def _account(server: ServerProcess, name: str) -> str:
    async with httpx.AsyncClient(base_url=server.url) as http:
        resp = await http.post("/api/auth/signup", json={"username": name, "password": "correct horse battery"})
        assert resp.status_code == 201, resp.text
        return resp.json()["access_token"]


async def _conversation(server: ServerProcess, token: str) -> str:
    """A new stored conversation of the account (POST /api/conversations); a session continues it with
    session.update {conversation_id}, so its id is known before the first turn."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        resp = await http.post("/api/conversations", json={})
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]


async def _use(client: RealtimeClient, **session: Any) -> None:
    await client.send({"type": "session.update", "session": session})
    await client.recv_until("session.updated")


async def _start_story(client: RealtimeClient, deltas: int = 5) -> list[dict[str, Any]]:
    """Ask for the long story and read until `deltas` text deltas arrived; the events read."""
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"role": "user", "content": [{"type": "input_text", "text": "a story"}]},
        }
    )
    await client.send({"type": "response.create"})
    seen: list[dict[str, Any]] = []
    while sum(e["type"] == "response.text.delta" for e in seen) < deltas:
        seen.append(await client.recv())
    return seen


async def _stored(server: ServerProcess, token: str, conversation_id: str, count: int) -> list[dict[str, Any]]:
    """The conversation's stored messages once there are `count` (the writer is asynchronous), bounded."""
    messages: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(400):
            resp = await http.get(f"/api/conversations/{conversation_id}")
            if resp.status_code == 200:
                messages = resp.json()["messages"]
                if len(messages) >= count:
                    return messages
            await asyncio.sleep(0.1)
    raise AssertionError(f"stored: {messages}")


async def _health(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return (await http.get(server.url + "/healthz")).json()


async def _bystander_turn(server: ServerProcess, user: str, text: str) -> None:
    """Another user's session, opened during the fault, completes a turn as usual."""
    async with await RealtimeClient.connect(server.ws_url, server.token(user)) as client:
        result = await client.ask(text)
    assert (result.status, result.text) == ("completed", "You said: " + text)


async def _log_line(server: ServerProcess, text: str, since: float, what: str, within: float = 5.0) -> str:
    """The first server log line holding `text`, waited for up to `within` s after `since` (monotonic)."""
    while True:
        line = next((x for x in server.log_text().splitlines() if text in x), None)
        if line is not None:
            return line
        assert time.monotonic() - since < within, what
        await asyncio.sleep(0.05)


async def _resume_and_talk(server: ServerProcess, token: str, args: tuple[str, str, int], session_id: str) -> None:
    """A resume on a new link gets the detached session back, and it answers."""
    again = await RealtimeClient.connect(server.ws_url, token, resume=args)
    resumed = await again.recv_until("session.resumed")
    assert resumed[-1]["session"]["id"] == session_id
    assert (await again.ask("back")).text == "You said: back"
    await again.close()


async def test_upstream_killed_mid_stream(faults_server: ServerProcess) -> None:
    """The LLM connection dropped mid-stream: upstream_error, response failed with the text so far (kept and
    stored as failed), the session goes on; another session streaming at the same time completes."""
    token, other = await _account(faults_server, "killed"), await _account(faults_server, "bystander1")
    async with (
        await RealtimeClient.connect(faults_server.ws_url, token) as client,
        await RealtimeClient.connect(faults_server.ws_url, other) as bystander,
    ):
        conversation = await _conversation(faults_server, token)
        await _use(client, model="die", conversation_id=conversation)
        await _use(bystander, model="story")
        bystander_seen = await _start_story(bystander, deltas=1)
        result = await client.ask("hi")
        assert result.status == "failed" and [e["error"]["code"] for e in result.errors] == ["upstream_error"]
        assert result.text == "Hello there"
        bystander_done = await bystander.collect_response()
        assert bystander_done.status == "completed"
        bystander_text = "".join(e["delta"] for e in bystander_seen if e["type"] == "response.text.delta")
        assert bystander_text + bystander_done.text == STORY
        await _use(client, model="echo")
        assert (await client.ask("again")).text == "You said: again"
    stored = await _stored(faults_server, token, conversation, 4)
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "hi", "completed"),
        ("assistant", "Hello there", "failed"),
        ("user", "again", "completed"),
        ("assistant", "You said: again", "completed"),
    ]


async def test_slow_upstream_times_out(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """An LLM silent past REALTIME_LLM_FIRST_TOKEN_TIMEOUT: upstream_timeout at the timeout, response failed,
    the session goes on; another session answers at once meanwhile."""
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off", llm_first_token_timeout="3")
    async with await RealtimeClient.connect(srv.ws_url, srv.token("patient")) as client:
        await _use(client, model="slow-8000")
        started = time.monotonic()
        slow = asyncio.create_task(client.ask("are you there?"))
        bystander_started = time.monotonic()
        await _bystander_turn(srv, "busy", "quick one")
        assert time.monotonic() - bystander_started < 2.5  # not queued behind the slow upstream (3 s)
        result = await slow
        elapsed = time.monotonic() - started
        assert result.status == "failed" and [e["error"]["code"] for e in result.errors] == ["upstream_timeout"]
        assert 2.9 <= elapsed < 5.0, elapsed
        await _use(client, model="echo")
        assert (await client.ask("still here")).text == "You said: still here"


async def test_database_restarted_mid_reply(faults_server: ServerProcess, postgres: EmbeddedPostgres) -> None:
    """PostgreSQL stopped and started again while a reply streams: the reply completes, a session opened
    meanwhile is told `history_unavailable` and still talks, and the turn is stored once, whole."""
    token = await _account(faults_server, "restarted")
    bystander = await _account(faults_server, "bystander2")
    conversation = await _conversation(faults_server, token)
    async with await RealtimeClient.connect(faults_server.ws_url, token) as client:
        await _use(client, model="story", conversation_id=conversation)
        seen = await _start_story(client)
        await asyncio.to_thread(postgres.stop)
        try:
            async with await RealtimeClient.connect(faults_server.ws_url, bystander) as meanwhile:
                warning = await meanwhile.recv()  # before session.created
                assert warning["type"] == "error" and warning["error"]["code"] == "history_unavailable"
                assert (await meanwhile.ask("no database?")).text == "You said: no database?"
            rest = await client.collect_response()
        finally:
            await asyncio.to_thread(postgres.start)
    text = "".join(e["delta"] for e in seen if e["type"] == "response.text.delta") + rest.text
    assert rest.status == "completed" and text == STORY
    stored = await _stored(faults_server, token, conversation, 2)
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "a story", "completed"),
        ("assistant", STORY, "completed"),
    ]


async def test_client_vanishing_mid_reply(faults_server: ServerProcess) -> None:
    """A client gone mid-reply without a close frame: its session is detached, the reply runs to its end
    and is stored whole, and after resume_grace the session ends; another session talks meanwhile."""
    token = await _account(faults_server, "vanished")
    conversation = await _conversation(faults_server, token)
    client = await RealtimeClient.connect(faults_server.ws_url, token)
    await _use(client, model="story", conversation_id=conversation)
    session_id = client.session["id"]
    await _start_story(client)
    client.ws.transport.abort()  # no close frame: the TCP connection just ends
    lost_at = time.monotonic()
    await _bystander_turn(faults_server, "bystander3", "anyone?")
    stored = await _stored(faults_server, token, conversation, 2)
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "a story", "completed"),
        ("assistant", STORY, "completed"),
    ]
    while f"[{session_id}] closing: code=1001 reason=resume window expired" not in faults_server.log_text():
        assert time.monotonic() - lost_at < GRACE + 10, "the detached session did not end"
        await asyncio.sleep(0.1)
    assert time.monotonic() - lost_at >= GRACE * 0.9
    assert f"[{session_id}] link lost (1005 closed by client): detached" in faults_server.log_text()


class BlackHole:
    """A TCP proxy that can go silent: once frozen it forwards nothing either way and closes nothing, as a
    link whose path died does (a peer gone without FIN or RST; only timers notice)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BlackHole]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(source, sink))
            self._tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if not self.frozen:  # frozen: read and dropped, so neither side sees a full buffer or an EOF
                sink.write(data)
                await sink.drain()


async def test_half_open_link_is_found_by_heartbeats(server_factory: ServerFactory, fake_ollama: FakeOllama) -> None:
    """A link that goes silent without closing (half-open): the protocol heartbeat notices after ping_timeout
    (close 4000, sent into the void), the session is detached and resumable, and a resume on a new link gets
    it back; another session is unaffected."""
    srv = server_factory(
        ollama_url=fake_ollama.url, llm_model="echo", voice="off", ping_interval="0.3", ping_timeout="1.0"
    )
    token = srv.token("halfopen")
    async with BlackHole(srv.port).running() as path:
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{path.port}/ws", token)
        session_id = client.session["id"]
        assert (await client.ask("through the proxy")).text == "You said: through the proxy"
        args = client.resume_args()
        path.frozen = True
        frozen_at = time.monotonic()
        await _bystander_turn(srv, "bystander4", "unaffected?")
        detached = f"[{session_id}] link lost (4000 ping timeout): detached"
        await _log_line(srv, detached, frozen_at, "the heartbeat did not notice the silent link")
        noticed = time.monotonic() - frozen_at
        assert 0.9 <= noticed < 4.0, noticed
        await _resume_and_talk(srv, token, args, session_id)
        client.ws.transport.abort()


async def test_half_open_link_is_found_by_transport_pings_when_heartbeats_are_slow(
    server_factory: ServerFactory, fake_ollama: FakeOllama
) -> None:
    """The backstop: with the protocol heartbeat set far out (60 s), the websocket control pings find the
    silent link (no control pong within `transport_ping_timeout`: uvicorn fails it with 1011) and the
    session is detached and resumable, as when the heartbeat finds it."""
    srv = server_factory(
        ollama_url=fake_ollama.url,
        llm_model="echo",
        voice="off",
        ping_interval="60",
        ping_timeout="120",
        transport_ping_interval="0.3",
        transport_ping_timeout="0.7",
    )
    token = srv.token("halfopen-transport")
    async with BlackHole(srv.port).running() as path:
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{path.port}/ws", token)
        session_id = client.session["id"]
        assert (await client.ask("through the proxy")).text == "You said: through the proxy"
        await asyncio.sleep(1.0)  # control pings answered through the proxy: the link stays
        assert f"[{session_id}] link lost" not in srv.log_text()
        args = client.resume_args()
        path.frozen = True
        frozen_at = time.monotonic()
        line = await _log_line(srv, f"[{session_id}] link lost", frozen_at, "the control pings did not notice")
        assert "4000" not in line and "detached" in line, line  # not the heartbeat: the transport
        await _resume_and_talk(srv, token, args, session_id)
        client.ws.transport.abort()


async def test_shutdown_mid_reply_flushes_and_stores(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> None:
    """SIGTERM while two sessions' replies stream: each gets its queued events then close 1001, the process
    exits cleanly, and each reply is stored (status cancelled, exactly the text sent) with its user message."""
    url = await create_database(postgres)
    srv = server_factory(ollama_url=fake_ollama.url, llm_model="story", voice="off", database_url=url)
    tokens = [await _account(srv, name) for name in ("stopped1", "stopped2")]
    conversations = [await _conversation(srv, token) for token in tokens]
    clients = [await RealtimeClient.connect(srv.ws_url, token) for token in tokens]
    for client, conversation in zip(clients, conversations, strict=True):
        await _use(client, conversation_id=conversation)
    seen = [await _start_story(client) for client in clients]
    stopping = asyncio.get_running_loop().run_in_executor(None, srv.stop)
    for client, events in zip(clients, seen, strict=True):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                events.append(await client.recv())
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert await stopping in (0, -15)  # uvicorn re-raises the SIGTERM it handled once shut down
    after = server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off", database_url=url)
    for token, conversation, events in zip(tokens, conversations, seen, strict=True):
        sent = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
        assert sent and STORY.startswith(sent) and sent != STORY
        stored = await _stored(after, token, conversation, 2)
        assert [(m["role"], m["content"], m["status"]) for m in stored] == [
            ("user", "a story", "completed"),
            ("assistant", sent, "cancelled"),
        ]
