// RealtimeClient: one realtime session over a websocket, in browsers and in Node 20+.
//
// - Connects with a token (query parameter, cookie or, in Node, an Authorization header) or a
//   single-use ticket (a function gives a fresh one per connection), in msgpack (default) or JSON,
//   and reads `session.created` before `connect()` resolves.
// - Server events come out as `on(type, fn)` callbacks and as an async iterator (`for await`).
// - Heartbeats: answers every server `ping` with a `pong`; sends its own `ping` every ping interval
//   (it gives the round-trip time) and treats a link with no inbound traffic for the server's
//   `ping_timeout_ms` as dead: it drops it (close code 4000, a lost link).
// - Session resume (docs/protocol.md §5.7): after a LOST link (1005/1006 without a close frame, 4000
//   ping timeout) it reconnects with backoff, within the session's `resume_grace_ms`, asking for the
//   same session (`resume`, `resume_secret`, `last_seq`): the server replays what was missed and sends
//   `session.resumed`; the app sees every event once, in order ("resumed"). Events whose `seq` the
//   client has already seen are dropped (defence in depth). If the server cannot resume, it answers
//   `error` `resume_failed` and a NEW session ("session_lost"); the settings are applied again.
// - Other unexpected closes (1011, 1013, ...) reconnect to a new session ("session_lost" too); clean
//   or deliberate ends (1000, 4002, 4003, protocol errors) do not reconnect. A server shutting down
//   (1001) or a slow-consumer close (4001) reconnects to a new session, as docs/protocol.md §9 allows.

import { SUBPROTOCOLS, DecodeError, decodeEvent, encodeEvent } from "./codec.js";
import { Emitter } from "./emitter.js";
import * as build from "./events.js";

const DEFAULT_PING_INTERVAL_MS = 10_000;
const DEFAULT_PING_TIMEOUT_MS = 30_000;
const MAX_PING_TS = Number.MAX_SAFE_INTEGER;

/** Close codes after which reconnecting cannot help (fix the client or the credentials first). */
const FATAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010, 4003]);
/**
 * Close codes that end the session on purpose: no reconnect. 1000 a clean close, 4002 the session was
 * resumed on another link (taking it back would make two links fight over it). A server shutting down
 * (1001: a restart or a deploy) and 4001 (this client fell behind) reconnect with backoff, to a new
 * session.
 */
const FINAL_CLOSE_CODES = new Set([1000, 4002]);
/** A link that ended like this was lost, not closed: the server keeps the session for a resume (§5.7). */
export const LOST_LINK_CODES = Object.freeze([1005, 1006, 4000]);
/** Our own close code for a link that went silent (same meaning as the server's 4000). */
export const CLOSE_DEAD_LINK = 4000;

/** An `error` event from the server, as a thrown value (for the promise-returning methods). */
export class RealtimeError extends Error {
  /** @param {{code: string, message: string, param?: string, event_id?: string, event_type?: string}} error */
  constructor(error) {
    super(error.message);
    this.name = "RealtimeError";
    this.code = error.code;
    this.param = error.param;
    this.eventId = error.event_id;
    this.eventType = error.event_type;
  }
}

/** The connection closed, or could not open. */
export class ConnectionError extends Error {
  /**
   * @param {string} message
   * @param {{code?: number, reason?: string, httpStatus?: number, fatal?: boolean}} [details]
   */
  constructor(message, details = {}) {
    super(message);
    this.name = "ConnectionError";
    this.code = details.code;
    this.reason = details.reason;
    this.httpStatus = details.httpStatus;
    this.fatal = details.fatal ?? false;
  }
}

/**
 * @typedef {import("../index.js").RealtimeClientOptions} RealtimeClientOptions
 * @typedef {import("../index.js").ReconnectOptions} ReconnectOptions
 * @typedef {import("../index.js").Session} Session
 * @typedef {import("../index.js").SessionSettings} SessionSettings
 * @typedef {import("../index.js").ResponseSettings} ResponseSettings
 * @typedef {import("../index.js").ResponseResult} ResponseResult
 * @typedef {import("../index.js").ServerEvent} ServerEvent
 * @typedef {import("../index.js").SessionLostReason} SessionLostReason
 * @typedef {{sessionId: string, secret: string, lastSeq: number}} ResumeTarget
 */

/** @type {Required<ReconnectOptions>} */
const RECONNECT_DEFAULTS = { initialDelayMs: 500, maxDelayMs: 15_000, factor: 2, jitter: 0.25, maxAttempts: Infinity };

