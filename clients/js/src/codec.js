// The two wire encodings of protocol v1 (docs/protocol.md §1, §3), as pure functions.
//
// msgpack in binary frames: maps keep the keys' insertion order, bytes are `bin`, integers take the
// smallest form and other numbers float64. JSON in text frames: compact, keys in order, non-ASCII
// unescaped, bytes as standard base64 strings. The shared vectors in tests/vectors/ pin both.

import { Decoder, Encoder } from "@msgpack/msgpack";

import { decodeBase64, encodeBase64 } from "./base64.js";

export const PROTOCOL_VERSION = "v1";

/** @typedef {"msgpack" | "json"} Encoding */

/** @type {Record<Encoding, string>} */
export const SUBPROTOCOLS = {
  msgpack: `realtime.${PROTOCOL_VERSION}.msgpack`,
  json: `realtime.${PROTOCOL_VERSION}.json`,
};

/**
 * Top-level fields that carry bytes, per event type (client and server). JSON carries them as base64
 * strings, so a JSON decoder needs this table to give back the same bytes msgpack does.
 * @type {Readonly<Record<string, readonly string[]>>}
 */
export const BINARY_FIELDS = Object.freeze({
  "input_audio_buffer.append": Object.freeze(["audio"]),
  "response.audio.delta": Object.freeze(["audio"]),
});

/** A frame that is not one valid event map. */
export class DecodeError extends Error {
  /** @param {string} message @param {{cause?: unknown}} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = "DecodeError";
  }
}

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

/**
 * @param {unknown} value
 * @returns {value is Record<string, unknown>}
 */
function isPlainMap(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !ArrayBuffer.isView(value);
}

/**
 * One event to the bytes (msgpack) or text (JSON) of one websocket message.
 * @param {Record<string, unknown>} event
 * @param {Encoding} encoding
 * @returns {Uint8Array | string}
 */
export function encodeEvent(event, encoding) {
  if (encoding === "msgpack") return encoder.encode(event);
  if (encoding === "json") return JSON.stringify(event, jsonReplacer);
  throw new TypeError(`unknown encoding ${String(encoding)}`);
}

/**
 * @param {string} _key
 * @param {unknown} value
 */
function jsonReplacer(_key, value) {
  if (value instanceof Uint8Array) return encodeBase64(value);
  if (value instanceof ArrayBuffer) return encodeBase64(new Uint8Array(value));
  if (ArrayBuffer.isView(value)) return encodeBase64(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  if (typeof value === "number" && !Number.isFinite(value)) throw new TypeError("numbers must be finite");
  return value;
}

/**
 * The data of one websocket message to an event map. Binary fields come back as Uint8Array in both
 * encodings. Throws DecodeError for a frame of the wrong kind, bad bytes, or anything but a map with a
 * string `type`.
 * @param {ArrayBuffer | ArrayBufferView | string} data
 * @param {Encoding} encoding
 * @returns {Record<string, any>}
 */
export function decodeEvent(data, encoding) {
  /** @type {unknown} */
  let event;
  if (encoding === "msgpack") {
    if (typeof data === "string") throw new DecodeError("a text frame on a msgpack link");
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    try {
      event = decoder.decode(bytes);
    } catch (cause) {
      throw new DecodeError("the frame is not valid msgpack", { cause });
    }
  } else if (encoding === "json") {
    if (typeof data !== "string") throw new DecodeError("a binary frame on a JSON link");
    try {
      event = JSON.parse(data);
    } catch (cause) {
      throw new DecodeError("the frame is not valid JSON", { cause });
    }
    if (isPlainMap(event) && typeof event.type === "string") {
      for (const key of BINARY_FIELDS[event.type] ?? []) {
        const value = event[key];
        if (typeof value !== "string") continue;
        try {
          event[key] = decodeBase64(value);
        } catch (cause) {
          throw new DecodeError(`'${key}' is not valid base64`, { cause });
        }
      }
    }
  } else {
    throw new TypeError(`unknown encoding ${String(encoding)}`);
  }
  if (!isPlainMap(event) || typeof event.type !== "string") {
    throw new DecodeError("the frame is not an event (a map with a string 'type')");
  }
  return event;
}
