"""Tool calls are stored with their turn (the assistant message's attachments) in the real PostgreSQL, and
later turns (in the same session, or in a stored conversation continued later) show the model the earlier
turns' calls and results: what the server sends upstream is read from the scripted upstream's request log."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from db import EmbeddedPostgres
from realtime.client import RealtimeClient
from tests.conftest import ServerFactory, create_database
from tests.support.accounts import signed_in
from tests.support.fake_ollama import PRIMES_PY, FakeOllama
from tests.support.server import ServerProcess
from tests.tools.conftest import needs_bwrap

pytestmark = needs_bwrap




@pytest.fixture(scope="module")
async def db_tools_server(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres, tools_dir: Path
) -> ServerProcess:
    url = await create_database(postgres)
    return server_factory(
        ollama_url=fake_ollama.url, llm_model="tools-primes", voice="off", database_url=url, tools_dir=str(tools_dir)
    )


async def _signup(server: ServerProcess, name: str) -> str:
    http = await signed_in(server, name)
    await http.aclose()
    return http.headers["Authorization"].removeprefix("Bearer ")


def _request_for(fake_ollama: FakeOllama, question: str) -> list[dict[str, Any]]:
    """The messages of the newest upstream request whose last message is the user's `question`."""
    for body in reversed(list(fake_ollama.stats.chats)):
        messages = body.get("messages") or []
        if messages and messages[-1] == {"role": "user", "content": question}:
            return [m for m in messages if m["role"] != "system"]  # the instructions and the tool prompt
    raise AssertionError(f"no upstream request ended with {question!r}")


