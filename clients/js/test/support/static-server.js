// The page's HTTP side for the browser test, laid out as the server is asked to serve it:
//   /static/  -> realtime/static/      (the app)
//   /client/  -> clients/js/src/       (the library)
//   /vendor/  -> clients/js/vendor/    (@msgpack/msgpack ESM)
//   /ws       -> the real server's /ws, passed through byte for byte (the upgrade request keeps its
//                Host and Origin headers, so the page is same-origin exactly as when the server serves it)
import { createReadStream, statSync } from "node:fs";
import { createServer } from "node:http";
import { connect } from "node:net";
import { extname, join, normalize, sep } from "node:path";

import { REPO_ROOT } from "./server.js";

const MOUNTS = [
  ["/static/", join(REPO_ROOT, "realtime", "static")],
  ["/client/", join(REPO_ROOT, "clients", "js", "src")],
  ["/vendor/", join(REPO_ROOT, "clients", "js", "vendor")],
];

const TYPES = /** @type {Record<string, string>} */ ({
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
});

/**
 * @param {string} wsTarget ws://host:port/ws of the real server
 * @returns {Promise<{url: string, dropConnections: () => number, close: () => Promise<void>}>}
 */
export async function startStaticServer(wsTarget) {
  const target = new URL(wsTarget);
  /** @type {Set<import("node:net").Socket>} */
  const tunnels = new Set();
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname);
    for (const [prefix, dir] of MOUNTS) {
      if (!path.startsWith(prefix)) continue;
      const file = normalize(join(dir, path.slice(prefix.length) || "index.html"));
      if (!file.startsWith(dir + sep)) break;
      try {
        if (!statSync(file).isFile()) break;
      } catch {
        break;
      }
      response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
      createReadStream(file).pipe(response);
      return;
    }
    response.writeHead(404, { "content-type": "text/plain" });
    response.end("not found");
  });
  server.on("upgrade", (request, socket, head) => {
    if (!request.url?.startsWith("/ws")) {
      socket.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname, () => {
      const lines = [`${request.method} ${request.url} HTTP/1.1`];
      for (let i = 0; i < request.rawHeaders.length; i += 2) lines.push(`${request.rawHeaders[i]}: ${request.rawHeaders[i + 1]}`);
      upstream.write(lines.join("\r\n") + "\r\n\r\n");
      upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
    tunnels.add(socket);
    const drop = () => {
      tunnels.delete(socket);
      socket.destroy();
      upstream.destroy();
    };
    socket.on("close", drop);
    socket.on("error", drop);
    upstream.on("close", drop);
    upstream.on("error", drop);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const port = /** @type {import("node:net").AddressInfo} */ (server.address()).port;
  return {
    url: `http://127.0.0.1:${port}`,
    /** Cut every websocket link abruptly (no close frame), as a lost network would. */
    dropConnections() {
      const n = tunnels.size;
      for (const socket of [...tunnels]) socket.destroy();
      return n;
    },
    async close() {
      for (const socket of [...tunnels]) socket.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
}
