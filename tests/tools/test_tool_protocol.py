"""The tool additions to the protocol and the Ollama client, without I/O: parsing, loop bookkeeping."""

from __future__ import annotations

import pytest

from realtime.errors import InvalidMessage, UpstreamProtocolError
from realtime.protocol.client_events import SessionUpdate, ToolCancel, ToolConfirm, parse_client_event
from realtime.stages.llm import ChatRequest, ChatToolCall, _parse_chunks
from realtime.tools.loop import (
    MAX_PAST_ARGUMENT,
    MAX_RECORDED_OUTPUT,
    ToolTurn,
    as_fallback,
    past_calls,
    past_messages,
    record,
    spoken_answer,
)
from realtime.tools.registry import TOOL_SCHEMAS, parse_fallback_call


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (True, {"confirm": None}),
        (False, None),
        (None, None),
        ({}, {"confirm": None}),
        ({"confirm": ["run_command", "delete_file"]}, {"confirm": ["run_command", "delete_file"]}),
        ({"confirm": []}, {"confirm": []}),
    ],
)
def test_tools_setting(value: object, parsed: object) -> None:
    """session.update `tools`: true, false/null, or an object naming the tools that need confirmation."""
    event = parse_client_event({"type": "session.update", "session": {"tools": value}})
    assert isinstance(event, SessionUpdate) and event.changes == {"tools": parsed}


@pytest.mark.parametrize("value", [{"confirm": ["rm_rf"]}, {"confirm": "run_command"}, {"other": 1}, "yes", 3])
def test_bad_tools_setting_is_refused(value: object) -> None:
    """Unknown tool names, a non-list, unknown fields and other types are invalid events."""
    with pytest.raises(InvalidMessage):
        parse_client_event({"type": "session.update", "session": {"tools": value}})


def test_tool_confirm_round_trips() -> None:
    """tool.confirm parses to ToolConfirm and back to the same wire map."""
    wire = {"type": "tool.confirm", "event_id": "c1", "call_id": "call_3", "approve": False}
    event = parse_client_event(wire)
    assert event == ToolConfirm("call_3", False, "c1") and event.to_wire() == wire
    with pytest.raises(InvalidMessage):
        parse_client_event({"type": "tool.confirm", "call_id": "call_3"})


def test_tool_cancel_round_trips() -> None:
    """tool.cancel parses to ToolCancel and back to the same wire map."""
    wire = {"type": "tool.cancel", "event_id": "c2", "call_id": "call_4"}
    event = parse_client_event(wire)
    assert event == ToolCancel("call_4", "c2") and event.to_wire() == wire


def test_request_carries_tools() -> None:
    """ChatRequest sends `tools` only when given."""
    assert "tools" not in ChatRequest("m", []).payload()
    assert ChatRequest("m", [], tools=TOOL_SCHEMAS).payload()["tools"] == TOOL_SCHEMAS


def test_tool_calls_are_parsed_from_ollama_lines() -> None:
    """message.tool_calls (object or JSON-string arguments) become ChatToolCall chunks."""
    line = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c0", "function": {"index": 0, "name": "write_file", "arguments": {"path": "a.py"}}},
                {"function": {"name": "run_command", "arguments": '{"command": "ls"}'}},
            ],
        },
        "done": False,
    }
    assert _parse_chunks(line) == [
        ChatToolCall("write_file", {"path": "a.py"}, "c0"),
        ChatToolCall("run_command", {"command": "ls"}),
    ]
    for bad in (
        {"tool_calls": {}},
        {"tool_calls": [{"function": {}}]},
        {"tool_calls": [{"function": {"name": "x", "arguments": "{"}}]},
    ):
        with pytest.raises(UpstreamProtocolError):
            _parse_chunks({"message": {"content": "", **bad}, "done": False})


def test_native_round_messages() -> None:
    """After a round, the next request holds the assistant's tool_calls and one tool message per result."""
    turn = ToolTurn(schemas=TOOL_SCHEMAS, confirm=frozenset(), max_rounds=4)
    base = ChatRequest("m", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    turn.start_round()
    assert turn.request(base).tools == TOOL_SCHEMAS
    call = ChatToolCall("run_command", {"command": "ls"})
    turn.add_results([(call, "call_1", "a.py")])
    messages = list(turn.request(base).messages)
    assert messages[-2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "function": {"name": "run_command", "arguments": {"command": "ls"}}}],
    }
    assert messages[-1] == {"role": "tool", "tool_name": "run_command", "tool_call_id": "call_1", "content": "a.py"}