def _native_calls(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(role, what) of the tool messages: each call's name and arguments, each result's tool and output."""
    out: list[tuple[str, Any]] = []
    for m in messages:
        for call in m.get("tool_calls") or ():
            out.append(("call", (call["function"]["name"], call["function"]["arguments"])))
        if m["role"] == "tool":
            out.append(("result", (m["tool_name"], m["content"])))
    return out


PRIMES_OUT = "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]"
FIRST_TURN = [
    ("call", ("write_file", {"path": "primes.py", "content": PRIMES_PY})),
    ("result", ("write_file", f"Wrote {len(PRIMES_PY)} bytes to primes.py.")),
    ("call", ("run_command", {"command": "python3 primes.py"})),
    ("result", ("run_command", f"{PRIMES_OUT}\n\n[exit code 0]")),
]


async def _messages(server: ServerProcess, token: str, conversation_id: str, count: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        messages: list[dict[str, Any]] = []
        for _ in range(100):  # the writer is asynchronous: wait (bounded) until everything is stored
            resp = await http.get(f"/api/conversations/{conversation_id}")
            if resp.status_code == 200 and len(messages := resp.json()["messages"]) >= count:
                return messages
            await asyncio.sleep(0.1)
        raise AssertionError(resp.text)


async def test_tool_calls_are_stored_with_the_turn(db_tools_server: ServerProcess) -> None:
    """The assistant message keeps each call: name, arguments, status, output (bounded) and details."""
    async with httpx.AsyncClient(base_url=db_tools_server.url) as http:
        resp = await http.post("/api/auth/signup", json={"username": "toolsmith", "password": "correct horse battery"})
        assert resp.status_code == 201, resp.text
        token = resp.json()["access_token"]
    async with await RealtimeClient.connect(db_tools_server.ws_url, token) as client:
        await client.send({"type": "session.update", "session": {"tools": True}})
        conversation = await client.recv_until("session.updated")
        result = await client.ask("Make a Python script that prints the primes below 100 and run it.")
        assert result.status == "completed"
        await client.send({"type": "session.update", "session": {}})
        conversation = await client.recv_until("session.updated")
        conversation_id = conversation[-1]["session"]["conversation_id"]
    messages = await _messages(db_tools_server, token, conversation_id, 2)
    assistant = messages[1]
    assert assistant["role"] == "assistant" and assistant["content"] == result.text
    calls = assistant["attachments"]
    assert [(c["type"], c["name"], c["status"]) for c in calls] == [
        ("tool_call", "write_file", "completed"),
        ("tool_call", "run_command", "completed"),
    ]
    assert calls[1]["arguments"] == {"command": "python3 primes.py"}
    assert calls[1]["output"].startswith("[2, 3, 5, 7") and calls[1]["details"]["exit_code"] == 0


async def test_a_later_turn_shows_the_model_the_earlier_tool_calls(
    db_tools_server: ServerProcess, fake_ollama: FakeOllama
) -> None:
    """Native tool calling: the second turn's request carries the first turn's assistant `tool_calls`
    messages and `role: tool` results (round by round, before the first turn's answer)."""
    token = await _signup(db_tools_server, "historian")
    async with await RealtimeClient.connect(db_tools_server.ws_url, token) as client:
        await client.send({"type": "session.update", "session": {"tools": True}})
        await client.recv_until("session.updated")
        first = await client.ask("Make a Python script that prints the primes below 100 and run it.")
        assert first.status == "completed"
        question = "What did the script print?"
        second = await client.ask(question, model="echo")
        assert second.status == "completed"
    messages = _request_for(fake_ollama, question)
    assert _native_calls(messages) == FIRST_TURN
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant", "user"]
    assert messages[5] == {"role": "assistant", "content": first.text}
    assert messages[1]["content"] == "" and messages[2]["content"] == f"Wrote {len(PRIMES_PY)} bytes to primes.py."
    call_ids = [m["tool_calls"][0]["id"] for m in messages if m.get("tool_calls")]
    assert call_ids == [m["tool_call_id"] for m in messages if m["role"] == "tool"]


async def test_a_model_on_the_tool_prompt_sees_earlier_calls_as_text(
    db_tools_server: ServerProcess, fake_ollama: FakeOllama
) -> None:
    """Fallback prompt: the earlier calls come back as the assistant's JSON objects and "Tool result"
    user messages, the same text the model wrote and read in the turn itself."""
    token = await _signup(db_tools_server, "promptee")
    async with await RealtimeClient.connect(db_tools_server.ws_url, token) as client:
        await client.send({"type": "session.update", "session": {"tools": True, "model": "tools-fallback"}})
        await client.recv_until("session.updated")
        first = await client.ask("Make a Python script that prints the primes below 100 and run it.")
        assert first.status == "completed"
        question = "Now do it again."
        again = await client.ask(question)
        assert again.status == "completed" and again.text == first.text
    messages = _request_for(fake_ollama, question)
    assert all("tool_calls" not in m and m["role"] != "tool" for m in messages)
    texts = [(m["role"], m["content"]) for m in messages]
    assert texts == [
        ("user", "Make a Python script that prints the primes below 100 and run it."),
        ("assistant", json.dumps({"tool": "write_file", "arguments": {"path": "primes.py", "content": PRIMES_PY}})),
        ("user", f"Tool result (write_file):\nWrote {len(PRIMES_PY)} bytes to primes.py."),
        ("assistant", '{"tool": "run_command", "arguments": {"command": "python3 primes.py"}}'),
        ("user", f"Tool result (run_command):\n{PRIMES_OUT}\n\n[exit code 0]"),
        ("assistant", first.text),
        ("user", question),
    ]


async def test_a_continued_conversation_shows_the_model_its_tool_calls(
    db_tools_server: ServerProcess, fake_ollama: FakeOllama
) -> None:
    """Tool calls stored with a turn come back when the conversation is continued on a new connection."""
    token = await _signup(db_tools_server, "returning-toolsmith")
    async with await RealtimeClient.connect(db_tools_server.ws_url, token) as client:
        await client.send({"type": "session.update", "session": {"tools": True}})
        await client.recv_until("session.updated")
        first = await client.ask("Make a Python script that prints the primes below 100 and run it.")
        assert first.status == "completed"
        await client.send({"type": "session.update", "session": {}})
        conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]
    await _messages(db_tools_server, token, conversation_id, 2)
    async with await RealtimeClient.connect(db_tools_server.ws_url, token) as client:
        await client.send({"type": "session.update", "session": {"conversation_id": conversation_id, "model": "echo"}})
        await client.recv_until("session.updated")
        question = "Which primes did my script find last time?"
        assert (await client.ask(question)).status == "completed"
    messages = _request_for(fake_ollama, question)
    assert _native_calls(messages) == FIRST_TURN
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "user"]
