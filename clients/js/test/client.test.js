// RealtimeClient behaviours against a scriptable fake server: pongs, dead-link detection, reconnect
// with backoff, fatal closes, refusals, token transports, seq gaps, iteration, request errors, and
// resume cases the real server does not produce on cue (an overlapping replay, the grace running out).
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import WebSocket from "ws";

import { encodeEvent } from "../src/codec.js";
import { ConnectionError, RealtimeClient, RealtimeError } from "../src/index.js";
import { startFakeServer } from "./support/fake-server.js";
import { sleep, withTimeout } from "./support/util.js";
import { loadVectors } from "./support/vectors.js";

/** @type {Array<() => Promise<void>>} */
const cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * @param {Parameters<typeof startFakeServer>[0]} [options]
 */
async function fake(options) {
  const server = await startFakeServer(options);
  cleanups.push(() => server.close());
  return server;
}

/**
 * @param {string} url
 * @param {Partial<import("../index.js").RealtimeClientOptions>} [options]
 */
function client(url, options = {}) {
  const c = new RealtimeClient({ url, token: "tok", WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 100 }, ...options });
  cleanups.push(() => c.close());
  return c;
}

/**
 * The next lifecycle event of `type`.
 * @param {RealtimeClient} c @param {string} type @param {number} [ms]
 */
function next(c, type, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    const off = c.on(type, (e) => {
      off();
      resolve(e);
    });
  }), ms, `no ${type}`);
}

describe("heartbeats", () => {
  test("a server ping is answered with a pong echoing its ts, in the vector's exact bytes", async () => {
    const server = await fake({ onConnect: (link) => link.send({ type: "ping", ts: 4567890 }) });
    const c = client(server.url);
    await c.connect();
    const link = await server.link(0);
    const pong = await withTimeout(link.next("pong"), 2000, "no pong");
    delete pong._taken;
    assert.deepEqual(pong, { type: "pong", ts: 4567890 });
    const vector = loadVectors("client_events.json").find((v) => v.name === "pong");
    assert.equal(Buffer.from(/** @type {Uint8Array} */ (encodeEvent(pong, "msgpack"))).toString("hex"), vector?.msgpack_hex);
    assert.equal(c.serverPings, 1);
  });

  test("the client pings every ping interval and measures the round trip", async () => {
    const server = await fake({
      session: { ping_interval_ms: 100, ping_timeout_ms: 1000 },
      onConnect: (link) => {
        link.ws.on("message", () => {
          const ping = link.received.at(-1);
          if (ping.type === "ping") link.send({ type: "pong", ts: ping.ts, reply_to: ping.event_id });
        });
      },
    });
    const c = client(server.url);
    await c.connect();
    await sleep(350);
    const link = await server.link(0);
    const pings = link.received.filter((e) => e.type === "ping");
    assert.ok(pings.length >= 2, `${pings.length} pings`);
    assert.ok(pings.every((p) => Number.isInteger(p.ts) && typeof p.event_id === "string"));
    assert.notEqual(c.rttMs, null);
  });

  test("no traffic for ping_timeout_ms: the link is given up; a server without resume gives a NEW session", async () => {
    // the fake never answers and never pings: a dead link; its session has no resume_secret
    const server = await fake({ session: { ping_interval_ms: 100, ping_timeout_ms: 400 } });
    const c = client(server.url, { session: { temperature: 0.5 } });
    const first = await c.connect();
    const t0 = Date.now();
    const closed = await next(c, "close");
    assert.equal(closed.code, 4000);
    assert.equal(closed.willReconnect, true);
    assert.equal(closed.willResume, false);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 300 && elapsed < 1500, `dead after ${elapsed} ms`);
    const lost = next(c, "session_lost");
    const opened = await next(c, "open");
    assert.equal((await lost).reason, "not_resumable");
    assert.equal(opened.reconnected, true);
    assert.notEqual(opened.session.id, first.id, "a reconnect starts a new session");
    const second = await server.link(1);
    const update = second.received.find((e) => e.type === "session.update");
    assert.deepEqual(update.session, { temperature: 0.5 }, "settings are applied again on the new session");
    assert.equal(c.state, "open");
  });
});

