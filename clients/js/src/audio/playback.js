// The playback core, free of Web Audio so Node tests can drive it block by block: a jitter buffer of
// PCM16 chunks per assistant item, resampled to the output rate, rendered gaplessly, flushed at once,
// counting how much of each item was played. player-worklet.js runs it inside an AudioWorklet.
//
// States: "idle" (nothing queued) -> "buffering" (waiting for `startMs` of audio, or for the item's
// end) -> "playing". Running dry before an item's end is an underrun: silence, then buffering again.

import { Resampler, pcm16ToFloat } from "./resampler.js";

/** How many flushed or finished item ids are remembered (to drop their late chunks, report positions). */
const REMEMBERED_ITEMS = 32;

/**
 * @typedef {{type: "started" | "finished" | "underrun", itemId: string, playedMs: number}} PlaybackNotice
 */

export class PlaybackQueue {
  /**
   * @param {{outRate: number, startMs?: number, maxBufferMs?: number}} options outRate: the
   *   AudioContext's rate; startMs: audio buffered before an item starts (or resumes after an
   *   underrun); maxBufferMs: the most it holds (the server sends only ~300 ms ahead; more means the
   *   context is not playing), chunks beyond are dropped and counted in `overflowDrops`
   */
  constructor({ outRate, startMs = 80, maxBufferMs = 30_000 }) {
    this.outRate = outRate;
    this.startFrames = Math.round((outRate * startMs) / 1000);
    this.maxBufferFrames = Math.round((outRate * maxBufferMs) / 1000);
    this.overflowDrops = 0;
    /** @type {Array<{itemId: string, samples: Float32Array, offset: number}>} */
    this._segments = [];
    this._bufferedFrames = 0;
    /** @type {"idle" | "buffering" | "playing"} */
    this.state = "idle";
    /** item ids whose last chunk is in (`end`), until they finish */
    this._ended = new Set();
    /** frames played per item (the latest REMEMBERED_ITEMS items) @type {Map<string, number>} */
    this._played = new Map();
    /** items flushed: their late chunks are dropped @type {Set<string>} */
    this._dropped = new Set();
    /** @type {string | null} the item being played (or buffered to play next) */
    this.currentItemId = null;
    /** @type {Resampler | null} */
    this._resampler = null;
    /** @type {string | null} */
    this._resamplerItem = null;
    this._resamplerRate = 0;
    this.totalPlayedFrames = 0;
    this.underruns = 0;
    /** @type {PlaybackNotice[]} */
    this._notices = [];
  }

  /** Milliseconds of audio queued and not yet played. */
  get bufferedMs() {
    return (this._bufferedFrames * 1000) / this.outRate;
  }

  get totalPlayedMs() {
    return (this.totalPlayedFrames * 1000) / this.outRate;
  }

  /**
   * Milliseconds of `itemId`'s audio played so far (0 if unknown).
   * @param {string | null} itemId
   */
  playedMs(itemId) {
    return itemId === null ? 0 : ((this._played.get(itemId) ?? 0) * 1000) / this.outRate;
  }

  /**
   * Queue a chunk of an item's audio (PCM16 LE mono at `rate`). Chunks of a flushed item are dropped.
   * @param {string} itemId
   * @param {Int16Array | Uint8Array} pcm16
   * @param {number} rate
   * @returns {boolean} false when dropped
   */
  push(itemId, pcm16, rate) {
    if (this._dropped.has(itemId) || this._ended.has(itemId)) return false;
    if (this._bufferedFrames >= this.maxBufferFrames) {
      this.overflowDrops++;
      return false;
    }
    if (this._resamplerItem !== itemId || this._resamplerRate !== rate) {
      this._finishResampler();
      this._resampler = rate === this.outRate ? null : new Resampler(rate, this.outRate);
      this._resamplerItem = itemId;
      this._resamplerRate = rate;
    }
    const samples = pcm16ToFloat(pcm16);
    this._enqueue(itemId, this._resampler ? this._resampler.process(samples) : samples);
    if (!this._played.has(itemId)) this._remember(itemId, 0);
    if (this.state === "idle") this.state = "buffering";
    if (this.currentItemId === null) this.currentItemId = itemId;
    return true;
  }

  /**
   * No more audio will come for `itemId`: play what is queued without waiting for `startMs`.
   * @param {string} itemId
   */
  end(itemId) {
    if (this._resamplerItem === itemId) this._finishResampler();
    if (this._segments.some((s) => s.itemId === itemId)) {
      this._ended.add(itemId);
    } else if (this.currentItemId === itemId) {
      // everything was played already (it ran dry waiting for more): it is finished now
      this._notice("finished", itemId);
      this.currentItemId = this._segments[0]?.itemId ?? null;
      if (this.currentItemId === null) this.state = "idle";
    }
  }

