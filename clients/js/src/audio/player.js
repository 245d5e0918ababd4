// AudioPlayer: plays `response.audio.delta` PCM16 gaplessly through an AudioWorklet (player-worklet.js),
// flushes at once on interruption and tells the server what was heard (`conversation.item.truncate`).

import { Emitter } from "../emitter.js";
import { asBytes } from "../events.js";

/**
 * @typedef {import("../../index.js").RealtimeClient} RealtimeClient
 * @typedef {{itemId: string | null, playedMs: number, bufferedMs: number, totalPlayedMs: number, underruns: number, state: "idle" | "buffering" | "playing"}} PlayerPosition
 */

export class AudioPlayer {
  /**
   * Load the worklet and connect the player to the context's destination.
   * @param {BaseAudioContext} context
   * @param {{startMs?: number, reportMs?: number, workletUrl?: string | URL, destination?: AudioNode}} [options]
   *   startMs: jitter buffer before an item starts; reportMs: position report period
   * @returns {Promise<AudioPlayer>}
   */
  static async create(context, options = {}) {
    const url = options.workletUrl ?? new URL("./player-worklet.js", import.meta.url);
    await context.audioWorklet.addModule(url);
    const node = new AudioWorkletNode(context, "realtime-player", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { startMs: options.startMs ?? 80, reportMs: options.reportMs ?? 50 },
    });
    node.connect(options.destination ?? context.destination);
    return new AudioPlayer(context, node);
  }

  /**
   * @param {BaseAudioContext} context
   * @param {AudioWorkletNode} node
   */
  constructor(context, node) {
    this.context = context;
    this.node = node;
    this._emitter = new Emitter();
    /** @type {PlayerPosition} */
    this.position = { itemId: null, playedMs: 0, bufferedMs: 0, totalPlayedMs: 0, underruns: 0, state: "idle" };
    /** items with audio pushed and not finished or flushed */
    this._active = new Set();
    /** items whose audio was flushed: their late chunks are dropped */
    this._dropped = new Set();
    /** items that had audio (a truncate is only meaningful for those) */
    this._hadAudio = new Set();
    /** items already interrupted (one truncate each) */
    this._interrupted = new Set();
    this._flushId = 0;
    /** @type {Map<number, (result: {itemId: string | null, playedMs: number}) => void>} */
    this._flushes = new Map();
    node.port.onmessage = (message) => this._onMessage(message.data);
  }

  /**
   * "position" (about every 50 ms while playing), "started", "finished", "underrun", "flushed".
   * @param {string} type
   * @param {(event: any) => void} listener
   */
  on(type, listener) {
    return this._emitter.on(type, listener);
  }

  /** True while some item's audio is queued or playing. */
  get playing() {
    return this._active.size > 0;
  }

  /** Milliseconds played of all items since the player was made. */
  get totalPlayedMs() {
    return this.position.totalPlayedMs;
  }

  /**
   * Queue a chunk of an item's audio: PCM16 LE mono at `rate` Hz.
   * @param {string} itemId
   * @param {Uint8Array | Int16Array | ArrayBuffer} pcm16
   * @param {number} rate
   */
  push(itemId, pcm16, rate) {
    if (this._dropped.has(itemId)) return false;
    const bytes = asBytes(pcm16);
    const copy = bytes.slice(0, bytes.length & ~1).buffer; // whole samples, a buffer we can transfer
    this._active.add(itemId);
    remember(this._hadAudio, itemId);
    this.node.port.postMessage({ type: "push", itemId, pcm: copy, rate }, [copy]);
    return true;
  }

  /**
   * No more audio for this item: play out what is queued.
   * @param {string} itemId
   */
  end(itemId) {
    this.node.port.postMessage({ type: "end", itemId });
  }

  /**
   * Stop at once and drop what is queued. Resolves with how much of `itemId` (default: the item
   * playing) was played, in ms of that item's audio.
   * @param {string} [itemId]
   * @returns {Promise<{itemId: string | null, playedMs: number}>}
   */
  flush(itemId) {
    const id = ++this._flushId;
    if (itemId !== undefined) remember(this._dropped, itemId);
    for (const active of this._active) remember(this._dropped, active);
    this._active.clear();
    return new Promise((resolve) => {
      this._flushes.set(id, resolve);
      this.node.port.postMessage({ type: "flush", id, itemId });
    });
  }

  /** The context's output latency in ms (audio rendered but not yet out of the speaker). */
  get outputLatencyMs() {
    const context = /** @type {any} */ (this.context);
    const seconds = context.outputLatency || context.baseLatency || 0;
    return Number.isFinite(seconds) ? seconds * 1000 : 0;
  }

  /**
   * Stop an item's audio at once (default: the one playing) and, with a client, tell the server what
   * was heard (`conversation.item.truncate`). Once per item; resolves with what was heard (null when
   * the item had no audio or was already interrupted). Emits "interrupted".
   * @param {RealtimeClient | null} client
   * @param {string | null} [itemId]
   * @returns {Promise<{itemId: string, playedMs: number, heardMs: number} | null>}
   */
  async interrupt(client, itemId = this.position.itemId ?? [...this._active][0] ?? null) {
    if (itemId === null || this._interrupted.has(itemId) || !this._hadAudio.has(itemId)) return null;
    remember(this._interrupted, itemId);
    const { playedMs } = await this.flush(itemId);
    const heardMs = Math.max(0, Math.round(playedMs - this.outputLatencyMs));
    const result = { itemId, playedMs, heardMs };
    this._emitter.emit("interrupted", result);
    client?.truncate(itemId, heardMs);
    return result;
  }

  /**
   * Wire the player to a client: play its audio deltas, end items at `response.done`, and on an
   * interruption (`response.done` interrupted/cancelled, or `input_audio_buffer.speech_started`
   * while playing, unless the session's turn_detection.interrupt_response is false) flush and send
   * `conversation.item.truncate` with what was heard.
   * @param {RealtimeClient} client
   * @param {{truncate?: boolean, flushOnSpeechStarted?: boolean, defaultRate?: number}} [options]
   * @returns {() => void} detaches
   */
  attach(client, options = {}) {
    const { truncate = true, flushOnSpeechStarted = true, defaultRate = 24_000 } = options;
    /** @param {string} [itemId] */
    const interrupt = (itemId) => this.interrupt(truncate ? client : null, itemId);
    const offs = [
      client.on("response.audio.delta", (event) => {
        const rate = client.session?.output_audio_format?.sample_rate ?? defaultRate;
        this.push(event.item_id, event.audio, rate);
      }),
      client.on("response.done", (event) => {
        const { status, item_id: itemId } = event.response;
        if (status === "interrupted" || status === "cancelled") void interrupt(itemId);
        else this.end(itemId);
      }),
      client.on("input_audio_buffer.speech_started", () => {
        if (!flushOnSpeechStarted || !this.playing) return;
        if (client.session?.turn_detection?.interrupt_response === false) return;
        void interrupt();
      }),
      client.on("close", () => {
        if (this.playing) void this.flush();
      }),
    ];
    return () => offs.forEach((off) => off());
  }

  /** Stop the worklet and disconnect it. */
  close() {
    this.node.port.postMessage({ type: "stop" });
    this.node.disconnect();
  }

  /** @param {any} data */
  _onMessage(data) {
    if (data.type === "position") {
      this.position = data;
      this._emitter.emit("position", data);
    } else if (data.type === "flushed") {
      const resolve = this._flushes.get(data.id);
      this._flushes.delete(data.id);
      resolve?.({ itemId: data.itemId, playedMs: data.playedMs });
      this._emitter.emit("flushed", data);
    } else {
      if (data.type === "finished") this._active.delete(data.itemId);
      if (data.type === "started") this.position = { ...this.position, itemId: data.itemId, state: "playing" };
      this._emitter.emit(data.type, data);
    }
  }
}

/**
 * Add to a set that keeps only the latest 64 entries.
 * @param {Set<string>} set
 * @param {string} value
 */
function remember(set, value) {
  set.add(value);
  if (set.size > 64) set.delete(/** @type {string} */ (set.values().next().value));
}
