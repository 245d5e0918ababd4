"""The OpenAI Realtime (GA) dialect of one session, sans-I/O: maps in, maps out, no clock, no socket.

`from_client` turns one OpenAI client frame into our client events (or an OpenAI error to answer with);
`from_server` turns one of our server events into the OpenAI server events it implies. The translator
keeps only what the mapping needs: OpenAI-only session values (voice, output rate), the responses in
flight (their output items and what they have streamed), item ids, and the order of items. Everything
else (turns, barge-in, history, limits) is the session's, unchanged.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime.openai_compat.inbound import OPENAI_RATE, View, is_openai_model, translate
from realtime.openai_compat.schema import CompatError, Obj

MAX_EVENT_ID_LEN = 64  # our limit; longer client event ids travel under an alias
MAX_LONG_EVENT_IDS = 256
DEFAULT_VOICE = "marin"
TRANSCRIPTION_MODEL = "whisper"

# our error codes -> OpenAI's (per client event type where OpenAI has a specific code)
_CODES: dict[tuple[str, str | None], str] = {
    ("response_not_active", None): "response_cancel_not_active",
    ("item_not_found", "conversation.item.truncate"): "item_truncate_invalid_item_id",
    ("item_not_found", "conversation.item.delete"): "item_delete_invalid_item_id",
    ("invalid_audio", "input_audio_buffer.commit"): "input_audio_buffer_commit_empty",
    ("not_listening", "input_audio_buffer.commit"): "input_audio_buffer_commit_empty",
    ("invalid_event", None): "invalid_value",
    ("unknown_event_type", None): "invalid_value",
    ("malformed_frame", None): "invalid_json",
    ("message_too_large", None): "string_above_max_length",
}
# our settings paths -> OpenAI's, for `param`
_PARAMS = (
    ("session.input_audio_format", "session.audio.input.format"),
    ("session.output_audio_format", "session.audio.output.format"),
    ("session.turn_detection", "session.audio.input.turn_detection"),
    ("session.input_audio_transcription", "session.audio.input.transcription"),
    ("response.output_audio_format", "response.audio.output.format"),
)
# status of our response.done -> OpenAI's (status, reason)
_STATUS: dict[tuple[str, str | None], tuple[str, str | None]] = {
    ("completed", None): ("completed", None),
    ("cancelled", "client_cancelled"): ("cancelled", "client_cancelled"),
    ("interrupted", "barge_in"): ("cancelled", "turn_detected"),
    ("incomplete", "max_output_tokens"): ("incomplete", "max_output_tokens"),
    ("incomplete", "max_response_chars"): ("incomplete", "max_output_tokens"),
    ("incomplete", "tts_failed"): ("incomplete", None),  # the speech failed: status_details.error says so
    ("failed", "error"): ("failed", None),
}


@dataclass(slots=True)
class _Response:
    id: str
    item_id: str  # ours
    audio: bool
    rate: int
    text: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)


def _transcription_usage(duration_ms: int) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(duration_ms / 1000, 3)}


class Translator:
    """One session's OpenAI dialect. Feed it frames in wire order; it numbers the events it makes."""

    def __init__(self, *, has_voice: bool, has_speech: bool, model: str | None = None) -> None:
        self.has_voice = has_voice
        self.has_speech = has_speech
        self._model = model if model and not is_openai_model(model) else None
        self._events = 0
        self._info: dict[str, Any] = {}
        self._opened = False
        self._extras: dict[str, Any] = {"voice": DEFAULT_VOICE, "output_rate": OPENAI_RATE}
        self._pending_extras: deque[dict[str, Any]] = deque()
        self._pending_ids: deque[str | None] = deque()  # item ids the client chose, per item.create in flight
        self._ids_out: dict[str, str] = {}  # our item id -> the client's
        self._ids_in: dict[str, str] = {}  # the client's item id -> ours
        self._long_event_ids: dict[str, str] = {}  # alias -> the client's event id (over 64 characters)
        self._long_ids = 0
        self._last_item: str | None = None  # ours
        self._previous: dict[str, str | None] = {}  # item in progress -> the item before it (client ids)
        self._spoken: set[str] = set()  # spoken turns committed, their item not yet created
        self._transcripts: dict[str, dict[str, Any]] = {}  # item id -> our transcription.completed, held
        self._responses: dict[str, _Response] = {}
        self._turn_committed = False  # a spoken turn was just committed (what supersedes a response)
        self._handlers: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
            "session.created": self._on_session_created,
            "session.updated": self._on_session_updated,
            "conversation.item.created": self._on_item_created,
            "conversation.item.truncated": self._on_item_truncated,
            "conversation.item.deleted": self._on_item_deleted,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "input_audio_buffer.committed": self._on_committed,
            "input_audio_buffer.cleared": self._on_cleared,
            "conversation.item.input_audio_transcription.completed": self._on_transcript,
            "response.created": self._on_response_created,
            "response.text.delta": self._on_text_delta,
            "response.audio_transcript.delta": self._on_transcript_delta,
            "response.audio.delta": self._on_audio_delta,
            "response.done": self._on_response_done,
            "error": self._on_error,
        }

    # ---- opening ----------------------------------------------------------------------------------

    def opening(self) -> dict[str, Any]:
        """Our first client event: OpenAI's defaults (spoken replies at 24 kHz) and the URL's model."""
        session: dict[str, Any] = {}
        if self._model is not None:
            session["model"] = self._model
        if self.has_speech:
            session["output_audio_format"] = {"type": "pcm16", "sample_rate": OPENAI_RATE}
        self._pending_extras.append({})
        return {"type": "session.update", "session": session}

    # ---- client -> session ------------------------------------------------------------------------

    def from_client(self, data: str | bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One OpenAI client frame -> (our events for the session, OpenAI events to answer with now)."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            return [], [self._error("invalid_json", "The event is not valid JSON.")]
        if not isinstance(raw, dict):
            return [], [self._error("invalid_json", "The event must be a JSON object with a 'type'.")]
        event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
        f = Obj(raw)
        try:
            type_ = f.text("type", required=True)
            f.text("event_id", nullable=True)
            inbound = translate(f, type_, self._short_event_id(event_id), self._view())
        except CompatError as exc:
            return [], [self._error(exc.code, exc.message, exc.param, event_id, kind=exc.kind)]
        if inbound.extras is not None:
            self._pending_extras.append(inbound.extras)
        self._pending_ids.extend(inbound.item_ids)
        for event in inbound.events:
            if "item_id" in event:
                event["item_id"] = self._ids_in.get(event["item_id"], event["item_id"])
        return inbound.events, []

    def _short_event_id(self, event_id: str | None) -> str | None:
        if event_id is None or len(event_id) <= MAX_EVENT_ID_LEN:
            return event_id
        self._long_ids += 1
        alias = f"long_event_{self._long_ids}"
        self._long_event_ids[alias] = event_id
        if len(self._long_event_ids) > MAX_LONG_EVENT_IDS:  # errors name recent events; forget old ones
            del self._long_event_ids[next(iter(self._long_event_ids))]
        return alias

    def _view(self) -> View:
        return View(
            has_speech=self.has_speech,
            speaking=self._speaking(),
            output_rate=self._extras["output_rate"],
            last_item_id=self._out(self._last_item) if self._last_item else None,
        )

    def _speaking(self) -> bool:
        return self.has_speech and self._info.get("output_audio_format") is not None

    # ---- session -> client ------------------------------------------------------------------------

    def from_server(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """One of our server events -> the OpenAI events it implies (often none, sometimes several)."""
        handler = self._handlers.get(event.get("type", ""))
        return handler(event) if handler is not None else []  # ping, pong, partials, ...: not OpenAI's

    def _emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        self._events += 1
        return {"type": type_, "event_id": f"event_{self._events}", **fields}

    def _out(self, item_id: str) -> str:
        return self._ids_out.get(item_id, item_id)

    # session

    def _on_session_created(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self._info = dict(event["session"])
        return []  # sent once the opening update is applied (session.updated)

    def _on_session_updated(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self._info = dict(event["session"])
        if self._pending_extras:
            self._extras.update(self._pending_extras.popleft())
        if not self._opened:
            self._opened = True
            return [self._emit("session.created", session=self.session_object())]
        return [self._emit("session.updated", session=self.session_object())]

    def session_object(self) -> dict[str, Any]:
        """Our session as an OpenAI GA session object (what it does here, not what was asked for)."""
        info = self._info
        td = info.get("turn_detection")
        turn_detection = None
        if td is not None:
            turn_detection = {
                "type": "server_vad",
                "threshold": td["threshold"],
                "prefix_padding_ms": td["prefix_padding_ms"],
                "silence_duration_ms": td["silence_duration_ms"],
                "idle_timeout_ms": None,
                "create_response": td["create_response"],
                "interrupt_response": td["interrupt_response"],
            }
        in_rate = (info.get("input_audio_format") or {}).get("sample_rate", OPENAI_RATE)
        out_format = info.get("output_audio_format")
        out_rate = out_format["sample_rate"] if out_format else self._extras["output_rate"]
        language = (info.get("input_audio_transcription") or {}).get("language")
        max_tokens = info.get("max_output_tokens")
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": info.get("id"),
            "model": info.get("model"),
            "output_modalities": ["audio"] if self._speaking() else ["text"],
            "instructions": info.get("instructions"),
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf" if max_tokens is None else max_tokens,
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": in_rate},
                    "transcription": {"model": TRANSCRIPTION_MODEL, "language": language, "prompt": None},
                    "noise_reduction": None,
                    "turn_detection": turn_detection,
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": out_rate},
                    "voice": self._extras["voice"],
                    "speed": 1.0,
                },
            },
        }

    # items

    def _item(self, item_id: str, role: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
        return {
            "id": self._out(item_id),
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": role,
            "content": content,
        }

    def _added(self, item: dict[str, Any], item_id: str) -> list[dict[str, Any]]:
        """An item joins the conversation: created (beta name), added (GA), with the item before it."""
        previous = self._out(self._last_item) if self._last_item else None
        self._last_item = item_id
        self._previous[item_id] = previous
        return [
            self._emit("conversation.item.created", previous_item_id=previous, item=item),
            self._emit("conversation.item.added", previous_item_id=previous, item=item),
        ]

    def _on_item_created(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        ours = event["item"]
        item_id = ours["id"]
        if item_id in self._spoken:
            self._spoken.discard(item_id)
            self._turn_committed = False
        elif self._pending_ids:
            chosen = self._pending_ids.popleft()
            if chosen is not None:
                self._ids_out[item_id], self._ids_in[chosen] = chosen, item_id
        content = []
        for part in ours["content"]:
            if part["type"] == "input_audio":
                content.append({"type": "input_audio", "transcript": part.get("transcript")})
            else:
                content.append({"type": part["type"], "text": part["text"]})
        item = self._item(item_id, ours["role"], content, "completed")
        out = self._added(item, item_id)
        out.append(self._emit("conversation.item.done", previous_item_id=self._previous.pop(item_id), item=item))
        held = self._transcripts.pop(item_id, None)
        if held is not None:
            transcript = held["transcript"]
            out.append(
                self._emit(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=self._out(item_id),
                    content_index=0,
                    delta=transcript,
                )
            )
            out.append(
                self._emit(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=self._out(item_id),
                    content_index=0,
                    transcript=transcript,
                    usage=_transcription_usage(held.get("audio_duration_ms") or 0),
                    logprobs=None,
                )
            )
        return out

    def _on_item_truncated(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            self._emit(
                "conversation.item.truncated",
                item_id=self._out(event["item_id"]),
                content_index=0,
                audio_end_ms=event["audio_end_ms"],
            )
        ]

    def _on_item_deleted(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        item_id = event["item_id"]
        client_id = self._ids_out.pop(item_id, item_id)
        self._ids_in.pop(client_id, None)
        return [self._emit("conversation.item.deleted", item_id=client_id)]

    # voice input

    def _on_speech_started(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            self._emit(
                "input_audio_buffer.speech_started", audio_start_ms=event["audio_start_ms"], item_id=event["item_id"]
            )
        ]

    def _on_speech_stopped(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            self._emit(
                "input_audio_buffer.speech_stopped", audio_end_ms=event["audio_end_ms"], item_id=event["item_id"]
            )
        ]

    def _on_transcript(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event["transcript"]:  # sent after its item (below); an empty one means no turn at all
            self._transcripts[event["item_id"]] = event
        return []

    def _on_committed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        item_id = event["item_id"]
        self._spoken.add(item_id)
        self._turn_committed = True
        previous = self._out(self._last_item) if self._last_item else None
        return [self._emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)]

    def _on_cleared(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._emit("input_audio_buffer.cleared")]

    # responses

    def _response_object(
        self,
        r: _Response,
        status: str,
        *,
        details: dict[str, Any] | None = None,
        output: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        max_tokens = self._info.get("max_output_tokens")
        return {
            "object": "realtime.response",
            "id": r.id,
            "status": status,
            "status_details": details,
            "output": output or [],
            "conversation_id": "conv_" + str(self._info.get("id", "")).removeprefix("sess_"),
            "output_modalities": ["audio"] if r.audio else ["text"],
            "max_output_tokens": "inf" if max_tokens is None else max_tokens,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": r.rate}, "voice": self._extras["voice"]}},
            "usage": usage,
            "metadata": None,
        }

    def _on_response_created(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        ours = event["response"]
        fmt = ours.get("output_audio_format")  # present only when the response is spoken
        audio = self.has_speech and fmt is not None
        r = _Response(ours["id"], ours["item_id"], audio, fmt["sample_rate"] if fmt else self._extras["output_rate"])
        self._responses[r.id] = r
        item = self._item(r.item_id, "assistant", [], "in_progress")
        out = [
            self._emit("response.created", response=self._response_object(r, "in_progress")),
            self._emit("response.output_item.added", response_id=r.id, output_index=0, item=item),
        ]
        out.extend(self._added(item, r.item_id))
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        out.append(self._emit("response.content_part.added", **self._where(r), part=part))
        return out

    def _where(self, r: _Response) -> dict[str, Any]:
        return {"response_id": r.id, "item_id": self._out(r.item_id), "output_index": 0, "content_index": 0}

    def _on_text_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        r = self._responses.get(event["response_id"])
        if r is None or r.audio:
            return []  # spoken replies carry their text as the audio transcript
        r.text.append(event["delta"])
        return [self._emit("response.output_text.delta", **self._where(r), delta=event["delta"])]

    def _on_transcript_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        r = self._responses.get(event["response_id"])
        if r is None or not r.audio:
            return []
        delta = (" " if r.transcript else "") + event["delta"]  # our pieces are sentences; OpenAI's concatenate
        r.transcript.append(delta)
        return [self._emit("response.output_audio_transcript.delta", **self._where(r), delta=delta)]

    def _on_audio_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        r = self._responses.get(event["response_id"])
        if r is None or not r.audio:
            return []
        return [self._emit("response.output_audio.delta", **self._where(r), delta=event["audio"])]

    def _on_response_done(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        ours = event["response"]
        r = self._responses.pop(ours["id"], None)
        if r is None:
            return []
        reason = (ours.get("status_details") or {}).get("reason")
        status, openai_reason = self._status(ours["status"], reason)
        where = self._where(r)
        out: list[dict[str, Any]] = []
        if r.audio:
            transcript = "".join(r.transcript)
            out.append(self._emit("response.output_audio.done", **where))
            out.append(self._emit("response.output_audio_transcript.done", **where, transcript=transcript))
            part = {"type": "audio", "transcript": transcript}
            content = [{"type": "output_audio", "transcript": transcript}]
        else:
            text = ours.get("output_text", "".join(r.text))
            out.append(self._emit("response.output_text.done", **where, text=text))
            part = {"type": "text", "text": text}
            content = [{"type": "output_text", "text": text}]
        out.append(self._emit("response.content_part.done", **where, part=part))
        item = self._item(r.item_id, "assistant", content, "completed" if status == "completed" else "incomplete")
        out.append(self._emit("response.output_item.done", response_id=r.id, output_index=0, item=item))
        previous = self._previous.pop(r.item_id, None)
        out.append(self._emit("conversation.item.done", previous_item_id=previous, item=item))
        details = None
        if status != "completed":
            details = {"type": status, "reason": openai_reason}
            error = (ours.get("status_details") or {}).get("error")
            if error is not None:
                details["error"] = {"type": "server_error", "code": error.get("code"), "message": error.get("message")}
        usage = self._usage(ours.get("usage") or {})
        response = self._response_object(r, status, details=details, output=[item], usage=usage)
        out.append(self._emit("response.done", response=response))
        return out

    def _status(self, status: str, reason: str | None) -> tuple[str, str | None]:
        if status == "cancelled" and reason == "superseded":
            return "cancelled", "turn_detected" if self._turn_committed else "client_cancelled"
        known = status if status in ("completed", "cancelled", "incomplete") else "failed"
        return _STATUS.get((status, reason), (known, None))  # OpenAI's reasons are a closed set

    @staticmethod
    def _usage(usage: dict[str, Any]) -> dict[str, Any]:
        input_tokens = usage.get("input_tokens") or 0
        output_tokens = usage.get("output_tokens") or 0
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
        }

    # errors

    def _on_error(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        err = event["error"]
        code, event_type = err["code"], err.get("event_type")
        if event_type == "session.update" and self._pending_extras:
            self._pending_extras.popleft()  # refused: its OpenAI-only values do not apply either
        if event_type == "conversation.item.create" and self._pending_ids:
            self._pending_ids.popleft()
        openai_code = _CODES.get((code, event_type)) or _CODES.get((code, None)) or code
        param = err.get("param")
        for ours, theirs in _PARAMS:
            if param is not None and (param == ours or param.startswith(ours + ".")):
                param = theirs + param[len(ours) :]
        if param is not None and param in self._ids_out:  # e.g. history_write_failed names an item
            param = self._ids_out[param]
        event_id = err.get("event_id")
        event_id = self._long_event_ids.get(event_id, event_id) if event_id is not None else None
        client_error = event.get("response_id") is None and not code.startswith(("upstream", "history", "stt", "tts"))
        kind = "invalid_request_error" if client_error else "server_error"
        return [self._error(openai_code, err["message"], param, event_id, kind=kind)]

    def _error(
        self,
        code: str,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        *,
        kind: str = "invalid_request_error",
    ) -> dict[str, Any]:
        error = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
        return self._emit("error", error=error)
