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
  burst-<n>             n tokens and the done line written at once (one write: they arrive together)
  think-burst           thinking-field tokens, then answer tokens, then more thinking, all in one write
  story                 a long spoken-style story, word by word at ~40 words/s (barge-in tests)
  recall                "You heard: <the last assistant message it was sent>" (what history kept)
  tools-primes          native tool calls (Ollama `message.tool_calls`): write_file primes.py, then
                        run_command `python3 primes.py`, then an answer quoting the command's result
  tools-slow            run_command of a command printing a line every 50 ms for a minute (cancellation)
  tools-fallback        400 "does not support tools" when sent `tools`; else the same steps as
                        tools-primes as JSON text ({"tool": ..., "arguments": ...}), the fallback protocol
  vision-echo           the one model with vision: describes every image it was sent, in order, as decoded
                        from the request ("Images: 2. [1] PNG 64x48 141 bytes sha256 ab12... Question: ...")
  research-echo         a research turn's model: a planning request (one with `format`) gets the JSON plan
                        {"queries": [<the question>]}; an answer request gets the sentence of the numbered
                        source ("[n] title (url)" blocks in a system message) sharing most words with the
                        question, cited as [n] (so a citation proves which page's fact was used)
  cite                  a document turn's model: reads the numbered sources ("[n] label" lines, then the
                        passage) of the system messages, and answers with the sentence sharing most words
                        with the last user message (a word matches one starting with its first five
                        letters), cited as [n]; "The documents do not say." when no source shares a word
Anything else answers 404 like Ollama does for an unknown model. POST /api/show reports `capabilities`:
["completion", "vision"] for vision-echo, ["completion"] for the others. `FakeOllama.stats.chats` holds the
bodies of the last CHAT_LOG_SIZE /api/chat requests, oldest first: what the server sent upstream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

VISION_MODELS = frozenset({"vision-echo"})
CHAT_LOG_SIZE = 64


