// The browser app (realtime/static/) in Chromium against a SCRIPTED server, for what the real one
// cannot show on cue: partial transcripts (stable and unstable styled apart), reasoning folded away,
// latency figures, push-to-talk (clear, 20 ms frames, commit, then response.create), the page
// going quiet after `not_listening`, and a link lost mid-reply: "reconnecting…", then the same reply
// carrying on after the resume.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { startFakeServer } from "./support/fake-server.js";
import { startStaticServer } from "./support/static-server.js";
import { sleep, withTimeout } from "./support/util.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
];

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (./dev test does)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
});

after(async () => {
  await browser?.close();
});

/**
 * A scripted server behind the page's origin, and the page connected to it.
 * @param {Parameters<typeof startFakeServer>[0]} options
 * @param {Record<string, string>} [query]
 */
async function session(options, query = {}) {
  const fake = await startFakeServer(options);
  const web = await startStaticServer(fake.url);
  const page = await browser.newPage();
  const problems = /** @type {string[]} */ ([]);
  page.on("pageerror", (error) => problems.push(error.message));
  await page.goto(`${web.url}/static/index.html?${new URLSearchParams({ token: "scripted", ...query })}`);
  await page.click("#connect");
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "connected", null, { timeout: 10_000 });
  const link = await fake.link(0);
  return {
    page,
    link,
    web,
    problems,
    async close() {
      await page.close();
      await web.close();
      await fake.close();
    },
  };
}

