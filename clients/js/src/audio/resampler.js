// A streaming windowed-sinc resampler (Kaiser window, fine-grained kernel table with linear
// interpolation between its phases) for any pair of integer rates: 48 kHz -> 24 kHz for the
// microphone, 24 kHz -> 48 kHz for playback. Plain JS with no DOM use, so the same module runs in an
// AudioWorklet and in Node's tests.
//
// Time is kept exactly: output sample n sits at input position n * M / L (L/M = out/in reduced), as an
// integer index plus a numerator over L, so nothing drifts over a long session.

/** @param {number} a @param {number} b */
function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Zeroth-order modified Bessel function of the first kind (series; converges fast for x < 50). */
/** @param {number} x */
function besselI0(x) {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

export class Resampler {
  /**
   * @param {number} inRate input sample rate (Hz, integer)
   * @param {number} outRate output sample rate (Hz, integer)
   * @param {{zeroCrossings?: number, phases?: number, rolloff?: number, beta?: number}} [options]
   *   zeroCrossings: kernel half-length in zero crossings (quality vs cost); phases: table steps per
   *   zero crossing; rolloff: cutoff as a fraction of the lower Nyquist frequency; beta: Kaiser beta.
   */
  constructor(inRate, outRate, options = {}) {
    if (!Number.isInteger(inRate) || !Number.isInteger(outRate) || inRate <= 0 || outRate <= 0) {
      throw new RangeError(`sample rates must be positive integers, got ${inRate} and ${outRate}`);
    }
    const { zeroCrossings = 16, phases = 512, rolloff = 0.92, beta = 8.6 } = options;
    this.inRate = inRate;
    this.outRate = outRate;
    const g = gcd(inRate, outRate);
    /** output steps per `_m` input samples */
    this._l = outRate / g;
    this._m = inRate / g;
    this.passthrough = inRate === outRate;
    // cutoff relative to the input Nyquist frequency; the kernel is fc * sinc(fc * d), d in input samples
    this._fc = Math.min(1, outRate / inRate) * rolloff;
    this._zeroCrossings = zeroCrossings;
    this._phases = phases;
    /** half-width of the kernel, in input samples */
    this.halfWidth = zeroCrossings / this._fc;
    const size = zeroCrossings * phases + 2;
    this._table = new Float64Array(size);
    const norm = besselI0(beta);
    for (let i = 0; i < size; i++) {
      const u = i / phases; // in zero crossings, 0 .. zeroCrossings
      const r = u / zeroCrossings;
      const window = r >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / norm;
      const sinc = u === 0 ? 1 : Math.sin(Math.PI * u) / (Math.PI * u);
      this._table[i] = this._fc * sinc * window;
    }
    /** input history; _buf[0] is input sample number _bufStart (negative: the zero padding) */
    this._buf = new Float32Array(0);
    this._bufLen = 0;
    this._bufStart = 0;
    /** integer part and numerator (over _l) of the next output sample's input position */
    this._pos = 0;
    this._frac = 0;
    this.reset();
  }

  /** Forget the stream (history and position), as at construction. */
  reset() {
    const pad = Math.ceil(this.halfWidth) + 1;
    this._buf = new Float32Array(Math.max(4096, pad * 4));
    this._bufLen = pad;
    this._bufStart = -pad;
    this._pos = 0;
    this._frac = 0;
  }

  /**
   * Latency of the filter in output samples (what `flush` drains).
   * @returns {number}
   */
  get delay() {
    return Math.ceil((this.halfWidth * this.outRate) / this.inRate);
  }

  /**
   * Resample the next block of the stream. Returns the output samples that are ready now.
   * @param {Float32Array} input
   * @returns {Float32Array}
   */
  process(input) {
    if (this.passthrough) return Float32Array.from(input);
    this._append(input);
    const hw = this.halfWidth;
    const l = this._l;
    const m = this._m;
    const fcp = this._fc * this._phases;
    const table = this._table;
    const tableMax = this._zeroCrossings * this._phases;
    const buf = this._buf;
    const start = this._bufStart;
    const end = start + this._bufLen; // first input index not yet available
    // an upper bound on the outputs ready now (the loop stops at the exact one)
    const available = Math.max(0, Math.ceil(((end - hw - this._pos) * l - this._frac) / m) + 1);
    const out = new Float32Array(available);
    let n = 0;
    /** @type {number} */
    let pos = this._pos;
    /** @type {number} */
    let frac = this._frac;
    while (n < available) {
      const t = pos + frac / l;
      if (Math.floor(t + hw) >= end) break;
      const lo = Math.max(start, Math.ceil(t - hw));
      const hi = Math.floor(t + hw);
      let acc = 0;
      for (let j = lo; j <= hi; j++) {
        const x = Math.abs(t - j) * fcp;
        const i = x | 0;
        if (i >= tableMax) continue;
        const w = table[i] + (table[i + 1] - table[i]) * (x - i);
        acc += buf[j - start] * w;
      }
      out[n++] = acc;
      frac += m;
      pos += Math.floor(frac / l);
      frac %= l;
    }
    this._pos = pos;
    this._frac = frac;
    this._discard();
    return n === available ? out : out.subarray(0, n);
  }

  /**
   * The tail still held by the filter (its delay), as if the stream were followed by silence; the
   * stream is reset afterwards.
   * @returns {Float32Array}
   */
  flush() {
    if (this.passthrough) return new Float32Array(0);
    const tail = this.process(new Float32Array(Math.ceil(this.halfWidth) + 2));
    const wanted = Math.min(tail.length, this.delay);
    this.reset();
    return tail.subarray(0, wanted);
  }

  /** @param {Float32Array} input */
  _append(input) {
    /** @type {number} */
    const need = this._bufLen + input.length;
    if (need > this._buf.length) {
      const grown = new Float32Array(Math.max(need, this._buf.length * 2));
      grown.set(this._buf.subarray(0, this._bufLen));
      this._buf = grown;
    }
    this._buf.set(input, this._bufLen);
    this._bufLen = need;
  }

  /** Drop input samples no future output needs. */
  _discard() {
    const keepFrom = Math.ceil(this._pos - this.halfWidth) - 1;
    const drop = keepFrom - this._bufStart;
    if (drop <= 0) return;
    if (drop >= this._bufLen) {
      this._bufStart += this._bufLen;
      this._bufLen = 0;
      return;
    }
    this._buf.copyWithin(0, drop, this._bufLen);
    this._bufLen -= drop;
    this._bufStart += drop;
  }
}

/**
 * Float samples (-1..1) to PCM16 little-endian bytes, clipped.
 * @param {Float32Array} samples
 * @param {Int16Array} [out] where to write (same length); a new array when absent
 * @returns {Int16Array}
 */
export function floatToPcm16(samples, out = new Int16Array(samples.length)) {
  for (let i = 0; i < samples.length; i++) {
    const v = Math.round(samples[i] * 32768);
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

/**
 * PCM16 (an Int16Array, or little-endian bytes) to float samples.
 * @param {Int16Array | Uint8Array} pcm
 * @returns {Float32Array}
 */
export function pcm16ToFloat(pcm) {
  const samples =
    pcm instanceof Int16Array
      ? pcm
      : pcm.byteOffset % 2 === 0
        ? new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length >> 1)
        : new Int16Array(pcm.slice().buffer, 0, pcm.length >> 1);
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}
