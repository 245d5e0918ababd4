"""A scriptable stand-in for an *external* Ollama server, for fault tests and the overhead benchmark.

It speaks the real wire protocol (POST /api/chat, NDJSON). The model name picks the behaviour, so a
client scripts it with session.update {model}:
  echo                  "You said: <last user message>", word by word
  think-tags            <think> tags split across chunks, then an answer
  think-field           reasoning in Ollama's separate `thinking` field, then an answer
  slow-<ms>             silent for <ms> ms, then a short answer
  endless               a token every 20 ms until the client goes away (open streams are counted)
  garbage               a line that is not JSON
  die                   two tokens, then the connection is dropped mid-stream
  error-mid             two tokens, then an {"error": ...} line
  big-<n>               n tokens of 100 characters each, fast
  wide-<n>              n tokens of 8000 random characters each (incompressible: fills socket buffers fast)
  stamp-<n>             n tokens, then a final token holding a monotonic send timestamp (benchmark)
  story                 a long spoken-style story, word by word at ~40 words/s (barge-in tests)
  recall                "You heard: <the last assistant message it was sent>" (what history kept)
Anything else answers 404 like Ollama does for an unknown model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Stats:
    def __init__(self) -> None:
        self.open_streams = 0
        self.closed_streams = 0
        self.requests = 0


def _line(model: str, content: str = "", thinking: str = "", done: bool = False, **extra: Any) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    obj = {"model": model, "created_at": datetime.now(UTC).isoformat(), "message": message, "done": done}
    obj.update(extra)
    return (json.dumps(obj) + "\n").encode()


def _final(model: str, count: int) -> bytes:
    return _line(model, done=True, done_reason="stop", prompt_eval_count=10, eval_count=count)


def create_app(stats: Stats) -> Starlette:
    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.0.0-fake"})

    async def chat(request: Request) -> Response:
        stats.requests += 1
        body = await request.json()
        model = body.get("model", "")
        messages = body.get("messages") or []
        last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        last_assistant = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
        gen = _script(model, last_user, last_assistant)
        if gen is None:
            return JSONResponse({"error": f"model '{model}' not found"}, status_code=404)

        async def counted() -> AsyncIterator[bytes]:
            stats.open_streams += 1
            try:
                async for item in gen:
                    yield item
            finally:
                stats.open_streams -= 1
                stats.closed_streams += 1

        return StreamingResponse(counted(), media_type="application/x-ndjson")

    async def state(request: Request) -> Response:
        return JSONResponse(
            {"open_streams": stats.open_streams, "closed_streams": stats.closed_streams, "requests": stats.requests}
        )

    return Starlette(
        routes=[
            Route("/api/version", version),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/_state", state),
        ]
    )


STORY = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman named Tom. "
    "Every morning he rowed his little boat out past the rocks to catch fish for the market. "
    "One day a storm came from the north, and the waves grew as tall as houses. "
    "Tom held on to his oars and sang an old song his mother had taught him. "
    "When the storm had passed, he found a golden bottle floating beside the boat. "
    "Inside the bottle was a map that showed an island nobody had ever seen before."
)


def _script(model: str, last_user: str, last_assistant: str = "") -> AsyncIterator[bytes] | None:
    async def echo() -> AsyncIterator[bytes]:
        words = ("You said: " + last_user).split(" ")
        for i, word in enumerate(words):
            yield _line(model, word if i == 0 else " " + word)
        yield _final(model, len(words))

    async def think_tags() -> AsyncIterator[bytes]:
        for piece in ["<thi", "nk>The user", " greets me.</th", "ink>\n\n", "Hello", " there", "!"]:
            yield _line(model, piece)
        yield _final(model, 7)

    async def think_field() -> AsyncIterator[bytes]:
        for piece in ["Let me ", "think."]:
            yield _line(model, thinking=piece)
        for piece in ["Four", "."]:
            yield _line(model, piece)
        yield _final(model, 4)

    async def slow(ms: int) -> AsyncIterator[bytes]:
        await asyncio.sleep(ms / 1000)
        yield _line(model, "Done thinking.")
        yield _final(model, 1)

    async def endless() -> AsyncIterator[bytes]:
        n = 0
        while True:
            n += 1
            yield _line(model, f"tok{n} ")
            await asyncio.sleep(0.02)

    async def garbage() -> AsyncIterator[bytes]:
        yield _line(model, "Hello")
        yield b"this is not json\n"

    async def die() -> AsyncIterator[bytes]:
        yield _line(model, "Hello")
        yield _line(model, " there")
        await asyncio.sleep(0.05)
        raise ConnectionAbortedError("fake upstream dies mid-stream")

    async def error_mid() -> AsyncIterator[bytes]:
        yield _line(model, "Hello")
        yield _line(model, " there")
        yield (json.dumps({"error": "CUDA out of memory at /srv/secret/path"}) + "\n").encode()

    async def big(n: int) -> AsyncIterator[bytes]:
        for i in range(n):
            yield _line(model, f"{i:05d}" + "x" * 95)
        yield _final(model, n)

    async def wide(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield _line(model, base64.b64encode(os.urandom(6000)).decode())
        yield _final(model, n)

    async def stamp(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield _line(model, "w ")
        yield _line(model, f"@{time.perf_counter_ns()}")
        yield _final(model, n + 1)

    async def story() -> AsyncIterator[bytes]:
        for i, word in enumerate(STORY.split(" ")):
            yield _line(model, word if i == 0 else " " + word)
            await asyncio.sleep(0.025)
        yield _final(model, len(STORY.split()))

    async def recall() -> AsyncIterator[bytes]:
        yield _line(model, "You heard: " + (last_assistant or "nothing"))
        yield _final(model, 3)

    simple = {
        "echo": echo,
        "think-tags": think_tags,
        "think-field": think_field,
        "endless": endless,
        "garbage": garbage,
        "die": die,
        "error-mid": error_mid,
        "story": story,
        "recall": recall,
    }
    if model in simple:
        return simple[model]()
    name, _, arg = model.partition("-")
    if arg.isdigit():
        if name == "slow":
            return slow(int(arg))
        if name == "big":
            return big(int(arg))
        if name == "wide":
            return wide(int(arg))
        if name == "stamp":
            return stamp(int(arg))
    return None


class FakeOllama:
    """Runs the fake upstream with uvicorn on its own thread and loop (independent of the test's loop)."""

    def __init__(self, port: int) -> None:
        self.stats = Stats()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(self.stats), host="127.0.0.1", port=port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-ollama", daemon=True)

    def start(self) -> FakeOllama:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake Ollama did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
