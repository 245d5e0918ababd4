"""Events a client sends, as typed values, and the strict parser that builds them from a decoded map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from realtime.errors import InvalidMessage, MessageTooLarge, UnknownEventType
from realtime.protocol.fields import Fields, safe_text

MAX_EVENT_ID_LEN = 64
MAX_MODEL_NAME_LEN = 200
MAX_CONTENT_PARTS = 16
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer JavaScript clients represent exactly
INPUT_SAMPLE_RATES = frozenset({8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000})


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits the parser enforces (from Settings)."""

    max_text_chars: int = 32_000
    max_audio_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class InputText:
    text: str
    type: ClassVar[str] = "input_text"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True, slots=True)
class OutputText:
    """Assistant text, for clients that seed a conversation with earlier turns."""

    text: str
    type: ClassVar[str] = "output_text"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True, slots=True)
class InputAudio:
    """Recorded user speech (PCM16 at the session's input rate); the server transcribes it into the item."""

    audio: bytes
    type: ClassVar[str] = "input_audio"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "audio": self.audio}


ContentPart = InputText | OutputText | InputAudio

# Settings a client may change with session.update; response.create may override these for one response.
RESPONSE_FIELDS = ("model", "instructions", "temperature", "max_output_tokens", "reasoning", "output_audio_format")
SESSION_FIELDS = (
    *RESPONSE_FIELDS,
    "conversation_id",
    "input_audio_format",
    "turn_detection",
    "input_audio_transcription",
)


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    changes: Mapping[str, Any]
    event_id: str | None = None
    TYPE: ClassVar[str] = "session.update"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, session=dict(self.changes))


@dataclass(frozen=True, slots=True)
class ConversationItemCreate:
    role: str
    content: tuple[ContentPart, ...]
    event_id: str | None = None
    TYPE: ClassVar[str] = "conversation.item.create"

    @property
    def text(self) -> str:
        """The typed text (audio parts have none until the session transcribes them)."""
        return "".join(part.text for part in self.content if not isinstance(part, InputAudio))

    def to_wire(self) -> dict[str, Any]:
        item = {"type": "message", "role": self.role, "content": [p.to_wire() for p in self.content]}
        return _wire(self.TYPE, self.event_id, item=item)


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    overrides: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    TYPE: ClassVar[str] = "response.create"

    def to_wire(self) -> dict[str, Any]:
        if self.overrides:
            return _wire(self.TYPE, self.event_id, response=dict(self.overrides))
        return _wire(self.TYPE, self.event_id)


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    response_id: str | None = None
    event_id: str | None = None
    TYPE: ClassVar[str] = "response.cancel"

    def to_wire(self) -> dict[str, Any]:
        if self.response_id is None:
            return _wire(self.TYPE, self.event_id)
        return _wire(self.TYPE, self.event_id, response_id=self.response_id)


@dataclass(frozen=True, slots=True)
class InputAudioAppend:
    """PCM16 little-endian mono at the session's input sample rate; any length of whole samples."""

    audio: bytes
    event_id: str | None = None
    TYPE: ClassVar[str] = "input_audio_buffer.append"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, audio=self.audio)


@dataclass(frozen=True, slots=True)
class InputAudioCommit:
    event_id: str | None = None
    TYPE: ClassVar[str] = "input_audio_buffer.commit"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id)


@dataclass(frozen=True, slots=True)
class InputAudioClear:
    event_id: str | None = None
    TYPE: ClassVar[str] = "input_audio_buffer.clear"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id)


@dataclass(frozen=True, slots=True)
class ItemTruncate:
    """What the listener actually heard of an assistant item (the client's playback position)."""

    item_id: str
    audio_end_ms: int
    event_id: str | None = None
    TYPE: ClassVar[str] = "conversation.item.truncate"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, item_id=self.item_id, content_index=0, audio_end_ms=self.audio_end_ms)


@dataclass(frozen=True, slots=True)
class ItemDelete:
    """Remove an item from the conversation the model sees."""

    item_id: str
    event_id: str | None = None
    TYPE: ClassVar[str] = "conversation.item.delete"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, item_id=self.item_id)


@dataclass(frozen=True, slots=True)
class ModelsStatus:
    """Ask for the model residency status (admin tokens only): answered by a models.status event."""

    event_id: str | None = None
    TYPE: ClassVar[str] = "models.status"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id)


