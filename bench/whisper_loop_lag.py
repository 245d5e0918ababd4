"""Does a Whisper decode in the server's process hold up its event loop? `python -m bench.whisper_loop_lag`.

    .venv/bin/python -m bench.whisper_loop_lag [--seconds 20] [--rounds 2]

Why: under streaming load the frame tail grows while spoken turns decode (docs/reliability.md §4). Whisper
runs in a thread of the server, lowered by `REALTIME_STT_NICE`; if CTranslate2 or faster-whisper held the
GIL for long, a lower priority could not help and only a separate process would. This measures an asyncio
loop's lag (how late a 2 ms `asyncio.sleep` wakes, with ~0.1 ms of Python work per tick, like a loop handling
messages) in three setups, alternating: nothing beside it (`none`); a niced decode loop in a thread of the
same process, as the server runs it (`thread`); the same decode loop in a child process (`process`). Same
lag in `thread` and `process` means the GIL is not what the loop waits for.

What runs: the embedded Whisper base (int8, CPU, one thread, nice 10), decoding one 3 s Piper question over
and over. What distorts it: the box is shared (hence rounds, alternating); on two cores the decode has a
core to itself here, unlike under the load bench.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time

import numpy as np

from realtime.config import load_settings
from realtime.stages.niceness import lower_current_thread
from realtime.stages.stt import SttConfig, WhisperEngine
from tests.support.speech import synthesize

QUESTION = "How many days are there in a week, and which one comes after Tuesday?"
NICE = 10


def _question() -> np.ndarray:
    return synthesize(QUESTION, 16_000).astype(np.float32) / 32768


def _engine() -> WhisperEngine:
    return WhisperEngine(SttConfig(model=load_settings({}).stt_model_ref, nice=NICE))


def decode_forever() -> None:
    """The child of `process`: decode until killed."""
    engine, audio = _engine(), _question()
    while True:
        engine.transcribe(audio, language="en")


async def _lag(seconds: float) -> np.ndarray:
    lags = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        await asyncio.sleep(0.002)
        lags.append((time.perf_counter() - started - 0.002) * 1000)
        x = 0
        for i in range(3000):  # ~0.1 ms of Python, holding the GIL
            x += i
    return np.array(lags)


def measure(setup: str, seconds: float, engine: WhisperEngine, audio: np.ndarray) -> str:
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None
    worker: threading.Thread | None = None
    try:
        if setup == "thread":

            def work() -> None:
                lower_current_thread(NICE)
                while not stop.is_set():
                    engine.transcribe(audio, language="en")

            worker = threading.Thread(target=work, name="decode", daemon=True)
            worker.start()
        elif setup == "process":
            child = subprocess.Popen([sys.executable, "-m", "bench.whisper_loop_lag", "--child"])
            time.sleep(8)  # its model loaded and decoding
        lags = asyncio.run(_lag(seconds))
    finally:
        stop.set()
        if worker is not None:
            worker.join()
        if child is not None:
            child.kill()
            child.wait()
    p50, p99, p999, top = np.percentile(lags, [50, 99, 99.9, 100])
    return f"| {setup} | {len(lags)} | {p50:.2f} / {p99:.2f} / {p999:.2f} / {top:.2f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        decode_forever()
        return
    engine, audio = _engine(), _question()
    print("| setup | ticks | loop lag p50 / p99 / p99.9 / max |")
    print("|---|---|---|")
    for _ in range(args.rounds):
        for setup in ("none", "thread", "process"):
            print(measure(setup, args.seconds, engine, audio), flush=True)


if __name__ == "__main__":
    main()
