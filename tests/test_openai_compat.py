"""The OpenAI Realtime (GA) dialect on /v1/realtime: the translator with exact maps, then the official
`openai` SDK against the real server (text turn, spoken turn with server VAD, interruption with
truncate, malformed events), as docs/openai-compat.md promises."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from realtime.openai_compat.translator import Translator
from tests.conftest import ServerFactory
from tests.support.fake_ollama import STORY, FakeOllama
from tests.support.server import ServerProcess
from tests.support.speech import chunks, synthesize, wer, with_silence

RATE = 24_000
PCM24 = {"type": "pcm16", "sample_rate": RATE}
TD = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "min_speech_duration_ms": 100,
    "segment_pause_ms": 200,
    "create_response": True,
    "interrupt_response": True,
    "interrupt_min_speech_ms": 250,
}
INFO: dict[str, Any] = {
    "id": "sess_0123456789abcdef",
    "user": "alice",
    "protocol": "v1",
    "encoding": "json",
    "resume_secret": "s",
    "resume_grace_ms": 60000,
    "conversation_id": None,
    "history_stored": False,
    "model": "echo",
    "instructions": "Be brief.",
    "temperature": None,
    "max_output_tokens": None,
    "reasoning": None,
    "input_audio_format": PCM24,
    "output_audio_format": None,
    "turn_detection": TD,
    "input_audio_transcription": {"language": None, "partials": True},
    "limits": {"max_message_size": 1048576, "max_text_chars": 32000, "max_response_chars": 100000},
    "ping_interval_ms": 10000,
    "ping_timeout_ms": 30000,
}
SPOKEN = {**INFO, "output_audio_format": PCM24}
SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def opened(*, has_speech: bool = True) -> Translator:
    """A translator past its opening: session.created (ours) then the opening update's session.updated."""
    t = Translator(has_voice=True, has_speech=has_speech)
    assert t.from_server({"type": "session.created", "session": INFO}) == []
    created = t.from_server({"type": "session.updated", "session": SPOKEN if has_speech else INFO})
    assert [e["type"] for e in created] == ["session.created"]
    return t


def ours(t: Translator, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Translate one OpenAI client event that must be accepted."""
    events, replies = t.from_client(json.dumps(event))
    assert replies == [], replies
    return events


def refused(t: Translator, data: str | dict[str, Any]) -> dict[str, Any]:
    """Translate one client frame that must be refused; its OpenAI error object."""
    events, replies = t.from_client(data if isinstance(data, str) else json.dumps(data))
    assert events == [] and len(replies) == 1 and replies[0]["type"] == "error", replies
    return replies[0]["error"]


# ---- translator: exact maps -----------------------------------------------------------------------


def test_opening_asks_for_openai_defaults_and_sends_session_created() -> None:
    """The first event to the session turns on 24 kHz speech; OpenAI's session.created follows its update."""
    t = Translator(has_voice=True, has_speech=True, model="gpt-realtime")
    assert t.opening() == {"type": "session.update", "session": {"output_audio_format": PCM24}}
    assert Translator(has_voice=True, has_speech=False, model="story").opening() == {
        "type": "session.update",
        "session": {"model": "story"},
    }
    assert t.from_server({"type": "session.created", "session": INFO}) == []
    [created] = t.from_server({"type": "session.updated", "session": SPOKEN})
    assert created == {
        "type": "session.created",
        "event_id": "event_1",
        "session": {
            "type": "realtime",
            "object": "realtime.session",
            "id": "sess_0123456789abcdef",
            "model": "echo",
            "output_modalities": ["audio"],
            "instructions": "Be brief.",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper", "language": None, "prompt": None},
                    "noise_reduction": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "idle_timeout_ms": None,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0},
            },
        },
    }


