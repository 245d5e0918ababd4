// The browser app: a voice conversation with the realtime server, on the JS client library.
// Served as /static/; the library comes from /client/ (clients/js/src) and @msgpack/msgpack from
// /vendor/ (clients/js/vendor) through the import map in index.html. No build step.
//
// URL parameters (all optional): token, ws (websocket URL), encoding (msgpack|json), mode (vad|ptt),
// ec / ns / agc (0 turns echo cancellation / noise suppression / auto gain off), max_output_tokens,
// instructions.

import { AudioPlayer, ConnectionError, MicCapture, MicrophoneError, RealtimeClient } from "../client/index.js";

const RATE = 24_000; // the session's input and output sample rate
const params = new URLSearchParams(location.search);
/** @param {string} id @returns {any} */
const $ = (id) => document.getElementById(id);

/** @type {{client: RealtimeClient | null, player: AudioPlayer | null, mic: MicCapture | null, context: AudioContext | null, talking: boolean, micBlocked: boolean, awaitingCommit: boolean, responding: boolean}} */
const state = { client: null, player: null, mic: null, context: null, talking: false, micBlocked: false, awaitingCommit: false, responding: false };

/** What the page saw, for people debugging and for the end-to-end test. */
const record = {
  /** @type {string[]} final user transcripts */ transcripts: [],
  /** @type {Array<{text: string, status: string, metrics: any}>} */ replies: [],
  /** @type {Array<{code: string, message: string}>} */ errors: [],
  /** @type {Array<{itemId: string, audioEndMs: number}>} conversation.item.truncated answers */ truncations: [],
  /** @type {string[]} */ banners: [],
};
/** @type {any} */ (window).realtimeApp = {
  ...record,
  get client() {
    return state.client;
  },
  get player() {
    return state.player;
  },
  get mic() {
    return state.mic;
  },
  /** ms of assistant audio the player worklet has played (all items) */
  get playedMs() {
    return state.player?.totalPlayedMs ?? 0;
  },
  get micFrames() {
    return state.mic?.frames ?? 0;
  },
};

// ---- settings from the URL and the form ---------------------------------------------------------