class Stats:
    def __init__(self) -> None:
        self.open_streams = 0
        self.closed_streams = 0
        self.requests = 0
        self.chats: deque[dict[str, Any]] = deque(maxlen=CHAT_LOG_SIZE)


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
        stats.chats.append(body)
        model = body.get("model", "")
        messages = body.get("messages") or []
        last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        last_assistant = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
        gen = _vision_echo(model, messages) if model in VISION_MODELS else _script(model, last_user, last_assistant)
        if model == "research-echo":
            gen = _research_echo(model, body)
        if model == "cite":
            gen = _cite(model, messages)
        if model.startswith("tools-"):
            if model == "tools-fallback" and body.get("tools"):
                return JSONResponse({"error": f"registry.ollama.ai/library/{model} does not support tools"}, 400)
            gen = _tool_script(model, messages)
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

    async def show(request: Request) -> Response:
        body = await request.json()
        model = body.get("model") or body.get("name") or ""
        if model not in VISION_MODELS and _script(model, "") is None:
            return JSONResponse({"error": f"model '{model}' not found"}, status_code=404)
        capabilities = ["completion", "vision"] if model in VISION_MODELS else ["completion"]
        return JSONResponse({"details": {"family": "fake"}, "capabilities": capabilities})

    async def state(request: Request) -> Response:
        return JSONResponse(
            {"open_streams": stats.open_streams, "closed_streams": stats.closed_streams, "requests": stats.requests}
        )

    return Starlette(
        routes=[
            Route("/api/version", version),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/show", show, methods=["POST"]),
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


def describe_image(data: bytes) -> str:
    """How vision-echo names one image: its decoded format and size, and the bytes' length and sha256."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        kind, (width, height) = image.format, image.size
    return f"{kind} {width}x{height} {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}"


def _vision_echo(model: str, messages: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Every image of every message, in order (base64 as Ollama takes them), then the last user text."""
    images = [base64.b64decode(i, validate=True) for m in messages for i in (m.get("images") or [])]
    question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    parts = [f"Images: {len(images)}."] + [f"[{n}] {describe_image(d)}." for n, d in enumerate(images, 1)]
    text = " ".join([*parts, f"Question: {question}"])

    async def answer() -> AsyncIterator[bytes]:
        words = text.split(" ")
        for i, word in enumerate(words):
            yield _line(model, word if i == 0 else " " + word)
        yield _final(model, len(words))

    return answer()


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

    async def burst(n: int) -> AsyncIterator[bytes]:
        yield b"".join([*(_line(model, f"t{i} ") for i in range(n)), _final(model, n)])

    async def think_burst() -> AsyncIterator[bytes]:
        lines = [
            _line(model, thinking="Let "),
            _line(model, thinking="me see. "),
            _line(model, "Four"),
            _line(model, "."),
        ]
        yield b"".join([*lines, _line(model, thinking=" Done."), _final(model, 5)])

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
        "think-burst": think_burst,
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
        if name == "burst":
            return burst(int(arg))
    return None


_SOURCE = re.compile(r"^\[(\d+)\] .*\((\S+)\)$")
_STOPWORDS = frozenset({"what", "which", "when", "where", "does", "have", "with", "that", "this", "from", "about"})


def _research_echo(model: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
    messages = body.get("messages") or []
    question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    if body.get("format") is not None:
        query = question.removeprefix("Question: ").split("\n")[-1].removeprefix("Question: ").strip(" ?")
        reply = json.dumps({"queries": [query]})
        pieces = [reply[: len(reply) // 2], reply[len(reply) // 2 :]]
    else:
        sources: dict[int, list[str]] = {}
        current: list[str] | None = None
        for message in messages:
            if message.get("role") != "system":
                continue
            for line in message.get("content", "").splitlines():
                match = _SOURCE.match(line)
                if match:
                    current = sources.setdefault(int(match.group(1)), [])
                elif current is not None:
                    current.append(line)
        words = {w for w in re.findall(r"[a-z]{4,}", question.lower()) if w not in _STOPWORDS}

        def score(text: str) -> int:
            return sum(1 for w in words if w in text.lower())

        best = max(sources, key=lambda n: (score(" ".join(sources[n])), -n), default=None)
        if best is None or not score(" ".join(sources[best])):
            answer = "The search found nothing about that."
        else:
            sentences = re.split(r"(?<=[.!?])\s+", " ".join(sources[best]))
            answer = f"{max(sentences, key=score).rstrip('.')} [{best}]."
        pieces = [w if i == 0 else " " + w for i, w in enumerate(answer.split(" "))]

    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield _line(model, piece)
        yield _final(model, len(pieces))

    return gen()


_NUMBERED = re.compile(r"^\[(\d+)\] \S")
_CITE_STOPWORDS = _STOPWORDS | {"should", "would", "could", "does", "need", "there", "their", "your", "long"}


def _cite(model: str, messages: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    sources: dict[int, list[str]] = {}
    current: list[str] | None = None
    for message in messages:
        if message.get("role") != "system":
            continue
        for line in message.get("content", "").splitlines():
            match = _NUMBERED.match(line)
            if match:
                current = sources.setdefault(int(match.group(1)), [])
            elif current is not None:
                current.append(line)
    question = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    stems = {w[:5] for w in re.findall(r"[a-z]{4,}", question.lower()) if w not in _CITE_STOPWORDS}

    def score(text: str) -> int:
        words = set(re.findall(r"[a-z]{4,}", text.lower()))
        return sum(1 for stem in stems if any(w.startswith(stem) for w in words))

    best = max(sources, key=lambda n: (score(" ".join(sources[n])), -n), default=None)
    if best is None or not score(" ".join(sources[best])):
        answer = "The documents do not say."
    else:
        sentences = re.split(r"(?<=[.!?])\s+", " ".join(sources[best]).strip())
        answer = f"{max(sentences, key=score).rstrip('.')} [{best}]."
    pieces = [w if i == 0 else " " + w for i, w in enumerate(answer.split(" "))]

    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield _line(model, piece)
        yield _final(model, len(pieces))

    return gen()


PRIMES_PY = "print([n for n in range(2, 100) if all(n % d for d in range(2, n))])\n"
SLOW_COMMAND = "for i in $(seq 1 1200); do echo line $i; sleep 0.05; done"


def _tool_script(model: str, messages: list[dict[str, Any]]) -> AsyncIterator[bytes] | None:
    """Scripted tool use: the step is the number of tool results since the last user turn (earlier turns'
    calls, which the history shows, do not count)."""
    native = model != "tools-fallback"
    results: list[str] = []
    for m in messages:
        content = m.get("content", "")
        if m.get("role") == "tool" or (m.get("role") == "user" and content.startswith("Tool result")):
            results.append(content)
        elif m.get("role") == "user":
            results = []
    if model == "tools-slow":
        steps = [("run_command", {"command": SLOW_COMMAND})]
    elif model in ("tools-primes", "tools-fallback"):
        steps = [
            ("write_file", {"path": "primes.py", "content": PRIMES_PY}),
            ("run_command", {"command": "python3 primes.py"}),
        ]
    else:
        return None

    async def run() -> AsyncIterator[bytes]:
        if len(results) < len(steps):
            name, arguments = steps[len(results)]
            if native:
                call = {"id": f"call_{len(results)}", "function": {"index": 0, "name": name, "arguments": arguments}}
                obj = {
                    "model": model,
                    "created_at": datetime.now(UTC).isoformat(),
                    "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                    "done": False,
                }
                yield (json.dumps(obj) + "\n").encode()
            else:
                yield _line(model, json.dumps({"tool": name, "arguments": arguments}))
            yield _final(model, 10)
            return
        last = results[-1].split(":\n", 1)[1] if results[-1].startswith("Tool result") else results[-1]
        answer = "The program printed: " + last.split("\n[")[0].strip()
        for i, word in enumerate(answer.split(" ")):
            yield _line(model, word if i == 0 else " " + word)
        yield _final(model, len(answer.split()))

    return run()


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