export class RealtimeClient {
  /** @param {RealtimeClientOptions} options */
  constructor(options) {
    if (!options || !options.url) throw new TypeError("RealtimeClient needs a url");
    this.url = options.url;
    this.encoding = options.encoding ?? "msgpack";
    if (!(this.encoding in SUBPROTOCOLS)) throw new TypeError(`unknown encoding ${this.encoding}`);
    this._token = options.token;
    this._ticket = options.ticket;
    if (this._ticket !== undefined && typeof this._ticket !== "function") {
      throw new TypeError("ticket must be a function: a ticket is single-use, so every (re)connect needs a fresh one");
    }
    if (this._ticket !== undefined && this._token !== undefined) throw new TypeError("pass a token or a ticket, not both");
    this.tokenTransport = options.tokenTransport ?? "query";
    /** @type {any} */
    this._WebSocket = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass one (e.g. `WebSocket` from the ws package)");
    }
    this._webSocketOptions = options.webSocketOptions ?? {};
    this.reconnectOptions = options.reconnect === false ? null : { ...RECONNECT_DEFAULTS, ...(options.reconnect ?? {}) };
    /** Resume the session after a lost link (needs reconnecting on). */
    this.resumeEnabled = options.resume ?? true;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.pingIntervalMs = options.pingIntervalMs;
    this.pingTimeoutMs = options.pingTimeoutMs;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 4 << 20;
    this.maxQueuedEvents = options.maxQueuedEvents ?? 10_000;
    /** Settings sent after every (re)connect: the constructor's, merged with every updateSession(). */
    /** @type {SessionSettings} */
    this.settings = { ...(options.session ?? {}) };

    /** @type {"idle" | "connecting" | "open" | "reconnecting" | "closed"} */
    this.state = "idle";
    /** The session object of the last session.created / session.updated. @type {Session | null} */
    this.session = null;
    /** The id of the current (or last) session. @type {string | null} */
    this.sessionId = null;
    /** The newest seq seen of the current session: gap checks, duplicate drops, and what a resume asks after. */
    this.lastSeq = 0;
    /** The session's resume_secret (from session.created / .updated / .resumed). @type {string | null} */
    this.resumeSecret = null;
    /** How long the server keeps a lost session for a resume; null: resume off. @type {number | null} */
    this.resumeGraceMs = null;
    /** Server events dropped because their seq had been seen already (a replay overlapping what came). */
    this.duplicatesDropped = 0;
    /** appendAudio() frames dropped (not connected, or over maxBufferedBytes), and their bytes. */
    this.droppedAudioFrames = 0;
    this.droppedAudioBytes = 0;
    /** The last round trip of the client's own ping, in ms. @type {number | null} */
    this.rttMs = null;
    /** Server pings answered. */
    this.serverPings = 0;

