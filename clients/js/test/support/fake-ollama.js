// The scripted LLM of the Python tests (tests/support/fake_ollama.py: "story", "echo", "slow-<ms>",
// ...) as a child process, so that a test of the real server can have a reply on cue: the model name
// picks the script. It speaks the Ollama wire protocol; the server is pointed at it with
// REALTIME_OLLAMA_URL (and REALTIME_EMBEDDED_LLM=never).
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

import { PYTHON, REPO_ROOT, freePort } from "./server.js";

const SCRIPT = `
import sys
from tests.support.fake_ollama import FakeOllama
upstream = FakeOllama(int(sys.argv[1])).start()
print("ready", flush=True)
sys.stdin.read()  # until the test process closes the pipe (or dies)
upstream.stop()
`;

/** @returns {Promise<{url: string, stop: () => Promise<void>}>} */
export async function startFakeOllama() {
  const port = await freePort();
  const child = spawn(PYTHON, ["-c", SCRIPT, String(port)], { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "inherit"] });
  /** @type {Promise<number | null>} */
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  const lines = createInterface({ input: /** @type {import("node:stream").Readable} */ (child.stdout) });
  const ready = new Promise((resolve, reject) => {
    lines.on("line", (line) => line === "ready" && resolve(undefined));
    void exited.then((code) => reject(new Error(`the fake Ollama exited with ${code}`)));
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
