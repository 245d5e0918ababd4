"""Events a client sends, as typed values, and the strict parser that builds them from a decoded map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from realtime.errors import ImageTooLarge, InvalidMessage, MessageTooLarge, UnknownEventType
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
    max_image_bytes: int = 10 << 20  # one input_image part
    max_images: int = 4  # input_image parts in one message
    max_file_bytes: int = 1 << 20  # one input_file part (larger documents go through the HTTP library API)


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


@dataclass(frozen=True, slots=True)
class InputImage:
    """An image attached to a user message: JPEG, PNG or WebP bytes (the session decodes and checks them)."""

    image: bytes
    type: ClassVar[str] = "input_image"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "image": self.image}


@dataclass(frozen=True, slots=True)
class InputFile:
    """A document attached to a user message (text, Markdown, HTML, PDF, DOCX: the session reads it)."""

    file: bytes
    filename: str | None = None
    mime_type: str | None = None
    type: ClassVar[str] = "input_file"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "file": self.file}
        if self.filename is not None:
            out["filename"] = self.filename
        if self.mime_type is not None:
            out["mime_type"] = self.mime_type
        return out


ContentPart = InputText | OutputText | InputAudio | InputImage | InputFile

# Settings a client may change with session.update; response.create may override these for one response.
RESPONSE_FIELDS = (
    "model",
    "instructions",
    "temperature",
    "max_output_tokens",
    "reasoning",
    "output_audio_format",
    "vision_model",
    "research",
    "tools",
    "library",
)
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
        """The typed text (audio parts have none until the session transcribes them; images have none)."""
        return "".join(part.text for part in self.content if isinstance(part, InputText | OutputText))

    @property
    def images(self) -> tuple[bytes, ...]:
        return tuple(part.image for part in self.content if isinstance(part, InputImage))

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
class ToolConfirm:
    """The user's answer to response.tool_confirmation_request: run the call or not."""

    call_id: str
    approve: bool
    event_id: str | None = None
    TYPE: ClassVar[str] = "tool.confirm"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, call_id=self.call_id, approve=self.approve)


@dataclass(frozen=True, slots=True)
class ToolCancel:
    """Stop a running tool call (a command): the model is told it was cancelled and the response goes on."""

    call_id: str
    event_id: str | None = None
    TYPE: ClassVar[str] = "tool.cancel"

    def to_wire(self) -> dict[str, Any]:
        return _wire(self.TYPE, self.event_id, call_id=self.call_id)


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
    | ToolConfirm
    | ToolCancel
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
        elif name == "vision_model":
            out[name] = f.str(name, max_len=MAX_MODEL_NAME_LEN, nullable=True)
        elif name == "instructions":
            out[name] = f.str(name, max_len=limits.max_text_chars, nullable=True)
        elif name == "temperature":
            out[name] = f.float(name, minimum=0.0, maximum=2.0, nullable=True)
        elif name == "max_output_tokens":
            out[name] = f.int(name, minimum=1, maximum=1_000_000, nullable=True)
        elif name == "reasoning":
            out[name] = f.bool(name, nullable=True)
        elif name == "research":
            out[name] = _research_mode(f, name)
        elif name == "tools":
            out[name] = _tools_setting(f, name)
        elif name == "library":
            out[name] = _library_setting(f, name)
        elif name == "conversation_id":
            out[name] = f.str(name, max_len=64, nullable=True)
        elif name in ("input_audio_format", "output_audio_format"):
            out[name] = _nullable_obj(f, name, _audio_format)
        elif name == "turn_detection":
            out[name] = _nullable_obj(f, name, _turn_detection)
        elif name == "input_audio_transcription":
            out[name] = _nullable_obj(f, name, _transcription)
    for name in ("model", "vision_model"):
        if isinstance(out.get(name), str) and not out[name].strip():
            raise InvalidMessage(f"'{f.path(name)}' must not be empty", param=f.path(name))
    f.done()
    return out


RESEARCH_MODES = frozenset({"auto", "on", "off"})


