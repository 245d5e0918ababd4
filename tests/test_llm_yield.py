"""The embedded LLM pauses between tokens while a reply's first piece is synthesized (yield_gate.py).

The gate itself across two real processes, the real endpoint's token loop obeying it, and the real server
creating it for the LLM it starts and holding it for a spoken reply.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from realtime.client import RealtimeClient
from realtime.local_ollama.yield_gate import LONGEST_WAIT, LlmYield, YieldGate
from tests.conftest import ServerFactory
from tests.support.local_ollama import LocalOllamaProcess, start_local_ollama
from tests.support.server import ServerProcess

WAITER = """
import sys, time
from pathlib import Path
from realtime.local_ollama.yield_gate import YieldGate
gate = YieldGate(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
print(gate.wait(), flush=True)
"""


def _waiter(path: Path) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", WAITER, str(path)], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _waited(child: subprocess.Popen[str]) -> float:
    out, _ = child.communicate("go\n", timeout=10)
    return float(out)


def test_another_process_waits_until_the_deadline(tmp_path: Path) -> None:
    """The deadline written here is read by another process, on the shared monotonic clock."""
    gate = YieldGate(tmp_path / "gate", create=True)
    child = _waiter(tmp_path / "gate")
    gate.set_deadline(time.monotonic() + 0.4)
    waited = _waited(child)
    assert 0.3 <= waited <= 0.9, waited


def test_ending_a_hold_early_lets_the_other_process_go_at_once(tmp_path: Path) -> None:
    gate = YieldGate(tmp_path / "gate", create=True)
    child = _waiter(tmp_path / "gate")
    gate.set_deadline(time.monotonic() + 0.9)
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    time.sleep(0.2)
    gate.set_deadline(0.0)
    out, _ = child.communicate(timeout=10)
    waited = float(out)
    assert 0.1 <= waited <= 0.6, waited


def test_no_hold_no_wait_and_a_wait_is_bounded(tmp_path: Path) -> None:
    """A deadline in the past costs nothing; one far ahead (a server that died holding) is capped."""
    gate = YieldGate(tmp_path / "gate", create=True)
    assert gate.wait() < 0.05
    gate.set_deadline(time.monotonic() - 5)
    assert gate.wait() < 0.05
    gate.set_deadline(time.monotonic() + 3600)
    assert LONGEST_WAIT * 0.9 <= gate.wait() <= LONGEST_WAIT + 0.5


def test_a_file_that_is_not_a_gate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"123")
    with pytest.raises(ValueError, match="not a yield file"):
        YieldGate(tmp_path / "short")
    with pytest.raises(FileNotFoundError):
        YieldGate(tmp_path / "missing")


def test_holds_are_counted_and_the_last_one_releases(tmp_path: Path) -> None:
    gate = YieldGate(tmp_path / "gate", create=True)
    pauses = LlmYield(gate, longest=5.0)
    first = pauses.hold()
    second = pauses.hold()
    assert gate.deadline() > time.monotonic() + 4
    first.end()
    first.end()  # ending twice must not end the other's hold
    assert pauses.holders == 1 and gate.deadline() > time.monotonic()
    with second:
        pass
    assert pauses.holders == 0 and gate.deadline() == 0.0
    assert pauses.holds == 2 and 0 < pauses.held_seconds < 1


def test_holding_never_outlasts_longest_however_many_overlap(tmp_path: Path) -> None:
    """Overlapping holds from many sessions cannot starve the LLM: the stretch ends at `longest`."""
    gate = YieldGate(tmp_path / "gate", create=True)
    pauses = LlmYield(gate, longest=0.1)
    started = time.monotonic()
    first = pauses.hold()
    time.sleep(0.15)
    late = pauses.hold()  # arrives after the stretch has lasted `longest`: no extension
    assert gate.deadline() <= started + 0.1 + 0.01
    assert gate.wait() < 0.05
    first.end()
    late.end()
    assert pauses.held_seconds <= 0.1 + 1e-6
    fresh = pauses.hold()  # everyone ended: a new stretch starts
    assert gate.deadline() > time.monotonic()
    fresh.end()


@pytest.fixture(scope="module")
def gated_llm(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalOllamaProcess, YieldGate]:
    path = tmp_path_factory.mktemp("gate") / "gate"
    gate = YieldGate(path, create=True)
    with start_local_ollama(yield_file=path) as proc:
        yield proc, gate


def _stream(url: str, *, tokens: int, on_first: object = None) -> tuple[str, list[float]]:
    """A greedy /api/chat stream; the text and each chunk's arrival time (monotonic)."""
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "options": {"temperature": 0, "num_predict": tokens},
    }
    text, times = [], []
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=60) as reply:
        for line in reply.iter_lines():
            if not line:
                continue
            times.append(time.monotonic())
            if len(times) == 1 and callable(on_first):
                on_first()
            text.append(httpx.Response(200, content=line).json()["message"]["content"])
    return "".join(text), times