function defaultWsUrl() {
  const url = new URL("../ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

$("token").value = params.get("token") ?? "";
$("ws-url").value = params.get("ws") ?? defaultWsUrl();
$("encoding").value = params.get("encoding") === "json" ? "json" : "msgpack";
for (const key of ["ec", "ns", "agc"]) if (params.get(key) === "0") $(key).checked = false;
if (params.get("mode") === "ptt") /** @type {HTMLInputElement} */ (document.querySelector('input[name="mode"][value="ptt"]')).checked = true;

function mode() {
  return /** @type {HTMLInputElement} */ (document.querySelector('input[name="mode"]:checked')).value;
}

function turnDetection() {
  return mode() === "ptt" ? null : { type: "server_vad" };
}

/** @returns {import("../client/index.js").SessionSettings} */
function sessionSettings() {
  /** @type {import("../client/index.js").SessionSettings} */
  const settings = {
    input_audio_format: { type: "pcm16", sample_rate: RATE },
    output_audio_format: { type: "pcm16", sample_rate: RATE },
    turn_detection: turnDetection(),
  };
  const maxTokens = Number(params.get("max_output_tokens"));
  if (Number.isInteger(maxTokens) && maxTokens > 0) settings.max_output_tokens = maxTokens;
  if (params.has("instructions")) settings.instructions = params.get("instructions");
  return settings;
}

// ---- messages -------------------------------------------------------------------------------------

/** @type {ReturnType<typeof setTimeout> | undefined} */
let bannerTimer;
/**
 * @param {string} text
 * @param {"error" | "warn" | "info"} kind
 * @param {number} [hideAfterMs] 0: stays
 */
function banner(text, kind, hideAfterMs = 0) {
  const el = $("banner");
  el.textContent = text;
  el.className = kind;
  el.hidden = false;
  record.banners.push(text);
  clearTimeout(bannerTimer);
  if (hideAfterMs > 0) bannerTimer = setTimeout(() => (el.hidden = true), hideAfterMs);
}

function hideBanner() {
  $("banner").hidden = true;
}

/** @param {unknown} error */
function connectErrorText(error) {
  if (error instanceof ConnectionError) {
    if (error.httpStatus === 401) return "The server refused the token (401). Get a fresh one with ./dev token.";
    if (error.httpStatus === 403) return "The server refused this page's origin (403).";
    if (error.httpStatus === 400) return "The server does not speak this client's protocol version (400): update the client or the server.";
    return "Could not connect. Check the token and the server address (a refused token looks the same from a browser).";
  }
  return `Could not start the session: ${/** @type {any} */ (error)?.message ?? error}`;
}

// ---- the conversation log -------------------------------------------------------------------------

const log = $("log");
/** @type {Map<string, HTMLElement>} user turns by item id */
const userTurns = new Map();
/** @type {Map<string, HTMLElement>} assistant turns by item id */
const assistantTurns = new Map();

/** @param {string} role @param {string} who */
function addTurn(role, who) {
  const el = document.createElement("div");
  el.className = `turn ${role}`;
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = who;
  el.append(label);
  log.append(el);
  log.scrollTop = log.scrollHeight;
  return el;
}

/** @param {string} itemId */
function userTurn(itemId) {
  let el = userTurns.get(itemId);
  if (!el) {
    el = addTurn("user", "You");
    const stable = document.createElement("span");
    stable.className = "stable";
    const unstable = document.createElement("span");
    unstable.className = "unstable";
    el.append(stable, " ", unstable);
    el.dataset.itemId = itemId;
    userTurns.set(itemId, el);
  }
  return el;
}

/** @param {string} itemId @param {string} stable @param {string} unstable */
function showPartial(itemId, stable, unstable) {
  const el = userTurn(itemId);
  if (el.dataset.final) return;
  /** @type {HTMLElement} */ (el.querySelector(".stable")).textContent = stable;
  /** @type {HTMLElement} */ (el.querySelector(".unstable")).textContent = unstable;
}

/** @param {string} itemId @param {string} text */
function showFinal(itemId, text) {
  const el = userTurn(itemId);
  el.dataset.final = "1";
  el.classList.remove("listening");
  /** @type {HTMLElement} */ (el.querySelector(".stable")).textContent = text || "(nothing heard)";
  /** @type {HTMLElement} */ (el.querySelector(".unstable")).textContent = "";
  el.classList.toggle("empty", !text);
}

/** @param {string} itemId */
function assistantTurn(itemId) {
  let el = assistantTurns.get(itemId);
  if (!el) {
    el = addTurn("assistant", "Assistant");
    el.dataset.itemId = itemId;
    const reasoning = document.createElement("details");
    reasoning.className = "reasoning";
    reasoning.hidden = true;
    reasoning.innerHTML = "<summary>Reasoning</summary><pre></pre>";
    const reply = document.createElement("div");
    reply.className = "reply";
    el.append(reasoning, reply);
    assistantTurns.set(itemId, el);
  }
  return el;
}

/** Latency figures of one turn, from response.done metrics: since the user stopped speaking, then
 * since the response started. */
const METRIC_GROUPS = /** @type {const} */ ([
  [
    "after you stopped",
    [
      ["speech_end_to_transcript_ms", "transcript"],
      ["speech_end_to_first_token_ms", "first token"],
      ["speech_end_to_first_audio_ms", "first audio"],
    ],
  ],
  [
    "reply",
    [
      ["first_token_ms", "first token"],
      ["first_text_ms", "first text"],
      ["first_audio_ms", "first audio"],
      ["total_ms", "total"],
      ["interrupt_to_stop_ms", "interrupt → stop"],
    ],
  ],
  ["link", [["rtt_ms", "rtt"]]],
]);

/** @param {Record<string, number | null>} metrics */
function metricsText(metrics) {
  return METRIC_GROUPS.map(([group, labels]) => {
    const parts = labels.filter(([key]) => typeof metrics[key] === "number").map(([key, label]) => `${label} ${metrics[key]} ms`);
    return parts.length ? `${group}: ${parts.join(", ")}` : "";
  })
    .filter(Boolean)
    .join(" · ");
}

/** @param {any} response */
function showDone(response) {
  const el = assistantTurn(response.item_id);
  el.classList.remove("thinking");
  if (response.status !== "completed") {
    const note = document.createElement("div");
    note.className = "status";
    const reason = response.status_details?.reason;
    note.textContent = `${response.status}${reason ? ` (${reason.replace(/_/g, " ")})` : ""}`;
    if (response.audio && response.status === "interrupted") note.textContent += ` · heard ${response.audio.played_ms} of ${response.audio.duration_ms} ms`;
    el.append(note);
  }
  const metrics = document.createElement("div");
  metrics.className = "metrics";
  metrics.textContent = metricsText(response.metrics ?? {});
  el.append(metrics);
  record.replies.push({ text: response.output_text, status: response.status, metrics: response.metrics });
  log.scrollTop = log.scrollHeight;
}

// ---- the session ----------------------------------------------------------------------------------

/** @param {RealtimeClient} client */
function wire(client) {
  client.on("state", ({ state: s }) => {
    const pill = $("status");
    pill.dataset.state = s;
    pill.textContent = { idle: "disconnected", connecting: "connecting…", open: "connected", reconnecting: "reconnecting…", closed: "disconnected" }[s];
  });
  client.on("close", (info) => {
    const why = `${info.code}${info.reason ? `: ${info.reason}` : ""}`;
    if (info.willResume) {
      banner(`Connection lost (${why}). Reconnecting… The server keeps the conversation meanwhile.`, "warn");
    } else if (info.willReconnect) {
      banner(`Connection lost (${why}). Reconnecting… The session ended: the conversation will start over.`, "warn");
    } else if (!info.byClient) {
      banner(`Disconnected (${why}).`, "error");
      void teardown();
    }
  });
  client.on("reconnecting", ({ attempt, delayMs, resume }) => {
    const then = resume ? "picking up where it left off" : "the conversation will start over";
    banner(`Connection lost. Reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt}), ${then}…`, "warn");
  });
  client.on("resumed", ({ replayed }) => {
    banner(`Reconnected: the conversation resumed (${replayed} missed event${replayed === 1 ? "" : "s"} caught up).`, "info", 4000);
  });
  client.on("session_lost", () => {
    state.micBlocked = state.responding = state.awaitingCommit = false;
    updateStop();
    const divider = addTurn("assistant empty", "—");
    divider.append("Reconnected: a new session, the server does not remember the turns above.");
    banner("Reconnected (a new session).", "info", 4000);
  });
  client.on("error", ({ error }) => {
    record.errors.push({ code: error.code, message: error.message });
    if (error.code === "resume_failed") return; // session_lost says it
    if (error.code === "not_listening") {
      state.micBlocked = true; // stop sending audio: every frame would be another error
      state.awaitingCommit = false;
      banner("The server is not listening to audio (it has no voice input, or the session's input format is off). Typing still works.", "error");
      return;
    }
    if (error.code === "invalid_audio") state.awaitingCommit = false;
    if (error.code === "response_not_active") return; // a Stop that crossed the reply's end
    banner(`Server error ${error.code}: ${error.message}`, "error", 8000);
  });

  client.on("input_audio_buffer.speech_started", (e) => userTurn(e.item_id).classList.add("listening"));
  client.on("input_audio_buffer.speech_stopped", (e) => userTurns.get(e.item_id)?.classList.remove("listening"));
  client.on("conversation.item.input_audio_transcription.partial", (e) => showPartial(e.item_id, e.stable, e.unstable));
  client.on("conversation.item.input_audio_transcription.completed", (e) => {
    showFinal(e.item_id, e.transcript);
    if (e.transcript) record.transcripts.push(e.transcript);
    else state.awaitingCommit = false; // push-to-talk with nothing said: no item, no response
  });
  client.on("conversation.item.created", ({ item }) => {
    if (item.role !== "user") return;
    const part = item.content[0];
    if (part?.type === "input_text") showFinal(item.id, item.content.map((/** @type {any} */ p) => p.text).join(""));
    if (part?.type === "input_audio" && state.awaitingCommit) {
      state.awaitingCommit = false; // push-to-talk: the turn is in the history now, answer it
      client.createResponse();
    }
  });
  client.on("response.created", ({ response }) => {
    state.responding = true;
    assistantTurn(response.item_id).classList.add("thinking");
    updateStop();
  });
  client.on("response.reasoning.delta", (e) => {
    const details = /** @type {HTMLDetailsElement} */ (assistantTurn(e.item_id).querySelector("details.reasoning"));
    details.hidden = false;
    /** @type {HTMLElement} */ (details.querySelector("pre")).textContent += e.delta;
  });
  client.on("response.text.delta", (e) => {
    /** @type {HTMLElement} */ (assistantTurn(e.item_id).querySelector(".reply")).textContent += e.delta;
    log.scrollTop = log.scrollHeight;
  });
  client.on("response.audio.delta", (e) => assistantTurn(e.item_id).classList.add("speaking"));
  client.on("response.done", ({ response }) => {
    state.responding = false;
    showDone(response);
    updateStop();
  });
  client.on("conversation.item.truncated", (e) => {
    record.truncations.push({ itemId: e.item_id, audioEndMs: e.audio_end_ms });
    const el = assistantTurns.get(e.item_id);
    if (!el) return;
    const note = document.createElement("div");
    note.className = "metrics";
    note.textContent = `heard ${e.audio_end_ms} ms`;
    el.append(note);
  });
}

async function connect() {
  const token = $("token").value.trim();
  if (!token) {
    banner("Paste a token first (./dev token prints one).", "error");
    return;
  }
  hideBanner();
  setConnected(true, false);
  // created in the click handler: browsers let a page start audio only after a user gesture
  const context = new AudioContext({ latencyHint: "interactive" });
  void context.resume();
  state.context = context;
  try {
    state.player = await AudioPlayer.create(context);
  } catch (error) {
    banner(`Audio playback could not start: ${/** @type {any} */ (error)?.message ?? error}`, "error");
    await teardown();
    return;
  }
  const client = new RealtimeClient({ url: $("ws-url").value.trim(), token, encoding: $("encoding").value, session: sessionSettings() });
  state.client = client;
  wire(client);
  state.player.attach(client);
  state.player.on("started", updateStop);
  state.player.on("finished", ({ itemId }) => {
    assistantTurns.get(itemId)?.classList.remove("speaking");
    updateStop();
  });
  state.player.on("flushed", () => {
    assistantTurns.forEach((el) => el.classList.remove("speaking"));
    updateStop();
  });
  try {
    await client.connect();
  } catch (error) {
    banner(connectErrorText(error), "error");
    await teardown();
    return;
  }
  setConnected(true, true);
  try {
    state.mic = await MicCapture.start({
      context,
      sampleRate: RATE,
      echoCancellation: $("ec").checked,
      noiseSuppression: $("ns").checked,
      autoGainControl: $("agc").checked,
      onFrame: onMicFrame,
    });
    $("talk").disabled = mode() !== "ptt";
  } catch (error) {
    const text = error instanceof MicrophoneError ? error.message : `The microphone could not start: ${error}`;
    banner(`${text} You can still type.`, "error");
  }
}

/** @param {Int16Array} pcm @param {number} level */
function onMicFrame(pcm, level) {
  $("level").value = Math.min(1, level * 4);
  const client = state.client;
  if (!client || client.state !== "open" || state.micBlocked) return;
  if (mode() === "ptt" && !state.talking) return;
  client.appendAudio(pcm);
}

async function teardown() {
  const { client, mic, player, context } = state;
  state.client = state.mic = state.player = state.context = null;
  state.talking = state.awaitingCommit = state.responding = false;
  mic?.stop();
  if (client && client.state !== "closed") await client.close();
  player?.close();
  await context?.close().catch(() => {});
  setConnected(false, false);
}

/** Stop is there while a reply runs or its audio plays. */
function updateStop() {
  $("stop").disabled = !(state.responding || state.player?.playing);
}

/** @param {boolean} busy @param {boolean} open */
function setConnected(busy, open) {
  $("connect").disabled = busy;
  $("token").disabled = busy;
  $("disconnect").disabled = !busy;
  for (const id of ["text", "send"]) $(id).disabled = !open;
  $("talk").disabled = !open || mode() !== "ptt" || !state.mic;
  $("stop").disabled = true;
}

// ---- push-to-talk -----------------------------------------------------------------------------------

/**
 * Stop the assistant: cancel the running response, and stop its audio here at once (audio runs a
 * little ahead of the response's end, so it may still play after response.done), telling the
 * server what was heard.
 * @param {RealtimeClient} client
 */
function interruptReply(client) {
  if (state.responding) client.cancelResponse();
  if (state.player?.playing) void state.player.interrupt(client);
}

function startTalking() {
  const client = state.client;
  if (!client || client.state !== "open" || mode() !== "ptt" || state.talking) return;
  state.talking = true;
  $("talk").classList.add("held");
  interruptReply(client); // speaking over the reply stops it
  client.clearAudio();
}

function stopTalking() {
  const client = state.client;
  if (!state.talking) return;
  state.talking = false;
  $("talk").classList.remove("held");
  if (!client || client.state !== "open") return;
  state.awaitingCommit = true; // answered with response.create once the item exists
  client.commitAudio();
}

$("talk").addEventListener("pointerdown", (/** @type {PointerEvent} */ e) => {
  $("talk").setPointerCapture(e.pointerId);
  startTalking();
});
$("talk").addEventListener("pointerup", stopTalking);
$("talk").addEventListener("pointercancel", stopTalking);
document.addEventListener("keydown", (e) => {
  if (e.code !== "Space" || e.repeat || /** @type {HTMLElement} */ (e.target).closest("input, textarea, select, button")) return;
  e.preventDefault();
  startTalking();
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space") stopTalking();
});

// ---- controls ---------------------------------------------------------------------------------------

$("connect-form").addEventListener("submit", (/** @type {Event} */ e) => {
  e.preventDefault();
  void connect();
});
$("disconnect").addEventListener("click", () => {
  hideBanner();
  void teardown();
});
$("text-form").addEventListener("submit", (/** @type {Event} */ e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.client) return;
  interruptReply(state.client); // (a new user message supersedes a running response anyway)
  state.client.sendText(text);
  $("text").value = "";
});
$("stop").addEventListener("click", () => state.client && interruptReply(state.client));
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", async () => {
    $("talk").disabled = !state.client || mode() !== "ptt" || !state.mic;
    const client = state.client;
    if (!client || client.state !== "open") return;
    try {
      await client.updateSession({ turn_detection: turnDetection() });
      banner(mode() === "ptt" ? "Push-to-talk: hold the button (or the space bar) while you speak." : "Hands-free: just speak.", "info", 3000);
    } catch (error) {
      banner(`Could not change the turn mode: ${/** @type {any} */ (error)?.message ?? error}`, "error");
    }
  });
}
