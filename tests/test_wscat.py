"""A whole text turn driven by hand-typed JSON through a real `wscat` process (the debugging path)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess

WSCAT = Path(__file__).resolve().parents[1] / "tools" / "node_modules" / ".bin" / "wscat"


async def _wscat_turn(server: ServerProcess, lines: list[str], until: str) -> list[dict[str, Any]]:
    """Run wscat, type `lines`, and collect the JSON events it prints until one of type `until`."""
    if not WSCAT.exists() or shutil.which("node") is None:
        pytest.fail("wscat is not installed: ./dev test installs it under tools/")
    proc = await asyncio.create_subprocess_exec(
        str(WSCAT),
        "-c",
        server.ws_url,
        "-s",
        "realtime.v1.json",
        "-H",
        f"Authorization: Bearer {server.token()}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(90):
            typed = False
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                text = raw.decode().lstrip("> ").strip()
                if not text.startswith("{"):
                    continue
                event = json.loads(text)
                events.append(event)
                if event["type"] == "session.created" and not typed:
                    for line in lines:
                        proc.stdin.write(line.encode() + b"\n")
                    await proc.stdin.drain()
                    typed = True
                if event["type"] == until:
                    break
    finally:
        proc.terminate()
        await proc.wait()
    return events


async def test_wscat_text_turn_with_reasoning(fake_server: ServerProcess) -> None:
    """Typed JSON in wscat: the item is created, reasoning and answer stream apart, response.done ends it."""
    events = await _wscat_turn(
        fake_server,
        [
            '{"type":"session.update","session":{"model":"think-tags"}}',
            '{"type":"conversation.item.create","item":{"role":"user","content":[{"type":"input_text","text":"Hi"}]}}',
            '{"type":"response.create"}',
        ],
        until="response.done",
    )
    types = [e["type"] for e in events]
    assert types[:4] == ["session.created", "session.updated", "conversation.item.created", "response.created"]
    reasoning = "".join(e["delta"] for e in events if e["type"] == "response.reasoning.delta")
    answer = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert (reasoning, answer) == ("The user greets me.", "Hello there!")
    assert events[-1]["response"]["status"] == "completed"


async def test_wscat_text_turn_real_model(server: ServerProcess) -> None:
    """The same by hand against the real embedded model."""
    events = await _wscat_turn(
        server,
        [
            '{"type":"conversation.item.create","item":{"role":"user","content":[{"type":"input_text",'
            '"text":"What is the capital of France?"}]}}',
            '{"type":"response.create","response":{"temperature":0}}',
        ],
        until="response.done",
    )
    answer = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert "Paris" in answer
    assert events[-1]["response"]["output_text"] == answer


async def test_wscat_bad_json_gets_an_error_event(fake_server: ServerProcess) -> None:
    """A typo typed into wscat gets an error event naming the problem; the link stays open."""
    events = await _wscat_turn(fake_server, ['{"type":"response.create",}', '{"type":"ping","ts":1}'], until="pong")
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["error"]["code"] == "malformed_frame"
    assert events[-1]["type"] == "pong"
