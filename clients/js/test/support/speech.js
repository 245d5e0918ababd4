// Synthesized speech for the tests: Piper (the server's embedded voice) through tests/support/speech.py.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";

import { PYTHON, REPO_ROOT } from "./server.js";

const SCRIPT = `
import sys
from tests.support.speech import synthesize
sys.stdout.buffer.write(synthesize(sys.argv[1], int(sys.argv[2])).astype("<i2").tobytes())
`;

/**
 * Speech for `text` as PCM16 mono samples at `rate`.
 * @param {string} text
 * @param {number} rate
 * @returns {Int16Array}
 */
export function synthesize(text, rate) {
  const bytes = execFileSync(PYTHON, ["-c", SCRIPT, text, String(rate)], { cwd: REPO_ROOT, maxBuffer: 64 << 20 });
  return new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length >> 1).slice();
}

/**
 * `before` and `after` seconds of silence around `samples`.
 * @param {Int16Array} samples
 * @param {number} rate
 * @param {number} before
 * @param {number} after
 */
export function withSilence(samples, rate, before, after) {
  const out = new Int16Array(Math.round(before * rate) + samples.length + Math.round(after * rate));
  out.set(samples, Math.round(before * rate));
  return out;
}

/**
 * Write PCM16 mono samples as a WAV file.
 * @param {string} path
 * @param {Int16Array} samples
 * @param {number} rate
 */
export function writeWav(path, samples, rate) {
  const data = Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
  const header = Buffer.alloc(44);
  header.write("RIFF", 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write("WAVE", 8);
  header.write("fmt ", 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write("data", 36);
  header.writeUInt32LE(data.length, 40);
  writeFileSync(path, Buffer.concat([header, data]));
}

/**
 * Lower-case words without punctuation (for loose transcript checks).
 * @param {string} text
 */
export function words(text) {
  return text.toLowerCase().replace(/[^\p{L}\p{N}\s']/gu, " ").split(/\s+/).filter(Boolean);
}