def _research_mode(f: Fields, name: str) -> str | None:
    """Web research: "on" | "off" | "auto" (when the question asks for fresh facts); true and false are
    short for "on" and "off"; null: the server default."""
    value = f.raw(name)
    if isinstance(value, bool):
        f.mark(name)
        return "on" if value else "off"
    return f.str(name, choices=RESEARCH_MODES, nullable=True)


TOOL_NAMES = frozenset({"list_files", "read_file", "write_file", "delete_file", "run_command", "read_output"})


def _tools_setting(f: Fields, name: str) -> dict[str, Any] | None:
    """Tools: true (on, the server's confirmations) | false or null (off) | {"confirm": [tool names]}
    (on, asking the user before each listed tool)."""
    value = f.raw(name)
    if value is None or isinstance(value, bool):
        f.mark(name)
        return {"confirm": None} if value else None
    sub = f.obj(name)
    assert sub is not None
    confirm = sub.raw("confirm") if sub.has("confirm") else None
    if confirm is not None and (
        not isinstance(confirm, list) or len(confirm) > len(TOOL_NAMES) or not set(confirm) <= TOOL_NAMES
    ):
        raise InvalidMessage(
            f"'{sub.path('confirm')}' must be a list of tool names: {', '.join(sorted(TOOL_NAMES))}",
            param=sub.path("confirm"),
        )
    if sub.has("confirm"):
        sub.mark("confirm")
    sub.done()
    return {"confirm": list(confirm) if confirm is not None else None}


MAX_LIBRARY_DOCUMENTS = 32  # document ids in one `library` setting


def _library_setting(f: Fields, name: str) -> bool | list[str] | None:
    """The user's document library in responses: true (all of it) | false (off) | [document ids] (only
    those) | null (the server default, off)."""
    value = f.raw(name)
    if value is None or isinstance(value, bool):
        f.mark(name)
        return value
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_LIBRARY_DOCUMENTS
        or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)
    ):
        raise InvalidMessage(
            f"'{f.path(name)}' must be true, false, null or a list of 1-{MAX_LIBRARY_DOCUMENTS} document ids",
            param=f.path(name),
        )
    f.mark(name)
    return list(dict.fromkeys(value))


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
    for name in ("threshold", "turn_model_threshold"):
        value = f.float(name, required=False, minimum=0.05, maximum=0.95)
        if value is not None:
            out[name] = value
    for flag in ("create_response", "interrupt_response", "turn_model"):
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
    expected = {
        "assistant": {"output_text"},
        "user": {"input_text", "input_audio", "input_image", "input_file"},
    }.get(role, {"input_text"})
    kind = part.str("type", choices=frozenset(expected))
    if kind == "input_audio":
        audio = part.binary("audio", max_size=limits.max_audio_bytes)
        part.done()
        return InputAudio(audio)
    if kind == "input_image":
        try:
            image = part.binary("image", max_size=limits.max_image_bytes)
        except MessageTooLarge as exc:
            raise ImageTooLarge(
                f"'{part.path('image')}' is larger than {limits.max_image_bytes} bytes", param=part.path("image")
            ) from exc
        part.done()
        return InputImage(image)
    if kind == "input_file":
        try:
            data = part.binary("file", max_size=limits.max_file_bytes)
        except MessageTooLarge as exc:
            raise MessageTooLarge(
                f"'{part.path('file')}' is larger than {limits.max_file_bytes} bytes: "
                "add larger documents to the library over HTTP (POST /api/documents)",
                param=part.path("file"),
            ) from exc
        filename = part.str("filename", required=False, max_len=255)
        mime_type = part.str("mime_type", required=False, max_len=255)
        part.done()
        return InputFile(data, filename, mime_type)
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
    if sum(isinstance(p, InputImage) for p in content) > limits.max_images:
        raise MessageTooLarge(f"a message holds at most {limits.max_images} images", param="item.content")
    if sum(len(p.text) for p in content if isinstance(p, InputText | OutputText)) > limits.max_text_chars:
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
    if type_ == ToolConfirm.TYPE:
        call_id = f.str("call_id", max_len=64)
        approve = f.bool("approve")
        f.done()
        return ToolConfirm(call_id, bool(approve), event_id)
    if type_ == ToolCancel.TYPE:
        call_id = f.str("call_id", max_len=64)
        f.done()
        return ToolCancel(call_id, event_id)
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
