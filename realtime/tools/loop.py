"""The bookkeeping of one response's tool-call loop, without I/O (the session streams, runs and emits).

Each round is one /api/chat call. Native mode: the request carries `tools`, calls arrive as ChatToolCall
chunks, and the next round's messages add the assistant's `tool_calls` message and one `role: tool`
message per result. Fallback mode (the upstream refused `tools`): the tools are described in a system
message; a reply that may be a JSON tool call is held back (not streamed, not spoken) until it is known
to be one or not; results go back as user messages starting "Tool result".

Messages are always built in the native form; `as_fallback` rewrites them into the fallback text for a
model on the prompt, so the current turn's rounds and earlier turns' calls (PastCall, kept in the
session's history and restored from the stored turn's attachments) read the same way to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from realtime.stages.llm import ChatRequest, ChatToolCall
from realtime.tools.registry import fallback_prompt, may_be_fallback_call, parse_fallback_call

MAX_RECORDED_OUTPUT = 2000  # characters of a tool's result kept with the stored turn
MAX_PAST_ARGUMENT = 2000  # characters of each string argument a later turn shows (a written file's content)


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
        messages = [*base.messages, *self._extra]
        if self.fallback:
            messages = as_fallback(messages)
            messages.insert(_after_system(messages), {"role": "system", "content": fallback_prompt()})
            return replace(base, messages=messages, tools=None)
        return replace(base, messages=messages, tools=self.schemas)

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
        self._extra += round_messages(
            [(call_id, call.name, call.arguments, content) for call, call_id, content in results]
        )


def round_messages(results: Sequence[tuple[str, str, Mapping[str, Any], str]]) -> list[dict[str, Any]]:
    """One round's (call id, name, arguments, result) in Ollama's native form: the assistant's
    `tool_calls` message, then one `role: tool` message per result, in call order."""
    if not results:
        return []
    tool_calls = [
        {"id": call_id, "function": {"name": name, "arguments": dict(arguments)}}
        for call_id, name, arguments, _ in results
    ]
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": "", "tool_calls": tool_calls}]
    for call_id, name, _, content in results:
        messages.append({"role": "tool", "tool_name": name, "tool_call_id": call_id, "content": content})
    return messages


def as_fallback(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Native tool messages rewritten as the fallback prompt's text: each call as the assistant's JSON
    object, followed by its result as a user message starting "Tool result". Other messages pass as they
    are, so rewriting twice changes nothing."""
    out: list[dict[str, Any]] = []
    calls: list[Mapping[str, Any]] = []  # the last assistant tool_calls message's calls not yet answered
    for message in [*messages, {}]:  # the empty sentinel writes out calls left without a result
        if message.get("role") == "tool":
            fn = calls.pop(0).get("function", {}) if calls else {"name": message.get("tool_name", "")}
            out.append({"role": "assistant", "content": _fallback_json(fn)})
            out.append(
                {"role": "user", "content": f"Tool result ({fn.get('name', '')}):\n{message.get('content', '')}"}
            )
            continue
        out += [{"role": "assistant", "content": _fallback_json(c.get("function", {}))} for c in calls]
        calls = []
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = list(message["tool_calls"])
            if message.get("content"):
                out.append({"role": "assistant", "content": message["content"]})
        elif message:
            out.append(dict(message))
    return out


def _fallback_json(function: Mapping[str, Any]) -> str:
    arguments = function.get("arguments")
    return json.dumps({"tool": function.get("name", ""), "arguments": arguments if isinstance(arguments, dict) else {}})


def _after_system(messages: list[Mapping[str, Any]]) -> int:
    """Index after the leading system messages."""
    i = 0
    while i < len(messages) and messages[i].get("role") == "system":
        i += 1
    return i


def record(
    call_id: str, call: ChatToolCall, status: str, output: str, details: Mapping[str, Any], *, round_no: int = 1
) -> dict[str, Any]:
    """A tool call as stored with the turn (in the message's attachments); `round_no` is the model call
    (1, 2, ...) that made it, so a later turn shows the calls grouped as the model made them."""
    return {
        "type": "tool_call",
        "call_id": call_id,
        "name": call.name,
        "arguments": dict(call.arguments),
        "status": status,
        "output": output[:MAX_RECORDED_OUTPUT],
        "details": dict(details),
        "round": round_no,
    }


@dataclass(frozen=True, slots=True)
class PastCall:
    """A tool call of an earlier turn, as later turns show it to the model: bounded (the output as stored,
    at most MAX_RECORDED_OUTPUT characters; each string argument at most MAX_PAST_ARGUMENT)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    output: str
    round: int

    @property
    def size(self) -> int:
        """Characters it adds to the model's context (counted by the session's history budget)."""
        return len(self.name) + len(json.dumps(self.arguments)) + len(self.output)


def past_calls(attachments: Iterable[object]) -> tuple[PastCall, ...]:
    """The tool calls among a turn's attachments (records of `record`, also as read back from the
    database); anything malformed is skipped rather than trusted."""
    calls = []
    for item in attachments:
        if not isinstance(item, Mapping) or item.get("type") != "tool_call":
            continue
        name, arguments = item.get("name"), item.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, Mapping):
            continue
        status, output = str(item.get("status", "")), str(item.get("output", ""))[:MAX_RECORDED_OUTPUT]
        if not output:
            output = f"(no output: the call was {status or 'not run'})"
        round_ = item.get("round", 1)
        calls.append(
            PastCall(
                call_id=str(item.get("call_id", "")),
                name=name,
                arguments={str(k): _cut(v) for k, v in arguments.items()},
                output=output,
                round=round_ if isinstance(round_, int) and not isinstance(round_, bool) else 1,
            )
        )
    return tuple(calls)


def past_messages(calls: Sequence[PastCall]) -> list[dict[str, Any]]:
    """An earlier turn's calls in the native form, one assistant `tool_calls` message per round."""
    messages: list[dict[str, Any]] = []
    rounds: dict[int, list[PastCall]] = {}
    for call in calls:
        rounds.setdefault(call.round, []).append(call)
    for _, group in sorted(rounds.items()):
        messages += round_messages([(c.call_id, c.name, c.arguments, c.output) for c in group])
    return messages


def _cut(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_PAST_ARGUMENT:
        return value[:MAX_PAST_ARGUMENT] + f"[... {len(value) - MAX_PAST_ARGUMENT} characters cut]"
    return value


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