describe("reconnect", () => {
  test("after an unexpected close (1011) it reconnects with backoff; lastSeq restarts with the new session", async () => {
    const server = await fake({
      onConnect: (link, index) => {
        if (index === 0) setTimeout(() => link.ws.close(1011, "internal error"), 50);
      },
    });
    const c = client(server.url);
    const states = /** @type {string[]} */ ([]);
    c.on("state", (e) => states.push(e.state));
    await c.connect();
    assert.equal(c.lastSeq, 1);
    const reconnecting = await next(c, "reconnecting");
    assert.equal(reconnecting.attempt, 1);
    assert.ok(reconnecting.delayMs >= 15 && reconnecting.delayMs <= 25, String(reconnecting.delayMs));
    await next(c, "open");
    assert.deepEqual(states, ["connecting", "open", "reconnecting", "open"]);
    assert.equal(c.sessionId, "sess_0000000000000002");
    assert.equal(c.lastSeq, 1);
  });

  test("backoff grows while the server stays away, and it gives up after maxAttempts", async () => {
    const server = await fake({ onConnect: (link) => setTimeout(() => link.ws.close(1011), 20) });
    const c = client(server.url, { reconnect: { initialDelayMs: 10, factor: 2, jitter: 0, maxAttempts: 3 } });
    const delays = /** @type {number[]} */ ([]);
    c.on("reconnecting", (e) => delays.push(e.delayMs));
    await c.connect();
    // every reconnect opens and is closed again: attempts reset on each successful session
    await sleep(300);
    assert.ok(delays.length >= 3);
    assert.deepEqual(delays.slice(0, 2), [10, 10]);
    await server.close();
    const gaveUp = await withTimeout(new Promise((resolve) => c.on("close", (e) => !e.willReconnect && resolve(e))), 3000, "never gave up");
    assert.equal(/** @type {any} */ (gaveUp).reason, "gave up reconnecting");
    assert.deepEqual(delays.slice(-3), [10, 20, 40]);
    assert.equal(c.state, "closed");
  });

  test("close 4003 (too many invalid messages) is final: no reconnect, iterators end", async () => {
    const server = await fake({ onConnect: (link) => setTimeout(() => link.ws.close(4003, "too many invalid messages"), 30) });
    const c = client(server.url);
    await c.connect();
    const seen = [];
    for await (const event of c) seen.push(event.type);
    assert.equal(c.state, "closed");
    assert.equal(server.links.length, 1);
  });

  test("close() by the client is final and rejects what waits", async () => {
    const server = await fake({ answerSessionUpdate: false });
    const c = client(server.url);
    await c.connect();
    const pending = c.updateSession({ temperature: 1 });
    await c.close();
    await assert.rejects(pending, ConnectionError);
    assert.equal(c.state, "closed");
    assert.equal(c.send({ type: "input_audio_buffer.clear" }), false);
    await sleep(100);
    assert.equal(server.links.length, 1);
  });
});

