// MicCapture: the microphone (getUserMedia) through an AudioWorklet (capture-worklet.js) that resamples
// to the session's input rate and hands out PCM16 frames (20 ms by default), ready for
// `client.appendAudio()`.

/** Why the microphone could not start. */
export class MicrophoneError extends Error {
  /**
   * @param {"denied" | "not_found" | "busy" | "insecure_context" | "unsupported" | "failed"} reason
   * @param {string} message
   * @param {{cause?: unknown}} [options]
   */
  constructor(reason, message, options) {
    super(message, options);
    this.name = "MicrophoneError";
    this.reason = reason;
  }
}

/**
 * @param {unknown} error a getUserMedia rejection
 * @returns {MicrophoneError}
 */
export function microphoneError(error) {
  const name = /** @type {any} */ (error)?.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new MicrophoneError("denied", "Microphone access was denied. Allow it in the browser's site settings and try again.", { cause: error });
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return new MicrophoneError("not_found", "No microphone was found.", { cause: error });
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") {
    return new MicrophoneError("busy", "The microphone could not be started (is another program using it?).", { cause: error });
  }
  return new MicrophoneError("failed", `The microphone could not be started: ${/** @type {any} */ (error)?.message ?? error}`, { cause: error });
}

export class MicCapture {
  /**
   * Ask for the microphone and start capturing.
   * @param {{
   *   context: AudioContext,
   *   sampleRate?: number,
   *   frameMs?: number,
   *   echoCancellation?: boolean,
   *   noiseSuppression?: boolean,
   *   autoGainControl?: boolean,
   *   deviceId?: string,
   *   onFrame: (pcm16: Int16Array, level: number) => void,
   *   workletUrl?: string | URL,
   * }} options sampleRate: the session's input rate (24000); frameMs: frame length (20)
   * @returns {Promise<MicCapture>}
   */
  static async start(options) {
    const { context, sampleRate = 24_000, frameMs = 20, echoCancellation = true, noiseSuppression = true, autoGainControl = true } = options;
    const media = /** @type {any} */ (globalThis).navigator?.mediaDevices;
    if (!media?.getUserMedia) {
      throw new MicrophoneError("insecure_context", "The microphone needs a secure page (https:// or http://localhost).");
    }
    if (!context.audioWorklet) throw new MicrophoneError("unsupported", "This browser has no AudioWorklet.");
    /** @type {MediaTrackConstraints} */
    const audio = { echoCancellation, noiseSuppression, autoGainControl, channelCount: 1 };
    if (options.deviceId) audio.deviceId = { exact: options.deviceId };
    /** @type {MediaStream} */
    let stream;
    try {
      stream = await media.getUserMedia({ audio });
    } catch (error) {
      throw microphoneError(error);
    }
    try {
      await context.audioWorklet.addModule(options.workletUrl ?? new URL("./capture-worklet.js", import.meta.url));
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, "realtime-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        channelCount: 1,
        channelCountMode: "explicit",
        processorOptions: { targetRate: sampleRate, frameMs },
      });
      source.connect(node);
      return new MicCapture(stream, source, node, options.onFrame, sampleRate);
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      throw new MicrophoneError("failed", `The audio pipeline could not start: ${/** @type {any} */ (error)?.message ?? error}`, { cause: error });
    }
  }

  /**
   * @param {MediaStream} stream
   * @param {MediaStreamAudioSourceNode} source
   * @param {AudioWorkletNode} node
   * @param {(pcm16: Int16Array, level: number) => void} onFrame
   * @param {number} sampleRate
   */
  constructor(stream, source, node, onFrame, sampleRate) {
    this.stream = stream;
    this.source = source;
    this.node = node;
    this.sampleRate = sampleRate;
    /** RMS level (0..1) of the last frame. */
    this.level = 0;
    this.frames = 0;
    node.port.onmessage = (message) => {
      const data = message.data;
      if (data.type !== "frame") return;
      this.level = data.level;
      this.frames++;
      onFrame(new Int16Array(data.pcm), data.level);
    };
    const track = stream.getAudioTracks()[0];
    /** The settings the browser actually applied (echoCancellation, sampleRate, ...). */
    this.trackSettings = track ? track.getSettings() : {};
  }

  /** Stop capturing and release the microphone. */
  stop() {
    this.node.port.postMessage({ type: "stop" });
    this.source.disconnect();
    this.node.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}
