"""Whisper's threads in SCHED_IDLE or at nice 10 only (or the end-of-turn model's lowered or not), alternated
inside one load run: `python -m bench.stt_priority`.

Why: on this 2-core box the same code gives a frame p99 anywhere from 12 to 100 ms from one run to the next,
so two runs of two settings compare the box's moods more than the settings. Here one server carries one
load (`bench.load stream`, 300 sessions streaming with spoken turns), and this script flips the policy of
some of the server's threads every `--period` seconds from outside (`sched_setscheduler` and
`setpriority` on each thread: the calls the server makes on itself), found by their OS-level names
(realtime/stages/niceness.py names them):

  --threads whisper      Whisper's ("stt-load": CTranslate2's compute threads; "stt": the decode pool's):
                         SCHED_IDLE + nice 10 against nice 10 only (`REALTIME_STT_SCHED_IDLE`)
  --threads turn-model   the end-of-turn model's ("turn-model"): SCHED_IDLE + nice 10 against the server's
                         own priority (`REALTIME_TURN_MODEL_NICE`, `REALTIME_TURN_MODEL_SCHED_IDLE`)

At each flip it reads the server's histograms from /metrics and adds the difference to that phase's: the
frame latency (`realtime_audio_frame_seconds`, the bench.load figure), speech end -> final transcript
(`realtime_speech_end_to_transcript_seconds`) and speech end -> first token
(`realtime_speech_end_to_first_token_seconds`: the turn's end included, which the end-of-turn model brings
forward; the fake LLM answers at once): what the lower priority may cost the turns. Phases alternate, so
both settings meet the same noise.

    .venv/bin/python -m bench.stt_priority [--threads whisper|turn-model] [--sessions 300] [--turns-per-min 6]
        [--seconds 240] [--period 10]

Linux only (SCHED_IDLE), and root or the server's own user (it changes another process's threads).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.stats import markdown_table
from realtime.stages.niceness import thread_name

NICE = 10
FRAME = "realtime_audio_frame_seconds_bucket"
TRANSCRIPT = "realtime_speech_end_to_transcript_seconds_bucket"
FIRST_TOKEN = "realtime_speech_end_to_first_token_seconds_bucket"


class Threads(NamedTuple):
    """One --threads choice: whose threads, and the setting they are flipped against (SCHED_OTHER at `nice`)."""

    names: tuple[str, ...]  # their OS-level names
    who: str
    nice: int  # nice levels below the server's
    label: str
    by_default: bool  # the server runs them lowered (SCHED_IDLE + nice NICE) by default


THREADS = {
    "whisper": Threads(("stt-load", "stt"), "Whisper's threads", NICE, "nice 10", True),
    "turn-model": Threads(("turn-model",), "the end-of-turn model's thread", 0, "the server's priority", False),
}


def named_threads(pid: int, names: tuple[str, ...]) -> list[int]:
    """The server's threads whose OS-level name is one of `names`."""
    tids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if thread_name(int(tid)) in names:
                tids.append(int(tid))
        except OSError:  # a thread that just ended
            continue
    return tids


def set_policy(pid: int, threads: Threads, lowered: bool) -> int:
    """The chosen threads to SCHED_IDLE at nice NICE, or back to SCHED_OTHER at their other nice; how many
    were changed."""
    base = os.getpriority(os.PRIO_PROCESS, pid)
    changed = 0
    for tid in named_threads(pid, threads.names):
        try:
            if lowered:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, tid, base + NICE)
            else:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, tid, base + threads.nice)
            changed += 1
        except OSError:  # a thread that just ended
            pass
    return changed