describe("connecting", () => {
  test("the token goes as access_token in the query by default; the subprotocol names the encoding", async () => {
    const server = await fake();
    const c = client(server.url, { token: "a.b.c", encoding: "json" });
    const session = await c.connect();
    const link = await server.link(0);
    assert.equal(new URL(link.request.url ?? "", "http://x").searchParams.get("access_token"), "a.b.c");
    assert.equal(link.request.headers["sec-websocket-protocol"], "realtime.v1.json");
    assert.equal(session.encoding, "json");
  });

  test("a token function is called on every connect; header and cookie transports (Node)", async () => {
    const server = await fake();
    let calls = 0;
    const c1 = client(server.url, { token: () => `t${++calls}`, tokenTransport: "header" });
    await c1.connect();
    assert.equal((await server.link(0)).request.headers.authorization, "Bearer t1");
    const c2 = client(server.url, { token: "cookie-token", tokenTransport: "cookie" });
    await c2.connect();
    assert.equal((await server.link(1)).request.headers.cookie, "access_token=cookie-token");
    assert.equal(new URL((await server.link(1)).request.url ?? "", "http://x").search, "");
  });

  test("an HTTP refusal rejects connect() with its status; 403 is fatal", async () => {
    const server = await fake({ refuse: () => 403 });
    const c = client(server.url);
    await assert.rejects(c.connect(), (error) => {
      assert.ok(error instanceof ConnectionError);
      assert.equal(error.httpStatus, 403);
      assert.equal(error.fatal, true);
      return true;
    });
    assert.equal(c.state, "closed");
  });

  test("a first connection that drops while its settings are applied rejects connect() and is not retried", async () => {
    const server = await fake({
      answerSessionUpdate: false,
      onConnect: async (link) => {
        await link.next("session.update");
        link.ws.close(1011);
      },
    });
    const c = client(server.url, { session: { temperature: 0 } });
    await assert.rejects(c.connect(), ConnectionError);
    await sleep(200);
    assert.equal(c.state, "closed");
    assert.equal(server.links.length, 1);
  });

  test("too_many_sessions as the first event rejects connect() with that error", async () => {
    const { WebSocketServer } = await import("ws");
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (p) => [...p][0] });
    await new Promise((resolve) => wss.once("listening", resolve));
    cleanups.push(() => new Promise((resolve) => wss.close(() => resolve(undefined))));
    wss.on("connection", (ws) => {
      ws.send(encodeEvent({ type: "error", event_id: "evt_1", seq: 1, error: { code: "too_many_sessions", message: "Too many." } }, "msgpack"));
      ws.close(1013, "too_many_sessions");
    });
    const port = /** @type {import("node:net").AddressInfo} */ (wss.address()).port;
    const c = client(`ws://127.0.0.1:${port}/ws`);
    await assert.rejects(c.connect(), (error) => error instanceof RealtimeError && error.code === "too_many_sessions");
  });
});

