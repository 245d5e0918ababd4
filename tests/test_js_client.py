"""The JS client's own tests (clients/js/test, Node's test runner), run from pytest so one command covers them.

Each Node test file is one pytest test: the shared wire vectors, client behaviours on a fake server,
the audio cores, the vendored msgpack copy, sessions against the real server, session resume against
the real server (with the scripted LLM of tests/support/fake_ollama.py), and the browser app end to end
in Chromium. Node (>= 20) and Chromium (/usr/bin/chromium) are required, not optional: the
project's set-up (./dev test) installs them; without them these tests fail and say what is missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "clients" / "js"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
STAMP = JS / "node_modules" / ".realtime-lock-sha256"

# (file, pytest timeout in seconds)
NODE_TESTS = [
    ("vectors.test.js", 120),
    ("client.test.js", 120),
    ("audio.test.js", 120),
    ("vendor.test.js", 120),
    ("server.test.js", 600),
    ("resume.test.js", 300),
    ("app.test.js", 300),
    ("browser.test.js", 900),
]
BROWSER_TESTS = {"app.test.js", "browser.test.js"}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: the JS client tests need Node >= 20 (./dev test installs it)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"Node {version} is too old: the JS client needs Node >= 20")
    return node


@pytest.fixture(scope="module")
def node_modules() -> str:
    """`npm ci` in clients/js when node_modules is missing or older than package-lock.json; returns node."""
    node = _node()
    lock = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != lock:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not installed: the JS client tests need it to install their packages")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in clients/js:\n{done.stdout}\n{done.stderr}")
        STAMP.write_text(lock)
    return node


@pytest.mark.parametrize(
    ("name", "timeout"),
    [pytest.param(name, timeout, id=name, marks=pytest.mark.timeout(timeout + 60)) for name, timeout in NODE_TESTS],
)
def test_js_client(node_modules: str, name: str, timeout: int) -> None:
    """The Node test file passes (its output is shown when it does not)."""
    if name in BROWSER_TESTS and not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium (./dev test installs it)")
    env = {**os.environ, "REALTIME_TEST_PYTHON": sys.executable}
    try:
        done = subprocess.run(
            [node_modules, "--test", "--test-reporter=spec", f"test/{name}"],
            cwd=JS,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"node --test test/{name} ran over {timeout} s:\n{output[-20000:]}")
    if done.returncode != 0:
        pytest.fail(f"node --test test/{name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-20000:]}")