def histograms(url: str) -> dict[str, dict[float, float]]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, dict[float, float]] = {FRAME: {}, TRANSCRIPT: {}, FIRST_TOKEN: {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name][float(sample.labels["le"])] = sample.value
    return out


def bucket_percentile(buckets: dict[float, float], p: float) -> float:
    """The upper bound (ms) of the bucket holding the p-quantile of a cumulative histogram."""
    total = buckets.get(float("inf"), 0.0)
    for bound in sorted(buckets):
        if buckets[bound] >= p * total:
            return bound * 1000
    return float("nan")


def run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "bench.load", "stream", "--sessions", str(args.sessions)]
    cmd += ["--seconds", str(args.seconds), "--warmup", "10", "--quiet-wait", "30", "--rate", "16000"]
    cmd += ["--turns-per-min", str(args.turns_per_min)]
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert load.stdout is not None
    pid, log, lines = None, None, []
    for line in load.stdout:  # up to the start of the streaming: "[load] other processes use ..."
        lines.append(line)
        print(line, end="", flush=True)
        if m := re.search(r"server pid (\d+), log (\S+)", line):
            pid, log = int(m[1]), Path(m[2])
        if "other processes use" in line:
            break
    if pid is None or log is None:
        print("bench.load did not start a server", file=sys.stderr)
        return 1
    port = re.search(r"running on http://[\d.]+:(\d+)", log.read_text())
    assert port is not None, "no port in the server log"
    url = f"http://127.0.0.1:{port[1]}"
    time.sleep(12.0)  # bench.load's warm-up, and a little
    threads = THREADS[args.threads]
    totals: dict[bool, dict[str, dict[float, float]]] = {True: {}, False: {}}
    lowered = False
    set_policy(pid, threads, lowered)
    before = histograms(url)
    deadline = time.monotonic() + args.seconds - 20
    while time.monotonic() < deadline:
        time.sleep(args.period)
        now = histograms(url)
        for name, buckets in now.items():
            acc = totals[lowered].setdefault(name, {})
            for bound, value in buckets.items():
                acc[bound] = acc.get(bound, 0.0) + value - before[name].get(bound, 0.0)
        before, lowered = now, not lowered
        set_policy(pid, threads, lowered)
    set_policy(pid, threads, threads.by_default)  # as the server runs them by default
    rest = load.stdout.read()
    load.wait()
    print(rest[rest.find("| mode") :] if "| mode" in rest else rest, flush=True)
    rows = []
    for mode in (False, True):
        frames, transcripts = totals[mode].get(FRAME, {}), totals[mode].get(TRANSCRIPT, {})
        first = totals[mode].get(FIRST_TOKEN, {})
        count = frames.get(float("inf"), 0.0)
        over = 1 - frames.get(0.01, 0.0) / count if count else float("nan")
        rows.append(
            [
                "SCHED_IDLE + nice 10" if mode else threads.label,
                f"{count:.0f}",
                " / ".join(f"{bucket_percentile(frames, p):g}" for p in (0.5, 0.9, 0.99, 0.999)) + " ms",
                f"{over * 100:.2f} %",
                f"{transcripts.get(float('inf'), 0.0):.0f}",
                " / ".join(f"{bucket_percentile(transcripts, p):g}" for p in (0.5, 0.9)) + " ms",
                " / ".join(f"{bucket_percentile(first, p):g}" for p in (0.5, 0.9)) + " ms",
            ]
        )
    print(
        f"{threads.who} alternating every {args.period:g} s, one server, {args.sessions} sessions, "
        f"{args.turns_per_min:g} turns a minute:"
    )
    header = [
        threads.who,
        "frames",
        "frame p50 / p90 / p99 / p99.9 (≤)",
        "frames over 10 ms",
        "transcripts",
        "speech end → transcript p50 / p90 (≤)",
        "speech end → first token p50 / p90 (≤)",
    ]
    print(markdown_table(header, rows))
    return load.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", choices=sorted(THREADS), default="whisper", help="whose threads to flip")
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--turns-per-min", type=float, default=6.0)
    parser.add_argument("--seconds", type=float, default=240.0, help="bench.load's window")
    parser.add_argument("--period", type=float, default=10.0, help="seconds per phase")
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