def test_the_endpoint_pauses_between_tokens_while_held(gated_llm: tuple[LocalOllamaProcess, YieldGate]) -> None:
    """Held before the request: no token until the deadline. Held mid-reply: a gap as long as the hold.
    The words are the same as unheld (greedy): a pause changes when, never what."""
    proc, gate = gated_llm
    free_text, free_times = _stream(proc.url, tokens=12)
    sent = time.monotonic()
    gate.set_deadline(sent + 0.6)
    held_text, held_times = _stream(proc.url, tokens=12)
    assert held_times[0] - sent >= 0.5, held_times[0] - sent
    assert held_text == free_text

    mid_text, mid_times = _stream(proc.url, tokens=12, on_first=lambda: gate.set_deadline(time.monotonic() + 0.5))
    gaps = [b - a for a, b in zip(mid_times, mid_times[1:], strict=False)]
    assert max(gaps) >= 0.4, gaps
    assert mid_text == free_text
    assert max(b - a for a, b in zip(free_times, free_times[1:], strict=False)) < 0.4


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _yield_files(server: ServerProcess) -> list[Path]:
    return sorted(Path(server.env["REALTIME_STATE_DIR"]).glob("llm-yield.*"))


def _llm_args(server: ServerProcess) -> list[str]:
    """The command line of the embedded LLM the server started (its one child running it)."""
    assert server.process is not None
    (llm,) = [c for c in _children(server.process.pid) if "realtime.local_ollama" in _cmdline(c)]
    return _cmdline(llm)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
async def test_the_server_pauses_its_embedded_llm_for_a_first_piece(server_factory: ServerFactory) -> None:
    """`serve` makes the pause file, hands it to the LLM it starts, and holds it while a spoken reply's first
    piece is synthesized: /metrics counts it. The file goes when the server does."""
    server = server_factory(embedded_llm="always", voice="off", max_output_tokens="24")
    assert server.process is not None
    files = _yield_files(server)
    assert [f.name for f in files] == [f"llm-yield.{server.process.pid}"]
    args = _llm_args(server)
    assert args[args.index("--yield-file") + 1] == str(files[0])

    assert await server.metric("realtime_llm_yields_total") == 0
    audio = {"output_audio_format": {"type": "pcm16", "sample_rate": 24_000}}
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        await client.send({"type": "session.update", "session": audio})
        result = await client.ask("Say hello to me.")
    assert result.status in ("completed", "incomplete")  # incomplete: the reply reached max_output_tokens
    assert any(e["type"] == "response.audio.delta" for e in result.events)
    assert await server.metric("realtime_llm_yields_total") == 1
    assert 0 < await server.metric("realtime_llm_yield_seconds_total") <= 0.25

    server.stop()
    assert not _yield_files(server)


async def test_no_pauses_when_turned_off(server_factory: ServerFactory) -> None:
    """REALTIME_EMBEDDED_LLM_YIELD_MS=0: no file, no argument, nothing counted."""
    server: ServerProcess = server_factory(
        embedded_llm="always", voice="off", max_output_tokens="24", embedded_llm_yield_ms="0"
    )
    assert server.process is not None
    assert not _yield_files(server)
    assert "--yield-file" not in _llm_args(server)
    audio = {"output_audio_format": {"type": "pcm16", "sample_rate": 24_000}}
    async with await RealtimeClient.connect(server.ws_url, server.token()) as client:
        await client.send({"type": "session.update", "session": audio})
        result = await client.ask("Say hello to me.")
    assert result.status in ("completed", "incomplete")
    assert any(e["type"] == "response.audio.delta" for e in result.events)
    assert await server.metric("realtime_llm_yields_total") == 0