def test_session_update_maps_to_our_settings() -> None:
    """OpenAI's nested session object becomes our flat settings; voice waits for the session's answer."""
    t = opened()
    update = {
        "type": "session.update",
        "event_id": "c1",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Speak French.",
            "output_modalities": ["text"],
            "max_output_tokens": 200,
            "tools": [],
            "tool_choice": "auto",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 16000},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "fr"},
                    "noise_reduction": {"type": "near_field"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.99,
                        "prefix_padding_ms": 200,
                        "silence_duration_ms": 50,
                        "create_response": False,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "cedar", "speed": 1.1},
            },
        },
    }
    assert ours(t, update) == [
        {
            "type": "session.update",
            "event_id": "c1",
            "session": {
                "instructions": "Speak French.",
                "max_output_tokens": 200,
                "input_audio_format": {"type": "pcm16", "sample_rate": 16000},
                "turn_detection": {
                    "type": "server_vad",
                    "turn_model": False,
                    "threshold": 0.95,
                    "prefix_padding_ms": 200,
                    "silence_duration_ms": 100,
                    "create_response": False,
                },
                "input_audio_transcription": {"language": "fr"},
                "output_audio_format": None,
            },
        }
    ]
    [updated] = t.from_server({"type": "session.updated", "session": INFO})
    assert updated["session"]["audio"]["output"]["voice"] == "cedar"
    assert updated["session"]["output_modalities"] == ["text"]
    assert ours(t, {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}) == [
        {"type": "session.update", "session": {"turn_detection": None}}
    ]
    semantic = {"type": "semantic_vad", "eagerness": "high"}
    assert ours(t, {"type": "session.update", "session": {"audio": {"input": {"turn_detection": semantic}}}}) == [
        {
            "type": "session.update",
            "session": {"turn_detection": {"type": "server_vad", "turn_model": True, "silence_duration_ms": 300}},
        }
    ]


def test_a_refused_session_update_changes_no_openai_only_value() -> None:
    """When the session refuses an update, its voice (kept by the translator) does not change either."""
    t = opened()
    ours(t, {"type": "session.update", "session": {"model": "x", "audio": {"output": {"voice": "ash"}}}})
    err = {"code": "invalid_state", "message": "no", "param": "session.model", "event_type": "session.update"}
    [error] = t.from_server({"type": "error", "error": err})
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_state",
        "message": "no",
        "param": "session.model",
        "event_id": None,
    }
    [updated] = t.from_server({"type": "session.updated", "session": SPOKEN})
    assert updated["session"]["audio"]["output"]["voice"] == "marin"


def test_text_turn_events() -> None:
    """A typed turn: the item (created, added, done), then the response with its item and text part."""
    t = opened(has_speech=False)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    assert ours(t, {"type": "conversation.item.create", "event_id": "c2", "item": item}) == [
        {"type": "conversation.item.create", "event_id": "c2", "item": item}
    ]
    created = t.from_server({"type": "conversation.item.created", "item": {"id": "item_1", **item}})
    openai_item = {
        "id": "item_1",
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": "Hi"}],
    }
    assert created == [
        {"type": "conversation.item.created", "event_id": "event_2", "previous_item_id": None, "item": openai_item},
        {"type": "conversation.item.added", "event_id": "event_3", "previous_item_id": None, "item": openai_item},
        {"type": "conversation.item.done", "event_id": "event_4", "previous_item_id": None, "item": openai_item},
    ]
    assert ours(t, {"type": "response.create"}) == [{"type": "response.create"}]
    started = t.from_server(
        {"type": "response.created", "response": {"id": "resp_2", "status": "in_progress", "item_id": "item_3"}}
    )
    assert [e["type"] for e in started] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.created",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert started[0]["response"]["output_modalities"] == ["text"]
    assert started[3]["previous_item_id"] == "item_1"
    assert started[4] == {
        "type": "response.content_part.added",
        "event_id": "event_9",
        "response_id": "resp_2",
        "item_id": "item_3",
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "text", "text": ""},
    }
    assert t.from_server({"type": "response.text.delta", "response_id": "resp_2", "item_id": "item_3", "delta": "Yo"})[
        0
    ] == {
        "type": "response.output_text.delta",
        "event_id": "event_10",
        "response_id": "resp_2",
        "item_id": "item_3",
        "output_index": 0,
        "content_index": 0,
        "delta": "Yo",
    }
    done = t.from_server(
        {
            "type": "response.done",
            "response": {
                "id": "resp_2",
                "item_id": "item_3",
                "status": "completed",
                "output_text": "Yo",
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
        }
    )
    assert [e["type"] for e in done] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    final_item = {
        **openai_item,
        "id": "item_3",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Yo"}],
    }
    assert done[3]["item"] == final_item and done[3]["previous_item_id"] == "item_1"
    response = done[4]["response"]
    assert response["status"] == "completed" and response["status_details"] is None
    assert response["output"] == [final_item]
    assert response["usage"] == {
        "total_tokens": 11,
        "input_tokens": 10,
        "output_tokens": 1,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 1, "audio_tokens": 0},
    }


