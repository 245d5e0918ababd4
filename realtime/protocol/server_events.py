"""Events the server sends. Each constructor returns a ServerEvent; the session numbers it when sending.

On the wire every server event starts with `type`, `event_id` ("evt_<seq>") and `seq` (1, 2, 3... per
session, numbered by the sender in wire order, so a client can tell what it has seen). Events streamed
within a response carry `response_id`; response.created and response.done carry the response object,
whose `id` it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    type: str
    fields: Mapping[str, Any]

    def to_wire(self, seq: int) -> dict[str, Any]:
        return {"type": self.type, "event_id": f"evt_{seq}", "seq": seq, **self.fields}


def session_created(session: Mapping[str, Any]) -> ServerEvent:
    return ServerEvent("session.created", {"session": dict(session)})


def session_resumed(session: Mapping[str, Any], replayed_after: int) -> ServerEvent:
    """After a resume: the events after `replayed_after` have just been sent again, in order."""
    return ServerEvent("session.resumed", {"session": dict(session), "replayed_after": replayed_after})


def session_updated(session: Mapping[str, Any]) -> ServerEvent:
    return ServerEvent("session.updated", {"session": dict(session)})


def item_created(item_id: str, role: str, content: list[dict[str, Any]]) -> ServerEvent:
    item = {"id": item_id, "type": "message", "role": role, "content": content}
    return ServerEvent("conversation.item.created", {"item": item})


def response_created(
    response_id: str, item_id: str, model: str, output_audio_format: Mapping[str, Any] | None = None
) -> ServerEvent:
    """`output_audio_format` is given only for a spoken response (its audio format)."""
    response: dict[str, Any] = {"id": response_id, "status": "in_progress", "item_id": item_id, "model": model}
    if output_audio_format is not None:
        response["output_audio_format"] = dict(output_audio_format)
    return ServerEvent("response.created", {"response": response})


def research_progress(
    response_id: str, item_id: str, stage: str, *, queries: Sequence[str] = (), sources: int | None = None
) -> ServerEvent:
    """A research turn's stage: planning | searching (`queries`) | reading (`sources`: pages being read) |
    answering (`sources`: pages the answer is written from)."""
    fields: dict[str, Any] = {"response_id": response_id, "item_id": item_id, "stage": stage}
    if queries:
        fields["queries"] = list(queries)
    if sources is not None:
        fields["sources"] = sources
    return ServerEvent("response.research.progress", fields)


def document_sources(response_id: str, item_id: str, sources: Sequence[Mapping[str, Any]]) -> ServerEvent:
    """The document passages a response was given: [{n, label, document_id, document_name, ordinal, page,
    section, text, score}], [n] in the text naming source n (response.done's `citations`: those cited)."""
    return ServerEvent(
        "response.documents.sources",
        {"response_id": response_id, "item_id": item_id, "sources": [dict(s) for s in sources]},
    )


def research_sources(response_id: str, item_id: str, sources: Sequence[Mapping[str, Any]]) -> ServerEvent:
    """The pages a research answer may cite: [{n, url, title}], [n] in the text naming source n."""
    return ServerEvent(
        "response.research.sources",
        {"response_id": response_id, "item_id": item_id, "sources": [dict(s) for s in sources]},
    )


def tool_call(response_id: str, item_id: str, call_id: str, name: str, arguments: Mapping[str, Any]) -> ServerEvent:
    """The model called a tool (it runs next, or once the user confirms it)."""
    fields = {"response_id": response_id, "item_id": item_id, "call_id": call_id, "name": name}
    return ServerEvent("response.tool_call", {**fields, "arguments": dict(arguments)})


def tool_confirmation_request(
    response_id: str, call_id: str, name: str, arguments: Mapping[str, Any], timeout_ms: int
) -> ServerEvent:
    """Run this call? Answered by tool.confirm (or, in a voice session, a spoken yes or no)."""
    fields = {"response_id": response_id, "call_id": call_id, "name": name, "arguments": dict(arguments)}
    return ServerEvent("response.tool_confirmation_request", {**fields, "timeout_ms": timeout_ms})


def tool_output_delta(response_id: str, call_id: str, delta: str) -> ServerEvent:
    """Terminal output of a running command, as it is produced (bounded by the sandbox's output cap)."""
    return ServerEvent("response.tool_output.delta", {"response_id": response_id, "call_id": call_id, "delta": delta})


def tool_result(
    response_id: str, call_id: str, name: str, status: str, output: str, details: Mapping[str, Any]
) -> ServerEvent:
    """A call's end. status: completed | failed | declined | cancelled; `output` is what the model reads."""
    fields = {"response_id": response_id, "call_id": call_id, "name": name, "status": status, "output": output}
    return ServerEvent("response.tool_result", {**fields, "details": dict(details)})


def text_delta(response_id: str, item_id: str, delta: str) -> ServerEvent:
    return ServerEvent("response.text.delta", {"response_id": response_id, "item_id": item_id, "delta": delta})


def reasoning_delta(response_id: str, item_id: str, delta: str) -> ServerEvent:
    return ServerEvent("response.reasoning.delta", {"response_id": response_id, "item_id": item_id, "delta": delta})


JOINABLE = frozenset({"response.text.delta", "response.reasoning.delta"})
MAX_JOINED_DELTA = 8_192  # characters: a joined delta stays one small frame


def joined(first: ServerEvent, second: ServerEvent) -> ServerEvent | None:
    """The two events as one, when `second` only continues `first`'s text (same kind of delta, same
    response and item) and the result stays small; else None. Deltas are arbitrary cuts of one text,
    so a client sees the same text either way, in fewer frames."""
    if first.type != second.type or first.type not in JOINABLE:
        return None
    a, b = first.fields, second.fields
    if a["response_id"] != b["response_id"] or a["item_id"] != b["item_id"]:
        return None
    if len(a["delta"]) + len(b["delta"]) > MAX_JOINED_DELTA:
        return None
    return ServerEvent(first.type, {**a, "delta": a["delta"] + b["delta"]})


def response_done(
    response_id: str,
    item_id: str,
    status: str,
    *,
    text: str,
    reasoning: str,
    usage: Mapping[str, int],
    metrics: Mapping[str, int | None],
    reason: str | None = None,
    error: Mapping[str, str] | None = None,
    audio: Mapping[str, Any] | None = None,
    citations: Sequence[Mapping[str, Any]] | None = None,
) -> ServerEvent:
    """status: completed | cancelled | interrupted | incomplete | failed; `reason` says why it is not completed.

    `citations` (responses given document sources): the sources the answer cites as [n], first cited first.

    `audio` (spoken responses): duration_ms sent, played_ms heard, heard_text (what history keeps).
    """
    response: dict[str, Any] = {"id": response_id, "item_id": item_id, "status": status}
    if reason is not None or error is not None:
        details: dict[str, Any] = {}
        if reason is not None:
            details["reason"] = reason
        if error is not None:
            details["error"] = dict(error)
        response["status_details"] = details
    response["output_text"] = text
    response["reasoning_text"] = reasoning
    response["usage"] = dict(usage)
    response["metrics"] = dict(metrics)
    if audio is not None:
        response["audio"] = dict(audio)
    if citations is not None:
        response["citations"] = [dict(c) for c in citations]
    return ServerEvent("response.done", {"response": response})


def error(
    code: str,
    message: str,
    *,
    event_id: str | None = None,
    event_type: str | None = None,
    param: str | None = None,
    response_id: str | None = None,
) -> ServerEvent:
    """`event_id`/`event_type` name the client event that caused it, when there was one."""
    err: dict[str, Any] = {"code": code, "message": message}
    if param is not None:
        err["param"] = param
    if event_id is not None:
        err["event_id"] = event_id
    if event_type is not None:
        err["event_type"] = event_type
    fields: dict[str, Any] = {"error": err}
    if response_id is not None:
        fields["response_id"] = response_id
    return ServerEvent("error", fields)


def ping(ts: int) -> ServerEvent:
    return ServerEvent("ping", {"ts": ts})


def pong(ts: int, event_id: str | None = None) -> ServerEvent:
    fields: dict[str, Any] = {"ts": ts}
    if event_id is not None:
        fields["reply_to"] = event_id
    return ServerEvent("pong", fields)


def speech_started(item_id: str, audio_start_ms: int) -> ServerEvent:
    return ServerEvent("input_audio_buffer.speech_started", {"item_id": item_id, "audio_start_ms": audio_start_ms})


def speech_stopped(item_id: str, audio_end_ms: int) -> ServerEvent:
    return ServerEvent("input_audio_buffer.speech_stopped", {"item_id": item_id, "audio_end_ms": audio_end_ms})


def audio_committed(item_id: str) -> ServerEvent:
    return ServerEvent("input_audio_buffer.committed", {"item_id": item_id})


def audio_cleared() -> ServerEvent:
    return ServerEvent("input_audio_buffer.cleared", {})


def transcription_partial(item_id: str, stable: str, unstable: str) -> ServerEvent:
    """`stable` only ever grows (never retracted); `unstable` is the newest guess beyond it."""
    return ServerEvent(
        "conversation.item.input_audio_transcription.partial",
        {"item_id": item_id, "stable": stable, "unstable": unstable},
    )


def transcription_segment(item_id: str, text: str, audio_start_ms: int, audio_end_ms: int) -> ServerEvent:
    """Final text of one stretch of speech (ended by a short pause); it never changes."""
    return ServerEvent(
        "conversation.item.input_audio_transcription.segment",
        {"item_id": item_id, "text": text, "audio_start_ms": audio_start_ms, "audio_end_ms": audio_end_ms},
    )


def transcription_completed(item_id: str, transcript: str, audio_duration_ms: int, language: str | None) -> ServerEvent:
    return ServerEvent(
        "conversation.item.input_audio_transcription.completed",
        {"item_id": item_id, "transcript": transcript, "audio_duration_ms": audio_duration_ms, "language": language},
    )


def audio_delta(response_id: str, item_id: str, seq: int, offset_ms: int, audio: bytes) -> ServerEvent:
    """PCM16 LE mono at the session's output rate; `seq` counts this response's chunks from 1."""
    return ServerEvent(
        "response.audio.delta",
        {"response_id": response_id, "item_id": item_id, "seq_no": seq, "offset_ms": offset_ms, "audio": audio},
    )


def audio_transcript_delta(response_id: str, item_id: str, text: str, offset_ms: int) -> ServerEvent:
    """The text of the piece whose audio starts at `offset_ms` (sent just before that audio)."""
    return ServerEvent(
        "response.audio_transcript.delta",
        {"response_id": response_id, "item_id": item_id, "delta": text, "offset_ms": offset_ms},
    )


def item_truncated(item_id: str, audio_end_ms: int, transcript: str) -> ServerEvent:
    return ServerEvent(
        "conversation.item.truncated", {"item_id": item_id, "audio_end_ms": audio_end_ms, "transcript": transcript}
    )


def item_deleted(item_id: str) -> ServerEvent:
    return ServerEvent("conversation.item.deleted", {"item_id": item_id})


def models_status(status: Mapping[str, Any], event_id: str | None = None) -> ServerEvent:
    fields: dict[str, Any] = {"status": dict(status)}
    if event_id is not None:
        fields["reply_to"] = event_id
    return ServerEvent("models.status", fields)
