// AudioWorklet processor "realtime-player": plays assistant audio through a PlaybackQueue (jitter
// buffer, resampling to the context's rate, flush, played-position counting). Loaded by player.js.
//
// In:  {type: "push", itemId, pcm: ArrayBuffer, rate} | {type: "end", itemId} | {type: "flush", id, itemId?}
// Out: {type: "position", itemId, playedMs, bufferedMs, totalPlayedMs, underruns, state} every
//      `reportMs`, and at once {type: "started" | "finished" | "underrun", itemId, playedMs} and
//      {type: "flushed", id, itemId, playedMs}.

import { PlaybackQueue } from "./playback.js";

class PlayerProcessor extends AudioWorkletProcessor {
  /** @param {{processorOptions?: {startMs?: number, reportMs?: number}}} options */
  constructor(options) {
    super();
    const { startMs = 80, reportMs = 50 } = options.processorOptions ?? {};
    this.queue = new PlaybackQueue({ outRate: Math.round(sampleRate), startMs });
    this.reportFrames = Math.round((sampleRate * reportMs) / 1000);
    this.sinceReport = 0;
    this.reportedIdle = false;
    this.stopped = false;
    this.port.onmessage = (message) => this.onMessage(message.data);
  }

  /** @param {any} data */
  onMessage(data) {
    const queue = this.queue;
    if (data.type === "push") queue.push(data.itemId, new Int16Array(data.pcm), data.rate);
    else if (data.type === "end") queue.end(data.itemId);
    else if (data.type === "flush") {
      const { itemId, playedMs } = queue.flush(data.itemId ?? queue.currentItemId);
      this.port.postMessage({ type: "flushed", id: data.id, itemId, playedMs });
      this.report();
    } else if (data.type === "stop") this.stopped = true;
    this.sendNotices();
  }

  /** @param {Float32Array[][]} _inputs @param {Float32Array[][]} outputs */
  process(_inputs, outputs) {
    if (this.stopped) return false;
    const channels = outputs[0];
    this.queue.render(channels[0]);
    for (let c = 1; c < channels.length; c++) channels[c].set(channels[0]);
    this.sendNotices();
    this.sinceReport += channels[0].length;
    if (this.sinceReport >= this.reportFrames) this.report();
    return true;
  }

  sendNotices() {
    for (const notice of this.queue.takeNotices()) this.port.postMessage(notice);
  }

  report() {
    this.sinceReport = 0;
    const q = this.queue;
    if (q.state === "idle" && this.reportedIdle) return; // one report when it goes idle, then quiet
    this.reportedIdle = q.state === "idle";
    this.port.postMessage({
      type: "position",
      itemId: q.currentItemId,
      playedMs: q.playedMs(q.currentItemId),
      bufferedMs: q.bufferedMs,
      totalPlayedMs: q.totalPlayedMs,
      underruns: q.underruns,
      state: q.state,
    });
  }
}

registerProcessor("realtime-player", PlayerProcessor);