def test_spoken_reply_carries_text_as_transcript() -> None:
    """A spoken reply: no output_text deltas; transcript pieces joined with spaces; audio passed through."""
    t = opened()
    t.from_server(
        {"type": "response.created", "response": {"id": "resp_2", "item_id": "item_3", "output_audio_format": PCM24}}
    )
    assert (
        t.from_server({"type": "response.text.delta", "response_id": "resp_2", "item_id": "item_3", "delta": "A"}) == []
    )
    pieces = ["Once upon a time,", "there was a cat."]
    deltas = [
        t.from_server({"type": "response.audio_transcript.delta", "response_id": "resp_2", "delta": p, "offset_ms": 0})
        for p in pieces
    ]
    assert [d[0]["delta"] for d in deltas] == ["Once upon a time,", " there was a cat."]
    [audio] = t.from_server({"type": "response.audio.delta", "response_id": "resp_2", "audio": "AAAB", "seq_no": 1})
    assert audio["type"] == "response.output_audio.delta" and audio["delta"] == "AAAB"
    done = t.from_server(
        {
            "type": "response.done",
            "response": {
                "id": "resp_2",
                "item_id": "item_3",
                "status": "interrupted",
                "status_details": {"reason": "barge_in"},
                "output_text": "ignored",
                "usage": {"input_tokens": None, "output_tokens": None},
            },
        }
    )
    assert [e["type"] for e in done][:2] == ["response.output_audio.done", "response.output_audio_transcript.done"]
    assert done[1]["transcript"] == "Once upon a time, there was a cat."
    response = done[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"] == [
        {"type": "output_audio", "transcript": "Once upon a time, there was a cat."}
    ]


def test_spoken_turn_order() -> None:
    """Our transcript comes before the commit; OpenAI's comes after the item it belongs to."""
    t = opened()
    out: list[dict[str, Any]] = []
    for event in (
        {"type": "input_audio_buffer.speech_started", "item_id": "item_4", "audio_start_ms": 480},
        {
            "type": "conversation.item.input_audio_transcription.partial",
            "item_id": "item_4",
            "stable": "Hi",
            "unstable": "",
        },
        {"type": "input_audio_buffer.speech_stopped", "item_id": "item_4", "audio_end_ms": 1500},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_4",
            "transcript": "Hi there.",
            "audio_duration_ms": 1320,
            "language": "en",
        },
        {"type": "input_audio_buffer.committed", "item_id": "item_4"},
        {
            "type": "conversation.item.created",
            "item": {
                "id": "item_4",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": "Hi there."}],
            },
        },
    ):
        out.extend(t.from_server(event))
    assert [e["type"] for e in out] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert out[0]["audio_start_ms"] == 480 and out[0]["item_id"] == "item_4"
    assert out[4]["item"]["content"] == [{"type": "input_audio", "transcript": "Hi there."}]
    assert out[-1] == {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": out[-1]["event_id"],
        "item_id": "item_4",
        "content_index": 0,
        "transcript": "Hi there.",
        "usage": {"type": "duration", "seconds": 1.32},
        "logprobs": None,
    }
    # noise: an empty transcript and no commit -> nothing for the OpenAI client
    assert (
        t.from_server(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_5",
                "transcript": "",
                "audio_duration_ms": 300,
                "language": None,
            }
        )
        == []
    )


