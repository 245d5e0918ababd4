// The real server for the tests: `python -m realtime serve` as a child process on free ports, with
// the embedded LLM. REALTIME_TEST_URL (+ REALTIME_TEST_TOKEN) points the tests at a running server
// instead. REALTIME_TEST_PYTHON and REALTIME_TEST_SERVER_DIR override the interpreter and the
// directory the server runs from (default: the repository's .venv and root).

import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { mintToken } from "./jwt.js";

export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
export const PYTHON = process.env.REALTIME_TEST_PYTHON ?? join(REPO_ROOT, ".venv", "bin", "python");
const SECRET = "js-client-tests-" + "s".repeat(48);

/** @returns {Promise<number>} a free TCP port on 127.0.0.1 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => resolve(address.port));
    });
  });
}

/**
 * @typedef {{
 *   httpUrl: string,
 *   wsUrl: string,
 *   token: (sub?: string) => string,
 *   log: () => string,
 *   stop: () => Promise<void>,
 *   kill: () => Promise<void>,
 *   external: boolean,
 * }} TestServer
 */

/**
 * Start the server (or use REALTIME_TEST_URL). `env` adds REALTIME_* settings (REALTIME_PORT picks
 * the port, e.g. to start a server again where one was).
 * @param {Record<string, string>} [env]
 * @returns {Promise<TestServer>}
 */
export async function startServer(env = {}) {
  const external = process.env.REALTIME_TEST_URL;
  if (external) {
    const wsUrl = external.replace(/^http/, "ws").replace(/\/?$/, "").replace(/(\/ws)?$/, "/ws");
    const fixed = process.env.REALTIME_TEST_TOKEN;
    if (!fixed) throw new Error("REALTIME_TEST_URL needs REALTIME_TEST_TOKEN");
    return {
      httpUrl: wsUrl.replace(/^ws/, "http").replace(/\/ws$/, ""),
      wsUrl,
      token: () => fixed,
      log: () => "(external server)",
      stop: async () => {},
      kill: async () => {
        throw new Error("an external server cannot be killed by the tests");
      },
      external: true,
    };
  }
  if (!existsSync(PYTHON)) {
    throw new Error(`no Python environment at ${PYTHON}: run ./dev setup (or set REALTIME_TEST_PYTHON)`);
  }
  const port = env.REALTIME_PORT ? Number(env.REALTIME_PORT) : await freePort();
  const llmPort = await freePort();
  const base = mkdtempSync(join(tmpdir(), "realtime-js-"));
  const logPath = join(base, "server.log");
  const logFd = openSync(logPath, "a");
  const child = spawn(PYTHON, ["-m", "realtime", "serve"], {
    cwd: process.env.REALTIME_TEST_SERVER_DIR ?? REPO_ROOT,
    env: {
      ...process.env,
      REALTIME_HOST: "127.0.0.1",
      REALTIME_PORT: String(port),
      REALTIME_STATE_DIR: join(base, "state"),
      REALTIME_JWT_SECRET: SECRET,
      REALTIME_EMBEDDED_LLM: "always",
      REALTIME_EMBEDDED_LLM_PORT: String(llmPort),
      REALTIME_LOG_LEVEL: "INFO",
      REALTIME_DATABASE_URL: "none", // no PostgreSQL per test server (a killed run would leak one)
      ...env,
    },
    stdio: ["ignore", logFd, logFd],
    detached: true, // its own process group, so the embedded LLM child goes with it
  });
  closeSync(logFd);
  const log = () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
  const killGroup = () => {
    try {
      if (child.pid) process.kill(-child.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  };
  process.once("exit", killGroup);
  /** @type {Promise<number | null>} */
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  const httpUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}:\n${log().slice(-4000)}`);
    try {
      const response = await fetch(`${httpUrl}/healthz`);
      if (response.ok) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) {
      killGroup();
      throw new Error(`the server did not start within 90 s:\n${log().slice(-4000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  /** @param {NodeJS.Signals} signal */
  const stop = async (signal) => {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      try {
        process.kill(-child.pid, signal);
      } catch {
        /* gone */
      }
      const timer = setTimeout(killGroup, 20_000);
      await exited;
      clearTimeout(timer);
    }
    process.removeListener("exit", killGroup);
    rmSync(base, { recursive: true, force: true });
  };
  return {
    httpUrl,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    token: (sub = "js-test") => mintToken(SECRET, { sub }),
    log,
    external: false,
    /** SIGTERM: a graceful shutdown (sessions close with 1001). */
    stop: () => stop("SIGTERM"),
    /** SIGKILL: a crash; its links end without a close frame. */
    kill: () => stop("SIGKILL"),
  };
}
