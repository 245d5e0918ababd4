// RealtimeClient: one realtime session over a websocket, in browsers and in Node 20+.
//
// - Connects with a token (query parameter, cookie or, in Node, an Authorization header), in msgpack
//   (default) or JSON, and reads `session.created` before `connect()` resolves.
// - Server events come out as `on(type, fn)` callbacks and as an async iterator (`for await`).
// - Heartbeats: answers every server `ping` with a `pong`; sends its own `ping` every ping interval
//   (it gives the round-trip time) and treats a link with no inbound traffic for the server's
//   `ping_timeout_ms` as dead: it closes it and reconnects.
// - Reconnects with exponential backoff and jitter after an unexpected close. The server has no
//   session resume (docs/protocol.md §1: nothing survives a reconnect), so a reconnect starts a NEW
//   session with an empty history; the client re-applies the settings it was given and emits
//   "open" with `reconnected: true`. It tracks `sessionId` and `lastSeq` so that a future resume
//   (reconnect with the last seq seen) can be added in `_openSocket` without changing callers.

import { SUBPROTOCOLS, DecodeError, decodeEvent, encodeEvent } from "./codec.js";
import { Emitter } from "./emitter.js";
import * as build from "./events.js";

const DEFAULT_PING_INTERVAL_MS = 10_000;
const DEFAULT_PING_TIMEOUT_MS = 30_000;
const MAX_PING_TS = Number.MAX_SAFE_INTEGER;