def test_client_item_ids_are_kept() -> None:
    """An item id the client chose is what it sees, and what truncate and delete take."""
    t = opened()
    item = {"id": "msg_a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
    [create] = ours(t, {"type": "conversation.item.create", "item": item})
    assert "id" not in create["item"]
    out = t.from_server({"type": "conversation.item.created", "item": {**create["item"], "id": "item_7"}})
    assert out[0]["item"]["id"] == "msg_a"
    assert ours(t, {"type": "conversation.item.delete", "item_id": "msg_a"}) == [
        {"type": "conversation.item.delete", "item_id": "item_7"}
    ]
    [deleted] = t.from_server({"type": "conversation.item.deleted", "item_id": "item_7"})
    assert deleted == {"type": "conversation.item.deleted", "event_id": deleted["event_id"], "item_id": "msg_a"}
    assert ours(t, {"type": "conversation.item.truncate", "item_id": "item_9", "content_index": 0, "audio_end_ms": 5})
    assert refused(t, {"type": "conversation.item.create", "previous_item_id": "root", "item": item})["code"] == (
        "invalid_value"
    )


def test_response_create_overrides() -> None:
    """response.create: instructions, 'inf' tokens and a text-only reply in a spoken session."""
    t = opened()
    event = {
        "type": "response.create",
        "response": {
            "instructions": "Shout.",
            "max_output_tokens": "inf",
            "output_modalities": ["text"],
            "conversation": "auto",
            "metadata": {"k": "v"},
        },
    }
    assert ours(t, event) == [
        {
            "type": "response.create",
            "response": {"instructions": "Shout.", "max_output_tokens": None, "output_audio_format": None},
        }
    ]
    assert refused(t, {"type": "response.create", "response": {"conversation": "none"}})["code"] == "unsupported_value"


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ({"event_id": "e1"}, "missing_required_parameter", "type"),
        ({"type": 7, "event_id": "e1"}, "invalid_type", "type"),
        ({"type": "input.teleport", "event_id": "e1"}, "invalid_value", "type"),
        ({"type": "conversation.item.create", "event_id": "e1"}, "missing_required_parameter", "item"),
        ({"type": "session.update", "event_id": "e1", "session": {"modle": "x"}}, "unknown_parameter", "session.modle"),
        (
            {"type": "session.update", "event_id": "e1", "session": {"instructions": 3}},
            "invalid_type",
            "session.instructions",
        ),
        (
            {
                "type": "session.update",
                "event_id": "e1",
                "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
            },
            "unsupported_value",
            "session.audio.input.format.type",
        ),
        ({"type": "conversation.item.retrieve", "event_id": "e1", "item_id": "x"}, "unsupported_value", "type"),
        (
            {
                "type": "conversation.item.truncate",
                "event_id": "e1",
                "item_id": "i",
                "content_index": 1,
                "audio_end_ms": 1,
            },
            "invalid_value",
            "content_index",
        ),
    ],
)
def test_malformed_client_events(frame: str | dict[str, Any], code: str, param: str | None) -> None:
    """Malformed events get OpenAI's error: type, code, message, param and the event's event_id."""
    error = refused(opened(), frame)
    assert set(error) == {"type", "code", "message", "param", "event_id"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert error["event_id"] == (frame.get("event_id") if isinstance(frame, dict) else None)
    assert error["message"]


def test_session_errors_in_openai_form() -> None:
    """Our errors keep their meaning: codes OpenAI clients know, the client's own (long) event id."""
    t = opened()
    long_id = "x" * 100
    [event] = ours(t, {"type": "response.cancel", "event_id": long_id})
    assert len(event["event_id"]) <= 64
    err = {
        "code": "response_not_active",
        "message": "There is no active response to cancel.",
        "param": "response_id",
        "event_id": event["event_id"],
        "event_type": "response.cancel",
    }
    [error] = t.from_server({"type": "error", "error": err})
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "response_cancel_not_active",
        "message": "There is no active response to cancel.",
        "param": "response_id",
        "event_id": long_id,
    }
    upstream = {"code": "upstream_timeout", "message": "The language model service did not answer in time."}
    [error] = t.from_server({"type": "error", "error": upstream, "response_id": "resp_4"})
    assert error["error"]["type"] == "server_error" and error["error"]["code"] == "upstream_timeout"
    speech_off = Translator(has_voice=True, has_speech=False)
    speak = {"type": "session.update", "event_id": "e", "session": {"output_modalities": ["audio"]}}
    assert refused(speech_off, speak)["param"] == "session.output_modalities"


