// The browser's copy of @msgpack/msgpack (vendor/msgpack/) is exactly what `npm run vendor` makes
// from the locked dependency, and base64 matches Node's.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";

import { decodeBase64, encodeBase64 } from "../src/index.js";
import { vendorFiles, vendoredFiles } from "../scripts/vendor.js";

test("vendor/msgpack is up to date with node_modules (run `npm run vendor` after an upgrade)", () => {
  const want = vendorFiles();
  const have = vendoredFiles();
  assert.deepEqual([...have.keys()].sort(), [...want.keys()].sort());
  for (const [path, text] of want) assert.equal(have.get(path), text, `vendor/msgpack/${path} is stale`);
});

test("base64 encodes and decodes like Node's Buffer, for every length remainder", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = new Uint8Array(randomBytes(n));
    const text = encodeBase64(bytes);
    assert.equal(text, Buffer.from(bytes).toString("base64"));
    assert.deepEqual(decodeBase64(text), bytes);
  }
  const big = new Uint8Array(randomBytes(100_003));
  assert.equal(encodeBase64(big), Buffer.from(big).toString("base64"));
  for (const bad of ["A", "AB=C", "A===", "ab$d", "AAAA=AAA"]) assert.throws(() => decodeBase64(bad), TypeError, bad);
});