/** Close codes after which reconnecting cannot help (fix the client or the credentials first). */
const FATAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010, 4003]);
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
    this.tokenTransport = options.tokenTransport ?? "query";
    /** @type {any} */
    this._WebSocket = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass one (e.g. `WebSocket` from the ws package)");
    }
    this._webSocketOptions = options.webSocketOptions ?? {};
    this.reconnectOptions = options.reconnect === false ? null : { ...RECONNECT_DEFAULTS, ...(options.reconnect ?? {}) };
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
    /** The seq of the last server event of the current session (for gap checks and a future resume). */
    this.lastSeq = 0;
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
  }

  // ---- events ---------------------------------------------------------------------------------

  /**
   * Listen to a server event type, "*" (every server event), or a lifecycle event: "open",
   * "close", "reconnecting", "seq_gap", "decode_error".
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
   * for good; it keeps going across reconnects (a new session starts with `session.created`).
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
      this._emitter.emit("close", { code, reason, willReconnect: false, byClient: true });
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

  /** @returns {Promise<string | undefined>} */
  async _resolveToken() {
    const token = this._token;
    return typeof token === "function" ? await token() : token;
  }

  /**
   * Open a socket, read session.created, apply the settings. Rejects with ConnectionError.
   * @param {boolean} reconnected
   * @returns {Promise<Session>}
   */
  async _openSession(reconnected) {
    const token = await this._resolveToken();
    const ws = this._openSocket(token);
    this._ws = ws;
    const first = await this._firstEvent(ws);
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
    this._setState("open");
    this._startHeartbeat();
    if (Object.keys(this.settings).length > 0) {
      await this._request(build.sessionUpdate(this.settings, this._id("c")), "session.updated");
    }
    this._emitter.emit("open", { session: this.session, reconnected });
    return /** @type {Session} */ (this.session);
  }

  /**
   * The websocket itself. Resume would go here: pass `this.sessionId` and `this.lastSeq`.
   * @param {string | undefined} token
   */
  _openSocket(token) {
    const url = new URL(this.url);
    /** @type {Record<string, any>} */
    const wsOptions = { ...this._webSocketOptions };
    if (token) {
      if (this.tokenTransport === "query") url.searchParams.set("access_token", token);
      else if (this.tokenTransport === "header") wsOptions.headers = { ...(wsOptions.headers ?? {}), Authorization: `Bearer ${token}` };
      else if (this.tokenTransport === "cookie") {
        const doc = /** @type {any} */ (globalThis).document;
        if (doc) doc.cookie = `access_token=${encodeURIComponent(token)}; path=${url.pathname}; SameSite=Strict`;
        else wsOptions.headers = { ...(wsOptions.headers ?? {}), Cookie: `access_token=${token}` };
      }
    }
    const protocols = [SUBPROTOCOLS[this.encoding]];
    const ws = Object.keys(wsOptions).length > 0 ? new this._WebSocket(url.href, protocols, wsOptions) : new this._WebSocket(url.href, protocols);
    ws.binaryType = "arraybuffer";
    return ws;
  }

  /**
   * Wait for the socket to open and its first event; wire the socket's handlers.
   * @param {any} ws
   * @returns {Promise<ServerEvent>}
   */
  _firstEvent(ws) {
    return new Promise((resolve, reject) => {
      let settled = false;
      /** @type {string | undefined} */
      let errorText;
      const timer = setTimeout(() => {
        fail(new ConnectionError(`no session.created within ${this.connectTimeoutMs} ms`, { code: 4000 }));
        try {
          ws.close(1000);
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
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          this._onEvent(event);
          resolve(event);
          return;
        }
        this._onEvent(event);
      });
      ws.addEventListener("close", (/** @type {{code: number, reason: string}} */ event) => {
        if (!settled) {
          const status = /Unexpected server response: (\d+)/.exec(errorText ?? "");
          const httpStatus = status ? Number(status[1]) : undefined;
          const fatal = httpStatus === 400 || httpStatus === 403 || (httpStatus === 401 && typeof this._token !== "function");
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
    if (event.type === "session.created") {
      this.session = event.session;
      this.sessionId = event.session.id;
      this.lastSeq = 0;
    } else if (event.type === "session.updated") {
      this.session = event.session;
    }
    if (typeof seq === "number") {
      if (this.lastSeq && seq !== this.lastSeq + 1) this._emitter.emit("seq_gap", { expected: this.lastSeq + 1, got: seq });
      this.lastSeq = seq;
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
    const willReconnect = !this._closing && !fatal && this.reconnectOptions !== null;
    this._teardown(new ConnectionError(`the connection closed (${code}${reason ? ` ${reason}` : ""})`, { code, reason, fatal }));
    this._emitter.emit("close", { code, reason, willReconnect, byClient: this._closing });
    if (willReconnect) {
      this._setState("reconnecting");
      this._scheduleReconnect();
    } else if (!this._closing) {
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
      this._setState("closed");
      this._emitter.emit("close", { code: 0, reason: "gave up reconnecting", willReconnect: false, byClient: false });
      this._endIterators();
      return;
    }
    const base = Math.min(options.maxDelayMs, options.initialDelayMs * options.factor ** (this._attempt - 1));
    const delayMs = Math.round(base * (1 - options.jitter + 2 * options.jitter * Math.random()));
    this._emitter.emit("reconnecting", { attempt: this._attempt, delayMs });
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
          this._setState("closed");
          this._emitter.emit("close", { code: error.code ?? 0, reason: error.message, willReconnect: false, byClient: false });
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
   * @param {string | readonly string[]} content
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
   * @param {string} text
   * @param {ResponseSettings} [overrides]
   */
  sendText(text, overrides) {
    const sent = this.send(build.conversationItemCreate("user", text, this._id("c")));
    return sent && this.send(build.responseCreate(overrides, this._id("c")));
  }

  /**
   * Send a user message, start a response and collect it to its `response.done`. Assumes no other
   * response starts meanwhile (no spoken turn in flight).
   * @param {string} text
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
        offAll();
        reject(new ConnectionError("the connection closed during the response", info));
      });
      const offAll = () => {
        offEvent();
        offClose();
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
   * is dropped) when not connected or when more than `maxBufferedBytes` wait in the socket.
   * @param {Uint8Array | Int16Array | ArrayBuffer} pcm16
   */
  appendAudio(pcm16) {
    if (this.bufferedAmount > this.maxBufferedBytes) return false;
    return this.send(build.inputAudioAppend(pcm16));
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
