"""Ollama's HTTP API over the engine: the routes, request checks and response shapes of Ollama's server.

Everything that can be refused is refused before the response starts, with Ollama's status codes
and `{"error": ...}` bodies, so the official client raises the same `ResponseError`s as against
Ollama. The first event of a generation is awaited before the headers go out for the same reason:
a template or load failure still becomes a status code. Later failures become an `{"error"}` line,
as Ollama streams them. `test_mode` adds scripted tool calls for tests (scripted.py); it is off unless
the CLI's `--test-mode` asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from realtime.local_ollama.embed import EmbedConfig, Embedder, EmbedError, default_model_dir, parse_embed_request
from realtime.local_ollama.engine import (
    FOREVER,
    Done,
    Engine,
    EngineConfig,
    EngineError,
    Generation,
    ModelInfo,
    Piece,
    Sampling,
    compile_format,
)
from realtime.local_ollama.openai_compat import (
    SSE_DONE,
    CompletionShape,
    OpenAIError,
    error_body,
    models_list,
    parse_chat_request,
    sse,
)
from realtime.local_ollama.scripted import ScriptError, ToolScript

log = logging.getLogger("realtime.local_ollama.http")

VERSION = "0.0.0-local"
MAX_BODY_SIZE = 32 << 20
MAX_MESSAGES = 4096
CAPABILITIES = ["completion"]  # SmolLM2: no tools, no vision, no thinking, no insert (suffix)

_T = TypeVar("_T")
_FLOAT_OPTIONS = (
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
_INT_OPTIONS = ("top_k", "seed", "num_predict")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_FAR_FUTURE = timedelta(days=365 * 292)  # what Ollama shows for "forever" (now + max int64 ns)


class ApiError(Exception):
    """A request refused with Ollama's status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    """The HTTP client disconnected before the reply was ready."""


