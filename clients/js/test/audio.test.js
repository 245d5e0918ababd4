// The audio cores that the worklets run: the resampler and the playback jitter buffer.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Emitter } from "../src/emitter.js";
import { AudioPlayer, PlaybackQueue, Resampler, floatToPcm16, pcm16ToFloat } from "../src/index.js";

/** @param {number} rate @param {number} hz @param {number} n @param {number} [amplitude] */
function tone(rate, hz, n, amplitude = 0.5) {
  return Float32Array.from({ length: n }, (_, i) => amplitude * Math.sin((2 * Math.PI * hz * i) / rate));
}

/** @param {Float32Array} a @param {number} [skip] */
function rms(a, skip = 256) {
  let sum = 0;
  for (let i = skip; i < a.length - skip; i++) sum += a[i] * a[i];
  return Math.sqrt(sum / (a.length - 2 * skip));
}

/**
 * Run a whole signal through a resampler in blocks of `block` samples, plus its tail.
 * @param {Resampler} r @param {Float32Array} x @param {number} block
 */
function run(r, x, block) {
  const parts = [];
  for (let i = 0; i < x.length; i += block) parts.push(r.process(x.subarray(i, i + block)));
  parts.push(r.flush());
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe("Resampler", () => {
  for (const [from, to] of [
    [48_000, 24_000],
    [44_100, 24_000],
    [48_000, 16_000],
    [24_000, 48_000],
    [22_050, 44_100],
    [16_000, 24_000],
  ]) {
    test(`${from} -> ${to}: a 1 kHz tone comes out at full level, aligned, with the right length`, () => {
      const x = tone(from, 1000, from); // one second
      const y = run(new Resampler(from, to), x, 128);
      assert.ok(Math.abs(y.length - to) <= 1, `${y.length} samples`);
      const ideal = tone(to, 1000, y.length);
      let err = 0;
      for (let i = 256; i < y.length - 256; i++) err += (y[i] - ideal[i]) ** 2;
      const errDb = 10 * Math.log10(err / (y.length - 512) / 0.125);
      assert.ok(errDb < -80, `error ${errDb.toFixed(1)} dB`);
    });
  }

  test("48 kHz -> 24 kHz: a tone above the new Nyquist frequency is filtered out (no aliasing)", () => {
    const y = run(new Resampler(48_000, 24_000), tone(48_000, 15_000, 48_000), 128);
    const level = 20 * Math.log10(rms(y) / (0.5 / Math.SQRT2));
    assert.ok(level < -60, `alias at ${level.toFixed(1)} dB`);
  });

  test("the output does not depend on how the input is cut into blocks", () => {
    const x = tone(48_000, 440, 9_000);
    const a = run(new Resampler(48_000, 24_000), x, 128);
    const b = run(new Resampler(48_000, 24_000), x, 37);
    const c = run(new Resampler(48_000, 24_000), x, 9_000);
    assert.equal(a.length, b.length);
    assert.equal(a.length, c.length);
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(a[i] - b[i]) < 1e-6 && Math.abs(a[i] - c[i]) < 1e-6, `sample ${i}`);
    }
  });

  test("equal rates pass samples through unchanged; bad rates are refused", () => {
    const x = tone(24_000, 300, 500);
    assert.deepEqual(new Resampler(24_000, 24_000).process(x), x);
    assert.throws(() => new Resampler(0, 24_000), RangeError);
    assert.throws(() => new Resampler(44_100.5, 24_000), RangeError);
  });

  test("PCM16 conversions clip and round trip", () => {
    const pcm = floatToPcm16(Float32Array.from([0, 0.5, -0.5, 1.5, -1.5, 1, -1]));
    assert.deepEqual([...pcm], [0, 16384, -16384, 32767, -32768, 32767, -32768]);
    const bytes = new Uint8Array(new Int16Array([16384, -32768]).buffer);
    assert.deepEqual([...pcm16ToFloat(bytes)], [0.5, -1]);
    assert.deepEqual([...pcm16ToFloat(new Uint8Array([0, 0, 0, 64]).subarray(1, 3))], [0]); // odd offset
  });
});

/**
 * PCM16 bytes of `ms` milliseconds of a constant value at `rate`.
 * @param {number} ms @param {number} rate @param {number} [value]
 */
function chunk(ms, rate, value = 1000) {
  return new Uint8Array(new Int16Array((rate * ms) / 1000).fill(value).buffer);
}

/** @param {PlaybackQueue} q @param {number} blocks */
function render(q, blocks) {
  const out = new Float32Array(128);
  const all = [];
  for (let i = 0; i < blocks; i++) {
    q.render(out);
    all.push(...out);
  }
  return all;
}

