"""LLM stage: streamed chat through Ollama's HTTP API (`POST /api/chat`, NDJSON), with bounded waits.

Every failure of the upstream becomes an UpstreamError subclass with a message safe for clients;
cancelling the consuming task closes the HTTP stream at once (the upstream stops generating).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from realtime.errors import (
    ModelNotFound,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger("realtime.llm")

MAX_LINE_BYTES = 1 << 20
MAX_ERROR_BODY = 16 << 10
MAX_UPSTREAM_MESSAGE = 300
SHOW_TIMEOUT = 30.0  # a model's /api/show (capabilities): read from its files, no generation
MAX_CACHED_MODELS = 256  # capabilities remembered per OllamaChat (a model's do not change while it is pulled)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: Sequence[Mapping[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    think: bool | None = None
    keep_alive: str | int | None = None
    format: str | Mapping[str, Any] | None = None  # Ollama structured output: "json" or a JSON schema
    tools: Sequence[Mapping[str, Any]] | None = None  # Ollama tool calling: [{type: function, function: {...}}]

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(self.messages), "stream": True}
        options: dict[str, Any] = {}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.max_tokens is not None:
            options["num_predict"] = self.max_tokens
        if options:
            body["options"] = options
        if self.think is not None:
            body["think"] = self.think
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        if self.format is not None:
            body["format"] = self.format
        if self.tools:
            body["tools"] = list(self.tools)
        return body


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """A streamed piece: answer text and/or the model's separate `thinking` field."""

    content: str = ""
    thinking: str = ""


@dataclass(frozen=True, slots=True)
class ChatDone:
    done_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None