@dataclass(frozen=True, slots=True)
class Ping:
    """Client-initiated heartbeat; `ts` is the client's clock in ms, echoed back in the pong."""

    ts: int
    event_id: str | None = None
    TYPE: ClassVar[str] = "ping"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, ts=self.ts)


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a server ping; `ts` echoes the ping's."""

    ts: int
    event_id: str | None = None
    TYPE: ClassVar[str] = "pong"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, ts=self.ts)


ClientEvent = (
    SessionUpdate
    | ConversationItemCreate
    | ResponseCreate
    | ResponseCancel
    | InputAudioAppend
    | InputAudioCommit
    | InputAudioClear
    | ItemTruncate
    | ItemDelete
    | ModelsStatus
    | Ping
    | Pong
)


def _wire(type_: str, event_id: str | None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if event_id is not None:
        out["event_id"] = event_id
    out.update(fields)
    return out


def peek_ids(raw: Mapping[Any, Any]) -> tuple[str | None, str | None]:
    """Best-effort (event_id, type) of a map that may be invalid, for naming it in an error."""
    event_id = raw.get("event_id")
    type_ = raw.get("type")
    return (
        safe_text(event_id, MAX_EVENT_ID_LEN) if isinstance(event_id, str) else None,
        safe_text(type_, 64) if isinstance(type_, str) else None,
    )


def _settings(f: Fields, names: tuple[str, ...], limits: Limits) -> dict[str, Any]:
    """Parse the settable fields that are present; explicit nulls are kept (the session gives them meaning)."""
    out: dict[str, Any] = {}
    for name in names:
        if not f.has(name):
            continue
        if name == "model":
            out[name] = f.str(name, max_len=MAX_MODEL_NAME_LEN)
        elif name == "instructions":
            out[name] = f.str(name, max_len=limits.max_text_chars, nullable=True)
        elif name == "temperature":
            out[name] = f.float(name, minimum=0.0, maximum=2.0, nullable=True)
        elif name == "max_output_tokens":
            out[name] = f.int(name, minimum=1, maximum=1_000_000, nullable=True)
        elif name == "reasoning":
            out[name] = f.bool(name, nullable=True)
        elif name == "conversation_id":
            out[name] = f.str(name, max_len=64, nullable=True)
        elif name in ("input_audio_format", "output_audio_format"):
            out[name] = _nullable_obj(f, name, _audio_format)
        elif name == "turn_detection":
            out[name] = _nullable_obj(f, name, _turn_detection)
        elif name == "input_audio_transcription":
            out[name] = _nullable_obj(f, name, _transcription)
    if "model" in out and not out["model"].strip():
        raise InvalidMessage(f"'{f.path('model')}' must not be empty", param=f.path("model"))
    f.done()
    return out


def _nullable_obj(f: Fields, name: str, parse: Any) -> dict[str, Any] | None:
    if f.has(name) and f.raw(name) is None:
        f.mark(name)
        return None
    sub = f.obj(name)
    assert sub is not None
    out = parse(sub)
    sub.done()
    return out


def _audio_format(f: Fields) -> dict[str, Any]:
    f.str("type", required=False, choices=frozenset({"pcm16"}))
    rate = f.int("sample_rate", minimum=8_000, maximum=48_000)
    if rate not in INPUT_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in sorted(INPUT_SAMPLE_RATES))
        raise InvalidMessage(f"'{f.path('sample_rate')}' must be one of {rates}", param=f.path("sample_rate"))
    return {"type": "pcm16", "sample_rate": rate}


def _turn_detection(f: Fields) -> dict[str, Any]:
    f.str("type", choices=frozenset({"server_vad"}))
    out: dict[str, Any] = {"type": "server_vad"}
    for name, lo, hi in (
        ("prefix_padding_ms", 0, 2_000),
        ("silence_duration_ms", 100, 10_000),
        ("min_speech_duration_ms", 0, 2_000),
        ("segment_pause_ms", 64, 10_000),
    ):
        value = f.int(name, required=False, minimum=lo, maximum=hi)
        if value is not None:
            out[name] = value
    threshold = f.float("threshold", required=False, minimum=0.05, maximum=0.95)
    if threshold is not None:
        out["threshold"] = threshold
    for flag in ("create_response", "interrupt_response"):
        value = f.bool(flag, required=False)
        if value is not None:
            out[flag] = value
    interrupt_ms = f.int("interrupt_min_speech_ms", required=False, minimum=0, maximum=5_000)
    if interrupt_ms is not None:
        out["interrupt_min_speech_ms"] = interrupt_ms
    return out


