"""Ollama's OpenAI-compatible chat API (`POST /v1/chat/completions`, `GET /v1/models`): request and reply shapes.

Pure data: a request body becomes the engine's messages and sampling, engine events become OpenAI
objects and server-sent events. As in Ollama, `max_tokens` (or `max_completion_tokens`) is
`num_predict`, `response_format` is `format`, options left out keep the server's defaults, and errors
are `{"error": {"message", "type", ...}}` with the type following the status code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realtime.local_ollama.engine import Done, Sampling

MAX_MESSAGES = 4096
FINGERPRINT = "fp_ollama"
SSE_DONE = b"data: [DONE]\n\n"


class OpenAIError(Exception):
    """A request refused with this status code and message (OpenAI's error shape on the wire)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    """What the engine needs from a /v1/chat/completions body; `response_format` is Ollama's `format`."""

    model: str
    messages: list[dict[str, str]]
    sampling: Sampling
    response_format: object
    stream: bool
    include_usage: bool


def parse_chat_request(body: Mapping[str, Any]) -> ChatCompletionRequest:
    """Check a /v1/chat/completions body; raises OpenAIError(400) with the field at fault."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise OpenAIError(400, "model is required")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, "stream must be true or false")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise OpenAIError(400, "stream_options must be an object")
    if body.get("tools"):
        raise OpenAIError(400, f"{model} does not support tools")
    return ChatCompletionRequest(
        model=model,
        messages=_messages(body.get("messages"), model),
        sampling=_sampling(body),
        response_format=_response_format(body.get("response_format")),
        stream=stream,
        include_usage=stream and stream_options.get("include_usage") is True,
    )


def _messages(value: object, model: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise OpenAIError(400, "messages must be a non-empty list")
    if len(value) > MAX_MESSAGES:
        raise OpenAIError(400, f"too many messages (at most {MAX_MESSAGES})")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise OpenAIError(400, f"messages[{i}] must be an object")
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise OpenAIError(400, f"messages[{i}].role must be a non-empty string")
        if role == "developer":  # OpenAI's newer name for system instructions
            role = "system"
        out.append({"role": role, "content": _content(msg.get("content"), i, model)})
    return out


def _content(value: object, i: int, model: str) -> str:
    """A string, or a list of parts of which only text is supported (the model has no vision)."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise OpenAIError(400, f"messages[{i}].content must be a string or a list of parts")
    texts = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image"):
            raise OpenAIError(400, f"{model} does not support vision (an image was given)")
        else:
            raise OpenAIError(400, f"messages[{i}].content: unsupported part {json.dumps(kind)}")
    return "".join(texts)


def _sampling(body: Mapping[str, Any]) -> Sampling:
    chosen: dict[str, Any] = {}
    for key in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            chosen[key] = _number(body, key)
    for key in ("seed", "max_tokens", "max_completion_tokens"):
        if body.get(key) is not None:
            number = _number(body, key)
            if number != int(number):
                raise OpenAIError(400, f"{key} must be an integer")
            chosen["num_predict" if key.startswith("max_") else key] = int(number)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise OpenAIError(400, "stop must be a string or a list of strings")
        chosen["stop"] = tuple(stops)
    return Sampling(**chosen)


def _number(body: Mapping[str, Any], key: str) -> float:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OpenAIError(400, f"{key} must be a number")
    return float(value)


def _response_format(value: object) -> object:
    """OpenAI's response_format as Ollama's `format`: "json", a JSON schema, or None for text."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = value.get("json_schema")  # type: ignore[union-attr]
        if isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
            return schema["schema"]
        raise OpenAIError(400, "response_format.json_schema.schema must be an object")
    raise OpenAIError(400, 'response_format.type must be "text", "json_object" or "json_schema"')


# ---- replies ----


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_eval_count,
        "completion_tokens": done.eval_count,
        "total_tokens": done.prompt_eval_count + done.eval_count,
    }


@dataclass(frozen=True, slots=True)
class CompletionShape:
    """The OpenAI objects of one completion: `id` and `created` are shared by all its chunks."""

    id: str
    model: str
    created: int

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    def chunk(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage(done)}

    def completion(self, text: str, done: Done) -> dict[str, Any]:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": done.done_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage(done)}


def models_list(name: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "library"}]}


def sse(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