describe("PlaybackQueue", () => {
  test("waits for startMs of audio, then plays chunks back to back without a gap", () => {
    const q = new PlaybackQueue({ outRate: 24_000, startMs: 80 });
    q.push("item_1", chunk(40, 24_000), 24_000);
    assert.equal(q.state, "buffering");
    assert.ok(render(q, 4).every((s) => s === 0), "played before startMs was buffered");
    q.push("item_1", chunk(40, 24_000), 24_000);
    const played = render(q, 15); // 80 ms = 1920 samples = 15 blocks
    assert.ok(played.every((s) => Math.abs(s - 1000 / 32768) < 1e-6), "a gap or a wrong sample");
    assert.equal(q.playedMs("item_1"), 80);
    assert.deepEqual(q.takeNotices().map((n) => n.type), ["started"]);
  });

  test("running dry before the item's end is an underrun (silence, then buffering again)", () => {
    const q = new PlaybackQueue({ outRate: 24_000, startMs: 40 });
    q.push("item_1", chunk(40, 24_000), 24_000);
    render(q, 8); // 40 ms = 7.5 blocks: the 8th runs dry
    assert.equal(q.underruns, 1);
    assert.equal(q.state, "buffering");
    q.push("item_1", chunk(40, 24_000), 24_000);
    render(q, 1);
    assert.equal(q.state, "playing", "resumes once startMs is buffered again");
    assert.deepEqual(q.takeNotices().map((n) => n.type), ["started", "underrun"]);
  });

  test("end() plays out a short item without waiting for startMs and reports it finished", () => {
    const q = new PlaybackQueue({ outRate: 24_000, startMs: 200 });
    q.push("item_1", chunk(20, 24_000), 24_000);
    q.end("item_1");
    render(q, 5);
    assert.equal(q.playedMs("item_1"), 20);
    assert.equal(q.state, "idle");
    assert.equal(q.underruns, 0);
    const notices = q.takeNotices();
    assert.deepEqual(notices.map((n) => n.type), ["started", "finished"]);
    assert.equal(notices[1].playedMs, 20);
  });

  test("flush stops at once, says how much was played, and drops the item's late chunks", () => {
    const q = new PlaybackQueue({ outRate: 24_000, startMs: 40 });
    for (let i = 0; i < 10; i++) q.push("item_1", chunk(40, 24_000), 24_000);
    render(q, 10); // 1280 samples = 53.33 ms
    const { itemId, playedMs } = q.flush();
    assert.equal(itemId, "item_1");
    assert.ok(Math.abs(playedMs - 53.333) < 0.01, String(playedMs));
    assert.equal(q.bufferedMs, 0);
    assert.ok(render(q, 2).every((s) => s === 0));
    assert.equal(q.push("item_1", chunk(40, 24_000), 24_000), false, "a late chunk of a flushed item played");
    assert.equal(q.push("item_2", chunk(40, 24_000), 24_000), true);
  });

  test("24 kHz audio on a 48 kHz context: resampled, counted in the item's own milliseconds", () => {
    const q = new PlaybackQueue({ outRate: 48_000, startMs: 80 });
    for (let i = 0; i < 25; i++) q.push("item_1", chunk(40, 24_000), 24_000); // 1 s
    q.end("item_1");
    let blocks = 0;
    while (q.state !== "idle" && blocks < 1000) {
      render(q, 1);
      blocks++;
    }
    assert.ok(Math.abs(q.playedMs("item_1") - 1000) < 1, String(q.playedMs("item_1")));
    assert.equal(q.underruns, 0);
  });

  test("it holds at most maxBufferMs: later chunks are dropped and counted", () => {
    const q = new PlaybackQueue({ outRate: 24_000, maxBufferMs: 100 });
    const pushed = Array.from({ length: 5 }, () => q.push("item_1", chunk(40, 24_000), 24_000));
    assert.deepEqual(pushed, [true, true, true, false, false]);
    assert.equal(q.overflowDrops, 2);
  });

  test("two items in a row play gaplessly, each with its own position", () => {
    const q = new PlaybackQueue({ outRate: 24_000, startMs: 40 });
    q.push("item_1", chunk(40, 24_000, 1000), 24_000);
    q.end("item_1");
    q.push("item_3", chunk(40, 24_000, 2000), 24_000);
    q.end("item_3");
    const played = render(q, 16);
    const firstSilence = played.findIndex((s) => s === 0);
    assert.equal(firstSilence, 1920, "a gap between the items");
    assert.equal(q.playedMs("item_1"), 40);
    assert.equal(q.playedMs("item_3"), 40);
    assert.deepEqual(q.takeNotices().map((n) => `${n.type} ${n.itemId}`), ["started item_1", "finished item_1", "started item_3", "finished item_3"]);
  });
});

/**
 * An AudioWorkletNode stand-in whose "worklet" is the real PlaybackQueue, rendered on demand.
 * @param {number} outRate
 */
