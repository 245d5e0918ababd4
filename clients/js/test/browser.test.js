// End to end in real Chromium (headless, Debian's /usr/bin/chromium through playwright-core): the page
// of realtime/static/ against the real server, a synthesized spoken question as the fake microphone.
// The page must show the transcript and the reply, and play the reply's audio (counted by the player
// worklet); then server errors, a typed turn, a lost connection, a denied microphone and a refused
// token. Screenshot: test-artifacts/js-e2e.png.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { REPO_ROOT, startServer } from "./support/server.js";
import { synthesize, withSilence, words, writeWav } from "./support/speech.js";
import { startStaticServer } from "./support/static-server.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = join(REPO_ROOT, "test-artifacts");
const QUESTION = "What is the capital city of France?";
const BASE_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

/** @type {import("./support/server.js").TestServer} */
let server;
/** @type {Awaited<ReturnType<typeof startStaticServer>>} */
let web;
/** @type {string} */
let scratch;
/** @type {string} */
let wav;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (./dev test does)`);
  scratch = mkdtempSync(join(tmpdir(), "realtime-e2e-"));
  // the fake microphone loops its file: the question, then a long silence so it is asked once
  wav = join(scratch, "question.wav");
  writeWav(wav, withSilence(synthesize(QUESTION, 48_000), 48_000, 0.5, 120), 48_000);
  server = await startServer();
  web = await startStaticServer(server.wsUrl);
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  try {
    await web?.close();
  } finally {
    try {
      await server?.stop();
    } finally {
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    }
  }
});

/** @param {string[]} flags */
function launch(flags) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...BASE_FLAGS, ...flags] });
}

/**
 * The app's page with URL parameters; console errors are collected.
 * @param {import("playwright-core").Browser} browser
 * @param {Record<string, string>} query
 */
async function openApp(browser, query) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  const problems = /** @type {string[]} */ ([]);
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} ${response.url()}`);
  });
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  await page.goto(`${web.url}/static/index.html?${new URLSearchParams(query)}`);
  return { page, problems };
}

/** @param {import("playwright-core").Page} page */
function banner(page) {
  return page.locator("#banner");
}

/** The page's files as the server itself serves them (the routes asked for: /static/, /client/, /vendor/). */
const SERVED = [
  ["/static/index.html", "realtime/static/index.html", "text/html"],
  ["/static/app.js", "realtime/static/app.js", "text/javascript"],
  ["/static/app.css", "realtime/static/app.css", "text/css"],
  ["/client/index.js", "clients/js/src/index.js", "text/javascript"],
  ["/client/audio/player-worklet.js", "clients/js/src/audio/player-worklet.js", "text/javascript"],
  ["/vendor/msgpack/index.mjs", "clients/js/vendor/msgpack/index.mjs", "text/javascript"],
];

test("the server serves the app's files itself", async () => {
  for (const [path, file, type] of SERVED) {
    const response = await fetch(server.httpUrl + path);
    assert.equal(response.status, 200, path);
    assert.ok(response.headers.get("content-type")?.startsWith(type), `${path}: ${response.headers.get("content-type")}`);
    assert.equal(await response.text(), readFileSync(join(REPO_ROOT, file), "utf8"), path);
  }
});