def test_fallback_holds_a_json_call_and_streams_plain_text() -> None:
    """Fallback mode: a reply starting with `{` is held and parsed at the round's end; plain text streams."""
    turn = ToolTurn(schemas=TOOL_SCHEMAS, confirm=frozenset(), max_rounds=4, fallback=True)
    base = ChatRequest("m", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    request = turn.request(base)
    assert (
        request.tools is None
        and request.messages[1]["role"] == "system"
        and "list_files" in request.messages[1]["content"]
    )
    turn.start_round()
    assert turn.text(' {"tool": "list_files",') == "" and turn.text(' "arguments": {}}') == ""
    assert turn.end_round() == "" and turn.calls == [ChatToolCall("list_files", {})]
    turn.start_round()
    assert turn.text("Hello") == "Hello" and turn.text(" there") == " there" and turn.end_round() == ""
    turn.start_round()
    assert turn.text("{not a call}") == "" and turn.end_round() == "{not a call}" and not turn.calls


def test_past_calls_are_bounded_and_grouped_by_round() -> None:
    """A stored turn's calls come back for later turns with outputs and string arguments capped, one
    assistant message per model round; malformed attachments (other types, bad fields) are skipped."""
    big = "x" * (MAX_PAST_ARGUMENT + 500)
    records = [
        record("call_1", ChatToolCall("write_file", {"path": "a.py", "content": big}), "completed", "ok", {}),
        record("call_2", ChatToolCall("run_command", {"command": "ls"}), "completed", "y" * 9000, {}, round_no=2),
        record("call_3", ChatToolCall("run_command", {"command": "sleep 9"}), "cancelled", "", {}, round_no=2),
        {"type": "citation", "n": 1},
        {"type": "tool_call", "name": 3, "arguments": {}},
        {"type": "tool_call", "name": "read_file", "arguments": "x"},
    ]
    calls = past_calls(records)
    assert [c.call_id for c in calls] == ["call_1", "call_2", "call_3"]
    assert len(calls[0].arguments["content"]) < MAX_PAST_ARGUMENT + 40 and calls[0].arguments["path"] == "a.py"
    assert len(calls[1].output) == MAX_RECORDED_OUTPUT and calls[2].output == "(no output: the call was cancelled)"
    assert sum(c.size for c in calls) < 3 * (MAX_PAST_ARGUMENT + MAX_RECORDED_OUTPUT)
    messages = past_messages(calls)
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant", "tool", "tool"]
    assert [len(m["tool_calls"]) for m in messages if m["role"] == "assistant"] == [1, 2]


def test_native_messages_as_fallback_text() -> None:
    """The fallback rewrite: each call as the assistant's JSON, then its "Tool result" user message; other
    messages unchanged; rewriting twice changes nothing."""
    calls = past_calls([record("c1", ChatToolCall("list_files", {}), "completed", "a.py (3 bytes)", {})])
    native = [{"role": "user", "content": "u"}, *past_messages(calls), {"role": "assistant", "content": "done"}]
    text = as_fallback(native)
    assert text == [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": '{"tool": "list_files", "arguments": {}}'},
        {"role": "user", "content": "Tool result (list_files):\na.py (3 bytes)"},
        {"role": "assistant", "content": "done"},
    ]
    assert as_fallback(text) == text


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ('{"tool": "read_file", "arguments": {"path": "x"}}', ("read_file", {"path": "x"})),
        ('```json\n{"name": "list_files", "parameters": {}}\n```', ("list_files", {})),
        ('{"tool": "format_disk", "arguments": {}}', None),
        ('{"tool": "read_file", "arguments": "x"}', None),
        ("no call here", None),
    ],
)
def test_parse_fallback_call(text: str, call: object) -> None:
    """The fallback JSON is accepted with `tool`/`name` and `arguments`/`parameters`; unknown tools are not calls."""
    assert parse_fallback_call(text) == call


@pytest.mark.parametrize(
    ("transcript", "answer"),
    [("Yes, go ahead.", True), ("Sure.", True), ("No, don't do that.", False), ("Cancel it.", False), ("Hmm.", None)],
)
def test_spoken_answer(transcript: str, answer: bool | None) -> None:
    """A spoken confirmation is yes, no, or neither."""
    assert spoken_answer(transcript) is answer