function fakePlayerNode(outRate) {
  const queue = new PlaybackQueue({ outRate, startMs: 40 });
  /** @type {any} */
  const node = {
    queue,
    port: {
      /** @type {((message: {data: any}) => void) | null} */
      onmessage: null,
      /** @param {any} data */
      postMessage(data) {
        // what player-worklet.js does, answered asynchronously like a real port
        if (data.type === "push") queue.push(data.itemId, new Int16Array(data.pcm), data.rate);
        else if (data.type === "end") queue.end(data.itemId);
        else if (data.type === "flush") {
          const result = queue.flush(data.itemId ?? queue.currentItemId);
          setTimeout(() => node.port.onmessage?.({ data: { type: "flushed", id: data.id, ...result } }), 1);
        }
      },
    },
    /** Render `ms` of audio and deliver the worklet's notices and a position report. @param {number} ms */
    play(ms) {
      const block = new Float32Array(128);
      for (let i = 0; i < Math.round((outRate * ms) / 1000 / 128); i++) queue.render(block);
      for (const notice of queue.takeNotices()) node.port.onmessage?.({ data: notice });
      const position = { type: "position", itemId: queue.currentItemId, playedMs: queue.playedMs(queue.currentItemId), bufferedMs: queue.bufferedMs, totalPlayedMs: queue.totalPlayedMs, underruns: queue.underruns, state: queue.state };
      node.port.onmessage?.({ data: position });
    },
    connect() {},
    disconnect() {},
  };
  return node;
}

/** A client stand-in: events in, truncates out. */
function fakeClient(session = {}) {
  const emitter = new Emitter();
  return {
    session: { output_audio_format: { type: "pcm16", sample_rate: 24_000 }, turn_detection: { type: "server_vad", interrupt_response: true }, ...session },
    /** @type {Array<[string, number]>} */
    truncates: [],
    /** @param {string} type @param {(e: any) => void} fn */
    on: (type, fn) => emitter.on(type, fn),
    /** @param {any} event */
    emit: (event) => emitter.emit(event.type, event, true),
    /** @param {string} itemId @param {number} ms */
    truncate(itemId, ms) {
      this.truncates.push([itemId, ms]);
      return true;
    },
  };
}

/** @param {string} itemId @param {number} seqNo */
function audioDelta(itemId, seqNo) {
  return { type: "response.audio.delta", response_id: "resp_2", item_id: itemId, seq_no: seqNo, offset_ms: (seqNo - 1) * 40, audio: chunk(40, 24_000) };
}

describe("AudioPlayer.attach (on a stand-in worklet)", () => {
  test("speech over the reply flushes it at once, truncates to what was heard, and drops its late chunks", async () => {
    const node = fakePlayerNode(48_000);
    const player = new AudioPlayer(/** @type {any} */ ({ outputLatency: 0.01 }), node);
    const client = fakeClient();
    player.attach(/** @type {any} */ (client));
    for (let i = 1; i <= 10; i++) client.emit(audioDelta("item_3", i));
    node.play(200);
    assert.equal(player.playing, true);
    assert.equal(player.position.itemId, "item_3");
    const interrupted = new Promise((resolve) => player.on("interrupted", resolve));
    client.emit({ type: "input_audio_buffer.speech_started", item_id: "item_4", audio_start_ms: 1000 });
    const result = /** @type {any} */ (await interrupted);
    assert.ok(Math.abs(result.playedMs - 200) < 3, String(result.playedMs));
    assert.equal(result.heardMs, Math.round(result.playedMs - 10), "minus the output latency");
    assert.deepEqual(client.truncates, [["item_3", result.heardMs]]);
    assert.equal(node.queue.bufferedMs, 0, "not flushed");
    assert.equal(player.playing, false);
    // the server's own end of the response, and chunks still in flight: no second truncate, no sound
    client.emit(audioDelta("item_3", 11));
    client.emit({ type: "response.done", response: { id: "resp_2", item_id: "item_3", status: "interrupted" } });
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(client.truncates.length, 1);
    assert.equal(node.queue.bufferedMs, 0);
  });

  test("response.done cancelled flushes and truncates; completed plays out; no barge-in when interrupt_response is false", async () => {
    const node = fakePlayerNode(24_000);
    const player = new AudioPlayer(/** @type {any} */ ({}), node);
    const client = fakeClient({ turn_detection: { type: "server_vad", interrupt_response: false } });
    player.attach(/** @type {any} */ (client));
    for (let i = 1; i <= 5; i++) client.emit(audioDelta("item_3", i));
    node.play(80);
    client.emit({ type: "input_audio_buffer.speech_started", item_id: "item_4", audio_start_ms: 0 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(client.truncates, [], "flushed although interrupt_response is false");
    client.emit({ type: "response.done", response: { id: "resp_2", item_id: "item_3", status: "completed" } });
    node.play(200);
    assert.equal(player.playing, false, "a completed item plays out and finishes");
    assert.equal(node.queue.playedMs("item_3"), 200);

    for (let i = 1; i <= 5; i++) client.emit(audioDelta("item_5", i));
    node.play(60);
    const interrupted = new Promise((resolve) => player.on("interrupted", resolve));
    client.emit({ type: "response.done", response: { id: "resp_4", item_id: "item_5", status: "cancelled" } });
    await interrupted;
    assert.deepEqual(client.truncates.map(([item]) => item), ["item_5"]);
    assert.ok(Math.abs(client.truncates[0][1] - 60) <= 6, String(client.truncates[0][1]));
  });
});