describe("events", () => {
  test("listeners, '*', async iteration, unknown types, seq gaps and undecodable frames", async () => {
    const server = await fake({
      onConnect: async (link) => {
        await sleep(30);
        link.send({ type: "future.event", novel: true });
        link.sendRaw(new Uint8Array([0xc1])); // not msgpack
        link.send({ type: "response.text.delta", response_id: "resp_2", item_id: "item_3", delta: "Hi" });
        link.seq += 2; // two events lost
        link.send({ type: "response.text.delta", response_id: "resp_2", item_id: "item_3", delta: "!" });
      },
    });
    const c = client(server.url);
    const iterator = c.events({ types: ["response.text.delta", "future.event"] });
    const gaps = /** @type {any[]} */ ([]);
    const decodeErrors = /** @type {any[]} */ ([]);
    const all = /** @type {string[]} */ ([]);
    c.on("seq_gap", (e) => gaps.push(e));
    c.on("decode_error", (e) => decodeErrors.push(e));
    c.on("*", (e) => all.push(e.type));
    const deltas = /** @type {string[]} */ ([]);
    c.on("response.text.delta", (e) => deltas.push(e.delta));
    await c.connect();
    const got = [];
    for await (const event of iterator) {
      got.push(event.type);
      if (got.length === 3) break;
    }
    assert.deepEqual(got, ["future.event", "response.text.delta", "response.text.delta"]);
    assert.deepEqual(all, ["session.created", "future.event", "response.text.delta", "response.text.delta"]);
    assert.deepEqual(deltas, ["Hi", "!"]);
    assert.deepEqual(gaps, [{ expected: 4, got: 6 }]);
    assert.equal(decodeErrors.length, 1);
    assert.equal(c.lastSeq, 6);
  });

  test("ask() rejects with the server's error for its item, and a listener that throws stops nothing", async () => {
    const server = await fake({
      onConnect: async (link) => {
        const item = await link.next("conversation.item.create");
        link.send({ type: "error", error: { code: "message_too_large", message: "too long", param: "item.content[0].text", event_id: item.event_id, event_type: item.type } });
      },
    });
    const c = client(server.url);
    const originalError = console.error;
    console.error = () => {};
    c.on("error", () => {
      throw new Error("a broken listener");
    });
    try {
      await c.connect();
      await assert.rejects(c.ask("x".repeat(10)), (error) => error instanceof RealtimeError && error.code === "message_too_large" && error.param === "item.content[0].text");
    } finally {
      console.error = originalError;
    }
    assert.equal(c.state, "open");
  });

  test("ask() collects one response: text, reasoning, audio, status", async () => {
    const server = await fake({
      onConnect: async (link) => {
        await link.next("response.create");
        const r = { response_id: "resp_2", item_id: "item_3" };
        link.send({ type: "conversation.item.created", item: { id: "item_1", type: "message", role: "user", content: [] } });
        link.send({ type: "response.created", response: { id: "resp_2", status: "in_progress", item_id: "item_3", model: "m" } });
        link.send({ type: "response.reasoning.delta", ...r, delta: "hmm" });
        link.send({ type: "response.text.delta", ...r, delta: "Hello" });
        link.send({ type: "response.audio.delta", ...r, seq_no: 1, offset_ms: 0, audio: new Uint8Array([1, 0, 2, 0]) });
        link.send({ type: "response.text.delta", ...r, delta: " there" });
        link.send({ type: "response.done", response: { id: "resp_2", item_id: "item_3", status: "completed", output_text: "Hello there" } });
      },
    });
    const c = client(server.url, { encoding: "json" });
    await c.connect();
    const result = await c.ask("hi", { max_output_tokens: 5 });
    assert.equal(result.text, "Hello there");
    assert.equal(result.reasoning, "hmm");
    assert.equal(result.status, "completed");
    assert.deepEqual([...result.audio], [1, 0, 2, 0]);
    const link = await server.link(0);
    const create = link.received.find((e) => e.type === "response.create");
    assert.deepEqual(create.response, { max_output_tokens: 5 });
  });
});

describe("content parts", () => {
  test("images and audio go as bytes: msgpack bin, JSON base64; strings and {text} as text parts", async () => {
    for (const encoding of /** @type {const} */ (["msgpack", "json"])) {
      const server = await fake({
        onConnect: async (link) => {
          const create = await link.next("conversation.item.create");
          const item = { id: "item_1", type: "message", role: "user", content: [] };
          link.send({ type: "conversation.item.created", event_id: create.event_id, item });
        },
      });
      const c = client(server.url, { encoding });
      await c.connect();
      const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
      await c.createItem("user", ["What is this?", { image: png }, { audio: new Int16Array([1, -1]) }, { text: "!" }]);
      const create = (await server.link(0)).received.find((e) => e.type === "conversation.item.create");
      const [text, image, audio, bang] = create.item.content;
      assert.deepEqual(text, { type: "input_text", text: "What is this?" });
      assert.deepEqual(bang, { type: "input_text", text: "!" });
      assert.equal(image.type, "input_image");
      assert.equal(audio.type, "input_audio");
      if (encoding === "msgpack") {
        assert.deepEqual([...image.image], [...png]);
        assert.deepEqual([...audio.audio], [1, 0, 255, 255]);
      } else {
        assert.equal(image.image, Buffer.from(png).toString("base64"));
        assert.equal(audio.audio, Buffer.from([1, 0, 255, 255]).toString("base64"));
      }
      await c.close();
    }
  });

  test("a document goes as bytes with its name and type: msgpack bin, JSON base64", async () => {
    for (const encoding of /** @type {const} */ (["msgpack", "json"])) {
      const server = await fake({
        onConnect: async (link) => {
          const create = await link.next("conversation.item.create");
          const item = { id: "item_1", type: "message", role: "user", content: [] };
          link.send({ type: "conversation.item.created", event_id: create.event_id, item });
        },
      });
      const c = client(server.url, { encoding });
      await c.connect();
      const doc = new TextEncoder().encode("The tyre pressure is 2.4 bar.");
      await c.createItem("user", ["What does it say?", { file: doc, filename: "car.txt", mimeType: "text/plain" }]);
      const create = (await server.link(0)).received.find((e) => e.type === "conversation.item.create");
      const file = create.item.content[1];
      assert.equal(file.type, "input_file");
      assert.equal(file.filename, "car.txt");
      assert.equal(file.mime_type, "text/plain");
      if (encoding === "msgpack") assert.deepEqual([...file.file], [...doc]);
      else assert.equal(file.file, Buffer.from(doc).toString("base64"));
      await c.close();
    }
  });

  test("a part that is not text, image or audio is refused before anything is sent", async () => {
    const server = await fake();
    const c = client(server.url);
    await c.connect();
    await assert.rejects(() => c.createItem("user", [/** @type {any} */ ({ video: new Uint8Array(1) })]), TypeError);
  });
});

