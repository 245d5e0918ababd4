"""Test mode (`--test-mode`): tool calls scripted by a test, answered through the real Ollama protocol.

SmolLM2-135M has no native tool calling and is too small to call tools reliably, yet a whole tool turn
should be tested against this real endpoint. In test mode a test POSTs the tool calls of the next
replies to `/_test/tool_calls`; the next /api/chat request that carries `tools` gets one scripted reply,
`message.tool_calls` exactly as Ollama streams them, without running the model. Every other request,
including the one carrying the tool results, is answered by the real model. Off by default: only the
CLI flag turns it on, and the voice server never passes it.

    POST   /_test/tool_calls  {"tool_calls": [{"function": {"name": "run_command", "arguments": {...}}}]}
                              queues one reply (1-16 calls); 200 {"queued": <replies waiting>}
    DELETE /_test/tool_calls  drops the replies still waiting; 200 {"queued": 0}
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Mapping
from typing import Any

MAX_QUEUED = 64  # scripted replies waiting
MAX_CALLS = 16  # calls in one reply


class ScriptError(ValueError):
    """A scripted reply that is not a list of Ollama tool calls (answered 400)."""


class ToolScript:
    """The scripted replies waiting, oldest first; bounded."""

    def __init__(self) -> None:
        self._replies: deque[list[dict[str, Any]]] = deque()

    def __len__(self) -> int:
        return len(self._replies)

    def add(self, body: Mapping[str, Any]) -> None:
        """Queue one reply from a POST body; ScriptError when malformed or when too many wait."""
        calls = body.get("tool_calls")
        if not isinstance(calls, list) or not 1 <= len(calls) <= MAX_CALLS:
            raise ScriptError(f"tool_calls must be a list of 1 to {MAX_CALLS} calls")
        reply = [_call(i, call) for i, call in enumerate(calls)]
        if len(self._replies) >= MAX_QUEUED:
            raise ScriptError(f"at most {MAX_QUEUED} scripted replies may wait")
        self._replies.append(reply)

    def clear(self) -> None:
        self._replies.clear()

    def take(self) -> list[dict[str, Any]] | None:
        """The next reply's tool calls, in Ollama's shape; None when nothing is scripted."""
        return self._replies.popleft() if self._replies else None


def _call(index: int, call: object) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        raise ScriptError(f"tool_calls[{index}].function must be an object")
    name, arguments = function.get("name"), function.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ScriptError(f"tool_calls[{index}].function.name must be a non-empty string")
    if not isinstance(arguments, Mapping):
        raise ScriptError(f"tool_calls[{index}].function.arguments must be an object")
    return {
        "id": "call_" + secrets.token_hex(4),
        "function": {"index": index, "name": name, "arguments": dict(arguments)},
    }
