"""Accounts and stored history through the real server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from db import EmbeddedPostgres
from realtime.client import RealtimeClient
from tests.conftest import ServerFactory, create_database
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess
from tests.support.speech import synthesize, wer, with_silence
from tests.support.talk import events_until, stream_audio


@pytest.fixture(scope="module")
async def db_server(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> ServerProcess:
    url = await create_database(postgres)
    return server_factory(
        ollama_url=fake_ollama.url, llm_model="echo", voice="on", database_url=url, history_retry_for="20"
    )


async def _signup(server: ServerProcess, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as http:
        resp = await http.post("/api/auth/signup", json={"username": name, "password": "correct horse battery"})
        assert resp.status_code == 201, resp.text
        return resp.json()


async def _conversation(server: ServerProcess, token: str, conversation_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(50):  # the writer is asynchronous: wait (bounded) until everything is stored
            resp = await http.get(f"/api/conversations/{conversation_id}")
            if resp.status_code == 200:
                return resp.json()
            await asyncio.sleep(0.1)
        raise AssertionError(resp.text)


async def _messages(server: ServerProcess, token: str, conversation_id: str, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        messages = (await _conversation(server, token, conversation_id))["messages"]
        if len(messages) >= count:
            return messages
        await asyncio.sleep(0.1)
    return messages


async def test_text_and_spoken_turns_are_stored_once_in_order(db_server: ServerProcess) -> None:
    """A typed turn and a spoken turn: four messages, in order, each once, with transcript and audio length."""
    account = await _signup(db_server, "storer")
    token = account["access_token"]
    async with await RealtimeClient.connect(db_server.ws_url, token) as client:
        assert client.session["history_stored"] is True
        typed = await client.ask("hello there")
        assert typed.text == "You said: hello there"
        question = "Please remind me to water the plants tomorrow."
        audio = with_silence(synthesize(question, 24_000), 24_000)
        sender = asyncio.create_task(stream_audio(client, audio, 24_000))
        events = await events_until(client, "response.done")
        await sender
        transcript = next(e for _, e in events if e["type"].endswith(".completed"))["transcript"]
        await client.send({"type": "session.update", "session": {}})
        conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]
    messages = await _messages(db_server, token, conversation_id, 4)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello there"),
        ("assistant", "You said: hello there"),
        ("user", transcript),
        ("assistant", "You said: " + transcript),
    ]
    assert wer(question, transcript) <= 0.15
    assert messages[2]["audio_ms"] > 1500 and [m["seq"] for m in messages] == [1, 2, 3, 4]
    assert messages[1]["timings"]["first_token_ms"] is not None


async def test_drop_mid_reply_resume_and_the_conversation_is_stored_complete(db_server: ServerProcess) -> None:
    """Log in, ask, lose the link mid-reply, resume: the rest of the reply arrives and is stored whole, once."""
    account = await _signup(db_server, "tunnel")
    token = account["access_token"]
    client = await RealtimeClient.connect(db_server.ws_url, token)
    await client.send({"type": "session.update", "session": {"model": "story"}})
    await client.recv_until("session.updated")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"role": "user", "content": [{"type": "input_text", "text": "a story"}]},
        }
    )
    await client.send({"type": "response.create"})
    seen: list[dict[str, Any]] = []
    while len([e for e in seen if e["type"] == "response.text.delta"]) < 5:
        seen.append(await client.recv())
    args = client.resume_args()
    client.ws.transport.abort()  # no close frame: a lost link, not a goodbye
    await asyncio.sleep(0.3)
    again = await RealtimeClient.connect(db_server.ws_url, token, resume=args)
    while seen[-1]["type"] != "response.done":
        seen.append(await again.recv())
    full = seen[-1]["response"]["output_text"]
    assert "".join(e["delta"] for e in seen if e["type"] == "response.text.delta") == full
    assert seen[-1]["response"]["status"] == "completed" and full.startswith("Once upon a time")
    await again.send({"type": "session.update", "session": {}})
    conversation_id = (await again.recv_until("session.updated"))[-1]["session"]["conversation_id"]
    await again.close()
    messages = await _messages(db_server, token, conversation_id, 2)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "a story"), ("assistant", full)]


async def test_continue_a_stored_conversation_after_a_server_restart(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> None:
    """Talk, restart the server, continue the conversation: the model sees what was said before."""
    url = await create_database(postgres)
    first = server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="off", database_url=url)
    account = await _signup(first, "returner")
    token = account["access_token"]
    async with await RealtimeClient.connect(first.ws_url, token) as client:
        assert (await client.ask("the secret word is papaya")).status == "completed"
        await client.send({"type": "session.update", "session": {}})
        conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]
    await _messages(first, token, conversation_id, 2)
    first.stop()
    second = server_factory(ollama_url=fake_ollama.url, llm_model="recall", voice="off", database_url=url)
    async with await RealtimeClient.connect(second.ws_url, token) as client:
        await client.send({"type": "session.update", "session": {"conversation_id": conversation_id}})
        updated = (await client.recv_until("session.updated"))[-1]
        assert updated["session"]["conversation_id"] == conversation_id
        result = await client.ask("what was the word?")
    assert result.text == "You heard: You said: the secret word is papaya"
    messages = await _messages(second, token, conversation_id, 4)
    assert [m["seq"] for m in messages] == [1, 2, 3, 4]


async def test_another_users_conversation_cannot_be_continued(db_server: ServerProcess) -> None:
    """A conversation id of another user is not found (nothing about it is revealed)."""
    owner = (await _signup(db_server, "owner1"))["access_token"]
    async with await RealtimeClient.connect(db_server.ws_url, owner) as client:
        await client.ask("private")
        await client.send({"type": "session.update", "session": {}})
        conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]
    thief = (await _signup(db_server, "thief1"))["access_token"]
    async with await RealtimeClient.connect(db_server.ws_url, thief) as client:
        await client.send({"type": "session.update", "session": {"conversation_id": conversation_id}})
        err = (await client.recv())["error"]
    assert err["code"] == "conversation_not_found"


async def test_ticket_opens_a_websocket_once(db_server: ServerProcess) -> None:
    """A single-use ticket from /api/auth/ticket opens one websocket without a token in the URL."""
    token = (await _signup(db_server, "ticketer"))["access_token"]
    async with httpx.AsyncClient(base_url=db_server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        ticket = (await http.post("/api/auth/ticket")).json()["ticket"]
    url = f"{db_server.ws_url}?ticket={ticket}"
    async with await RealtimeClient.connect(url, None) as client:
        assert client.session["history_stored"] is True
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        await RealtimeClient.connect(url, None)
    assert refused.value.response.status_code == 401


async def test_database_restart_mid_session_loses_nothing(db_server: ServerProcess, postgres: EmbeddedPostgres) -> None:
    """PostgreSQL restarted while a session talks: the session goes on and every turn ends up stored."""
    token = (await _signup(db_server, "survivor"))["access_token"]
    async with await RealtimeClient.connect(db_server.ws_url, token) as client:
        await client.ask("before the restart")
        await asyncio.to_thread(postgres.stop)
        try:
            during = await client.ask("while the database is down")
            assert during.status == "completed"
        finally:
            await asyncio.to_thread(postgres.start)
        await client.ask("after the restart")
        await client.send({"type": "session.update", "session": {}})
        conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]

    messages = await _messages(db_server, token, conversation_id, 6)
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "before the restart",
        "while the database is down",
        "after the restart",
    ]
    assert len(messages) == 6


async def test_history_finally_lost_is_reported(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres
) -> None:
    """If the database stays away longer than the retry window, the client is told (never silently)."""
    url = await create_database(postgres)
    srv = server_factory(
        ollama_url=fake_ollama.url, llm_model="echo", voice="off", database_url=url, history_retry_for="1"
    )
    token = (await _signup(srv, "unlucky"))["access_token"]
    async with await RealtimeClient.connect(srv.ws_url, token) as client:
        await asyncio.to_thread(postgres.stop)
        try:
            await client.ask("this will not be saved")
            lost = await client.recv_until("error")
        finally:
            await asyncio.to_thread(postgres.start)
    assert lost[-1]["error"]["code"] == "history_write_failed"


async def test_deleted_account_token_is_refused(db_server: ServerProcess) -> None:
    """A token of an account that no longer exists cannot open a session."""
    from websockets.exceptions import InvalidStatus

    account = await _signup(db_server, "leaver")
    token = account["access_token"]
    import asyncpg

    # delete the account the way an administrator would (soft delete), then try to connect
    async with httpx.AsyncClient(base_url=db_server.url) as http:
        me = (await http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})).json()
    url = db_server.env["REALTIME_DATABASE_URL"]
    con = await asyncpg.connect(url)
    try:
        await con.execute("UPDATE users SET deleted_at = now() WHERE id = $1::uuid", me["user"]["id"])
    finally:
        await con.close()
    with pytest.raises(InvalidStatus) as refused:
        await RealtimeClient.connect(db_server.ws_url, token)
    assert refused.value.response.status_code == 401