  /**
   * Drop everything queued at once. Returns how much of `itemId` (default: the current item) was
   * played; later chunks of every flushed item are dropped.
   * @param {string | null} [itemId]
   * @returns {{itemId: string | null, playedMs: number}}
   */
  flush(itemId = this.currentItemId) {
    for (const segment of this._segments) this._drop(segment.itemId);
    if (this.currentItemId !== null) this._drop(this.currentItemId);
    if (itemId !== null) this._drop(itemId);
    this._segments = [];
    this._bufferedFrames = 0;
    this._ended.clear();
    this._resampler = null;
    this._resamplerItem = null;
    this.state = "idle";
    const result = { itemId, playedMs: this.playedMs(itemId) };
    this.currentItemId = null;
    return result;
  }

  /**
   * Fill one output block (silence where there is nothing to play).
   * @param {Float32Array} out
   */
  render(out) {
    out.fill(0);
    if (this.state === "buffering") {
      const head = this._segments[0];
      if (!head) {
        this.state = "idle";
        return;
      }
      if (this._bufferedFrames >= this.startFrames || this._ended.has(head.itemId)) {
        this.state = "playing";
        if ((this._played.get(head.itemId) ?? 0) === 0) this._notice("started", head.itemId);
      } else {
        return;
      }
    }
    if (this.state !== "playing") return;
    let written = 0;
    while (written < out.length) {
      const segment = this._segments[0];
      if (!segment) {
        const item = this.currentItemId;
        if (item !== null && this._ended.has(item)) {
          this._ended.delete(item);
          this._notice("finished", item);
          this.currentItemId = null;
          this.state = "idle";
        } else {
          this.underruns++;
          if (item !== null) this._notice("underrun", item);
          this.state = "buffering";
        }
        return;
      }
      if (segment.itemId !== this.currentItemId) {
        const previous = this.currentItemId;
        if (previous !== null && this._ended.has(previous)) {
          this._ended.delete(previous);
          this._notice("finished", previous);
        }
        this.currentItemId = segment.itemId;
        this._notice("started", segment.itemId);
      }
      const n = Math.min(out.length - written, segment.samples.length - segment.offset);
      out.set(segment.samples.subarray(segment.offset, segment.offset + n), written);
      written += n;
      segment.offset += n;
      this._bufferedFrames -= n;
      this.totalPlayedFrames += n;
      this._played.set(segment.itemId, (this._played.get(segment.itemId) ?? 0) + n);
      if (segment.offset === segment.samples.length) this._segments.shift();
    }
    // an item that ended exactly at the block's end finishes now, not one block late
    const item = this.currentItemId;
    if (item !== null && this._ended.has(item) && !this._segments.some((s) => s.itemId === item)) {
      this._ended.delete(item);
      this._notice("finished", item);
      this.currentItemId = this._segments[0]?.itemId ?? null;
      if (this.currentItemId === null) this.state = "idle";
    }
  }

  /**
   * Notices since the last call ("started", "finished", "underrun").
   * @returns {PlaybackNotice[]}
   */
  takeNotices() {
    return this._notices.splice(0);
  }

  /** @param {"started" | "finished" | "underrun"} type @param {string} itemId */
  _notice(type, itemId) {
    this._notices.push({ type, itemId, playedMs: this.playedMs(itemId) });
  }

  /** @param {string} itemId @param {Float32Array} samples */
  _enqueue(itemId, samples) {
    if (samples.length === 0) return;
    this._segments.push({ itemId, samples, offset: 0 });
    this._bufferedFrames += samples.length;
  }

  _finishResampler() {
    if (this._resampler && this._resamplerItem !== null) this._enqueue(this._resamplerItem, this._resampler.flush());
    this._resampler = null;
    this._resamplerItem = null;
  }

  /** @param {string} itemId */
  _drop(itemId) {
    this._dropped.add(itemId);
    if (this._dropped.size > REMEMBERED_ITEMS) this._dropped.delete(/** @type {string} */ (this._dropped.values().next().value));
  }

  /** @param {string} itemId @param {number} frames */
  _remember(itemId, frames) {
    this._played.set(itemId, frames);
    if (this._played.size > REMEMBERED_ITEMS) this._played.delete(/** @type {string} */ (this._played.keys().next().value));
  }
}
