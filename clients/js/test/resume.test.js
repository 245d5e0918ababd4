// Session resume against the REAL server (python -m realtime serve), with the scripted LLM of the
// Python tests ("story": a long reply streamed word by word at about 40 words/s) so that a link can be
// cut in the middle of a reply: the client comes back to the same session and the app sees every
// event exactly once, in order. Then a server that restarted (it cannot know the session): the
// server says resume_failed and the client reports the new session. And the client's close(), which
// must not reconnect; a server shutting down (1001) is reconnected to, as a new session.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import WebSocket from "ws";

import { RealtimeClient } from "../src/index.js";
import { startFakeOllama } from "./support/fake-ollama.js";
import { freePort, startServer } from "./support/server.js";
import { sleep, withTimeout } from "./support/util.js";

const EXTERNAL = process.env.REALTIME_TEST_URL ? "needs its own server and scripted LLM (REALTIME_TEST_URL is set)" : false;

/** @type {Awaited<ReturnType<typeof startFakeOllama>>} */
let ollama;
/** @type {import("./support/server.js").TestServer} */
let server;

/** The real server, answering with the scripted "story" model, no voice. @param {Record<string, string>} [env] */
function storyServer(env = {}) {
  return startServer({
    REALTIME_EMBEDDED_LLM: "never",
    REALTIME_OLLAMA_URL: ollama.url,
    REALTIME_LLM_MODEL: "story",
    REALTIME_VOICE: "off",
    REALTIME_TTS_ENGINE: "off",
    ...env,
  });
}

before(async () => {
  if (EXTERNAL) return;
  ollama = await startFakeOllama();
  server = await storyServer();
});

after(async () => {
  await server?.stop();
  await ollama?.stop();
});

/** The `ws` WebSocket, remembering every socket it made, so that a test can cut one. */
class TrackedWebSocket extends WebSocket {
  /** @type {TrackedWebSocket[]} */
  static made = [];
  /** @param {ConstructorParameters<typeof WebSocket>} args */
  constructor(...args) {
    super(...args);
    TrackedWebSocket.made.push(this);
  }
}

/**
 * A client that records every server event and lifecycle event it emits.
 * @param {string} url @param {string} token
 * @param {Partial<import("../index.js").RealtimeClientOptions>} [options]
 */
function recordingClient(url, token, options = {}) {
  const c = new RealtimeClient({ url, token, WebSocket: TrackedWebSocket, reconnect: { initialDelayMs: 300, maxDelayMs: 500 }, ...options });
  /** @type {any[]} */
  const events = [];
  /** @type {Array<[string, any]>} */
  const lifecycle = [];
  c.on("*", (e) => events.push(e));
  for (const type of ["close", "reconnecting", "resumed", "session_lost", "open"]) c.on(type, (e) => lifecycle.push([type, e]));
  return { c, events, lifecycle };
}

