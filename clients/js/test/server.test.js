// Sessions against the REAL server (python -m realtime serve, embedded SmolLM2, Whisper, Piper):
// text turns over msgpack and JSON, errors, heartbeats, and a spoken turn with partial transcripts,
// a final transcript and reply audio played through the playback core.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";

import { ConnectionError, PlaybackQueue, RealtimeClient, RealtimeError } from "../src/index.js";
import { startServer } from "./support/server.js";
import { synthesize, withSilence, words } from "./support/speech.js";
import { withTimeout } from "./support/util.js";

const RATE = 24_000;
const SHORT = { max_output_tokens: 32, temperature: 0 };

/** @type {import("./support/server.js").TestServer} */
let server;

before(async () => {
  // fast heartbeats, so that a test can see several pings and the timeout within seconds
  server = await startServer({ REALTIME_PING_INTERVAL: "0.5", REALTIME_PING_TIMEOUT: "2" });
});

after(async () => {
  await server?.stop();
});

/**
 * @param {Partial<import("../index.js").RealtimeClientOptions>} [options]
 */
function client(options = {}) {
  return new RealtimeClient({ url: server.wsUrl, token: server.token(), WebSocket, reconnect: false, ...options });
}

for (const encoding of /** @type {const} */ (["msgpack", "json"])) {
  describe(`a text turn over ${encoding}`, () => {
    test("session.created, then the reply streams as deltas and ends with response.done", async () => {
      const c = client({ encoding, session: SHORT });
      const session = await c.connect();
      try {
        assert.equal(session.encoding, encoding);
        assert.equal(session.protocol, "v1");
        assert.match(session.id, /^sess_[0-9a-f]{16}$/);
        assert.equal(c.session?.max_output_tokens, 32, "the constructor's settings were applied");
        const seen = /** @type {string[]} */ ([]);
        c.on("*", (e) => seen.push(e.type));
        const result = await c.ask("What is the capital of France? Answer in one short sentence.");
        assert.equal(result.status, "completed");
        assert.ok(result.text.length > 0, "no reply text");
        assert.match(result.text, /paris/i);
        assert.equal(result.done.output_text, result.text);
        assert.ok(Number.isInteger(result.done.metrics.total_ms));
        assert.deepEqual(seen.filter((t) => t !== "ping" && t !== "pong").slice(0, 2), ["conversation.item.created", "response.created"]);
        assert.equal(seen.filter((t) => t !== "ping" && t !== "pong").at(-1), "response.done");
        assert.ok(seen.includes("response.text.delta"));
        assert.ok(c.lastSeq > 3, "seq is tracked");
      } finally {
        await c.close();
      }
      assert.equal(c.state, "closed");
    });

    test("an invalid setting rejects updateSession with the server's error, and the session goes on", async () => {
      const c = client({ encoding });
      await c.connect();
      try {
        await assert.rejects(c.updateSession({ temperature: 5 }), (error) => {
          assert.ok(error instanceof RealtimeError);
          assert.equal(error.code, "invalid_event");
          assert.equal(error.param, "session.temperature");
          return true;
        });
        const session = await c.updateSession({ temperature: 0.5 });
        assert.equal(session.temperature, 0.5);
      } finally {
        await c.close();
      }
    });
  });
}

test("heartbeats: server pings are answered, so an idle session outlives ping_timeout; own pings give the RTT", async () => {
  const c = client();
  const closes = /** @type {any[]} */ ([]);
  c.on("close", (e) => closes.push(e));
  const session = await c.connect();
  try {
    if (!server.external) {
      assert.equal(session.ping_interval_ms, 500);
      assert.equal(session.ping_timeout_ms, 2000);
    }
    // longer than ping_timeout here (on an external server: at least one ping interval)
    const interval = session.ping_interval_ms ?? 500;
    await new Promise((resolve) => setTimeout(resolve, server.external ? interval + 1000 : 3000));
    assert.equal(c.state, "open");
    assert.deepEqual(closes, []);
    if (session.ping_interval_ms !== null) assert.ok(c.serverPings >= (server.external ? 1 : 4), `only ${c.serverPings} server pings`);
    const rtt = await c.ping();
    assert.ok(rtt >= 0 && rtt < 1000, `rtt ${rtt}`);
    const result = await c.ask("Say hi.", { max_output_tokens: 8 });
    assert.notEqual(result.done.metrics.rtt_ms, null, "the server measured the RTT of our pongs");
  } finally {
    await c.close();
  }
});

