// Client event builders (docs/protocol.md §4.1). Each returns a plain map with its keys in the order
// the server's own encoder writes them, so the bytes match tests/vectors/client_events.json.

/** The client event types of protocol v1. */
export const CLIENT_EVENT_TYPES = Object.freeze([
  "session.update",
  "conversation.item.create",
  "response.create",
  "response.cancel",
  "input_audio_buffer.append",
  "input_audio_buffer.commit",
  "input_audio_buffer.clear",
  "conversation.item.truncate",
  "conversation.item.delete",
  "tool.confirm",
  "tool.cancel",
  "models.status",
  "ping",
  "pong",
]);

/** The server event types of protocol v1 (the server may add more: ignore the ones you don't know). */
export const SERVER_EVENT_TYPES = Object.freeze([
  "session.created",
  "session.updated",
  "session.resumed",
  "conversation.item.created",
  "response.created",
  "response.reasoning.delta",
  "response.text.delta",
  "response.audio_transcript.delta",
  "response.audio.delta",
  "response.done",
  "conversation.item.truncated",
  "conversation.item.deleted",
  "input_audio_buffer.speech_started",
  "input_audio_buffer.speech_stopped",
  "input_audio_buffer.committed",
  "input_audio_buffer.cleared",
  "conversation.item.input_audio_transcription.partial",
  "conversation.item.input_audio_transcription.segment",
  "conversation.item.input_audio_transcription.completed",
  "response.research.progress",
  "response.research.sources",
  "response.documents.sources",
  "response.tool_call",
  "response.tool_confirmation_request",
  "response.tool_output.delta",
  "response.tool_result",
  "models.status",
  "error",
  "ping",
  "pong",
]);

/** The input/output sample rates the server accepts (§4.1 `input_audio_format`). */
export const SAMPLE_RATES = Object.freeze([8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]);

/**
 * `{type, event_id?, ...fields}` in that order; an absent event_id is left out.
 * @param {string} type
 * @param {string | undefined} eventId
 * @param {Record<string, unknown>} [fields]
 */
function wire(type, eventId, fields = {}) {
  /** @type {Record<string, unknown>} */
  const event = { type };
  if (eventId !== undefined && eventId !== null) event.event_id = eventId;
  return Object.assign(event, fields);
}

/**
 * @param {import("../index.js").SessionSettings} session
 * @param {string} [eventId]
 */
export function sessionUpdate(session, eventId) {
  return wire("session.update", eventId, { session: { ...session } });
}

/**
 * A message item. `content` is a string (one part) or a list of parts: strings become text parts (of
 * the type the role takes), `{image}` an `input_image` part (JPEG, PNG or WebP bytes), `{file, filename?,
 * mimeType?}` an `input_file` part (a text, Markdown, HTML, PDF or DOCX document) and `{audio}` an
 * `input_audio` part (PCM16 at the session's input rate); these only on user messages. Bytes go as msgpack
 * `bin`, or base64 in JSON.
 * @param {"user" | "assistant" | "system"} role
 * @param {string | readonly import("../index.js").ContentInput[]} content
 * @param {string} [eventId]
 */
export function conversationItemCreate(role, content, eventId) {
  const partType = role === "assistant" ? "output_text" : "input_text";
  const parts = typeof content === "string" ? [content] : content;
  const item = { type: "message", role, content: parts.map((part) => contentPart(part, partType)) };
  return wire("conversation.item.create", eventId, { item });
}

/**
 * @param {import("../index.js").ContentInput} part
 * @param {string} partType
 */
function contentPart(part, partType) {
  if (typeof part === "string") return { type: partType, text: part };
  if ("image" in part && part.image !== undefined) return { type: "input_image", image: bytesOf(part.image) };
  if ("file" in part && part.file !== undefined) {
    /** @type {{type: "input_file", file: Uint8Array, filename?: string, mime_type?: string}} */
    const out = { type: "input_file", file: bytesOf(part.file) };
    if (part.filename !== undefined) out.filename = part.filename;
    if (part.mimeType !== undefined) out.mime_type = part.mimeType;
    return out;
  }
  if ("audio" in part && part.audio !== undefined) return { type: "input_audio", audio: bytesOf(part.audio) };
  if ("text" in part && typeof part.text === "string") return { type: partType, text: part.text };
  throw new TypeError("a content part is a string, {text}, {image}, {file} or {audio}");
}

/** @param {Uint8Array | ArrayBuffer | ArrayBufferView} data */
function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * @param {import("../index.js").ResponseSettings} [overrides] per-response settings; empty: none sent
 * @param {string} [eventId]
 */
export function responseCreate(overrides, eventId) {
  if (overrides && Object.keys(overrides).length > 0) {
    return wire("response.create", eventId, { response: { ...overrides } });
  }
  return wire("response.create", eventId);
}

/**
 * @param {string} [responseId] the running response; absent: whatever runs
 * @param {string} [eventId]
 */
export function responseCancel(responseId, eventId) {
  return wire("response.cancel", eventId, responseId === undefined ? {} : { response_id: responseId });
}

/**
 * PCM16 little-endian mono at the session's input rate. An Int16Array is sent as its bytes
 * (little-endian on every platform browsers and Node run on).
 * @param {Uint8Array | Int16Array | ArrayBuffer} audio
 * @param {string} [eventId]
 */
export function inputAudioAppend(audio, eventId) {
  return wire("input_audio_buffer.append", eventId, { audio: asBytes(audio) });
}

/** @param {string} [eventId] */
export function inputAudioCommit(eventId) {
  return wire("input_audio_buffer.commit", eventId);
}

/** @param {string} [eventId] */
export function inputAudioClear(eventId) {
  return wire("input_audio_buffer.clear", eventId);
}

/**
 * @param {string} itemId the assistant item (`response.item_id`)
 * @param {number} audioEndMs milliseconds of its audio that were played
 * @param {string} [eventId]
 */
export function conversationItemTruncate(itemId, audioEndMs, eventId) {
  return wire("conversation.item.truncate", eventId, {
    item_id: itemId,
    content_index: 0,
    audio_end_ms: Math.max(0, Math.round(audioEndMs)),
  });
}

/**
 * @param {number} ts integer, 0 .. 2^53-1
 * @param {string} [eventId]
 */
export function ping(ts, eventId) {
  return wire("ping", eventId, { ts });
}

/** @param {number} ts the server ping's ts, unchanged */
export function pong(ts) {
  return wire("pong", undefined, { ts });
}

/**
 * @param {Uint8Array | ArrayBufferView | ArrayBuffer} audio
 * @returns {Uint8Array}
 */
export function asBytes(audio) {
  if (audio instanceof Uint8Array) return audio;
  if (audio instanceof ArrayBuffer) return new Uint8Array(audio);
  if (ArrayBuffer.isView(audio)) return new Uint8Array(audio.buffer, audio.byteOffset, audio.byteLength);
  throw new TypeError("audio must be a Uint8Array, an Int16Array or an ArrayBuffer");
}
