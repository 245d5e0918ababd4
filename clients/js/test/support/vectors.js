// The shared protocol vectors (tests/vectors/*.json), with {"$bytes": base64} turned into Uint8Array.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { decodeBase64 } from "../../src/base64.js";

export const VECTORS_DIR = fileURLToPath(new URL("../../../../tests/vectors/", import.meta.url));

/**
 * @param {string} name a file in tests/vectors
 * @returns {Array<Record<string, any>>}
 */
export function loadVectors(name) {
  return JSON.parse(readFileSync(VECTORS_DIR + name, "utf8"));
}

/** @param {unknown} value @returns {any} */
export function untag(value) {
  if (Array.isArray(value)) return value.map(untag);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bytes") return decodeBase64(/** @type {any} */ (value).$bytes);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, untag(v)]));
  }
  return value;
}

/** @param {string} hex */
export function fromHex(hex) {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** @param {Uint8Array} bytes */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
