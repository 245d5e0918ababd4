"""Tool calls are stored with their turn (the assistant message's attachments) in the real PostgreSQL."""

from __future__ import annotations

import asyncio
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
from tests.support.fake_ollama import FakeOllama
from tests.support.server import ServerProcess
from tests.tools.conftest import needs_bwrap

pytestmark = needs_bwrap


@pytest.fixture(scope="module")
def tools_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="realtime-tools-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
async def db_tools_server(
    server_factory: ServerFactory, fake_ollama: FakeOllama, postgres: EmbeddedPostgres, tools_dir: Path
) -> ServerProcess:
    url = await create_database(postgres)
    return server_factory(
        ollama_url=fake_ollama.url, llm_model="tools-primes", voice="off", database_url=url, tools_dir=str(tools_dir)
    )


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