describe("the browser app on a scripted server", { timeout: 120_000 }, () => {
  test("partials, the final transcript, folded reasoning, the reply and its latency figures", async () => {
    const s = await session({
      onConnect: async (link) => {
        await link.next("session.update");
        await link.next("input_audio_buffer.append"); // the microphone runs
        const item = { item_id: "item_9" };
        link.send({ type: "input_audio_buffer.speech_started", ...item, audio_start_ms: 100 });
        link.send({ type: "conversation.item.input_audio_transcription.partial", ...item, stable: "What is the", unstable: "weather like" });
      },
    });
    try {
      const { page, link } = s;
      const update = link.received.find((e) => e.type === "session.update");
      assert.deepEqual(update.session.input_audio_format, { type: "pcm16", sample_rate: 24_000 });
      assert.deepEqual(update.session.output_audio_format, { type: "pcm16", sample_rate: 24_000 });
      assert.deepEqual(update.session.turn_detection, { type: "server_vad" });
      await page.locator(".turn.user .unstable", { hasText: "weather like" }).waitFor({ timeout: 10_000 });
      assert.equal(await page.locator(".turn.user .stable").innerText(), "What is the");
      const styles = await page.evaluate(() => {
        const style = (/** @type {string} */ sel) => getComputedStyle(/** @type {Element} */ (document.querySelector(sel)));
        return { stable: [style(".turn.user .stable").fontStyle, style(".turn.user .stable").color], unstable: [style(".turn.user .unstable").fontStyle, style(".turn.user .unstable").color] };
      });
      assert.notDeepEqual(styles.stable, styles.unstable, "stable and unstable words look the same");
      assert.equal(styles.unstable[0], "italic");

      const r = { response_id: "resp_10", item_id: "item_11" };
      link.send({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_9", transcript: "What is the weather like?", audio_duration_ms: 1800, language: "en" });
      link.send({ type: "conversation.item.created", item: { id: "item_9", type: "message", role: "user", content: [{ type: "input_audio", transcript: "What is the weather like?" }] } });
      link.send({ type: "response.created", response: { id: "resp_10", status: "in_progress", item_id: "item_11", model: "m" } });
      link.send({ type: "response.reasoning.delta", ...r, delta: "The user asks about " });
      link.send({ type: "response.reasoning.delta", ...r, delta: "the weather." });
      link.send({ type: "response.text.delta", ...r, delta: "It is" });
      link.send({ type: "response.text.delta", ...r, delta: " sunny." });
      const metrics = { first_token_ms: 84, first_text_ms: 140, first_audio_ms: null, total_ms: 310, rtt_ms: 3, speech_end_to_transcript_ms: 120, speech_end_to_first_token_ms: 200, speech_end_to_first_audio_ms: null };
      link.send({ type: "response.done", response: { id: "resp_10", item_id: "item_11", status: "completed", output_text: "It is sunny.", reasoning_text: "The user asks about the weather.", usage: { input_tokens: 3, output_tokens: 4 }, metrics } });

      await page.locator(".turn.assistant .metrics").waitFor({ timeout: 10_000 });
      assert.equal(await page.locator(".turn.user .stable").innerText(), "What is the weather like?");
      assert.equal(await page.locator(".turn.user .unstable").innerText(), "");
      assert.equal(await page.locator(".turn.assistant .reply").innerText(), "It is sunny.");
      const reasoning = page.locator(".turn.assistant details.reasoning");
      assert.equal(await reasoning.isVisible(), true);
      assert.equal(await reasoning.evaluate((el) => /** @type {HTMLDetailsElement} */ (el).open), false, "reasoning should be folded");
      assert.equal(await reasoning.locator("pre").textContent(), "The user asks about the weather.");
      const figures = await page.locator(".turn.assistant .metrics").innerText();
      assert.equal(figures, "after you stopped: transcript 120 ms, first token 200 ms · reply: first token 84 ms, first text 140 ms, total 310 ms · link: rtt 3 ms");

      link.send({ type: "error", error: { code: "stt_busy", message: "Speech recognition is overloaded." } });
      await page.locator("#banner", { hasText: "stt_busy" }).waitFor({ timeout: 5000 });
      assert.deepEqual(s.problems, []);
    } finally {
      await s.close();
    }
  });

  test("push-to-talk: turn detection off; holding sends clear + 20 ms frames, releasing commits, then response.create", async () => {
    const s = await session({}, { mode: "ptt" });
    try {
      const { page, link } = s;
      const update = await link.next("session.update");
      assert.equal(update.session.turn_detection, null);
      await sleep(300);
      assert.equal(link.received.filter((e) => e.type === "input_audio_buffer.append").length, 0, "audio sent without the button held");
      assert.equal(await page.isEnabled("#talk"), true);
      await page.locator("#talk").hover();
      await page.mouse.down();
      await sleep(400);
      await page.mouse.up();
      const commit = await withTimeout(link.next("input_audio_buffer.commit"), 5000, "no commit");
      const types = link.received.map((e) => e.type).filter((t) => t.startsWith("input_audio_buffer"));
      assert.equal(types[0], "input_audio_buffer.clear");
      assert.equal(types.at(-1), "input_audio_buffer.commit");
      const frames = link.received.filter((e) => e.type === "input_audio_buffer.append");
      assert.ok(frames.length >= 10, `${frames.length} frames in 400 ms`);
      assert.ok(frames.every((f) => f.audio instanceof Uint8Array && f.audio.length === 960), "not 20 ms of PCM16 at 24 kHz");
      assert.equal(link.received.some((e) => e.type === "response.create"), false, "response.create before the item exists");
      link.send({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_1", transcript: "Hello there.", audio_duration_ms: 400, language: "en" });
      link.send({ type: "input_audio_buffer.committed", item_id: "item_1" });
      link.send({ type: "conversation.item.created", item: { id: "item_1", type: "message", role: "user", content: [{ type: "input_audio", transcript: "Hello there." }] } });
      await withTimeout(link.next("response.create"), 5000, "no response.create after the committed turn");
      assert.ok(commit.event_id);
      // back to hands-free: turn detection comes back
      await page.check('input[name="mode"][value="vad"]');
      const back = await withTimeout(link.next("session.update"), 5000, "no session.update");
      assert.deepEqual(back.session, { turn_detection: { type: "server_vad" } });
      assert.deepEqual(s.problems, []);
    } finally {
      await s.close();
    }
  });

  test("hands-free audio stops after not_listening (each frame would be another error)", async () => {
    const s = await session({
      onConnect: async (link) => {
        await link.next("input_audio_buffer.append");
        link.send({ type: "error", error: { code: "not_listening", message: "This session is not listening to audio.", param: "audio", event_type: "input_audio_buffer.append" } });
      },
    });
    try {
      const { page, link } = s;
      await page.locator("#banner", { hasText: "not listening" }).waitFor({ timeout: 5000 });
      await sleep(200);
      const count = link.received.filter((e) => e.type === "input_audio_buffer.append").length;
      await sleep(500);
      assert.equal(link.received.filter((e) => e.type === "input_audio_buffer.append").length, count);
    } finally {
      await s.close();
    }
  });

  test("a link lost mid-reply: 'reconnecting…', then the resumed session finishes the same reply, nothing twice", async () => {
    const R = { response_id: "resp_2", item_id: "item_3" };
    const s = await session({
      session: { resume_secret: "s3cret", resume_grace_ms: 10_000 },
      onConnect: async (link) => {
        await link.next("session.update");
        link.send({ type: "response.created", response: { id: "resp_2", status: "in_progress", item_id: "item_3", model: "m" } });
        link.send({ type: "response.text.delta", ...R, delta: "Once upon" });
      },
      onResume: (link, resume) => {
        link.seq = resume.lastSeq - 1; // one event too early: the page must not show it twice
        link.send({ type: "response.text.delta", ...R, delta: "Once upon" });
        link.send({ type: "response.text.delta", ...R, delta: " a time" });
        link.send({ type: "session.resumed", session: { ...link.session(), id: resume.sessionId }, replayed_after: resume.lastSeq });
        link.send({ type: "response.done", response: { id: "resp_2", item_id: "item_3", status: "completed", output_text: "Once upon a time", metrics: { total_ms: 10 } } });
      },
    });
    try {
      const { page, web } = s;
      await page.locator(".turn.assistant .reply", { hasText: "Once upon" }).waitFor({ timeout: 5000 });
      await page.evaluate(() => {
        const pill = /** @type {Element} */ (document.querySelector("#status"));
        const seen = /** @type {string[]} */ ((/** @type {any} */ (window).pillStates = []));
        new MutationObserver(() => seen.push(pill.textContent ?? "")).observe(pill, { childList: true, characterData: true, subtree: true });
      });
      assert.equal(web.dropConnections(), 1);
      await page.locator("#banner", { hasText: "conversation resumed" }).waitFor({ timeout: 10_000 });
      await page.locator(".turn.assistant .metrics").waitFor({ timeout: 5000 });
      assert.equal(await page.locator(".turn.assistant .reply").innerText(), "Once upon a time");
      assert.equal(await page.locator(".turn.assistant").count(), 1);
      assert.equal(await page.locator("#status").innerText(), "connected");
      assert.deepEqual(await page.evaluate(() => /** @type {any} */ (window).pillStates), ["reconnecting…", "connected"]);
      const banners = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.banners);
      assert.ok(banners.some((/** @type {string} */ b) => b.startsWith("Connection lost") && b.includes("keeps the conversation")), banners.join(" | "));
      assert.ok(!banners.some((/** @type {string} */ b) => b.includes("new session")), banners.join(" | "));
      assert.deepEqual(s.problems, []);
    } finally {
      await s.close();
    }
  });
});