test("a bad token is refused before the session: connect() rejects with HTTP 401, no retry", async () => {
  const c = client({ token: "not-a-jwt" });
  await assert.rejects(c.connect(), (error) => {
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.httpStatus, 401);
    assert.equal(error.fatal, true);
    return true;
  });
  assert.equal(c.state, "closed");
});

test("the token also works as an Authorization header (Node)", async () => {
  const c = client({ tokenTransport: "header" });
  const session = await c.connect();
  assert.equal(session.user, "js-test");
  await c.close();
});

test("a spoken turn: partial transcripts, the final transcript, a reply with audio that plays gaplessly", { timeout: 120_000 }, async () => {
  const question = "Could you tell me what the capital city of France is?";
  const speech = withSilence(synthesize(question, RATE), RATE, 0.3, 2.0);
  const c = client({
    session: {
      ...SHORT,
      input_audio_format: { type: "pcm16", sample_rate: RATE },
      output_audio_format: { type: "pcm16", sample_rate: RATE },
    },
  });
  await c.connect();
  /** @type {any[]} */
  const events = [];
  const done = new Promise((resolve) => {
    c.on("*", (e) => {
      events.push(e);
      if (e.type === "response.done") resolve(e);
    });
  });
  try {
    // 20 ms frames on a real-time clock, as a microphone would send them
    const frame = (RATE * 20) / 1000;
    const started = Date.now();
    for (let i = 0; i * frame < speech.length; i++) {
      assert.ok(c.appendAudio(speech.subarray(i * frame, (i + 1) * frame)));
      const wait = started + (i + 1) * 20 - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    const final = /** @type {any} */ (await withTimeout(done, 60_000, "no response.done"));
    const types = events.map((e) => e.type);
    const partials = events.filter((e) => e.type === "conversation.item.input_audio_transcription.partial");
    assert.ok(partials.length >= 1, `no partial transcript: ${types.join(", ")}`);
    for (const p of partials) assert.equal(typeof p.stable, "string");
    assert.ok(types.includes("input_audio_buffer.speech_started"));
    const completed = events.find((e) => e.type === "conversation.item.input_audio_transcription.completed");
    assert.ok(completed, "no final transcript");
    const heard = words(completed.transcript);
    for (const word of ["capital", "france"]) assert.ok(heard.includes(word), `transcript ${JSON.stringify(completed.transcript)}`);
    const item = events.find((e) => e.type === "conversation.item.created");
    assert.equal(item.item.content[0].type, "input_audio");
    assert.ok(["completed", "incomplete"].includes(final.response.status), final.response.status); // incomplete: max_output_tokens
    assert.ok(final.response.output_text.length > 0);
    const audio = events.filter((e) => e.type === "response.audio.delta");
    assert.ok(audio.length > 0, "no reply audio");
    assert.deepEqual(audio.map((e) => e.seq_no), audio.map((_, i) => i + 1));
    assert.ok(audio.every((e) => e.audio instanceof Uint8Array && e.audio.length % 2 === 0));
    const bytes = audio.reduce((n, e) => n + e.audio.length, 0);
    const durationMs = (bytes / 2 / RATE) * 1000;
    assert.ok(durationMs > 300, `only ${durationMs} ms of audio`);
    assert.ok(Math.abs(final.response.audio.duration_ms - durationMs) <= audio.length + 1);
    assert.ok(events.some((e) => e.type === "response.audio_transcript.delta"));
    assert.notEqual(final.response.metrics.speech_end_to_first_audio_ms ?? null, null);

    // the playback core plays it all, at 48 kHz, without a gap once started
    const player = new PlaybackQueue({ outRate: 48_000, startMs: 80 });
    for (const e of audio) player.push(e.item_id, e.audio, RATE);
    player.end(final.response.item_id);
    const block = new Float32Array(128);
    let blocks = 0;
    while (player.state !== "idle" && blocks < 48_000) {
      player.render(block);
      blocks++;
    }
    assert.equal(player.underruns, 0);
    assert.ok(Math.abs(player.playedMs(final.response.item_id) - durationMs) < 2, `${player.playedMs(final.response.item_id)} vs ${durationMs}`);
  } finally {
    await c.close();
  }
});