/** @param {() => boolean} condition @param {number} ms @param {string} what */
async function until(condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} (after ${ms} ms)`);
    await sleep(10);
  }
}

/** @param {RealtimeClient} c @param {string} type @param {number} ms */
function next(c, type, ms) {
  return withTimeout(new Promise((resolve) => {
    const off = c.on(type, (e) => {
      off();
      resolve(e);
    });
  }), ms, `no ${type}`);
}

/** @param {string} httpUrl */
async function health(httpUrl) {
  return /** @type {{sessions: number, detached_sessions: number}} */ (await (await fetch(`${httpUrl}/healthz`)).json());
}

test("a link cut mid-reply (no close frame) is resumed: every text delta once, in order, the whole reply, one response.done", { skip: EXTERNAL, timeout: 60_000 }, async () => {
  const { c, events, lifecycle } = recordingClient(server.wsUrl, server.token());
  const first = await c.connect();
  assert.equal(typeof first.resume_secret, "string");
  assert.equal(first.resume_grace_ms, 60_000);
  try {
    const deltas = () => events.filter((e) => e.type === "response.text.delta");
    const reply = c.ask("Tell me a story.");
    await until(() => deltas().length >= 10, 20_000, "the story did not start");
    const seenBefore = c.lastSeq;
    const socket = /** @type {TrackedWebSocket} */ (TrackedWebSocket.made.at(-1));
    socket.terminate(); // the TCP connection just ends, as in a train tunnel: the client sees 1006
    const result = await withTimeout(reply, 30_000, "ask() did not finish after the resume");
    await sleep(200); // nothing more for this response may come

    // the lifecycle: lost, reconnecting (a resume), resumed; never a new session
    const kinds = lifecycle.map(([type]) => type);
    assert.deepEqual(kinds, ["open", "close", "reconnecting", "resumed", "open"]);
    const closed = lifecycle[1][1];
    assert.deepEqual(closed, { code: 1006, reason: "", willReconnect: true, willResume: true, byClient: false });
    assert.equal(lifecycle[2][1].resume, true);
    const resumed = lifecycle[3][1];
    assert.equal(resumed.replayedAfter, seenBefore);
    assert.ok(resumed.replayed > 0, "the reply went on while the link was down, and was replayed");
    assert.equal(lifecycle[4][1].resumed, true);
    assert.equal(c.sessionId, first.id);
    assert.equal(c.state, "open");

    // every event once, in order: seq 1, 2, 3, ... without a gap or a repeat, session.resumed among them
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
    assert.equal(events.filter((e) => e.type === "session.resumed").length, 1);
    assert.equal(c.duplicatesDropped, 0, "the server replays only what was missed");
    const dones = events.filter((e) => e.type === "response.done");
    assert.equal(dones.length, 1);
    const text = deltas().map((e) => e.delta).join("");
    assert.equal(text, dones[0].response.output_text);
    assert.equal(result.text, text);
    assert.equal(result.status, "completed");
    assert.match(text, /^Once upon a time, in a small village by the sea/);
    assert.match(text, /nobody had ever seen before\.$/);
    assert.equal((await health(server.httpUrl)).detached_sessions, 0);
  } finally {
    await c.close();
  }
});

test("a clean close does not reconnect, and ends the session on the server", { skip: EXTERNAL, timeout: 30_000 }, async () => {
  const made = TrackedWebSocket.made.length;
  const { c, lifecycle } = recordingClient(server.wsUrl, server.token());
  await c.connect();
  assert.ok((await health(server.httpUrl)).sessions >= 1);
  await c.close();
  await sleep(700);
  assert.equal(c.state, "closed");
  assert.deepEqual(lifecycle.map(([type]) => type), ["open", "close"]);
  assert.deepEqual(lifecycle[1][1], { code: 1000, reason: "", willReconnect: false, willResume: false, byClient: true });
  assert.equal(TrackedWebSocket.made.length, made + 1, "no second socket");
  // a clean close is not a lost link: the session ends at once instead of waiting for a resume
  let h = await health(server.httpUrl);
  for (let i = 0; i < 50 && (h.sessions > 0 || h.detached_sessions > 0); i++) {
    await sleep(100);
    h = await health(server.httpUrl);
  }
  assert.deepEqual([h.sessions, h.detached_sessions], [0, 0]);
});

test("a restarted server cannot resume: resume_failed, a new session (session_lost), settings applied again; its shutdown (1001) is reconnected to", { skip: EXTERNAL, timeout: 180_000 }, async () => {
  const port = String(await freePort());
  const crashing = await storyServer({ REALTIME_PORT: port });
  /** @type {import("./support/server.js").TestServer | null} */
  let restarted = null;
  const { c, events, lifecycle } = recordingClient(crashing.wsUrl, crashing.token(), { session: { temperature: 0.25 } });
  try {
    const first = await c.connect();
    const lost = next(c, "session_lost", 120_000);
    await crashing.kill(); // SIGKILL: every link ends without a close frame; the session is gone with the process
    restarted = await storyServer({ REALTIME_PORT: port });
    const info = /** @type {any} */ (await lost);
    assert.equal(info.reason, "resume_failed");
    assert.equal(info.previousSessionId, first.id);
    assert.notEqual(info.session.id, first.id);
    await until(() => c.state === "open" && c.session?.temperature === 0.25, 10_000, "the settings were not applied to the new session");
    const kinds = lifecycle.map(([type]) => type);
    assert.deepEqual([kinds[0], kinds[1], kinds.at(-2), kinds.at(-1)], ["open", "close", "session_lost", "open"]);
    assert.ok(!kinds.includes("resumed"));
    assert.equal(lifecycle[1][1].willResume, true, "the crash looked like a lost link");
    assert.ok(lifecycle.filter(([type, e]) => type === "reconnecting" && e.resume).length >= 1);
    const open = /** @type {any} */ (lifecycle.at(-1))[1];
    assert.deepEqual([open.reconnected, open.resumed], [true, false]);
    // the new session's events: resume_failed (seq 1), session.created (seq 2), session.updated (seq 3)
    const fresh = events.slice(events.findIndex((e) => e.type === "error"));
    assert.deepEqual(fresh.slice(0, 3).map((e) => [e.seq, e.type]), [[1, "error"], [2, "session.created"], [3, "session.updated"]]);
    assert.equal(fresh[0].error.code, "resume_failed");
    assert.equal(c.sessionId, info.session.id);

    // a server shutting down closes with 1001: a restart, so the client comes back (to a new session)
    const closed = next(c, "close", 30_000);
    const retrying = next(c, "reconnecting", 30_000);
    await restarted.stop();
    restarted = null;
    assert.deepEqual(await closed, { code: 1001, reason: "server shutting down", willReconnect: true, willResume: false, byClient: false });
    assert.equal((await retrying).resume, false, "a shut-down server's sessions are gone: no resume asked");
  } finally {
    await c.close();
    await restarted?.stop();
    await crashing.stop();
  }
});