@dataclass(frozen=True, slots=True)
class ChatToolCall:
    """A tool call from `message.tool_calls`: {id?, function: {name, arguments: object}}."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None


ChatChunk = ChatDelta | ChatToolCall | ChatDone


class ChatBackend(Protocol):
    """What a session needs from an LLM: one streamed chat. Cancel the iteration to stop it."""

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...


class CapabilityBackend(Protocol):
    """A backend that can say what a model can do (Ollama's /api/show `capabilities`: "completion",
    "vision", "tools", "thinking"...). None: it cannot tell (an Ollama too old to report them)."""

    async def capabilities(self, model: str) -> frozenset[str] | None: ...


@dataclass(frozen=True, slots=True)
class OllamaTimeouts:
    connect: float = 5.0
    first_token: float | None = 300.0  # includes the upstream loading the model
    idle: float | None = 120.0  # between two chunks once streaming


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_UPSTREAM_MESSAGE else text[:MAX_UPSTREAM_MESSAGE] + "..."


class OllamaChat:
    """Client of one Ollama (or Ollama-compatible) server."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        timeouts: OllamaTimeouts | None = None,
    ) -> None:
        """`http` may be several clients (shards), taken in turn: httpcore scans every connection of a pool
        on each request and each response end (and asks each idle one whether its socket is readable), so
        one pool of 50 connections cost more CPU per turn than the turn's own work; pools of a few do not."""
        self.base_url = base_url.rstrip("/")
        self._clients = [http] if isinstance(http, httpx.AsyncClient) else list(http)
        if not self._clients:
            raise ValueError("OllamaChat needs at least one HTTP client")
        self._turn = 0
        self._timeouts = timeouts or OllamaTimeouts()
        self._capabilities: dict[str, frozenset[str] | None] = {}

    def _client(self) -> httpx.AsyncClient:
        """The next shard."""
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    def _timeout(self) -> httpx.Timeout:
        # Reads are bounded by our own first-token/idle deadlines below, not by httpx.
        return httpx.Timeout(connect=self._timeouts.connect, read=None, write=30.0, pool=self._timeouts.connect)

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        url = f"{self.base_url}/api/chat"
        try:
            async with self._client().stream("POST", url, json=request.payload(), timeout=self._timeout()) as resp:
                if resp.status_code != 200:
                    raise await self._status_error(resp, request.model)
                done: ChatDone | None = None
                async for objects in self._batches(resp):
                    if done is not None:
                        continue  # read the body to its end, so the connection goes back to the pool
                    for chunk in _coalesced(c for obj in objects for c in _parse_chunks(obj)):
                        if isinstance(chunk, ChatDone):
                            done = chunk
                            break
                        yield chunk
                if done is None:
                    raise UpstreamProtocolError("The language model service ended the reply early.")
                yield done
        except UpstreamError:
            raise
        except httpx.ConnectError as exc:
            raise UpstreamUnavailable() from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout() from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamError("The connection to the language model service was lost.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError() from exc

    async def _batches(self, resp: httpx.Response) -> AsyncIterator[list[dict[str, Any]]]:
        """NDJSON objects, as the lists that each network read completed; each line bounded, each wait
        bounded (first token, then idle)."""
        buffer = b""
        chunks = resp.aiter_bytes()
        deadline = self._timeouts.first_token
        while True:
            try:
                async with asyncio.timeout(deadline):
                    data = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError as exc:
                raise UpstreamTimeout() from exc
            deadline = self._timeouts.idle
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            objects = [_json_line(line) for line in lines if line.strip()]
            if objects:
                yield objects
            if len(buffer) > MAX_LINE_BYTES:
                raise UpstreamProtocolError()
        if buffer.strip():
            yield [_json_line(buffer)]

    async def _status_error(self, resp: httpx.Response, model: str) -> UpstreamError:
        body = b""
        async for data in resp.aiter_bytes():
            body += data
            if len(body) > MAX_ERROR_BODY:
                break
        message = ""
        try:
            obj = json.loads(body[:MAX_ERROR_BODY])
            if isinstance(obj, dict) and isinstance(obj.get("error"), str):
                message = _short(obj["error"])
        except ValueError:
            pass
        log.warning("upstream answered HTTP %s: %s", resp.status_code, message or body[:200])
        if resp.status_code == 404 and "model" in message.lower():
            return ModelNotFound(f"The model '{_short(model)}' is not available.")
        if resp.status_code == 404:  # not Ollama's "model not found": a wrong REALTIME_OLLAMA_URL, most likely
            return UpstreamError("The language model service has no chat endpoint at the configured address.")
        if 400 <= resp.status_code < 500:
            return UpstreamRejected(f"The language model service refused the request: {message}" if message else None)
        if resp.status_code == 503:
            return UpstreamUnavailable("The language model service is busy or unavailable.")
        return UpstreamError()

    def _show_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(SHOW_TIMEOUT, connect=self._timeouts.connect, pool=self._timeouts.connect)

    async def capabilities(self, model: str) -> frozenset[str] | None:
        """What `model` can do, from POST /api/show (cached); None when the server does not say.

        ModelNotFound for a model the server does not have; other failures as for a chat."""
        if model in self._capabilities:
            return self._capabilities[model]
        try:
            resp = await self._client().post(
                f"{self.base_url}/api/show", json={"model": model}, timeout=self._show_timeout()
            )
            if resp.status_code != 200:
                raise await self._status_error(resp, model)
            body = resp.json()
        except UpstreamError:
            raise
        except httpx.ConnectError as exc:
            raise UpstreamUnavailable() from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout() from exc
        except httpx.HTTPError as exc:
            raise UpstreamError() from exc
        except ValueError as exc:
            raise UpstreamProtocolError() from exc
        listed = body.get("capabilities") if isinstance(body, dict) else None
        found = frozenset(c for c in listed if isinstance(c, str)) if isinstance(listed, list) else None
        if len(self._capabilities) >= MAX_CACHED_MODELS:
            self._capabilities.clear()
        self._capabilities[model] = found
        return found

    async def version(self) -> str:
        """GET /api/version; raises UpstreamUnavailable when nothing answers like Ollama."""
        try:
            resp = await self._client().get(f"{self.base_url}/api/version", timeout=self._timeout())
            resp.raise_for_status()
            version = resp.json().get("version")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise UpstreamUnavailable() from exc
        if not isinstance(version, str):
            raise UpstreamUnavailable()
        return version


def _json_line(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise UpstreamProtocolError() from exc
    if not isinstance(obj, dict):
        raise UpstreamProtocolError()
    return obj


def _coalesced(chunks: Iterable[ChatChunk]) -> list[ChatChunk]:
    """Deltas that arrived in one network read become one delta: a model spacing its tokens (every real
    one) still streams token by token, but a burst (a fast model, a stalled link catching up) costs one
    websocket message instead of one per token. Order is kept: thinking never moves after content."""
    out: list[ChatChunk] = []
    for chunk in chunks:
        last = out[-1] if out else None
        if isinstance(chunk, ChatDelta) and isinstance(last, ChatDelta) and not (last.content and chunk.thinking):
            out[-1] = ChatDelta(content=last.content + chunk.content, thinking=last.thinking + chunk.thinking)
        else:
            out.append(chunk)
    return out


def _parse_chunks(obj: Mapping[str, Any]) -> list[ChatChunk]:
    """One NDJSON object -> its delta (if it carries text) and its done marker (if final)."""
    error = obj.get("error")
    if error is not None:
        log.warning("upstream error mid-stream: %s", _short(str(error)))
        raise UpstreamError("The language model service failed while answering.")
    out: list[ChatChunk] = []
    message = obj.get("message")
    if message is not None:
        if not isinstance(message, Mapping):
            raise UpstreamProtocolError()
        content = message.get("content") or ""
        thinking = message.get("thinking") or ""
        if not isinstance(content, str) or not isinstance(thinking, str):
            raise UpstreamProtocolError()
        if content or thinking:
            out.append(ChatDelta(content=content, thinking=thinking))
        out.extend(_tool_calls(message.get("tool_calls")))
    done = obj.get("done")
    if done is True:
        out.append(
            ChatDone(
                done_reason=_opt_str(obj.get("done_reason")),
                prompt_tokens=_opt_int(obj.get("prompt_eval_count")),
                output_tokens=_opt_int(obj.get("eval_count")),
            )
        )
    elif done not in (False, None):
        raise UpstreamProtocolError()
    return out


def _tool_calls(value: object) -> list[ChatToolCall]:
    """Ollama's `tool_calls`; arguments may come as an object or (OpenAI-style) as a JSON string."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise UpstreamProtocolError()
    calls: list[ChatToolCall] = []
    for item in value:
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise UpstreamProtocolError()
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                raise UpstreamProtocolError() from exc
        if not isinstance(arguments, Mapping):
            raise UpstreamProtocolError()
        call_id = item.get("id")
        calls.append(ChatToolCall(function["name"], dict(arguments), call_id if isinstance(call_id, str) else None))
    return calls


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
