"""A whole tool turn against the real embedded endpoint: SmolLM2-135M is too weak to call tools reliably,
so the endpoint's test mode (`--test-mode`, realtime/local_ollama/scripted.py) injects the calls through
the real Ollama protocol, and everything else, the answer after the tool results included, comes from the
real model. The calls run in the real sandbox and the turn is stored in the real PostgreSQL."""

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
from tests.support.accounts import signed_in
from tests.support.fake_ollama import PRIMES_PY
from tests.support.local_ollama import LocalOllamaProcess, default_model_path, start_local_ollama
from tests.support.server import ServerProcess
from tests.tools.conftest import needs_bwrap

pytestmark = needs_bwrap

PRIMES = "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97]"
SCRIPT = [
    [{"function": {"name": "write_file", "arguments": {"path": "primes.py", "content": PRIMES_PY}}}],
    [{"function": {"name": "run_command", "arguments": {"command": "python3 primes.py"}}}],
]


@pytest.fixture(scope="module")
def scripted_ollama() -> Iterator[LocalOllamaProcess]:
    """The embedded endpoint on the real SmolLM2, in test mode (its own process: the shared one is not)."""
    if not default_model_path().is_file():
        pytest.skip("SmolLM2 GGUF not in the asset cache")
    with start_local_ollama(test_mode=True) as proc:
        yield proc




async def _stored(server: ServerProcess, http: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    for _ in range(100):  # the history writer is asynchronous: wait (bounded) for both messages
        resp = await http.get(f"/api/conversations/{conversation_id}")
        if resp.status_code == 200 and len(messages := resp.json()["messages"]) >= 2:
            return messages
        await asyncio.sleep(0.1)
    raise AssertionError(resp.text)


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_a_whole_tool_turn_on_the_real_local_model(
    server_factory: ServerFactory,
    scripted_ollama: LocalOllamaProcess,
    postgres: EmbeddedPostgres,
    tools_dir: Path,
) -> None:
    """Injected write_file and run_command calls arrive as `message.tool_calls`, run in the sandbox (output
    streamed, results reported), the real model writes the answer from the results, and the turn is
    stored with its calls."""
    server = server_factory(
        ollama_url=scripted_ollama.url,
        llm_model="smollm2:135m",
        max_output_tokens="48",
        voice="off",
        database_url=await create_database(postgres),
        tools_dir=str(tools_dir),
    )
    http = await signed_in(server, "local-toolsmith")
    try:
        async with httpx.AsyncClient(base_url=scripted_ollama.url, timeout=30.0) as upstream:
            for reply in SCRIPT:
                assert (await upstream.post("/_test/tool_calls", json={"tool_calls": reply})).status_code == 200
            token = http.headers["Authorization"].removeprefix("Bearer ")
            async with await RealtimeClient.connect(server.ws_url, token) as client:
                await client.send({"type": "session.update", "session": {"tools": True}})
                await client.recv_until("session.updated")
                result = await client.ask("Make a Python script that prints the primes below 100 and run it.")
                await client.send({"type": "session.update", "session": {}})
                conversation_id = (await client.recv_until("session.updated"))[-1]["session"]["conversation_id"]
            assert (await upstream.get("/_test/tool_calls")).json() == {"queued": 0}  # both calls were used
        done = result.done["response"]
        assert result.status == "completed" or done.get("status_details", {}).get("reason") == "max_output_tokens"
        assert not result.errors
        calls = _of(result.events, "response.tool_call")
        assert [c["name"] for c in calls] == ["write_file", "run_command"]
        results = _of(result.events, "response.tool_result")
        assert [r["status"] for r in results] == ["completed", "completed"] and results[1]["details"]["exit_code"] == 0
        streamed = "".join(e["delta"] for e in _of(result.events, "response.tool_output.delta"))
        assert streamed == PRIMES + "\n"
        assert [f.read_text() for f in tools_dir.glob("*/primes.py")] == [PRIMES_PY]  # the user's workspace
        assert result.text.strip() and done["usage"]["output_tokens"] > 0  # the real model's answer
        messages = await _stored(server, http, conversation_id)
    finally:
        await http.aclose()
    assistant = messages[1]
    assert assistant["role"] == "assistant" and assistant["content"] == result.text
    stored = [(c["name"], c["status"], c["round"]) for c in assistant["attachments"] if c["type"] == "tool_call"]
    assert stored == [("write_file", "completed", 1), ("run_command", "completed", 2)]
    assert assistant["attachments"][1]["output"].startswith(PRIMES)
