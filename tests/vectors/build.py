"""Build the protocol test vectors (shared with clients/js): `python -m tests.vectors.build`.

Each valid vector holds an event and its exact bytes in both encodings; each invalid vector holds a
frame and the error the server must answer with. The files are committed; tests/protocol checks that
they still match the code, so a wire change is always a deliberate, reviewed diff.

In the files, binary values are written {"$bytes": "<base64>"} so any language can rebuild them.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import msgpack

from realtime.protocol import server_events as ev
from realtime.protocol.client_events import (
    ConversationItemCreate,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    InputText,
    ItemTruncate,
    OutputText,
    Ping,
    Pong,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
)
from realtime.protocol.codec import Encoding, encode_frame

HERE = Path(__file__).resolve().parent

SESSION = {
    "id": "sess_0123456789abcdef",
    "user": "alice",
    "protocol": "v1",
    "encoding": "msgpack",
    "model": "smollm2:135m",
    "instructions": "You are a helpful voice assistant.",
    "temperature": None,
    "max_output_tokens": None,
    "reasoning": None,
    "input_audio_format": {"type": "pcm16", "sample_rate": 24000},
    "output_audio_format": None,
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "min_speech_duration_ms": 100,
        "segment_pause_ms": 200,
        "create_response": True,
        "interrupt_response": True,
        "interrupt_min_speech_ms": 250,
    },
    "input_audio_transcription": {"language": None, "partials": True},
    "limits": {"max_message_size": 1048576, "max_text_chars": 32000, "max_response_chars": 100000},
    "ping_interval_ms": 10000,
    "ping_timeout_ms": 30000,
}


def client_vectors() -> list[tuple[str, Any]]:
    return [
        ("session.update model and temperature", SessionUpdate({"model": "qwen3:4b", "temperature": 0.7}, "c1")),
        (
            "session.update resets with nulls",
            SessionUpdate({"instructions": None, "max_output_tokens": None, "reasoning": None}),
        ),
        ("session.update reasoning on", SessionUpdate({"reasoning": True, "max_output_tokens": 256})),
        ("conversation.item.create user text", ConversationItemCreate("user", (InputText("Hello!"),), "c2")),
        ("conversation.item.create unicode", ConversationItemCreate("user", (InputText("Grüße aus 東京 🎉"),))),
        (
            "conversation.item.create two parts",
            ConversationItemCreate(
                "user",
                (InputText("First, "), InputText("second.")),
            ),
        ),
        ("conversation.item.create assistant", ConversationItemCreate("assistant", (OutputText("Hi, I'm here."),))),
        ("conversation.item.create system", ConversationItemCreate("system", (InputText("Speak French."),))),
        ("response.create", ResponseCreate()),
        ("response.create overrides", ResponseCreate({"reasoning": False, "max_output_tokens": 64}, "c3")),
        ("response.cancel", ResponseCancel()),
        ("response.cancel by id", ResponseCancel("resp_7", "c4")),
        ("input_audio_buffer.append", InputAudioAppend(bytes(range(0, 40, 2)) + b"\xff\x7f\x00\x80", "a1")),
        ("input_audio_buffer.commit", InputAudioCommit("a2")),
        ("input_audio_buffer.clear", InputAudioClear()),
        (
            "session.update audio",
            SessionUpdate(
                {
                    "input_audio_format": {"type": "pcm16", "sample_rate": 48000},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
                    "input_audio_transcription": {"language": "en", "partials": True},
                }
            ),
        ),
        ("session.update manual turns", SessionUpdate({"turn_detection": None})),
        (
            "session.update audio out",
            SessionUpdate({"output_audio_format": {"type": "pcm16", "sample_rate": 16000}}),
        ),
        ("session.update text only", SessionUpdate({"output_audio_format": None})),
        ("conversation.item.truncate", ItemTruncate("item_3", 1500, "t1")),
        ("ping", Ping(1764000000123, "c5")),
        ("pong", Pong(4567890)),
    ]


def server_vectors() -> list[tuple[str, int, ev.ServerEvent]]:
    return [
        ("session.created", 1, ev.session_created(SESSION)),
        ("session.updated", 2, ev.session_updated({**SESSION, "model": "qwen3:4b", "temperature": 0.7})),
        (
            "conversation.item.created",
            3,
            ev.item_created("item_1", "user", [{"type": "input_text", "text": "Hello!"}]),
        ),
        ("response.created", 4, ev.response_created("resp_2", "item_3", "smollm2:135m")),
        ("response.reasoning.delta", 5, ev.reasoning_delta("resp_2", "item_3", "The user greets me.")),
        ("response.text.delta", 6, ev.text_delta("resp_2", "item_3", "Hello")),
        ("response.text.delta unicode", 7, ev.text_delta("resp_2", "item_3", " — ça va? 🙂")),
        (
            "response.done completed",
            8,
            ev.response_done(
                "resp_2",
                "item_3",
                "completed",
                text="Hello there!",
                reasoning="The user greets me.",
                usage={"input_tokens": 31, "output_tokens": 9},
                metrics={"first_token_ms": 84, "first_text_ms": 140, "total_ms": 310, "rtt_ms": 3},
            ),
        ),
        (
            "response.done cancelled",
            9,
            ev.response_done(
                "resp_4",
                "item_5",
                "cancelled",
                text="Once upon",
                reasoning="",
                usage={"input_tokens": None, "output_tokens": None},
                metrics={"first_token_ms": 70, "first_text_ms": 70, "total_ms": 95, "rtt_ms": None},
                reason="client_cancelled",
            ),
        ),
        (
            "response.done failed",
            10,
            ev.response_done(
                "resp_6",
                "item_7",
                "failed",
                text="",
                reasoning="",
                usage={"input_tokens": None, "output_tokens": None},
                metrics={"first_token_ms": None, "first_text_ms": None, "total_ms": 5001, "rtt_ms": 12},
                reason="error",
                error={"code": "upstream_unavailable", "message": "The language model service is not reachable."},
            ),
        ),
        (
            "error for a client event",
            11,
            ev.error(
                "invalid_event",
                "'item.content[0].text' must be a string, got number",
                event_id="c2",
                event_type="conversation.item.create",
                param="item.content[0].text",
            ),
        ),
        (
            "error of a response",
            12,
            ev.error("upstream_timeout", "The language model service did not answer in time.", response_id="resp_8"),
        ),
        ("input_audio_buffer.speech_started", 15, ev.speech_started("item_9", 1840)),
        ("transcription.partial", 16, ev.transcription_partial("item_9", "What is the", "weather like")),
        ("transcription.segment", 17, ev.transcription_segment("item_9", "What is the weather like?", 1540, 3410)),
        ("input_audio_buffer.speech_stopped", 18, ev.speech_stopped("item_9", 3410)),
        (
            "transcription.completed",
            19,
            ev.transcription_completed("item_9", "What is the weather like?", 1870, "en"),
        ),
        ("input_audio_buffer.committed", 20, ev.audio_committed("item_9")),
        (
            "conversation.item.created spoken",
            21,
            ev.item_created("item_9", "user", [{"type": "input_audio", "transcript": "What is the weather like?"}]),
        ),
        ("input_audio_buffer.cleared", 22, ev.audio_cleared()),
        (
            "response.audio_transcript.delta",
            23,
            ev.audio_transcript_delta("resp_2", "item_3", "Hello there!", 0),
        ),
        (
            "response.audio.delta",
            24,
            ev.audio_delta("resp_2", "item_3", 1, 0, b"\x00\x00\x10\x00\xf0\xff\xff\x7f\x00\x80"),
        ),
        ("conversation.item.truncated", 25, ev.item_truncated("item_3", 1500, "Hello")),
        (
            "response.done interrupted",
            26,
            ev.response_done(
                "resp_10",
                "item_11",
                "interrupted",
                text="Once upon a time, in a small village by the sea, there lived",
                reasoning="",
                usage={"input_tokens": 12, "output_tokens": 30},
                metrics={
                    "first_token_ms": 61,
                    "first_text_ms": 61,
                    "first_audio_ms": 190,
                    "total_ms": 2410,
                    "rtt_ms": 4,
                    "late_audio_chunks": 0,
                },
                reason="barge_in",
                audio={"duration_ms": 2960, "played_ms": 2310, "heard_text": "Once upon a time, in a small"},
            ),
        ),
        ("ping", 13, ev.ping(1764000000456)),
        ("pong", 14, ev.pong(1764000000123, "c5")),
    ]


def invalid_vectors() -> list[dict[str, Any]]:
    """Frames a client might send, and the error event each must get (code, and param where one is named)."""
    out: list[dict[str, Any]] = []

    def bad(
        name: str,
        frame: bytes | str | Any,
        code: str,
        param: str | None = None,
        *,
        json_link: bool = False,
        event_id: str | None = None,
    ) -> None:
        if not isinstance(frame, bytes | str):
            frame = msgpack.packb(frame, use_bin_type=True)
        vector: dict[str, Any] = {"name": name, "encoding": "json" if json_link else "msgpack"}
        vector["frame_hex" if isinstance(frame, bytes) else "frame_text"] = (
            frame.hex() if isinstance(frame, bytes) else frame
        )
        error: dict[str, Any] = {"code": code}
        if param is not None:
            error["param"] = param
        if event_id is not None:
            error["event_id"] = event_id
        vector["error"] = error
        out.append(vector)

    def item(role: str = "user", content: Any = None) -> dict[str, Any]:
        if content is None:
            content = [{"type": "input_text", "text": "hi"}]
        return {"type": "conversation.item.create", "item": {"role": role, "content": content}}

    bad("not msgpack", bytes.fromhex("c1"), "malformed_frame")
    bad("truncated msgpack", bytes.fromhex("82a474797065"), "malformed_frame")
    bad("trailing bytes", msgpack.packb({"type": "ping", "ts": 1}) + b"\x00", "malformed_frame")
    bad("array, not a map", [1, 2], "malformed_frame")
    bad("non-string key", bytes.fromhex("8101a474797065"), "malformed_frame")
    bad("invalid UTF-8 in a string", bytes.fromhex("81a474797065a2fffe"), "malformed_frame")
    bad("missing type", {"ts": 1}, "invalid_event", "type")
    bad("type not a string", {"type": 7}, "invalid_event", "type")
    bad("unknown type", {"type": "input.teleport", "event_id": "c9"}, "unknown_event_type", "type", event_id="c9")
    bad("missing item", {"type": "conversation.item.create"}, "invalid_event", "item")
    bad("missing text", item(content=[{"type": "input_text"}]), "invalid_event", "item.content[0].text")
    bad(
        "text of wrong type",
        {**item(content=[{"type": "input_text", "text": 42}]), "event_id": "c10"},
        "invalid_event",
        "item.content[0].text",
        event_id="c10",
    )
    bad("bad role", item(role="robot"), "invalid_event", "item.role")
    bad("empty content", item(content=[]), "invalid_event", "item.content")
    bad("wrong content type for role", item(role="assistant"), "invalid_event", "item.content[0].type")
    bad("unknown field", {"type": "response.create", "stream": True}, "invalid_event", "stream")
    bad(
        "unknown session field", {"type": "session.update", "session": {"modle": "x"}}, "invalid_event", "session.modle"
    )
    bad(
        "temperature out of range",
        {"type": "session.update", "session": {"temperature": 5}},
        "invalid_event",
        "session.temperature",
    )
    bad(
        "temperature NaN",
        {"type": "session.update", "session": {"temperature": float("nan")}},
        "invalid_event",
        "session.temperature",
    )
    bad("boolean is not an integer", {"type": "ping", "ts": True}, "invalid_event", "ts")
    bad("empty model", {"type": "session.update", "session": {"model": " "}}, "invalid_event", "session.model")
    bad("event_id too long", {"type": "ping", "ts": 1, "event_id": "x" * 65}, "message_too_large", "event_id")
    bad("text frame on a msgpack link", '{"type":"ping","ts":1}', "wrong_frame_type")
    bad("not JSON", "hello", "malformed_frame", json_link=True)
    bad("JSON array", "[1,2]", "malformed_frame", json_link=True)
    bad("JSON NaN", '{"type":"ping","ts":NaN}', "malformed_frame", json_link=True)
    bad(
        "JSON lone surrogate",
        '{"type":"conversation.item.create","item":{"role":"user","content":[{"type":"input_text","text":"\\ud800"}]}}',
        "invalid_event",
        "item.content[0].text",
        json_link=True,
    )
    bad("JSON float where an integer is due", '{"type":"ping","ts":1.5}', "invalid_event", "ts", json_link=True)
    bad(
        "unsupported sample rate",
        {"type": "session.update", "session": {"input_audio_format": {"sample_rate": 12345}}},
        "invalid_event",
        "session.input_audio_format.sample_rate",
    )
    bad(
        "unknown turn detection type",
        {"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad"}}},
        "invalid_event",
        "session.turn_detection.type",
    )
    bad("audio not binary", {"type": "input_audio_buffer.append", "audio": "AAAA"}, "invalid_event", "audio")
    bad(
        "audio not base64",
        '{"type":"input_audio_buffer.append","audio":"not base64!"}',
        "invalid_event",
        "audio",
        json_link=True,
    )
    bad("binary frame on a JSON link", msgpack.packb({"type": "ping", "ts": 1}), "wrong_frame_type", json_link=True)
    return out


def _tag_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _tag_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag_bytes(v) for v in value]
    return value


def _valid(name: str, wire: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "event": _tag_bytes(wire),
        "msgpack_hex": encode_frame(wire, Encoding.MSGPACK).hex(),  # type: ignore[union-attr]
        "json": encode_frame(wire, Encoding.JSON),
    }


def build() -> dict[str, str]:
    files = {
        "client_events.json": [_valid(name, event.to_wire()) for name, event in client_vectors()],
        "server_events.json": [_valid(name, event.to_wire(seq)) for name, seq, event in server_vectors()],
        "invalid_client_frames.json": invalid_vectors(),
    }
    return {name: json.dumps(data, indent=1, ensure_ascii=False) + "\n" for name, data in files.items()}


def main() -> int:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote tests/vectors/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
