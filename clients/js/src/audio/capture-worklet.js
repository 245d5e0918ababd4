// AudioWorklet processor "realtime-capture": microphone samples (at the AudioContext's rate) to PCM16
// mono frames at the session's input rate, resampled with a windowed-sinc filter. Posts
// {type: "frame", pcm: ArrayBuffer, level} every `frameMs` of output audio (the buffer is transferred).
// Loaded by mic.js with audioWorklet.addModule(); `sampleRate` is the AudioWorkletGlobalScope's.

import { Resampler, floatToPcm16 } from "./resampler.js";

class CaptureProcessor extends AudioWorkletProcessor {
  /** @param {{processorOptions: {targetRate: number, frameMs: number}}} options */
  constructor(options) {
    super();
    const { targetRate, frameMs } = options.processorOptions;
    this.resampler = new Resampler(Math.round(sampleRate), targetRate);
    this.frameSamples = Math.round((targetRate * frameMs) / 1000);
    this.frame = new Float32Array(this.frameSamples);
    this.fill = 0;
    this.stopped = false;
    this.port.onmessage = (message) => {
      if (message.data?.type === "stop") this.stopped = true;
    };
  }

  /** @param {Float32Array[][]} inputs */
  process(inputs) {
    const channels = inputs[0];
    if (this.stopped) return false;
    if (!channels || channels.length === 0) return true;
    let mono = channels[0];
    if (channels.length > 1) {
      mono = new Float32Array(mono.length);
      for (const channel of channels) for (let i = 0; i < channel.length; i++) mono[i] += channel[i] / channels.length;
    }
    const out = this.resampler.process(mono);
    for (let i = 0; i < out.length; i++) {
      this.frame[this.fill++] = out[i];
      if (this.fill === this.frameSamples) this.emit();
    }
    return true;
  }

  emit() {
    let sum = 0;
    for (let i = 0; i < this.frame.length; i++) sum += this.frame[i] * this.frame[i];
    const pcm = floatToPcm16(this.frame);
    this.port.postMessage({ type: "frame", pcm: pcm.buffer, level: Math.sqrt(sum / this.frame.length) }, [pcm.buffer]);
    this.fill = 0;
  }
}

registerProcessor("realtime-capture", CaptureProcessor);