def test_every_event_passes_the_openai_schema() -> None:
    """Whatever we send (failed and incomplete replies, truncation, deletion, errors) passes the SDK's strict
    GA schema: no missing field, no value outside OpenAI's enums."""
    t = Translator(has_voice=True, has_speech=True)
    out = t.from_server({"type": "session.created", "session": INFO})
    out += t.from_server({"type": "session.updated", "session": SPOKEN})
    for n, (status, details) in enumerate(
        [
            ("failed", {"reason": "error", "error": {"code": "upstream_timeout", "message": "Too slow."}}),
            ("incomplete", {"reason": "tts_failed", "error": {"code": "tts_failed", "message": "No voice."}}),
            ("incomplete", {"reason": "max_response_chars"}),
            ("cancelled", {"reason": "superseded"}),
            ("cancelled", {"reason": "session_closed"}),
        ]
    ):
        rid, item = f"resp_{2 * n + 2}", f"item_{2 * n + 3}"
        out += t.from_server(
            {"type": "response.created", "response": {"id": rid, "item_id": item, "output_audio_format": PCM24}}
        )
        out += t.from_server({"type": "response.audio.delta", "response_id": rid, "audio": "AAAA"})
        done = {"id": rid, "item_id": item, "status": status, "status_details": details, "output_text": ""}
        out += t.from_server({"type": "response.done", "response": {**done, "usage": {}}})
    out += t.from_server(
        {"type": "conversation.item.truncated", "item_id": "item_3", "audio_end_ms": 5, "transcript": ""}
    )
    out += t.from_server({"type": "conversation.item.deleted", "item_id": "item_3"})
    out += t.from_server({"type": "input_audio_buffer.cleared"})
    out += t.from_server({"type": "error", "error": {"code": "stt_busy", "message": "Busy."}})
    out += t.from_client("{")[1]
    for event in out:
        SERVER_EVENTS.validate_python(event)
    statuses = [e["response"]["status_details"] for e in out if e["type"] == "response.done"]
    assert statuses[0]["error"] == {"type": "server_error", "code": "upstream_timeout", "message": "Too slow."}
    assert [(d["type"], d["reason"]) for d in statuses] == [
        ("failed", None),
        ("incomplete", None),
        ("incomplete", "max_output_tokens"),
        ("cancelled", "client_cancelled"),
        ("cancelled", None),
    ]


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_CLIENT_TYPES = ["session.update", "conversation.item.create", "response.create", "conversation.item.truncate"]


@settings(max_examples=300, deadline=None)
@given(
    type_=st.sampled_from(_CLIENT_TYPES) | st.text(max_size=20),
    body=st.dictionaries(st.sampled_from(["session", "item", "response", "item_id", "audio_end_ms"]), _values),
)
def test_any_client_frame_is_translated_or_refused(type_: str, body: dict[str, Any]) -> None:
    """Whatever a client sends, the translator answers with our events or one OpenAI error, never a crash."""
    events, replies = opened().from_client(json.dumps({"type": type_, **body}))
    assert (events and not replies) or (not events and [r["type"] for r in replies] == ["error"])


# ---- the official SDK against the real server -----------------------------------------------------


@pytest.fixture(scope="module")
def compat_server(server_factory: ServerFactory, fake_ollama: FakeOllama) -> ServerProcess:
    """Real VAD, Whisper and Piper; the LLM is scripted (echo, story, recall) so replies are exact."""
    return server_factory(ollama_url=fake_ollama.url, llm_model="echo", voice="on")


def _client(server: ServerProcess, token: str | None = None) -> Any:
    return AsyncOpenAI(api_key=token or server.token(), websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")


async def _until(conn: Any, kind: str) -> list[Any]:
    """Events up to and including the first of type `kind` (within a minute). Each must also pass the
    SDK's own GA schema strictly: every field OpenAI's events require, of its type."""
    out = []
    async with asyncio.timeout(60):
        while True:
            raw = await conn.recv_bytes()
            SERVER_EVENTS.validate_json(raw)
            event = conn.parse_event(raw)
            out.append(event)
            if event.type == kind:
                return out


async def _stream(conn: Any, audio: np.ndarray, frame_ms: int = 20) -> None:
    """Microphone audio at real-time pace, base64 PCM16 at 24 kHz as OpenAI clients send it."""
    started = time.monotonic()
    for i, frame in enumerate(chunks(audio, RATE, frame_ms)):
        await conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode())
        await asyncio.sleep(max(0.0, started + (i + 1) * frame_ms / 1000 - time.monotonic()))