    this._emitter = new Emitter();
    /** @type {any} */
    this._ws = null;
    this._nextId = 1;
    /** @type {Array<{eventId: string, answer: string, resolve: (e: any) => void, reject: (e: Error) => void}>} */
    this._pending = [];
    /** @type {Set<{push: (e: ServerEvent) => void, end: (error?: Error) => void}>} */
    this._iterators = new Set();
    /** @type {Map<string, number>} our ping event_id -> sent at (ms) */
    this._pings = new Map();
    this._lastInboundAt = 0;
    this._lastPingAt = 0;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._heartbeatTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._reconnectTimer = null;
    this._attempt = 0;
    this._closing = false;
    /** Until when (Date.now() ms) the lost session may be resumed; null: no resume pending. @type {number | null} */
    this._resumeUntil = null;
    /** Why a new session, if the next connection gives one, replaced the old one. @type {SessionLostReason} */
    this._lostReason = "not_resumable";
  }

  // ---- events ---------------------------------------------------------------------------------

  /**
   * Listen to a server event type, "*" (every server event), or a lifecycle event: "open",
   * "close", "reconnecting", "resumed", "session_lost", "state", "seq_gap", "decode_error".
   * @param {string} type
   * @param {(event: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    return this._emitter.on(type, listener);
  }

  /** @param {string} type @param {(event: any) => void} listener */
  off(type, listener) {
    this._emitter.off(type, listener);
  }

  /**
   * The next event of `type` (that `predicate` accepts). Rejects on timeout or when the client closes.
   * @param {string} type
   * @param {{predicate?: (event: any) => boolean, timeoutMs?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   */
  waitFor(type, options = {}) {
    const { predicate = () => true, timeoutMs, signal } = options;
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const cleanup = () => {
        offEvent();
        offClose();
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const offEvent = this.on(type, (event) => {
        if (!predicate(event)) return;
        cleanup();
        resolve(event);
      });
      const offClose = this.on("close", (info) => {
        if (info.willReconnect) return;
        cleanup();
        reject(new ConnectionError(`closed while waiting for ${type}`, info));
      });
      const onAbort = () => {
        cleanup();
        reject(signal?.reason ?? new Error("aborted"));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${type} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /**
   * Every server event from now on, in order, as an async iterator. It ends when the client closes
   * for good; it keeps going across reconnects (a resumed session goes on where it was, a new session
   * starts with `session.created`).
   * Holds at most `maxQueuedEvents` unread events: past that the iterator throws instead of growing.
   * @param {{types?: readonly string[]}} [options] only these types
   * @returns {AsyncIterableIterator<ServerEvent>}
   */
  events(options = {}) {
    const wanted = options.types ? new Set(options.types) : null;
    /** @type {ServerEvent[]} */
    const queue = [];
    /** @type {Array<{resolve: (r: IteratorResult<ServerEvent>) => void, reject: (e: Error) => void}>} */
    const waiters = [];
    let done = this.state === "closed";
    /** @type {Error | null} */
    let failure = null;
    const limit = this.maxQueuedEvents;
    const sink = {
      /** @param {ServerEvent} event */
      push: (event) => {
        if (done || (wanted && !wanted.has(event.type))) return;
        const waiter = waiters.shift();
        if (waiter) waiter.resolve({ value: event, done: false });
        else if (queue.length >= limit) sink.end(new Error(`event iterator overflow: more than ${limit} unread events`));
        else queue.push(event);
      },
      /** @param {Error} [error] */
      end: (error) => {
        if (done) return;
        done = true;
        failure = error ?? null;
        this._iterators.delete(sink);
        for (const waiter of waiters.splice(0)) {
          if (failure) waiter.reject(failure);
          else waiter.resolve({ value: undefined, done: true });
        }
      },
    };
    if (!done) this._iterators.add(sink);
    /** @type {AsyncIterableIterator<ServerEvent>} */
    const iterator = {
      next: () => {
        if (queue.length > 0) return Promise.resolve({ value: /** @type {ServerEvent} */ (queue.shift()), done: false });
        if (failure) {
          const error = failure;
          failure = null;
          return Promise.reject(error);
        }
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
      },
      return: () => {
        queue.length = 0;
        sink.end();
        failure = null;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** @returns {AsyncIterableIterator<ServerEvent>} */
  [Symbol.asyncIterator]() {
    return this.events();
  }

  // ---- connection -----------------------------------------------------------------------------

  /**
   * Open the session: resolves with the session object once `session.created` arrived and the
   * configured settings (if any) were applied. Rejects if the first connection fails (no retry:
   * reconnecting starts only after a session was open).
   * @returns {Promise<Session>}
   */
  async connect() {
    if (this.state === "open") return /** @type {Session} */ (this.session);
    if (this.state === "connecting" || this.state === "reconnecting") throw new Error("already connecting");
    this._closing = false;
    this._resumeUntil = null;
    this._setState("connecting");
    try {
      return await this._openSession(false);
    } catch (error) {
      // the first connection is not retried, even if its socket closed after session.created
      if (this._reconnectTimer !== null) clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
      const ws = this._ws;
      this._teardown(error instanceof Error ? error : new Error(String(error)));
      if (ws && ws.readyState <= 1) ws.close(1000);
      this._setState("closed");
      this._endIterators();
      throw error;
    }
  }

  /**
   * Close for good (no reconnect). Resolves when the socket has closed.
   * @param {number} [code] 1000 or 3000-4999
   * @param {string} [reason]
   */
  async close(code = 1000, reason = "") {
    this._closing = true;
    this._resumeUntil = null;
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const ws = this._ws;
    if (ws && ws.readyState <= 1) {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const closed = new Promise((resolve) => {
        ws.addEventListener("close", resolve, { once: true });
        timer = setTimeout(resolve, 2000); // a dead link never completes the closing handshake
      });
      ws.close(code, reason);
      await closed;
      clearTimeout(timer);
    }
    this._teardown(new ConnectionError("the client closed the connection", { code, reason, fatal: true }));
    if (this.state !== "closed") {
      this._setState("closed");
      this._emitter.emit("close", { code, reason, willReconnect: false, willResume: false, byClient: true });
    }
    this._endIterators();
  }

  /** Bytes queued in the socket and not yet sent (0 when not connected). */
  get bufferedAmount() {
    return this._ws ? this._ws.bufferedAmount : 0;
  }

  /** @param {"idle" | "connecting" | "open" | "reconnecting" | "closed"} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emitter.emit("state", { state });
  }

  /**
   * Credentials for one connection: a fresh ticket (single-use) or the token (a function is asked
   * again every time).
   * @returns {Promise<{token?: string, ticket?: string}>}
   */
  async _credentials() {
    if (this._ticket) return { ticket: await this._ticket() };
    const token = this._token;
    return { token: typeof token === "function" ? await token() : token };
  }

  /** Whether a refused handshake (HTTP 401) may succeed with the next credentials. */
  _freshCredentials() {
    return typeof this._token === "function" || this._ticket !== undefined;
  }

  /**
   * Open a socket and start or resume a session. A new session: read session.created, apply the
   * settings. A resume: the replayed events and session.resumed (handled as they come in).
   * Rejects with ConnectionError, or RealtimeError for a refusal event.
   * @param {boolean} reconnected
   * @returns {Promise<Session>}
   */
  async _openSession(reconnected) {
    const resume = this._resumeTarget();
    const previousSessionId = this.sessionId;
    const ws = this._openSocket(await this._credentials(), resume);
    this._ws = ws;
    const first = await this._handshake(ws, resume !== null);
    if (first.type === "session.resumed") return /** @type {Session} */ (this.session);
    if (first.type !== "session.created") {
      const error = first.type === "error" ? new RealtimeError(first.error) : new Error(`unexpected first event ${first.type}`);
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
      throw error;
    }
    this._attempt = 0;
    this._resumeUntil = null;
    this._setState("open");
    this._startHeartbeat();
    if (reconnected) {
      const reason = resume ? "resume_failed" : this._lostReason;
      this._emitter.emit("session_lost", { reason, previousSessionId, session: this.session });
    }
    if (Object.keys(this.settings).length > 0) {
      await this._request(build.sessionUpdate(this.settings, this._id("c")), "session.updated");
    }
    this._emitter.emit("open", { session: this.session, reconnected, resumed: false });
    return /** @type {Session} */ (this.session);
  }

  /**
   * What a resume asks for, while one may still work (else null, and a lapsed window is noted).
   * @returns {ResumeTarget | null}
   */
  _resumeTarget() {
    if (this._resumeUntil === null) return null;
    if (Date.now() >= this._resumeUntil || !this.sessionId || !this.resumeSecret) {
      this._resumeUntil = null;
      this._lostReason = "expired";
      return null;
    }
    return { sessionId: this.sessionId, secret: this.resumeSecret, lastSeq: this.lastSeq };
  }

  /**
   * The link ended with `code`: open the resume window if the server keeps the session for one.
   * @param {number} code
   * @returns {boolean} whether the next connection asks for a resume
   */
  _openResumeWindow(code) {
    const grace = this.resumeGraceMs;
    const resumable =
      this.resumeEnabled && LOST_LINK_CODES.includes(code) && this.sessionId !== null && this.resumeSecret !== null && grace !== null && grace > 0;
    this._resumeUntil = resumable ? Date.now() + /** @type {number} */ (grace) : null;
    this._lostReason = "not_resumable";
    return resumable;
  }

  /**
   * The websocket itself: credentials, and the resume parameters when resuming.
   * @param {{token?: string, ticket?: string}} credentials
   * @param {ResumeTarget | null} resume
   */
  _openSocket(credentials, resume) {
    const url = new URL(this.url);
    /** @type {Record<string, any>} */
    const wsOptions = { ...this._webSocketOptions };
    const { token, ticket } = credentials;
    if (ticket) url.searchParams.set("ticket", ticket);
    else if (token) {
      if (this.tokenTransport === "query") url.searchParams.set("access_token", token);
      else if (this.tokenTransport === "header") wsOptions.headers = { ...(wsOptions.headers ?? {}), Authorization: `Bearer ${token}` };
      else if (this.tokenTransport === "cookie") {
        const doc = /** @type {any} */ (globalThis).document;
        if (doc) doc.cookie = `access_token=${encodeURIComponent(token)}; path=${url.pathname}; SameSite=Strict`;
        else wsOptions.headers = { ...(wsOptions.headers ?? {}), Cookie: `access_token=${token}` };
      }
    }
    if (resume) {
      url.searchParams.set("resume", resume.sessionId);
      url.searchParams.set("resume_secret", resume.secret);
      url.searchParams.set("last_seq", String(resume.lastSeq));
    }
    const protocols = [SUBPROTOCOLS[this.encoding]];
    const ws = Object.keys(wsOptions).length > 0 ? new this._WebSocket(url.href, protocols, wsOptions) : new this._WebSocket(url.href, protocols);
    ws.binaryType = "arraybuffer";
    return ws;
  }

  /**
   * Wait for the socket to open and the event that starts the session on it; wire the socket's
   * handlers. Resolves with session.created (a new session), session.resumed (a resume: the events
   * replayed before it have been delivered, and the client is open again), or the first event that
   * is neither (a refusal such as too_many_sessions). On a resume link, `error` `resume_failed`
   * starts a new seq space: a new session's session.created follows it.
   * @param {any} ws
   * @param {boolean} resuming
   * @returns {Promise<ServerEvent>}
   */
  _handshake(ws, resuming) {
    return new Promise((resolve, reject) => {
      let settled = false;
      let replaying = resuming;
      let first = true;
      /** @type {string | undefined} */
      let errorText;
      const timer = setTimeout(() => {
        fail(new ConnectionError(`no session within ${this.connectTimeoutMs} ms`, { code: 4000 }));
        try {
          // a stalled resume is a lost link (4000: the server keeps the session); a clean close would end it
          ws.close(resuming ? CLOSE_DEAD_LINK : 1000);
        } catch {
          /* not open yet */
        }
      }, this.connectTimeoutMs);
      /** @param {Error} error */
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      };
      /** @param {ServerEvent} event */
      const settle = (event) => {
        settled = true;
        clearTimeout(timer);
        resolve(event);
      };
      ws.addEventListener("open", () => {
        if (ws.protocol && ws.protocol !== SUBPROTOCOLS[this.encoding]) {
          fail(new ConnectionError(`the server chose subprotocol ${ws.protocol}`, { fatal: true }));
          ws.close(1000);
        }
      });
      ws.addEventListener("error", (/** @type {any} */ event) => {
        errorText = event?.message ?? event?.error?.message;
      });
      ws.addEventListener("message", (/** @type {{data: any}} */ message) => {
        if (ws !== this._ws) return;
        const event = this._decode(message.data);
        if (!event) return;
        if (settled) {
          this._onEvent(event);
          return;
        }
        const resumeFailed = event.type === "error" && event.error?.code === "resume_failed";
        // a fresh link, or a refused resume, numbers from 1 again: nothing of it has been seen
        if ((first && !resuming) || resumeFailed) this.lastSeq = 0;
        first = false;
        if (resumeFailed) {
          replaying = false;
          this._resumeUntil = null; // the old session is gone: later attempts (if this one fails) start afresh
          this._lostReason = "resume_failed";
        }
        this._onEvent(event);
        if (event.type === "session.resumed") {
          settle(event);
          this._onResumed(event);
        } else if (event.type === "session.created" || !(replaying || resumeFailed)) {
          settle(event);
        }
      });
      ws.addEventListener("close", (/** @type {{code: number, reason: string}} */ event) => {
        if (!settled) {
          const status = /Unexpected server response: (\d+)/.exec(errorText ?? "");
          const httpStatus = status ? Number(status[1]) : undefined;
          const fatal = httpStatus === 400 || httpStatus === 403 || (httpStatus === 401 && !this._freshCredentials());
          const why = httpStatus
            ? `the server refused the connection (HTTP ${httpStatus})`
            : `the connection closed before the session started (${event.code}${errorText ? `: ${errorText}` : ""})`;
          fail(new ConnectionError(why, { code: event.code, reason: event.reason, httpStatus, fatal }));
          return;
        }
        if (ws === this._ws) this._onSocketClosed(event.code, event.reason);
      });
    });
  }

  /**
   * session.resumed: the replay is over and the link is live. Runs as the event is read, so the
   * lifecycle events come before any later server event.
   * @param {any} event
   */
  _onResumed(event) {
    this._attempt = 0;
    this._resumeUntil = null;
    this._setState("open");
    this._startHeartbeat();
    const replayedAfter = event.replayed_after;
    this._emitter.emit("resumed", { session: this.session, replayedAfter, replayed: Math.max(0, event.seq - replayedAfter - 1) });
    this._emitter.emit("open", { session: this.session, reconnected: true, resumed: true });
  }

  /**
   * @param {any} data
   * @returns {ServerEvent | null}
   */
  _decode(data) {
    this._lastInboundAt = Date.now();
    try {
      return /** @type {ServerEvent} */ (decodeEvent(data, this.encoding));
    } catch (error) {
      if (!(error instanceof DecodeError)) throw error;
      this._emitter.emit("decode_error", { error });
      return null;
    }
  }

  /** @param {ServerEvent} event */
  _onEvent(event) {
    const seq = /** @type {any} */ (event).seq;
    if (event.type === "session.created") this.lastSeq = 0; // a new session numbers from 1
    if (typeof seq === "number") {
      if (seq <= this.lastSeq) {
        this.duplicatesDropped++; // seen already (a replay overlapping what came): deliver once only
        return;
      }
      if (this.lastSeq && seq !== this.lastSeq + 1) this._emitter.emit("seq_gap", { expected: this.lastSeq + 1, got: seq });
      this.lastSeq = seq;
    }
    if (event.type === "session.created" || event.type === "session.updated" || event.type === "session.resumed") {
      this._adoptSession(event.session);
    }
    if (event.type === "ping") {
      this.serverPings++;
      this.send(build.pong(event.ts));
    } else if (event.type === "pong" && event.reply_to !== undefined) {
      const sentAt = this._pings.get(event.reply_to);
      if (sentAt !== undefined) {
        this._pings.delete(event.reply_to);
        this.rttMs = Date.now() - sentAt;
      }
    }
    this._settlePending(event);
    this._emitter.emit(event.type, event, true);
    for (const sink of [...this._iterators]) sink.push(event);
  }

  /** @param {Session} session */
  _adoptSession(session) {
    this.session = session;
    this.sessionId = session.id;
    this.resumeSecret = typeof session.resume_secret === "string" ? session.resume_secret : null;
    this.resumeGraceMs = typeof session.resume_grace_ms === "number" ? session.resume_grace_ms : null;
  }

  /** @param {ServerEvent} event */
  _settlePending(event) {
    if (event.type === "pong") {
      const index = this._pending.findIndex((p) => p.eventId === event.reply_to);
      if (index >= 0) this._pending.splice(index, 1)[0].resolve(event);
      return;
    }
    if (event.type === "error") {
      const id = event.error.event_id;
      const index = id === undefined ? -1 : this._pending.findIndex((p) => p.eventId === id);
      if (index >= 0) this._pending.splice(index, 1)[0].reject(new RealtimeError(event.error));
      return;
    }
    const index = this._pending.findIndex((p) => p.answer === event.type);
    if (index >= 0) this._pending.splice(index, 1)[0].resolve(event);
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  _onSocketClosed(code, reason) {
    if (this._closing) {
      this._teardown(new ConnectionError("the client closed the connection", { code, reason, fatal: true }));
      return; // close() reports it
    }
    const fatal = FATAL_CLOSE_CODES.has(code);
    const willReconnect = !fatal && !FINAL_CLOSE_CODES.has(code) && this.reconnectOptions !== null;
    const willResume = willReconnect && this._openResumeWindow(code);
    this._teardown(new ConnectionError(`the connection closed (${code}${reason ? ` ${reason}` : ""})`, { code, reason, fatal }));
    this._emitter.emit("close", { code, reason, willReconnect, willResume, byClient: false });
    if (willReconnect) {
      this._setState("reconnecting");
      this._scheduleReconnect();
    } else {
      this._resumeUntil = null;
      this._setState("closed");
      this._endIterators();
    }
  }

  /** Stop timers, forget the socket, reject what waited on it. @param {Error} error */
  _teardown(error) {
    this._stopHeartbeat();
    this._ws = null;
    this._pings.clear();
    for (const pending of this._pending.splice(0)) pending.reject(error);
  }

  _endIterators() {
    for (const sink of [...this._iterators]) sink.end();
  }

  _scheduleReconnect() {
    const options = /** @type {Required<ReconnectOptions>} */ (this.reconnectOptions);
    this._attempt++;
    if (this._attempt > options.maxAttempts) {
      this._resumeUntil = null;
      this._setState("closed");
      this._emitter.emit("close", { code: 0, reason: "gave up reconnecting", willReconnect: false, willResume: false, byClient: false });
      this._endIterators();
      return;
    }
    const base = Math.min(options.maxDelayMs, options.initialDelayMs * options.factor ** (this._attempt - 1));
    let delayMs = Math.round(base * (1 - options.jitter + 2 * options.jitter * Math.random()));
    const resume = this._resumeUntil !== null && Date.now() < this._resumeUntil;
    // a resume must land within the server's grace: never wait past its end (then a new session)
    if (resume) delayMs = Math.min(delayMs, Math.max(0, /** @type {number} */ (this._resumeUntil) - Date.now() - 1));
    this._emitter.emit("reconnecting", { attempt: this._attempt, delayMs, resume });
    this._reconnectTimer = setTimeout(async () => {
      this._reconnectTimer = null;
      if (this._closing) return;
      try {
        await this._openSession(true);
      } catch (error) {
        // closed meanwhile, or its socket closed after session.created and that already rescheduled
        if (this._closing || this._reconnectTimer !== null || this.state === "closed") return;
        const fatal = error instanceof ConnectionError && error.fatal;
        if (this._ws) {
          // a socket opened but the session failed (e.g. a refused setting): drop it quietly
          const ws = this._ws;
          this._ws = null;
          try {
            ws.close(1000);
          } catch {
            /* ignore */
          }
        }
        this._stopHeartbeat();
        if (fatal) {
          this._resumeUntil = null;
          this._setState("closed");
          this._emitter.emit("close", { code: error.code ?? 0, reason: error.message, willReconnect: false, willResume: false, byClient: false });
          this._endIterators();
        } else {
          this._scheduleReconnect();
        }
      }
    }, delayMs);
  }

  // ---- heartbeat ------------------------------------------------------------------------------

  _heartbeatConfig() {
    const session = this.session;
    const interval = this.pingIntervalMs ?? session?.ping_interval_ms ?? DEFAULT_PING_INTERVAL_MS;
    const timeout = this.pingTimeoutMs ?? session?.ping_timeout_ms ?? DEFAULT_PING_TIMEOUT_MS;
    return { interval, timeout };
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    const { interval, timeout } = this._heartbeatConfig();
    this._lastInboundAt = Date.now();
    this._lastPingAt = Date.now();
    const tick = Math.max(50, Math.min(1000, interval / 4, timeout / 4));
    this._heartbeatTimer = setInterval(() => {
      const now = Date.now();
      if (now - this._lastInboundAt > timeout) {
        this._deadLink();
        return;
      }
      if (now - this._lastPingAt >= interval) this.ping().catch(() => {});
    }, tick);
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer !== null) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  /** Nothing came in for ping_timeout: give the socket up at once and reconnect. */
  _deadLink() {
    const ws = this._ws;
    if (!ws) return;
    // Forget the socket first, so its own close event (maybe much later, on a dead link) is ignored.
    this._onSocketClosed(CLOSE_DEAD_LINK, "ping timeout");
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(CLOSE_DEAD_LINK, "ping timeout");
    } catch {
      /* ignore */
    }
  }

  // ---- sending --------------------------------------------------------------------------------

  /** @param {string} prefix */
  _id(prefix) {
    return `${prefix}${this._nextId++}`;
  }

  /**
   * Send one client event as it is. Returns false (and sends nothing) when not connected.
   * @param {Record<string, unknown>} event
   * @returns {boolean}
   */
  send(event) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(encodeEvent(event, this.encoding));
    return true;
  }

  /**
   * Send an event and resolve with the next server event of type `answer` (rejects with the
   * `error` that names this event's event_id, or when the connection closes).
   * @param {Record<string, unknown>} event with an event_id
   * @param {string} answer
   * @returns {Promise<any>}
   */
  _request(event, answer) {
    return new Promise((resolve, reject) => {
      if (!this.send(event)) {
        reject(new ConnectionError("not connected"));
        return;
      }
      this._pending.push({ eventId: String(event.event_id), answer, resolve, reject });
    });
  }

  /**
   * session.update; resolves with the whole session object after the change. The change is also
   * kept and re-applied after a reconnect.
   * @param {SessionSettings} settings
   * @returns {Promise<Session>}
   */
  async updateSession(settings) {
    const event = await this._request(build.sessionUpdate(settings, this._id("c")), "session.updated");
    Object.assign(this.settings, settings);
    return event.session;
  }

  /**
   * conversation.item.create; resolves with the created item.
   * @param {"user" | "assistant" | "system"} role
   * @param {string | readonly import("../index.js").ContentInput[]} content
   */
  async createItem(role, content) {
    const event = await this._request(build.conversationItemCreate(role, content, this._id("c")), "conversation.item.created");
    return event.item;
  }

  /**
   * response.create (with per-response overrides). Returns the event_id it was sent with, or null
   * when not connected.
   * @param {ResponseSettings} [overrides]
   */
  createResponse(overrides) {
    const eventId = this._id("c");
    return this.send(build.responseCreate(overrides, eventId)) ? eventId : null;
  }

  /**
   * A user message and a response.create (conversation.item.create + response.create). Returns
   * false when not connected. Use `ask()` to wait for the reply.
   * @param {string | readonly import("../index.js").ContentInput[]} text a message, or its parts (text, images)
   * @param {ResponseSettings} [overrides]
   */
  sendText(text, overrides) {
    const sent = this.send(build.conversationItemCreate("user", text, this._id("c")));
    return sent && this.send(build.responseCreate(overrides, this._id("c")));
  }

  /**
   * Send a user message, start a response and collect it to its `response.done`. Assumes no other
   * response starts meanwhile (no spoken turn in flight). A lost link does not stop it once the
   * response exists (`response.created` came): the resume delivers the rest. It rejects when the
   * link closes before that (it is unknown whether the server got the request), when the session
   * cannot be resumed (`session_lost`), or when the client closes for good.
   * @param {string | readonly import("../index.js").ContentInput[]} text a message, or its parts (text, images)
   * @param {ResponseSettings} [overrides]
   * @returns {Promise<ResponseResult>}
   */
  ask(text, overrides) {
    const itemEventId = this._id("c");
    const responseEventId = this._id("c");
    return new Promise((resolve, reject) => {
      /** @type {string | null} */
      let responseId = null;
      /** @type {ServerEvent[]} */
      const events = [];
      const text_ = /** @type {string[]} */ ([]);
      const reasoning = /** @type {string[]} */ ([]);
      const audio = /** @type {Uint8Array[]} */ ([]);
      const offEvent = this.on("*", (/** @type {any} */ event) => {
        if (event.type === "error" && (event.error.event_id === itemEventId || event.error.event_id === responseEventId)) {
          offAll();
          reject(new RealtimeError(event.error));
          return;
        }
        if (event.type === "response.created" && responseId === null) responseId = event.response.id;
        const id = event.response_id ?? event.response?.id;
        if (responseId === null || id !== responseId) return;
        events.push(event);
        if (event.type === "response.text.delta") text_.push(event.delta);
        else if (event.type === "response.reasoning.delta") reasoning.push(event.delta);
        else if (event.type === "response.audio.delta") audio.push(event.audio);
        else if (event.type === "response.done") {
          offAll();
          resolve({
            responseId,
            itemId: event.response.item_id,
            text: text_.join(""),
            reasoning: reasoning.join(""),
            status: event.response.status,
            done: event.response,
            audio: concatBytes(audio),
            events,
          });
        }
      });
      const offClose = this.on("close", (info) => {
        if (info.willResume && responseId !== null) return; // the session lives on: the rest comes with the resume
        offAll();
        reject(new ConnectionError("the connection closed during the response", info));
      });
      const offLost = this.on("session_lost", (info) => {
        offAll();
        reject(new ConnectionError(`the session was lost during the response (${info.reason}): a new one started`));
      });
      const offAll = () => {
        offEvent();
        offClose();
        offLost();
      };
      const sent =
        this.send(build.conversationItemCreate("user", text, itemEventId)) && this.send(build.responseCreate(overrides, responseEventId));
      if (!sent) {
        offAll();
        reject(new ConnectionError("not connected"));
      }
    });
  }

  /**
   * response.cancel (the running response, or the one named).
   * @param {string} [responseId]
   */
  cancelResponse(responseId) {
    return this.send(build.responseCancel(responseId, this._id("c")));
  }

  /**
   * input_audio_buffer.append: PCM16 LE mono at the session's input rate. Returns false (the frame
   * is dropped, and counted in `droppedAudioFrames` / `droppedAudioBytes`) when not connected — also
   * while reconnecting or resuming: audio is never queued for later, so nothing stale is sent after
   * a reconnect and nothing grows without bound — or when more than `maxBufferedBytes` wait in the
   * socket.
   * @param {Uint8Array | Int16Array | ArrayBuffer} pcm16
   */
  appendAudio(pcm16) {
    if (this.bufferedAmount <= this.maxBufferedBytes && this.send(build.inputAudioAppend(pcm16))) return true;
    this.droppedAudioFrames++;
    this.droppedAudioBytes += build.asBytes(pcm16).byteLength;
    return false;
  }

  /** input_audio_buffer.commit (push-to-talk: the buffered audio is the user's turn). */
  commitAudio() {
    return this.send(build.inputAudioCommit(this._id("c")));
  }

  /** input_audio_buffer.clear */
  clearAudio() {
    return this.send(build.inputAudioClear(this._id("c")));
  }

  /**
   * conversation.item.truncate: how much of an assistant item's audio was heard.
   * @param {string} itemId
   * @param {number} audioEndMs
   */
  truncate(itemId, audioEndMs) {
    return this.send(build.conversationItemTruncate(itemId, audioEndMs, this._id("c")));
  }

  /**
   * The client's own ping; resolves with the round trip in ms.
   * @returns {Promise<number>}
   */
  ping() {
    const eventId = this._id("p");
    const sentAt = Date.now();
    this._lastPingAt = sentAt;
    this._pings.set(eventId, sentAt);
    if (this._pings.size > 16) this._pings.delete(/** @type {string} */ (this._pings.keys().next().value));
    const ts = Math.min(sentAt, MAX_PING_TS);
    return this._request(build.ping(ts, eventId), "pong").then(() => Date.now() - sentAt);
  }
}

/** @param {Uint8Array[]} parts */
function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
