"""The bookkeeping of one response's tool-call loop, without I/O (the session streams, runs and emits).

Each round is one /api/chat call. Native mode: the request carries `tools`, calls arrive as ChatToolCall
chunks, and the next round's messages add the assistant's `tool_calls` message and one `role: tool`
message per result. Fallback mode (the upstream refused `tools`): the tools are described in a system
message; a reply that may be a JSON tool call is held back (not streamed, not spoken) until it is known
to be one or not; results go back as user messages starting "Tool result".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from realtime.stages.llm import ChatRequest, ChatToolCall
from realtime.tools.registry import fallback_prompt, may_be_fallback_call, parse_fallback_call

MAX_RECORDED_OUTPUT = 2000  # characters of a tool's result kept with the stored turn


def is_tools_refusal(message: str) -> bool:
    """Whether an upstream 400 says the model has no native tool calling (Ollama: "... does not support tools")."""
    return "support tools" in message.lower()


@dataclass(slots=True)
class ToolTurn:
    schemas: list[dict[str, Any]]
    confirm: frozenset[str]
    max_rounds: int
    fallback: bool = False
    rounds: int = 0
    calls: list[ChatToolCall] = field(default_factory=list)
    _held: str = ""
    _holding: bool = True
    _extra: list[dict[str, Any]] = field(default_factory=list)  # messages added by earlier rounds

    def request(self, base: ChatRequest) -> ChatRequest:
        """The next round's request from the response's base request."""
        messages = list(base.messages)
        if self.fallback:
            messages.insert(_after_system(messages), {"role": "system", "content": fallback_prompt()})
            return replace(base, messages=[*messages, *self._extra], tools=None)
        return replace(base, messages=[*messages, *self._extra], tools=self.schemas)

    def start_round(self) -> None:
        self.rounds += 1
        self.calls = []
        self._held, self._holding = "", self.fallback

    def text(self, content: str) -> str:
        """Answer text to stream now (in fallback mode, held while it may still be a tool call)."""
        if not self._holding:
            return content
        self._held += content
        if may_be_fallback_call(self._held):
            return ""  # held to the end of the round, then parsed
        self._holding = False
        held, self._held = self._held, ""
        return held

    def end_round(self) -> str:
        """Held text that turned out to be an answer (to stream), after recording a fallback call if any."""
        if not self._holding or not self._held:
            return ""
        parsed = parse_fallback_call(self._held)
        if parsed is None:
            held, self._held = self._held, ""
            return held
        self.calls.append(ChatToolCall(parsed[0], parsed[1]))
        return ""

    def wants_more(self) -> bool:
        return bool(self.calls) and self.rounds < self.max_rounds

    def add_results(self, results: list[tuple[ChatToolCall, str, str]]) -> None:
        """(call, call id, result text) of this round, in call order, for the next round's messages."""
        if self.fallback:
            for call, _, content in results:
                self._extra.append({"role": "assistant", "content": _fallback_json(call)})
                self._extra.append({"role": "user", "content": f"Tool result ({call.name}):\n{content}"})
            return
        tool_calls = [
            {"id": call_id, "function": {"name": call.name, "arguments": dict(call.arguments)}}
            for call, call_id, _ in results
        ]
        self._extra.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
        for call, call_id, content in results:
            self._extra.append({"role": "tool", "tool_name": call.name, "tool_call_id": call_id, "content": content})


def _fallback_json(call: ChatToolCall) -> str:
    return json.dumps({"tool": call.name, "arguments": dict(call.arguments)})


def _after_system(messages: list[Mapping[str, Any]]) -> int:
    """Index after the leading system messages."""
    i = 0
    while i < len(messages) and messages[i].get("role") == "system":
        i += 1
    return i


def record(call_id: str, call: ChatToolCall, status: str, output: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call as stored with the turn (in the message's attachments)."""
    return {
        "type": "tool_call",
        "call_id": call_id,
        "name": call.name,
        "arguments": dict(call.arguments),
        "status": status,
        "output": output[:MAX_RECORDED_OUTPUT],
        "details": dict(details),
    }


_YES = re.compile(r"\b(yes|yeah|yep|yup|sure|ok|okay|go ahead|do it|run it|confirm|please do|affirmative)\b")
_NO = re.compile(r"\b(no|nope|don't|do not|stop|cancel|never mind|nevermind|abort|negative)\b")


def spoken_answer(transcript: str) -> bool | None:
    """A spoken yes (True) or no (False) to a confirmation; None when it is neither or both."""
    text = transcript.lower()
    yes, no = bool(_YES.search(text)), bool(_NO.search(text))
    if yes == no:
        return None
    return yes


def describe(name: str, arguments: Mapping[str, Any]) -> str:
    """A short spoken description of a call, for the confirmation question."""
    if name == "run_command":
        return f"run the command {str(arguments.get('command', ''))[:120]}"
    if name == "delete_file":
        return f"delete {str(arguments.get('path', ''))[:120]}"
    if name == "write_file":
        return f"write the file {str(arguments.get('path', ''))[:120]}"
    return f"use {name}"