describe("the browser app", { timeout: 240_000 }, () => {
  test("a spoken question: transcript, streamed reply, reply audio played; then errors, typing, a lost link", async () => {
    const browser = await launch([
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-audio-capture=${wav}`,
    ]);
    try {
      const token = server.token();
      const { page, problems } = await openApp(browser, { token, ec: "0", ns: "0", agc: "0", max_output_tokens: "24" });
      assert.equal(await page.inputValue("#token"), token, "the token field is filled from ?token=");
      await page.click("#connect");
      await page.waitForFunction(() => document.querySelector("#status")?.textContent === "connected", null, { timeout: 15_000 });
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.micFrames > 10, null, { timeout: 10_000 });
      const settings = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.mic.trackSettings);
      assert.equal(settings.echoCancellation, false, "echo cancellation should be off in this test");

      // the transcript: partials while speaking, then the final words
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.transcripts.length > 0, null, { timeout: 60_000 });
      const transcript = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.transcripts[0]);
      const heard = words(transcript);
      for (const word of ["capital", "france"]) assert.ok(heard.includes(word), `transcript ${JSON.stringify(transcript)}`);
      assert.equal(words(await page.locator(".turn.user .stable").first().innerText()).join(" "), heard.join(" "));

      // the reply: text on the page, then its audio played by the worklet
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.replies.length > 0, null, { timeout: 60_000 });
      const reply = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.replies[0]);
      assert.ok(["completed", "incomplete"].includes(reply.status), reply.status);
      assert.ok(reply.text.length > 0);
      assert.equal((await page.locator(".turn.assistant .reply").first().innerText()).trim(), reply.text.trim());
      assert.match(await page.locator(".turn.assistant .metrics").first().innerText(), /total \d+ ms/);
      assert.notEqual(reply.metrics.speech_end_to_first_audio_ms ?? null, null, "a spoken reply");
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.playedMs > 1500, null, { timeout: 30_000 });
      const position = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.player.position);
      assert.ok(position.totalPlayedMs > 1500, JSON.stringify(position));
      if (!reply.metrics.late_audio_chunks) {
        // the server sent on time (on a loaded machine it may not: then gaps are its own)
        assert.equal(position.underruns, 0, `the jitter buffer ran dry: ${JSON.stringify(reply.metrics)}`);
      }
      await page.screenshot({ path: join(ARTIFACTS, "js-e2e.png"), fullPage: true });

      // a server error is shown
      await page.evaluate(() => /** @type {any} */ (window).realtimeApp.client.send({ type: "session.update", session: { temperature: 5 } }));
      await assert.doesNotReject(banner(page).filter({ hasText: "invalid_event" }).waitFor({ timeout: 5000 }));

      // a typed turn, interrupted by another typed turn while its audio plays: the page stops the
      // audio at once and tells the server what was heard (conversation.item.truncated answers)
      await page.fill("#text", "Tell me a story about a dog.");
      await page.click("#send");
      await page.waitForFunction(() => {
        const app = /** @type {any} */ (window).realtimeApp;
        return app.replies.length === 1 && app.player.playing && app.player.position.playedMs > 300;
      }, null, { timeout: 60_000 });
      await page.fill("#text", "Thanks, that is enough.");
      await page.click("#send");
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.truncations.length > 0, null, { timeout: 10_000 });
      const [truncation] = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.truncations);
      assert.ok(truncation.audioEndMs > 0, JSON.stringify(truncation));
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.replies.length > 2, null, { timeout: 60_000 });
      const replies = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.replies);
      assert.ok(["cancelled", "completed", "incomplete"].includes(replies[1].status), replies[1].status);
      assert.ok((await page.locator(".turn.user").count()) >= 3);

      // a lost link (cut without a close frame): the page says so, reconnects and resumes the same
      // session, and says the conversation carries on
      const before = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.client.sessionId);
      assert.ok(web.dropConnections() >= 1);
      await banner(page).filter({ hasText: "Reconnect" }).waitFor({ timeout: 10_000 });
      await page.waitForFunction(() => document.querySelector("#status")?.textContent === "connected", null, { timeout: 20_000 });
      await banner(page).filter({ hasText: "conversation resumed" }).waitFor({ timeout: 5000 });
      const afterId = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.client.sessionId);
      assert.equal(afterId, before, "the same session, resumed");
      const banners = await page.evaluate(() => /** @type {any} */ (window).realtimeApp.banners);
      assert.ok(banners.some((/** @type {string} */ b) => b.startsWith("Connection lost")), banners.join(" | "));
      assert.ok(!banners.some((/** @type {string} */ b) => b.includes("new session")), banners.join(" | "));
      assert.deepEqual(problems.filter((p) => !p.includes("WebSocket")), []);
    } finally {
      await browser.close();
    }
  });

  test("a denied microphone is explained, and typing still works", async () => {
    const browser = await launch(["--use-fake-ui-for-media-stream=deny", "--use-fake-device-for-media-stream"]);
    try {
      const { page } = await openApp(browser, { token: server.token(), max_output_tokens: "8" });
      await page.click("#connect");
      await banner(page).filter({ hasText: "Microphone access was denied" }).waitFor({ timeout: 15_000 });
      assert.equal(await page.isEnabled("#text"), true);
      await page.fill("#text", "Hi!");
      await page.click("#send");
      await page.waitForFunction(() => /** @type {any} */ (window).realtimeApp.replies.length > 0, null, { timeout: 60_000 });
    } finally {
      await browser.close();
    }
  });

  test("a refused token is explained", async () => {
    const browser = await launch([]);
    try {
      const { page } = await openApp(browser, { token: "not-a-valid-token" });
      await page.click("#connect");
      await banner(page).filter({ hasText: "Could not connect" }).waitFor({ timeout: 15_000 });
      assert.equal(await page.locator("#status").innerText(), "disconnected");
      assert.equal(await page.isEnabled("#connect"), true);
    } finally {
      await browser.close();
    }
  });
});