async def test_sdk_text_turn(compat_server: ServerProcess) -> None:
    """A typed turn through the SDK: session.created with OpenAI's defaults, then a streamed text reply."""
    # the SDK's default URL from base_url (http -> ws, + /realtime) reaches the route too
    client = AsyncOpenAI(api_key=compat_server.token(), base_url=f"http://127.0.0.1:{compat_server.port}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = (await _until(conn, "session.created"))[0]
        assert created.session.output_modalities == ["audio"]
        assert created.session.audio.output.format.rate == 24000
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        updated = (await _until(conn, "session.updated"))[-1]
        assert updated.session.output_modalities == ["text"]
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}
        )
        await conn.response.create()
        events = await _until(conn, "response.done")
    kinds = [e.type for e in events]
    assert "conversation.item.added" in kinds and "response.created" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "You said: Hello there"
    done = events[-1].response
    assert done.status == "completed"
    assert done.output[0].content[0].text == text
    assert done.usage.output_tokens > 0


async def test_sdk_spoken_turn_with_server_vad(compat_server: ServerProcess) -> None:
    """Synthesized speech in, server VAD ends the turn; transcript events, then a spoken 24 kHz reply."""
    question = "Could you tell me what the weather will be like tomorrow?"
    async with _client(compat_server).realtime.connect(model="gpt-realtime") as conn:
        await _until(conn, "session.created")
        sender = asyncio.create_task(_stream(conn, with_silence(synthesize(question, RATE), RATE)))
        events = await _until(conn, "response.done")
        await sender
    kinds = [e.type for e in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.done",
    ]
    firsts = [kinds.index(k) for k in order]  # each kind present, first seen in this order
    assert firsts == sorted(firsts), kinds
    completed = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert wer(question, completed.transcript) <= 0.15, completed.transcript
    user_item = next(e.item for e in events if e.type == "conversation.item.added" and e.item.role == "user")
    assert user_item.id == completed.item_id and user_item.content[0].type == "input_audio"
    pcm = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    assert len(pcm) > RATE  # more than half a second of 24 kHz PCM16
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    done = events[-1].response
    assert done.status == "completed" and done.output_modalities == ["audio"]
    assert done.output[0].content[0].transcript == transcript
    assert wer("You said " + completed.transcript, transcript) <= 0.1, transcript
    assert "response.output_text.delta" not in kinds


async def test_sdk_interruption_with_truncate(compat_server: ServerProcess) -> None:
    """Speaking over a long spoken reply cancels it (turn_detected); truncate cuts what the model remembers."""
    interruption = with_silence(synthesize("Wait, stop please, I have a question.", RATE), RATE, 0.0, 1.0)
    async with _client(compat_server).realtime.connect(model="story") as conn:
        await _until(conn, "session.created")
        vad = {"type": "server_vad", "create_response": False}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": vad}}})
        await _until(conn, "session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}
        )
        await conn.response.create()
        events = await _until(conn, "response.output_audio.delta")
        item_id = next(e.item.id for e in events if e.type == "response.output_item.added")
        started = time.monotonic()
        while time.monotonic() - started < 1.2:
            events.append(await conn.recv())
        sender = asyncio.create_task(_stream(conn, interruption))
        events += await _until(conn, "response.done")
        done = events[-1].response
        assert done.status == "cancelled" and done.status_details.reason == "turn_detected"
        heard_audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        played_ms = len(heard_audio) // 2 * 1000 // RATE
        await sender
        await _until(conn, "conversation.item.added")  # the interruption became a user item
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=min(played_ms, 1500))
        truncated = (await _until(conn, "conversation.item.truncated"))[-1]
        assert truncated.item_id == item_id and truncated.audio_end_ms == min(played_ms, 1500)
        await conn.session.update(session={"type": "realtime", "model": "recall", "output_modalities": ["text"]})
        await _until(conn, "session.updated")
        await conn.response.create()
        recall = await _until(conn, "response.done")
    said = recall[-1].response.output[0].content[0].text
    heard = said.removeprefix("You heard: ")
    assert said.startswith("You heard: ") and heard and STORY.startswith(heard) and len(heard) < len(STORY) / 3


