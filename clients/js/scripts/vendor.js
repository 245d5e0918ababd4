// Copy the ESM build of @msgpack/msgpack from node_modules into vendor/msgpack/, so that browsers
// (which have no bundler here) can load it through the page's import map. `npm run vendor`.
// test/vendor.test.js fails while the committed copy differs from what this script would write.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PACKAGE = join(ROOT, "node_modules", "@msgpack", "msgpack");
export const VENDOR_DIR = join(ROOT, "vendor", "msgpack");

/** @param {string} dir @returns {string[]} */
function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? walk(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}

/**
 * What vendor/msgpack/ must hold: relative path -> content.
 * @returns {Map<string, string>}
 */
export function vendorFiles() {
  const version = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8")).version;
  const files = new Map();
  const dist = join(PACKAGE, "dist.esm");
  for (const path of walk(dist).filter((p) => p.endsWith(".mjs")).sort()) {
    const text = readFileSync(path, "utf8").replace(/^\/\/# sourceMappingURL=.*$/m, "").trimEnd() + "\n";
    files.set(relative(dist, path), text);
  }
  files.set("LICENSE", readFileSync(join(PACKAGE, "LICENSE"), "utf8"));
  files.set(
    "README.md",
    `@msgpack/msgpack ${version} (ISC licence, see LICENSE): its dist.esm/*.mjs, copied by \`npm run vendor\`\n` +
      "(clients/js/scripts/vendor.js) for browsers, which load it through the page's import map. Do not edit.\n",
  );
  return files;
}

/** @returns {Map<string, string>} what vendor/msgpack/ holds now */
export function vendoredFiles() {
  const files = new Map();
  try {
    for (const path of walk(VENDOR_DIR).sort()) files.set(relative(VENDOR_DIR, path), readFileSync(path, "utf8"));
  } catch {
    /* not there yet */
  }
  return files;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  rmSync(VENDOR_DIR, { recursive: true, force: true });
  for (const [path, text] of vendorFiles()) {
    mkdirSync(dirname(join(VENDOR_DIR, path)), { recursive: true });
    writeFileSync(join(VENDOR_DIR, path), text);
  }
  console.log(`vendored @msgpack/msgpack into ${relative(process.cwd(), VENDOR_DIR) || "."}`);
}
