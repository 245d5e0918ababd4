// HS256 JWTs for the tests, with node:crypto only.
import { createHmac } from "node:crypto";

/** @param {string | Buffer} data */
function base64url(data) {
  return Buffer.from(data).toString("base64url");
}

/**
 * A token the server accepts: HS256, `sub` and `exp` (plus `iat`).
 * @param {string} secret at least 32 bytes
 * @param {{sub?: string, ttlS?: number, claims?: Record<string, unknown>}} [options]
 */
export function mintToken(secret, options = {}) {
  const { sub = "js-test", ttlS = 600, claims = {} } = options;
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(JSON.stringify({ sub, iat: now, exp: now + ttlS, ...claims }));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}