async def test_sdk_malformed_event_gets_error_and_session_goes_on(compat_server: ServerProcess) -> None:
    """Malformed events are answered with OpenAI error events; the session then works as before."""
    async with _client(compat_server).realtime.connect(model="gpt-realtime") as conn:
        await _until(conn, "session.created")
        await conn.send_raw("{this is not json")
        bad_json = (await _until(conn, "error"))[-1].error
        assert (bad_json.type, bad_json.code) == ("invalid_request_error", "invalid_json")
        await conn.send_raw(json.dumps({"type": "conversation.item.create", "event_id": "evt_bad"}))
        missing = (await _until(conn, "error"))[-1].error
        assert (missing.code, missing.param, missing.event_id) == ("missing_required_parameter", "item", "evt_bad")
        await conn.send_raw(json.dumps({"type": "response.cancel", "event_id": "evt_cancel"}))
        idle = (await _until(conn, "error"))[-1].error
        assert (idle.code, idle.event_id) == ("response_cancel_not_active", "evt_cancel")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await _until(conn, "session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "still there?"}]}
        )
        await conn.response.create()
        events = await _until(conn, "response.done")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "You said: still there?"


async def test_sdk_audio_item_and_delete(compat_server: ServerProcess) -> None:
    """conversation.item.create with input_audio is transcribed into the item; a deleted item is forgotten."""
    question = "Please book a table for four people tonight."
    audio = base64.b64encode(synthesize(question, RATE).astype("<i2").tobytes()).decode()
    async with _client(compat_server).realtime.connect(model="gpt-realtime") as conn:
        await _until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await _until(conn, "session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
        )
        added = (await _until(conn, "conversation.item.done"))[-1].item
        assert wer(question, added.content[0].transcript) <= 0.15, added.content[0].transcript
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Forget me"}]}
        )
        forget = (await _until(conn, "conversation.item.done"))[-1].item
        await conn.conversation.item.delete(item_id=forget.id)
        deleted = (await _until(conn, "conversation.item.deleted"))[-1]
        assert deleted.item_id == forget.id
        await conn.response.create()
        events = await _until(conn, "response.done")
    said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert said == "You said: " + added.content[0].transcript


async def test_sdk_manual_turns_commit_and_clear(compat_server: ServerProcess) -> None:
    """turn_detection null: the client commits (a turn, answered on response.create) or clears the buffer."""
    question = "The library closes at six o'clock on Saturdays."
    speech = synthesize(question, RATE).astype("<i2").tobytes()
    async with _client(compat_server).realtime.connect(model="gpt-realtime") as conn:
        await _until(conn, "session.created")
        manual = {"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
        await conn.session.update(session=manual)
        updated = (await _until(conn, "session.updated"))[-1]
        assert updated.session.audio.input.turn_detection is None
        await conn.input_audio_buffer.commit()
        empty = (await _until(conn, "error"))[-1].error
        assert empty.code == "input_audio_buffer_commit_empty"
        await conn.input_audio_buffer.append(audio=base64.b64encode(b"\x00\x01" * 4800).decode())
        await conn.input_audio_buffer.clear()
        await _until(conn, "input_audio_buffer.cleared")
        half = len(speech) // 4 * 2  # whole samples
        for part in (speech[:half], speech[half:]):
            await conn.input_audio_buffer.append(audio=base64.b64encode(part).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await _until(conn, "response.done")
    kinds = [e.type for e in events]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    transcript = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert wer(question, transcript.transcript) <= 0.15, transcript.transcript
    said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert said == "You said: " + transcript.transcript


async def test_sdk_bad_token_is_refused(compat_server: ServerProcess) -> None:
    """A wrong api key is refused at the handshake (HTTP 401), as OpenAI refuses one."""
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused_with:
        async with _client(compat_server, token="not-a-token").realtime.connect(model="gpt-realtime"):
            pass
    assert refused_with.value.response.status_code == 401