describe("resume", () => {
  const RESUMABLE = { resume_secret: "s3cret", resume_grace_ms: 5000 };
  const R = { response_id: "resp_2", item_id: "item_3" };

  /** @param {any} link @returns {URLSearchParams} */
  const query = (link) => new URL(link.request.url ?? "", "http://x").searchParams;

  test("a lost link (1006) is resumed: same session, overlapping replay dropped, settings not re-sent, ask() goes on", async () => {
    /** @type {any} */
    let asked = null;
    const server = await fake({
      session: RESUMABLE,
      onConnect: async (link) => {
        await link.next("response.create");
        link.send({ type: "conversation.item.created", item: { id: "item_1", type: "message", role: "user", content: [] } });
        link.send({ type: "response.created", response: { id: "resp_2", status: "in_progress", item_id: "item_3", model: "m" } });
        link.send({ type: "response.text.delta", ...R, delta: "Hel" });
        link.send({ type: "response.text.delta", ...R, delta: "lo" });
        await sleep(30);
        link.ws.terminate(); // no close frame: the client sees 1006
      },
      onResume: (link, resume) => {
        asked = resume;
        // replay from two events too early (the client has seen seq 5 and 6), then the missed one
        link.seq = resume.lastSeq - 2;
        link.send({ type: "response.text.delta", ...R, delta: "Hel" });
        link.send({ type: "response.text.delta", ...R, delta: "lo" });
        link.send({ type: "response.text.delta", ...R, delta: " world" });
        link.send({ type: "session.resumed", session: { id: resume.sessionId, ...RESUMABLE, ping_interval_ms: 10_000, ping_timeout_ms: 30_000 }, replayed_after: resume.lastSeq });
        link.send({ type: "response.done", response: { id: "resp_2", item_id: "item_3", status: "completed", output_text: "Hello world" } });
      },
    });
    const c = client(server.url, { session: { temperature: 0.5 } });
    const life = /** @type {string[]} */ ([]);
    for (const type of ["close", "reconnecting", "resumed", "open", "session_lost"]) c.on(type, () => life.push(type));
    const closed = next(c, "close");
    const reconnecting = next(c, "reconnecting");
    const resumed = next(c, "resumed");
    const first = await c.connect();
    assert.equal(c.resumeSecret, "s3cret");
    const deltas = /** @type {string[]} */ ([]);
    c.on("response.text.delta", (e) => deltas.push(e.delta));
    const result = await withTimeout(c.ask("hi"), 5000, "ask() did not finish");
    assert.equal(result.text, "Hello world");
    assert.deepEqual(deltas, ["Hel", "lo", " world"]);
    assert.deepEqual(await closed, { code: 1006, reason: "", willReconnect: true, willResume: true, byClient: false });
    assert.equal((await reconnecting).resume, true);
    assert.deepEqual(await resumed, { session: c.session, replayedAfter: 6, replayed: 1 });
    assert.deepEqual(asked, { sessionId: first.id, secret: "s3cret", lastSeq: 6 });
    assert.equal(c.duplicatesDropped, 2);
    assert.equal(c.sessionId, first.id);
    assert.equal(c.lastSeq, 9);
    assert.equal(c.state, "open");
    assert.deepEqual(life, ["open", "close", "reconnecting", "resumed", "open"]);
    const second = await server.link(1);
    assert.equal(query(second).get("access_token"), "tok");
    assert.equal(query(second).get("resume"), first.id);
    assert.equal(second.received.filter((e) => e.type === "session.update").length, 0, "a resumed session keeps its settings");
  });

  test("a refused resume (resume_failed, then a new session): session_lost, settings applied again, ask() rejects", async () => {
    const server = await fake({
      session: RESUMABLE,
      onConnect: async (link) => {
        await link.next("response.create");
        link.send({ type: "response.created", response: { id: "resp_2", status: "in_progress", item_id: "item_3", model: "m" } });
        link.send({ type: "response.text.delta", ...R, delta: "Hel" });
        link.ws.terminate();
      },
      onResume: (link) => {
        link.send({ type: "error", error: { code: "resume_failed", message: "This is a new session." } });
        link.send({ type: "session.created", session: { ...link.session(), resume_secret: "other" } });
      },
    });
    const c = client(server.url, { session: { temperature: 0.5 } });
    const errors = /** @type {string[]} */ ([]);
    c.on("error", (e) => errors.push(e.error.code));
    const lost = next(c, "session_lost");
    const first = await c.connect();
    const opened = next(c, "open");
    await assert.rejects(c.ask("hi"), (error) => error instanceof ConnectionError && /session was lost/.test(error.message));
    const info = await lost;
    assert.equal(info.reason, "resume_failed");
    assert.equal(info.previousSessionId, first.id);
    assert.equal(info.session.id, "sess_0000000000000002");
    assert.deepEqual(errors, ["resume_failed"]);
    const open = await opened;
    assert.equal(open.reconnected, true);
    assert.equal(open.resumed, false);
    assert.equal(c.sessionId, "sess_0000000000000002");
    assert.equal(c.lastSeq, 3, "error 1, session.created 2, session.updated 3: a new seq space");
    const update = (await server.link(1)).received.find((e) => e.type === "session.update");
    assert.deepEqual(update.session, { temperature: 0.5 });
  });

  test("the client's own ping timeout counts as a lost link: close 4000, then a resume", async () => {
    const server = await fake({
      session: { ...RESUMABLE, ping_interval_ms: 100, ping_timeout_ms: 400 },
      onResume: (link, resume) => {
        link.seq = resume.lastSeq;
        link.send({ type: "session.resumed", session: { id: resume.sessionId, ...RESUMABLE }, replayed_after: resume.lastSeq });
      },
    });
    const c = client(server.url);
    const first = await c.connect();
    const closed = await next(c, "close");
    assert.equal(closed.code, 4000);
    assert.equal(closed.willResume, true);
    const resumed = await next(c, "resumed");
    assert.equal(resumed.replayedAfter, 1);
    assert.equal(query(await server.link(1)).get("last_seq"), "1");
    assert.equal(c.sessionId, first.id);
  });

  test("closes that end the session on purpose do not reconnect: 1000, 4002", async () => {
    for (const code of [1000, 4002]) {
      const server = await fake({ session: RESUMABLE, onConnect: (link) => setTimeout(() => link.ws.close(code, "bye"), 20) });
      const c = client(server.url);
      let reconnects = 0;
      c.on("reconnecting", () => reconnects++);
      await c.connect();
      const closed = await next(c, "close");
      assert.deepEqual(closed, { code, reason: "bye", willReconnect: false, willResume: false, byClient: false });
      await sleep(100);
      assert.equal(c.state, "closed", String(code));
      assert.equal(reconnects, 0, String(code));
      assert.equal(server.links.length, 1, String(code));
    }
  });

  test("a resume is tried only within the grace period: past it, a new session (session_lost 'expired')", async () => {
    let blocked = true;
    const server = await fake({
      session: { resume_secret: "s3cret", resume_grace_ms: 150 },
      refuse: () => (blocked ? 503 : null),
      onConnect: (link, index) => {
        if (index === 0) setTimeout(() => link.ws.terminate(), 20);
      },
    });
    blocked = false;
    const c = client(server.url, { reconnect: { initialDelayMs: 40, maxDelayMs: 40, jitter: 0 } });
    await c.connect();
    blocked = true;
    const plans = /** @type {Array<{at: number, resume: boolean}>} */ ([]);
    c.on("reconnecting", (e) => plans.push({ at: Date.now() + e.delayMs, resume: e.resume }));
    const lostAt = (await next(c, "close")).willResume ? Date.now() : 0;
    assert.ok(lostAt > 0, "the link was resumable");
    await sleep(300);
    blocked = false;
    const lost = await next(c, "session_lost", 3000);
    assert.equal(lost.reason, "expired");
    const resumes = plans.filter((p) => p.resume);
    assert.ok(resumes.length >= 2, JSON.stringify(plans));
    for (const plan of resumes) assert.ok(plan.at <= lostAt + 150 + 5, `a resume attempt planned ${plan.at - lostAt} ms after the loss`);
    assert.equal(plans.at(-1)?.resume, false);
    assert.equal(query(server.links.at(-1)).get("resume"), null, "no resume asked past the grace period");
  });

  test("a ticket function gives a fresh single-use ticket for every connection, in ?ticket=", async () => {
    const server = await fake({ onConnect: (link, index) => index === 0 && setTimeout(() => link.ws.close(1011), 20) });
    let n = 0;
    const c = client(server.url, { token: undefined, ticket: async () => `ticket-${++n}` });
    await c.connect();
    await next(c, "open");
    assert.deepEqual(server.links.map((link) => query(link).get("ticket")), ["ticket-1", "ticket-2"]);
    assert.equal(query(server.links[1]).get("access_token"), null);
    assert.throws(() => new RealtimeClient({ url: server.url, WebSocket, ticket: /** @type {any} */ ("t") }), TypeError);
    assert.throws(() => new RealtimeClient({ url: server.url, WebSocket, token: "t", ticket: async () => "t" }), TypeError);
  });

  test("audio while reconnecting is dropped and counted, never queued for later", async () => {
    const server = await fake({ onConnect: (link, index) => index === 0 && setTimeout(() => link.ws.close(1011), 20) });
    const c = client(server.url, { reconnect: { initialDelayMs: 150, jitter: 0 } });
    await c.connect();
    await next(c, "reconnecting");
    assert.equal(c.appendAudio(new Int16Array([1, 2])), false);
    assert.equal(c.appendAudio(new Uint8Array(6)), false);
    assert.equal(c.droppedAudioFrames, 2);
    assert.equal(c.droppedAudioBytes, 10);
    const lost = await next(c, "session_lost");
    assert.equal(lost.reason, "not_resumable", "1011 ended the session on the server");
    assert.equal(c.appendAudio(new Int16Array([3])), true);
    const link = await server.link(1);
    const append = await withTimeout(link.next("input_audio_buffer.append"), 2000, "no append");
    assert.deepEqual([...append.audio], [3, 0]);
    assert.equal(link.received.filter((e) => e.type === "input_audio_buffer.append").length, 1);
  });
});
