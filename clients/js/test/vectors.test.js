// The shared wire vectors: every valid client and server event, both encodings, byte for byte.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { DecodeError, decodeEvent, encodeEvent } from "../src/codec.js";
import * as build from "../src/events.js";
import { fromHex, loadVectors, toHex, untag } from "./support/vectors.js";

const clientVectors = loadVectors("client_events.json");
const serverVectors = loadVectors("server_events.json");

/**
 * Deep equality that also checks key order (the wire keeps it).
 * @param {unknown} actual @param {unknown} expected
 */
function assertSameOrdered(actual, expected) {
  assert.deepStrictEqual(actual, expected);
  assert.equal(JSON.stringify(keysOf(actual)), JSON.stringify(keysOf(expected)));
}

/** @param {unknown} value @returns {unknown} */
function keysOf(value) {
  if (Array.isArray(value)) return value.map(keysOf);
  if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    return Object.entries(value).map(([k, v]) => [k, keysOf(v)]);
  }
  return null;
}

describe("client event vectors", () => {
  test("the vector files are not empty", () => {
    assert.ok(clientVectors.length >= 20 && serverVectors.length >= 20);
  });
  for (const vector of clientVectors) {
    test(`${vector.name}: encodes to the exact msgpack and JSON`, () => {
      const event = untag(vector.event);
      assert.equal(toHex(/** @type {Uint8Array} */ (encodeEvent(event, "msgpack"))), vector.msgpack_hex);
      assert.equal(encodeEvent(event, "json"), vector.json);
    });
    test(`${vector.name}: decodes from both encodings to the same event`, () => {
      const event = untag(vector.event);
      assertSameOrdered(decodeEvent(fromHex(vector.msgpack_hex), "msgpack"), event);
      assertSameOrdered(decodeEvent(vector.json, "json"), event);
    });
  }
});

describe("server event vectors", () => {
  for (const vector of serverVectors) {
    test(`${vector.name}: decodes from both encodings to the event`, () => {
      const event = untag(vector.event);
      const fromMsgpack = decodeEvent(fromHex(vector.msgpack_hex), "msgpack");
      assertSameOrdered(fromMsgpack, event);
      assertSameOrdered(decodeEvent(vector.json, "json"), event);
      assert.deepEqual(Object.keys(fromMsgpack).slice(0, 3), ["type", "event_id", "seq"]);
    });
    test(`${vector.name}: re-encodes to the same bytes`, () => {
      const event = untag(vector.event);
      assert.equal(toHex(/** @type {Uint8Array} */ (encodeEvent(event, "msgpack"))), vector.msgpack_hex);
      assert.equal(encodeEvent(event, "json"), vector.json);
    });
  }
});

describe("builders match the vectors", () => {
  const byName = Object.fromEntries(clientVectors.map((v) => [v.name, v]));
  /** @type {Array<[string, () => Record<string, unknown>]>} */
  const cases = [
    ["session.update model and temperature", () => build.sessionUpdate({ model: "qwen3:4b", temperature: 0.7 }, "c1")],
    ["session.update resets with nulls", () => build.sessionUpdate({ instructions: null, max_output_tokens: null, reasoning: null })],
    ["conversation.item.create user text", () => build.conversationItemCreate("user", "Hello!", "c2")],
    ["conversation.item.create unicode", () => build.conversationItemCreate("user", "Grüße aus 東京 🎉")],
    ["conversation.item.create two parts", () => build.conversationItemCreate("user", ["First, ", "second."])],
    ["conversation.item.create assistant", () => build.conversationItemCreate("assistant", "Hi, I'm here.")],
    ["conversation.item.create system", () => build.conversationItemCreate("system", "Speak French.")],
    ["response.create", () => build.responseCreate()],
    ["response.create overrides", () => build.responseCreate({ reasoning: false, max_output_tokens: 64 }, "c3")],
    ["response.cancel", () => build.responseCancel()],
    ["response.cancel by id", () => build.responseCancel("resp_7", "c4")],
    ["input_audio_buffer.append", () => build.inputAudioAppend(untag(byName["input_audio_buffer.append"].event).audio, "a1")],
    ["input_audio_buffer.commit", () => build.inputAudioCommit("a2")],
    ["input_audio_buffer.clear", () => build.inputAudioClear()],
    ["session.update manual turns", () => build.sessionUpdate({ turn_detection: null })],
    ["conversation.item.truncate", () => build.conversationItemTruncate("item_3", 1500, "t1")],
    ["ping", () => build.ping(1764000000123, "c5")],
    ["pong", () => build.pong(4567890)],
  ];
  for (const [name, make] of cases) {
    test(`${name}`, () => {
      const vector = byName[name];
      assert.ok(vector, `no vector named ${name}`);
      const event = make();
      assert.equal(toHex(/** @type {Uint8Array} */ (encodeEvent(event, "msgpack"))), vector.msgpack_hex);
      assert.equal(encodeEvent(event, "json"), vector.json);
    });
  }
  test("an Int16Array is sent as its little-endian bytes", () => {
    const event = build.inputAudioAppend(new Int16Array([1, -2, 32767, -32768]));
    assert.equal(encodeEvent(event, "json"), '{"type":"input_audio_buffer.append","audio":"AQD+//9/AIA="}');
  });
});

describe("decode errors", () => {
  test("frames of the wrong kind or not a map are refused with DecodeError", () => {
    assert.throws(() => decodeEvent("{}", "msgpack"), DecodeError);
    assert.throws(() => decodeEvent(new Uint8Array([0x80]), "json"), DecodeError);
    assert.throws(() => decodeEvent(new Uint8Array([0xc1]), "msgpack"), DecodeError);
    assert.throws(() => decodeEvent(new Uint8Array([0x93, 1, 2, 3]), "msgpack"), DecodeError);
    assert.throws(() => decodeEvent("[1]", "json"), DecodeError);
    assert.throws(() => decodeEvent('{"type":1}', "json"), DecodeError);
    assert.throws(() => decodeEvent("{", "json"), DecodeError);
    assert.throws(() => decodeEvent('{"type":"response.audio.delta","audio":"###"}', "json"), DecodeError);
  });
  test("unknown event types and fields decode as they are (clients ignore what they don't know)", () => {
    assert.deepEqual(decodeEvent('{"type":"future.event","x":1}', "json"), { type: "future.event", x: 1 });
  });
});