def create_app(
    engine_config: EngineConfig, embed_config: EmbedConfig | None = None, *, test_mode: bool = False
) -> Starlette:
    """The Starlette app: loads the model at startup (when configured), frees it at shutdown.

    `/api/embed` serves the embedding model in `embed_config` (default: all-MiniLM-L6-v2 where
    realtime.assets puts it), loaded on its first request. `test_mode` (tests only) accepts `tools` and
    serves `/_test/tool_calls`, whose scripted calls answer the next requests that carry tools."""
    engine = Engine(engine_config)
    embedder = Embedder(embed_config or EmbedConfig(default_model_dir()))
    api = _Api(engine, embedder, ToolScript() if test_mode else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.close()
            await embedder.close()

    routes = [
        Route("/", api.root, methods=["GET"]),
        Route("/api/version", api.version, methods=["GET"]),
        Route("/api/tags", api.tags, methods=["GET"]),
        Route("/api/ps", api.ps, methods=["GET"]),
        Route("/api/show", api.show, methods=["POST"]),
        Route("/api/chat", api.chat, methods=["POST"]),
        Route("/api/generate", api.generate, methods=["POST"]),
        Route("/api/embed", api.embed, methods=["POST"]),
        Route("/v1/models", api.openai_models, methods=["GET"]),
        Route("/v1/chat/completions", api.openai_chat, methods=["POST"]),
    ]
    if test_mode:
        log.warning("test mode: tool calls may be scripted through /_test/tool_calls")
        routes.append(Route("/_test/tool_calls", api.script_tool_calls, methods=["GET", "POST", "DELETE"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, OpenAIError: _openai_error, Exception: _internal_error},
    )
    app.state.engine = engine
    return app


class _Api:
    """Route handlers; one instance per app, bound to its engine."""

    def __init__(self, engine: Engine, embedder: Embedder, script: ToolScript | None = None) -> None:
        self.engine = engine
        self.embedder = embedder
        self.script = script  # test mode only

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        info = self.engine.info
        return JSONResponse(
            {
                "models": [
                    {
                        "name": info.name,
                        "model": info.name,
                        "modified_at": _iso(info.modified_at),
                        "size": info.file_size,
                        "digest": info.digest,
                        "details": _details(info),
                    }
                ]
            }
        )

    async def ps(self, request: Request) -> Response:
        resident = self.engine.resident()
        if resident is None:
            return JSONResponse({"models": []})
        info = resident.info
        expires_at = resident.expires_at or datetime.now(UTC) + _FAR_FUTURE
        return JSONResponse(
            {
                "models": [
                    {
                        "name": info.name,
                        "model": info.name,
                        "size": info.resident_size,
                        "digest": info.digest,
                        "details": _details(info),
                        "expires_at": _iso(expires_at),
                        "size_vram": 0,
                        "context_length": resident.n_ctx,
                    }
                ]
            }
        )

    async def show(self, request: Request) -> Response:
        body = await _read_json(request)
        self._known_model(_model_field(body))
        info = self.engine.info
        return JSONResponse(
            {
                "license": info.license,
                "modelfile": _modelfile(info),
                "parameters": "\n".join(f"stop {json.dumps(s)}" for s in info.stop_words),
                "template": info.template,
                "details": _details(info),
                "model_info": _model_info(info),
                "capabilities": CAPABILITIES if self.script is None else [*CAPABILITIES, "tools"],
                "modified_at": _iso(info.modified_at),
            }
        )

    async def chat(self, request: Request) -> Response:
        started_at = time.perf_counter()
        body = await _read_json(request)
        model = self._known_model(_model_field(body))
        keep_alive = _keep_alive(body.get("keep_alive"))
        messages = _messages(body.get("messages"), model)
        stream = _flag(body, "stream", default=True)
        if not messages and keep_alive == 0:
            await self.engine.unload()
            return _json({**_head(model), "message": _assistant(""), "done": True, "done_reason": "unload"})
        _refuse_thinking(body.get("think"), model)
        tools = _tools(body.get("tools"), model, accepted=self.script is not None)
        sampling, grammar = _sampling(body.get("options")), _grammar(body.get("format"))
        if not messages:
            await self.engine.load(keep_alive, started_at)
            return _json({**_head(model), "message": _assistant(""), "done": True, "done_reason": "load"})
        calls = self.script.take() if tools and self.script is not None else None
        if calls is not None:
            return _scripted_reply(model, calls, stream, started_at)
        job = Generation(
            messages=messages, sampling=sampling, grammar=grammar, keep_alive=keep_alive, started_at=started_at
        )
        return await _reply(request, self.engine.generate(job), stream, _ChatShape(model))

    async def generate(self, request: Request) -> Response:
        started_at = time.perf_counter()
        body = await _read_json(request)
        model = self._known_model(_model_field(body))
        keep_alive = _keep_alive(body.get("keep_alive"))
        prompt, system = _text(body, "prompt"), _text(body, "system")
        raw, stream = _flag(body, "raw", default=False), _flag(body, "stream", default=True)
        if not prompt and keep_alive == 0:
            await self.engine.unload()
            return _json({**_head(model), "response": "", "done": True, "done_reason": "unload"})
        if _text(body, "suffix"):
            raise ApiError(400, f"{model} does not support insert")
        if raw and (system or _text(body, "template") or body.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        if _text(body, "template"):
            raise ApiError(400, "a custom template is not supported by this server")
        _refuse_thinking(body.get("think"), model)
        _refuse_images(body.get("images"), model)
        sampling, grammar = _sampling(body.get("options")), _grammar(body.get("format"))
        if not prompt:
            await self.engine.load(keep_alive, started_at)
            return _json({**_head(model), "response": "", "done": True, "done_reason": "load"})
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        job = Generation(
            messages=messages,
            raw_prompt=prompt if raw else None,
            sampling=sampling,
            grammar=grammar,
            keep_alive=keep_alive,
            started_at=started_at,
        )
        return await _reply(request, self.engine.generate(job), stream, _GenerateShape(model))

    async def embed(self, request: Request) -> Response:
        started_at = time.perf_counter()
        body = await _read_json(request)
        model = _model_field(body)
        if not self.embedder.matches(model):
            if self.engine.matches(model):
                raise ApiError(400, f'"{model}" does not support embeddings')
            raise ApiError(404, f'model "{model}" not found, try pulling it first')
        try:
            return _json(await self.embedder.handle(parse_embed_request(body, model), started_at))
        except EmbedError as exc:
            raise ApiError(exc.status, exc.message) from exc

    async def openai_models(self, request: Request) -> Response:
        info = self.engine.info
        return JSONResponse(models_list(info.name, int(info.modified_at.timestamp())))

    async def openai_chat(self, request: Request) -> Response:
        """Ollama's OpenAI-compatible chat: the same engine, OpenAI's shapes, server-sent events when streamed."""
        started_at = time.perf_counter()
        try:
            body = await _read_json(request)
        except ApiError as exc:
            raise OpenAIError(exc.status, exc.message) from exc
        req = parse_chat_request(body)
        if not self.engine.matches(req.model):
            raise OpenAIError(404, f'model "{req.model}" not found, try pulling it first')
        try:
            grammar = compile_format(req.response_format)
        except ValueError as exc:
            raise OpenAIError(400, str(exc)) from exc
        job = Generation(messages=req.messages, sampling=req.sampling, grammar=grammar, started_at=started_at)
        shape = CompletionShape(f"chatcmpl-{secrets.randbelow(1000):03d}", req.model, int(time.time()))
        events = self.engine.generate(job)
        handed_off = False
        try:
            first = await _until_disconnect(request, _next(events))
            if req.stream:
                handed_off = True
                return _SSEStream(_sse_lines(first, events, shape, req.include_usage))
            text, done = await _until_disconnect(request, _collect(first, events))
            return JSONResponse(shape.completion(text, done))
        except EngineError as exc:
            raise OpenAIError(exc.status, exc.message) from exc
        except _ClientGone:
            return Response(status_code=499)
        finally:
            if not handed_off:
                await events.aclose()  # type: ignore[attr-defined]

    async def script_tool_calls(self, request: Request) -> Response:
        """Test mode: GET how many scripted replies wait, POST one more, DELETE them all (scripted.py)."""
        assert self.script is not None
        if request.method == "POST":
            try:
                self.script.add(await _read_json(request))
            except ScriptError as exc:
                raise ApiError(400, str(exc)) from exc
        elif request.method == "DELETE":
            self.script.clear()
        return JSONResponse({"queued": len(self.script)})

    def _known_model(self, name: str) -> str:
        if not self.engine.matches(name):
            raise ApiError(404, f"model '{name}' not found")
        return name


# ---- replies ----


class _ChatShape:
    """/api/chat objects: the text goes in `message.content`."""

    def __init__(self, model: str) -> None:
        self.model = model

    def piece(self, text: str) -> dict[str, Any]:
        return {**_head(self.model), "message": _assistant(text), "done": False}

    def final(self, text: str, done: Done) -> dict[str, Any]:
        return {**_head(self.model), "message": _assistant(text), **_stats(done)}


class _GenerateShape(_ChatShape):
    """/api/generate objects: the text goes in `response`."""

    def piece(self, text: str) -> dict[str, Any]:
        return {**_head(self.model), "response": text, "done": False}

    def final(self, text: str, done: Done) -> dict[str, Any]:
        return {**_head(self.model), "response": text, **_stats(done)}


class _NDJSONStream(StreamingResponse):
    """A streamed reply that closes its generator (and so stops the model) however the response ends."""

    media_type = "application/x-ndjson"

    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        super().__init__(lines)
        self._lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._lines.aclose()  # type: ignore[attr-defined]


def _scripted_reply(model: str, calls: list[dict[str, Any]], stream: bool, started_at: float) -> Response:
    """A test-mode reply of tool calls, shaped as Ollama's: streamed, a `message.tool_calls` line, then the
    done line; or one object. No model ran, so the counts are zero."""
    message = {**_assistant(""), "tool_calls": calls}
    elapsed = int((time.perf_counter() - started_at) * 1e9)
    done = {"done": True, "done_reason": "stop", "total_duration": elapsed, "load_duration": 0}
    done |= {"prompt_eval_count": 0, "prompt_eval_duration": 0, "eval_count": 0, "eval_duration": 0}
    if not stream:
        return _json({**_head(model), "message": message, **done})

    async def lines() -> AsyncIterator[bytes]:
        yield _line({**_head(model), "message": message, "done": False})
        yield _line({**_head(model), "message": _assistant(""), **done})

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _reply(request: Request, events: AsyncIterator[Piece | Done], stream: bool, shape: _ChatShape) -> Response:
    """Wait for the first event (errors still get a status code), then stream or collect the rest."""
    handed_off = False
    try:
        first = await _until_disconnect(request, _next(events))
        if stream:
            handed_off = True
            return _NDJSONStream(_lines(first, events, shape))
        text, done = await _until_disconnect(request, _collect(first, events))
        return _json(shape.final(text, done))
    except EngineError as exc:
        return _error(exc.status, exc.message)
    except _ClientGone:
        return Response(status_code=499)  # nobody reads it; Ollama logs the same code
    finally:
        if not handed_off:
            await events.aclose()  # type: ignore[attr-defined]


async def _lines(first: Piece | Done, events: AsyncIterator[Piece | Done], shape: _ChatShape) -> AsyncIterator[bytes]:
    try:
        event: Piece | Done = first
        while True:
            if isinstance(event, Done):
                yield _line(shape.final("", event))
                return
            yield _line(shape.piece(event.text))
            event = await _next(events)
    except EngineError as exc:
        yield _line({"error": exc.message})
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class _SSEStream(_NDJSONStream):
    media_type = "text/event-stream"


async def _sse_lines(
    first: Piece | Done, events: AsyncIterator[Piece | Done], shape: CompletionShape, include_usage: bool
) -> AsyncIterator[bytes]:
    """Chunks, a last one with the finish reason, the usage chunk when asked for, then [DONE]."""
    try:
        event: Piece | Done = first
        while isinstance(event, Piece):
            yield sse(shape.chunk(event.text))
            event = await _next(events)
        yield sse(shape.chunk("", event.done_reason))
        if include_usage:
            yield sse(shape.usage_chunk(event))
        yield SSE_DONE
    except EngineError as exc:
        yield sse(error_body(exc.status, exc.message))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _collect(first: Piece | Done, events: AsyncIterator[Piece | Done]) -> tuple[str, Done]:
    parts: list[str] = []
    event = first
    while isinstance(event, Piece):
        parts.append(event.text)
        event = await _next(events)
    return "".join(parts), event


async def _next(events: AsyncIterator[Piece | Done]) -> Piece | Done:
    try:
        return await anext(events)
    except StopAsyncIteration as exc:  # the engine always ends with Done; this is a bug guard
        raise EngineError("the generation ended without a result") from exc


async def _until_disconnect(request: Request, work: Awaitable[_T]) -> _T:
    """Await `work`, cancelling it if the client disconnects first (Starlette only watches streams)."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        work_task.cancel()
        watch_task.cancel()
        await asyncio.wait({work_task, watch_task})
    if work_task.cancelled():
        raise _ClientGone
    return work_task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---- request parsing ----


async def _read_json(request: Request) -> dict[str, Any]:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_SIZE:
        raise ApiError(413, "request body too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            raise ApiError(413, "request body too large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _model_field(body: Mapping[str, Any]) -> str:
    name = body.get("model") or body.get("name")  # `name` is the legacy spelling
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "model is required")
    return name


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string")
    return value


def _flag(body: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false")
    return value


def _messages(value: object, model: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "messages must be a list")
    if len(value) > MAX_MESSAGES:
        raise ApiError(400, f"too many messages (at most {MAX_MESSAGES})")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise ApiError(400, f"messages[{i}] must be an object")
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not role:
            raise ApiError(400, f"messages[{i}].role must be a non-empty string")
        if content is not None and not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string")
        _refuse_images(msg.get("images"), model)
        out.append({"role": role, "content": _with_tool_calls(content or "", msg.get("tool_calls"), i)})
    return out


def _with_tool_calls(content: str, calls: object, i: int) -> str:
    """An assistant message's `tool_calls` as text the model can read (this model's template has no place
    for them), one `{"tool": name, "arguments": {...}}` line per call, after the message's own text."""
    if calls is None:
        return content
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise ApiError(400, f"messages[{i}].tool_calls must be a list of objects")
    lines = [content] if content else []
    for call in calls:
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiError(400, f"messages[{i}].tool_calls: each call needs a function with a name")
        arguments = function.get("arguments", {})
        lines.append(json.dumps({"tool": function["name"], "arguments": arguments}, ensure_ascii=False))
    return "\n".join(lines)


def _keep_alive(value: object) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a Go duration string; negative means forever."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return FOREVER if value < 0 else float(value)
    if isinstance(value, str):
        seconds = _duration(value)
        return FOREVER if seconds < 0 else seconds
    raise ApiError(400, f"keep_alive: unsupported type '{type(value).__name__}'")


def _duration(text: str) -> float:
    """Go's time.ParseDuration ("5m", "1h30m", "0"); a bare number is taken as seconds."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    with contextlib.suppress(ValueError):
        seconds = float(body)
        if math.isfinite(seconds):
            return sign * seconds
    total, pos = 0.0, 0
    for part in _DURATION_PART.finditer(body):
        if part.start() != pos:
            break
        total += float(part[1]) * _DURATION_UNITS[part[2]]
        pos = part.end()
    if pos == 0 or pos != len(body):
        raise ApiError(400, f'time: invalid duration "{text}"')
    return sign * total


def _sampling(value: object) -> Sampling:
    """Ollama's options we honour; the rest (num_ctx, num_thread, mirostat, ...) are ignored, as on load."""
    if value is None:
        return Sampling()
    if not isinstance(value, dict):
        raise ApiError(400, "options must be an object")
    chosen: dict[str, Any] = {}
    for key in _FLOAT_OPTIONS:
        if value.get(key) is not None:
            chosen[key] = _number(key, value[key])
    for key in _INT_OPTIONS:
        if value.get(key) is not None:
            number = _number(key, value[key])
            if number != int(number):
                raise ApiError(400, f'option "{key}" must be an integer')
            chosen[key] = int(number)
    stop = value.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ApiError(400, 'option "stop" must be a list of strings')
        chosen["stop"] = tuple(stops)
    return Sampling(**chosen)


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f'option "{key}" must be a number')
    return float(value)


def _grammar(value: object) -> Any:
    try:
        return compile_format(value)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc


def _refuse_thinking(value: object, model: str) -> None:
    wants = value if isinstance(value, bool) else isinstance(value, str) and value not in ("", "false", "none")
    if wants:
        raise ApiError(400, f'"{model}" does not support thinking')


def _tools(value: object, model: str, *, accepted: bool) -> bool:
    """Whether the request offers tools; refused (as Ollama refuses a model without tool calling) unless
    the test mode accepts them."""
    if value is None:
        return False
    if not isinstance(value, list):
        raise ApiError(400, "tools must be a list")
    if value and not accepted:
        raise ApiError(400, f"{model} does not support tools")
    return bool(value)


def _refuse_images(value: object, model: str) -> None:
    if value:
        raise ApiError(400, f"{model} does not support vision (images were given)")


# ---- response pieces ----


def _head(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": _iso(datetime.now(UTC))}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _stats(done: Done) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": done.done_reason,
        "total_duration": done.total_duration,
        "load_duration": done.load_duration,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }


def _details(info: ModelInfo) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": info.family,
        "families": [info.family],
        "parameter_size": info.parameter_size,
        "quantization_level": info.quantization_level,
    }


def _model_info(info: ModelInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"general.parameter_count": info.parameter_count}
    for key, value in sorted(info.metadata.items()):
        if key != "tokenizer.chat_template":
            out[key] = _scalar(value)
    return out


def _scalar(value: str) -> int | float | str:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(value)
    return value


def _modelfile(info: ModelInfo) -> str:
    lines = [
        "# Modelfile generated by realtime.local_ollama",
        f"FROM {info.path}",
        f'TEMPLATE """{info.template}"""',
        *(f"PARAMETER stop {s}" for s in info.stop_words),
    ]
    if info.license:
        lines.append(f'LICENSE """{info.license}"""')
    return "\n".join(lines) + "\n"


def _iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Go prints time.Time."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _json(obj: Mapping[str, Any], status: int = 200) -> Response:
    return Response(_line(obj), status_code=status, media_type="application/json; charset=utf-8")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.message)


async def _openai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return JSONResponse(error_body(exc.status, exc.message), status_code=exc.status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal server error")
