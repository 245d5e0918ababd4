"""OpenAI Realtime (GA) client events -> our client events (docs/protocol.md), sans-I/O.

Each OpenAI event is validated the way OpenAI validates it (schema.py) and becomes zero or more of our
events, as plain maps ready for our JSON encoding. What has no equivalent here is refused with an
OpenAI-style error rather than silently dropped, except fields listed as ignored in docs/openai-compat.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.openai_compat.schema import CompatError, Obj, invalid_value, present, unsupported
from realtime.protocol.client_events import INPUT_SAMPLE_RATES

OPENAI_RATE = 24_000
MAX_TOKENS = 1_000_000  # ours (OpenAI caps at 4096)


@dataclass(slots=True)
class View:
    """What inbound translation needs to know of the session (kept by the translator)."""

    has_speech: bool
    speaking: bool  # replies are spoken now (our output_audio_format is set)
    output_rate: int = OPENAI_RATE
    last_item_id: str | None = None


@dataclass(slots=True)
class Inbound:
    """Our events for one OpenAI event, and the OpenAI-only session values it sets (voice, ...)."""

    events: list[dict[str, Any]]
    extras: dict[str, Any] | None = None  # only for session.update: applied once the session confirms it
    item_ids: list[str | None] = field(default_factory=list)  # conversation.item.create: the client's own id


def is_openai_model(name: str) -> bool:
    """OpenAI's model names stand for the server's configured model; any other name is an Ollama model."""
    return name.startswith(("gpt-", "chatgpt-"))


def _ours(type_: str, event_id: str | None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_}
    if event_id is not None:
        out["event_id"] = event_id
    out.update(fields)
    return out


# ---- session settings -----------------------------------------------------------------------------


def _rate(fmt: Obj) -> int:
    kind = fmt.text("type", choices=("audio/pcm", "audio/pcmu", "audio/pcma"))
    if kind in ("audio/pcmu", "audio/pcma"):
        raise unsupported(fmt.name("type"), f"The audio format '{kind}'")
    rate = fmt.integer("rate", minimum=8_000, maximum=48_000)
    fmt.done()
    if not present(rate):
        return OPENAI_RATE
    if rate not in INPUT_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in sorted(INPUT_SAMPLE_RATES))
        raise invalid_value(fmt.name("rate"), rate, f"Supported rates are: {rates} (OpenAI: 24000).")
    return rate


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(max(value, lo), hi)


SEMANTIC_SILENCE_MS = {"low": 800, "medium": 500, "auto": 500, "high": 300}


def _turn_detection(td: Obj) -> dict[str, Any]:
    kind = td.text("type", required=True, choices=("server_vad", "semantic_vad"))
    # server_vad is silence alone, as OpenAI's; semantic_vad adds our end-of-turn model, which ends a turn
    # at the first short pause when the audio says the user is done (the silence window is the fallback)
    out: dict[str, Any] = {"type": "server_vad", "turn_model": kind == "semantic_vad"}
    if kind == "server_vad":
        threshold = td.number("threshold", minimum=0.0, maximum=1.0, nullable=True)
        if present(threshold) and threshold is not None:
            out["threshold"] = round(_clamp(threshold, 0.05, 0.95), 4)
        padding = td.integer("prefix_padding_ms", minimum=0, maximum=60_000, nullable=True)
        if present(padding) and padding is not None:
            out["prefix_padding_ms"] = int(_clamp(padding, 0, 2_000))
        silence = td.integer("silence_duration_ms", minimum=0, maximum=60_000, nullable=True)
        if present(silence) and silence is not None:
            out["silence_duration_ms"] = int(_clamp(silence, 100, 10_000))
        td.integer("idle_timeout_ms", minimum=0, maximum=1 << 31, nullable=True)  # accepted, not implemented
    else:
        eagerness = td.text("eagerness", nullable=True, choices=("low", "medium", "high", "auto"))
        out["silence_duration_ms"] = SEMANTIC_SILENCE_MS[eagerness if present(eagerness) and eagerness else "auto"]
    for name in ("create_response", "interrupt_response"):
        value = td.flag(name, nullable=True)
        if present(value) and value is not None:
            out[name] = value
    # our own tuning knobs, accepted here too (docs/protocol.md, turn_detection)
    for name, lo, hi in (
        ("min_speech_duration_ms", 0, 2_000),
        ("segment_pause_ms", 64, 10_000),
        ("interrupt_min_speech_ms", 0, 5_000),
    ):
        value = td.integer(name, minimum=lo, maximum=hi)
        if present(value):
            out[name] = value
    td.done()
    return out


def _modalities(obj: Obj, view: View) -> Any:
    """`output_modalities` -> True (spoken replies) / False (text only), or MISSING."""
    value = obj.raw("output_modalities")
    if not present(value):
        return value
    name = obj.name("output_modalities")
    if not isinstance(value, list) or not value or not all(v in ("text", "audio") for v in value):
        raise invalid_value(name, value, "Supported values are: ['audio'] and ['text'].")
    speak = "audio" in value
    if speak and not view.has_speech:
        raise CompatError("invalid_value", "This server has no speech output: use ['text'].", name)
    return speak


def _max_tokens(obj: Obj) -> Any:
    value = obj.raw("max_output_tokens")
    if value == "inf" or value is None:
        return None
    if present(value):
        return obj.integer("max_output_tokens", minimum=1, maximum=MAX_TOKENS)
    return value


def _voice(obj: Obj) -> Any:
    value = obj.raw("voice")
    if not present(value) or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str) and set(value) == {"id"}:
        return dict(value)
    raise invalid_value(obj.name("voice"), value, "Expected a voice name or {'id': ...}.")


def session_changes(s: Obj, view: View) -> tuple[dict[str, Any], dict[str, Any]]:
    """An OpenAI session object (as in session.update) -> (our settings changes, OpenAI-only extras)."""
    kind = s.text("type", choices=("realtime", "transcription"))
    if kind == "transcription":
        raise unsupported(s.name("type"), "A transcription session")
    s.ignore("id", "object", "expires_at", "tracing", "truncation", "include", "tools", "tool_choice")
    s.ignore("parallel_tool_calls", "reasoning")
    changes: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    model = s.text("model", nullable=True)
    if present(model) and model is not None and not is_openai_model(model):
        changes["model"] = model
    instructions = s.text("instructions", nullable=True)
    if present(instructions):
        changes["instructions"] = instructions
    max_tokens = _max_tokens(s)
    if present(max_tokens):
        changes["max_output_tokens"] = max_tokens
    temperature = s.number("temperature", minimum=0.0, maximum=2.0, nullable=True)  # beta field, kept
    if present(temperature):
        changes["temperature"] = temperature
    prompt = s.raw("prompt")
    if present(prompt) and prompt is not None:
        raise unsupported(s.name("prompt"), "A prompt template")
    speak = _modalities(s, view)
    rate = view.output_rate
    audio = s.obj("audio", nullable=True)
    if present(audio) and audio is not None:
        source = audio.obj("input", nullable=True)
        if present(source) and source is not None:
            _input_audio(source, changes)
        sink = audio.obj("output", nullable=True)
        if present(sink) and sink is not None:
            fmt = sink.obj("format", nullable=True)
            if present(fmt) and fmt is not None:
                rate = _rate(fmt)
                extras["output_rate"] = rate
            voice = _voice(sink)
            if present(voice) and voice is not None:
                extras["voice"] = voice
            sink.number("speed", minimum=0.25, maximum=1.5, nullable=True)  # accepted, not implemented
            sink.done()
        audio.done()
    s.done()
    if present(speak):
        changes["output_audio_format"] = {"type": "pcm16", "sample_rate": rate} if speak else None
    elif view.speaking and rate != view.output_rate:
        changes["output_audio_format"] = {"type": "pcm16", "sample_rate": rate}
    return changes, extras


def _input_audio(source: Obj, changes: dict[str, Any]) -> None:
    fmt = source.obj("format", nullable=True)
    if present(fmt) and fmt is not None:
        changes["input_audio_format"] = {"type": "pcm16", "sample_rate": _rate(fmt)}
    td = source.obj("turn_detection", nullable=True)
    if present(td):
        changes["turn_detection"] = None if td is None else _turn_detection(td)
    transcription = source.obj("transcription", nullable=True)
    if present(transcription) and transcription is not None:
        language = transcription.text("language", nullable=True)
        transcription.ignore("model", "prompt", "delay", "keywords", "languages")
        transcription.done()
        if present(language):
            if language is not None and len(language) > 16:
                raise invalid_value(transcription.name("language"), language, "Expected an ISO-639-1 code.")
            changes["input_audio_transcription"] = {"language": language or None}
    source.ignore("noise_reduction")
    source.done()


# ---- conversation items ---------------------------------------------------------------------------


def _content(part: Obj, role: str) -> dict[str, Any]:
    allowed = {
        "user": ("input_text", "input_audio", "input_image"),
        "system": ("input_text",),
        "assistant": ("output_text", "output_audio", "text"),
    }[role]
    kind = part.text("type", required=True, choices=allowed)
    if kind == "input_image":
        raise unsupported(part.name("type"), "Image input")
    if kind == "input_audio":
        audio = part.text("audio", required=True)
        part.ignore("transcript")
        part.done()
        return {"type": "input_audio", "audio": audio}
    if kind == "output_audio":
        text = part.text("transcript", required=True)
        part.ignore("audio")
    else:
        text = part.text("text", required=True)
    part.done()
    return {"type": "output_text" if role == "assistant" else "input_text", "text": text}


def _item_create(f: Obj, event_id: str | None, view: View) -> Inbound:
    item = f.obj("item", required=True)
    previous = f.text("previous_item_id", nullable=True)
    f.done()
    if present(previous) and previous is not None and previous != view.last_item_id:
        raise CompatError(
            "invalid_value",
            f"Inserting after '{previous}' is not supported: new items are appended after the last item"
            f" ({view.last_item_id!r}).",
            "previous_item_id",
        )
    kind = item.text("type", required=True, choices=("message", "function_call", "function_call_output"))
    if kind != "message":
        raise unsupported(item.name("type"), f"Items of type '{kind}' (function calling)")
    role = item.text("role", required=True, choices=("user", "assistant", "system"))
    client_id = item.text("id", nullable=True)
    item.ignore("object", "status")
    parts = item.objects("content", required=True)
    item.done()
    content = [_content(p, role) for p in parts]
    ours = _ours("conversation.item.create", event_id, item={"type": "message", "role": role, "content": content})
    return Inbound([ours], item_ids=[client_id if present(client_id) else None])


# ---- responses ------------------------------------------------------------------------------------


def _response_create(f: Obj, event_id: str | None, view: View) -> Inbound:
    r = f.obj("response", nullable=True)
    f.done()
    overrides: dict[str, Any] = {}
    if present(r) and r is not None:
        instructions = r.text("instructions", nullable=True)
        if present(instructions):
            overrides["instructions"] = instructions
        max_tokens = _max_tokens(r)
        if present(max_tokens):
            overrides["max_output_tokens"] = max_tokens
        temperature = r.number("temperature", minimum=0.0, maximum=2.0, nullable=True)
        if present(temperature):
            overrides["temperature"] = temperature
        conversation = r.text("conversation", nullable=True, choices=("auto", "none"))
        if conversation == "none":
            raise unsupported(r.name("conversation"), "A response outside the conversation ('none')")
        for name, what in (("input", "A custom response input"), ("prompt", "A prompt template")):
            value = r.raw(name)
            if present(value) and value is not None:
                raise unsupported(r.name(name), what)
        speak = _modalities(r, view)
        rate = view.output_rate
        audio = r.obj("audio", nullable=True)
        if present(audio) and audio is not None:
            sink = audio.obj("output", nullable=True)
            if present(sink) and sink is not None:
                fmt = sink.obj("format", nullable=True)
                if present(fmt) and fmt is not None:
                    rate = _rate(fmt)
                _voice(sink)
                sink.done()
            audio.done()
        r.ignore("metadata", "tools", "tool_choice")
        r.done()
        if present(speak):
            overrides["output_audio_format"] = {"type": "pcm16", "sample_rate": rate} if speak else None
        elif view.speaking and rate != view.output_rate:
            overrides["output_audio_format"] = {"type": "pcm16", "sample_rate": rate}
    fields = {"response": overrides} if overrides else {}
    return Inbound([_ours("response.create", event_id, **fields)])


# ---- dispatch -------------------------------------------------------------------------------------

SUPPORTED = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)
UNSUPPORTED = {
    "conversation.item.retrieve": "conversation.item.retrieve",
    "output_audio_buffer.clear": "output_audio_buffer.clear (WebRTC and SIP only)",
    "transcription_session.update": "A transcription session",
}


def translate(f: Obj, type_: str, event_id: str | None, view: View) -> Inbound:
    """One OpenAI client event (its `type` and `event_id` already read) -> our events. Raises CompatError."""
    if type_ == "session.update":
        session = f.obj("session", required=True)
        f.done()
        changes, extras = session_changes(session, view)
        return Inbound([_ours("session.update", event_id, session=changes)], extras=extras)
    if type_ == "conversation.item.create":
        return _item_create(f, event_id, view)
    if type_ == "response.create":
        return _response_create(f, event_id, view)
    if type_ == "response.cancel":
        response_id = f.text("response_id", nullable=True)
        f.done()
        fields = {"response_id": response_id} if present(response_id) and response_id is not None else {}
        return Inbound([_ours(type_, event_id, **fields)])
    if type_ == "input_audio_buffer.append":
        audio = f.text("audio", required=True)
        f.done()
        return Inbound([_ours(type_, event_id, audio=audio)])
    if type_ in ("input_audio_buffer.commit", "input_audio_buffer.clear"):
        f.done()
        return Inbound([_ours(type_, event_id)])
    if type_ == "conversation.item.truncate":
        item_id = f.text("item_id", required=True)
        f.raw("content_index", required=True)
        index = f.integer("content_index", minimum=0, maximum=1 << 31)
        if index != 0:
            raise invalid_value("content_index", index, "Only content_index 0 is supported.")
        f.raw("audio_end_ms", required=True)
        audio_end_ms = f.integer("audio_end_ms", minimum=0, maximum=2**53 - 1)
        f.done()
        return Inbound([_ours(type_, event_id, item_id=item_id, content_index=0, audio_end_ms=audio_end_ms)])
    if type_ == "conversation.item.delete":
        item_id = f.text("item_id", required=True)
        f.done()
        return Inbound([_ours(type_, event_id, item_id=item_id)])
    if type_ in UNSUPPORTED:
        raise unsupported("type", UNSUPPORTED[type_])
    allowed = "Supported values are: " + ", ".join(f"'{t}'" for t in SUPPORTED) + "."
    raise invalid_value("type", type_, allowed)