def _transcription(f: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.has("language"):
        out["language"] = f.str("language", max_len=16, nullable=True)
    partials = f.bool("partials", required=False)
    if partials is not None:
        out["partials"] = partials
    return out


def _content(part: Fields, role: str, limits: Limits) -> ContentPart:
    expected = {"assistant": {"output_text"}, "user": {"input_text", "input_audio"}}.get(role, {"input_text"})
    kind = part.str("type", choices=frozenset(expected))
    if kind == "input_audio":
        audio = part.binary("audio", max_size=limits.max_audio_bytes)
        part.done()
        return InputAudio(audio)
    text = part.str("text", max_len=limits.max_text_chars)
    part.done()
    return OutputText(text) if kind == "output_text" else InputText(text)


def _parse_item_create(f: Fields, event_id: str | None, limits: Limits) -> ConversationItemCreate:
    item = f.obj("item")
    assert item is not None
    f.done()
    item.str("type", required=False, choices=frozenset({"message"}))
    role = item.str("role", choices=frozenset({"user", "assistant", "system"}))
    parts = item.objects("content", max_items=MAX_CONTENT_PARTS, min_items=1)
    content = tuple(_content(p, role, limits) for p in parts)
    item.done()
    if sum(len(p.text) for p in content if not isinstance(p, InputAudio)) > limits.max_text_chars:
        raise MessageTooLarge(f"message text is longer than {limits.max_text_chars} characters", param="item.content")
    return ConversationItemCreate(role=role, content=content, event_id=event_id)


def parse_client_event(
    raw: Mapping[Any, Any], *, base64_binary: bool = False, limits: Limits | None = None
) -> ClientEvent:
    """Validate a decoded map and build its event. Raises InvalidMessage (or a subclass) naming the field."""
    limits = limits or Limits()
    f = Fields(raw, base64_binary=base64_binary)
    type_ = f.str("type", max_len=64)
    event_id = f.str("event_id", required=False, max_len=MAX_EVENT_ID_LEN)
    if type_ == ConversationItemCreate.TYPE:
        return _parse_item_create(f, event_id, limits)
    if type_ == SessionUpdate.TYPE:
        session = f.obj("session")
        assert session is not None
        f.done()
        return SessionUpdate(_settings(session, SESSION_FIELDS, limits), event_id)
    if type_ == ResponseCreate.TYPE:
        response = f.obj("response", required=False)
        f.done()
        overrides = _settings(response, RESPONSE_FIELDS, limits) if response is not None else {}
        return ResponseCreate(overrides, event_id)
    if type_ == ResponseCancel.TYPE:
        response_id = f.str("response_id", required=False, max_len=64)
        f.done()
        return ResponseCancel(response_id, event_id)
    if type_ == InputAudioAppend.TYPE:
        audio = f.binary("audio", max_size=limits.max_audio_bytes)
        f.done()
        return InputAudioAppend(audio, event_id)
    if type_ == ModelsStatus.TYPE:
        f.done()
        return ModelsStatus(event_id)
    if type_ in (InputAudioCommit.TYPE, InputAudioClear.TYPE):
        f.done()
        return InputAudioCommit(event_id) if type_ == InputAudioCommit.TYPE else InputAudioClear(event_id)
    if type_ == ItemTruncate.TYPE:
        item_id = f.str("item_id", max_len=64)
        f.int("content_index", required=False, minimum=0, maximum=0)
        audio_end_ms = f.int("audio_end_ms", minimum=0, maximum=MAX_SAFE_INTEGER)
        f.done()
        return ItemTruncate(item_id, audio_end_ms, event_id)
    if type_ == ItemDelete.TYPE:
        item_id = f.str("item_id", max_len=64)
        f.done()
        return ItemDelete(item_id, event_id)
    if type_ in (Ping.TYPE, Pong.TYPE):
        ts = f.int("ts", minimum=0, maximum=MAX_SAFE_INTEGER)
        f.done()
        return Ping(ts, event_id) if type_ == Ping.TYPE else Pong(ts, event_id)
    raise UnknownEventType(f"unknown event type '{safe_text(type_)}'", param="type")
