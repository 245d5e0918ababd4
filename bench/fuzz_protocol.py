"""Coverage-guided fuzzing of the protocol decoders and the session (atheris, i.e. libFuzzer):
`python -m bench.fuzz_protocol` (≥ 100 000 inputs in all), `--seed` to rebuild the corpus from the vectors.

Why: every byte a client sends goes through decode_frame and parse_client_event, then a Session; the
targets in tests/fuzz/harness.py say what must hold for any input. Each target runs in its own child
process (libFuzzer owns the process it fuzzes) seeded from tests/fuzz/corpus/<target>/, with a hang
timeout and an RSS limit, so a crash, a hang or unbounded memory all end the run with a failure. New
inputs that reach new code are merged back into the corpus, minimised (libFuzzer -merge) and capped;
files named regress-* (inputs that once found a bug) are always kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
VECTORS = ROOT / "tests" / "vectors"
# Inputs per target (sum ≥ 100 000). The session target is ~100x slower per input than the decoders.
RUNS = {"msgpack": 100_000, "json": 100_000, "session": 20_000}
MAX_LEN = 4096  # bytes per input
HANG_TIMEOUT = 10  # seconds for one input: longer is a hang
RSS_LIMIT_MB = 1024  # more is unbounded memory
MAX_CORPUS_FILES = 150  # per target, after merging
REGRESSION_PREFIX = "regress-"  # corpus files that reproduce a fixed bug: always kept


@dataclass
class Outcome:
    target: str
    runs: int
    seconds: float
    peak_rss_mb: int
    crashes: list[Path]
    corpus_before: int
    corpus_after: int
    returncode: int


# ---- the child: one libFuzzer run -----------------------------------------------------------------


def child(target: str, libfuzzer_args: list[str], argv0: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["realtime", "tests"]):
        from tests.fuzz.harness import TARGETS
    atheris.Setup([argv0, *libfuzzer_args], TARGETS[target])
    atheris.Fuzz()


# ---- the parent -------------------------------------------------------------------------------------


def _libfuzzer(target: str, args: list[str], log: Path) -> int:
    """Run libFuzzer on one target. It is started through an executable script, as libFuzzer's -merge
    re-executes argv[0] for its inner runs."""
    runner = log.parent / f"fuzz-{target}"
    runner.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        f"from bench.fuzz_protocol import child\nchild({target!r}, sys.argv[1:], sys.argv[0])\n"
    )
    runner.chmod(0o755)
    with log.open("wb") as out:
        return subprocess.run(
            [str(runner), *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode


def _stat(text: str, name: str) -> int:
    found = re.findall(rf"stat::{name}:\s+(\d+)", text)
    return int(found[-1]) if found else 0


def _tokens(value: object) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value if not str(k).startswith("$")} | {t for v in value.values() for t in _tokens(v)}
    if isinstance(value, list):
        return {t for v in value for t in _tokens(v)}
    return {value} if isinstance(value, str) and len(value) <= 40 else set()


def write_dictionary(target: str, path: Path) -> Path:
    """A libFuzzer dictionary of the protocol's words (field names, event types, values), as the target
    sees them: msgpack-encoded strings, JSON strings, or both for the session target."""
    import msgpack

    valid = json.loads((VECTORS / "client_events.json").read_text())
    words = sorted({t for v in valid for t in _tokens(v["event"])} | {"server_vad", "pcm16", "input_text"})
    entries: set[bytes] = set()
    for word in words:
        if target in ("msgpack", "session"):
            entries.add(msgpack.packb(word))
        if target in ("json", "session"):
            entries.add(json.dumps(word).encode())
    # boundary values: past float range, past int64, a lone surrogate escape, NUL, the session separator
    entries.update([b"1e400", b"1" + b"0" * 400, b"-0", b"9" * 20, b"\\ud800", b"\x00", b"\n--\n"])
    lines = [
        '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in e) + '"'
        for e in entries
    ]
    path.write_text("\n".join(sorted(lines)) + "\n")
    return path


def run_target(target: str, runs: int, work: Path, *, write_corpus: bool) -> Outcome:
    corpus = CORPUS / target
    corpus.mkdir(parents=True, exist_ok=True)
    new = work / f"{target}-new"
    artifacts = work / f"{target}-artifacts"
    new.mkdir()
    artifacts.mkdir()
    before = len(list(corpus.iterdir()))
    log = work / f"{target}.log"
    started = time.monotonic()
    code = _libfuzzer(
        target,
        [
            f"-runs={runs}",
            f"-max_len={MAX_LEN}",
            f"-timeout={HANG_TIMEOUT}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            "-len_control=0",  # long inputs (309-digit numbers, long strings) from the start
            f"-dict={write_dictionary(target, work / f'{target}.dict')}",
            str(new),
            str(corpus),
        ],
        log,
    )
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    crashes = sorted(artifacts.iterdir())
    if code != 0 or crashes:
        print(text[-4000:], file=sys.stderr)
    after = before
    if write_corpus and code == 0 and not crashes:
        after = _merge(target, corpus, new, work)
    return Outcome(
        target,
        _stat(text, "number_of_executed_units"),
        seconds,
        _stat(text, "peak_rss_mb"),
        crashes,
        before,
        after,
        code,
    )


def _merge(target: str, corpus: Path, new: Path, work: Path) -> int:
    """Minimise old + new inputs to a set that keeps all coverage; replace the kept corpus with it."""
    merged = work / f"{target}-merged"
    merged.mkdir()
    code = _libfuzzer(target, ["-merge=1", f"-max_len={MAX_LEN}", str(merged), str(corpus), str(new)], work / "m.log")
    files = sorted(merged.iterdir(), key=lambda p: p.stat().st_size)[:MAX_CORPUS_FILES]  # small first
    if code != 0 or not files:
        return len(list(corpus.iterdir()))
    regressions = {p.name: p.read_bytes() for p in corpus.iterdir() if p.name.startswith(REGRESSION_PREFIX)}
    shutil.rmtree(corpus)
    corpus.mkdir()
    for path in files:
        shutil.copy(path, corpus / path.name)
    for name, data in regressions.items():  # inputs that once found a bug stay, whatever their coverage
        (corpus / name).write_bytes(data)
    return len(list(corpus.iterdir()))


# ---- the seed corpus ------------------------------------------------------------------------------


def _write(directory: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def seed() -> None:
    """The wire vectors (every client event, every invalid frame) as the first corpus."""
    from realtime.protocol.codec import Encoding
    from tests.fuzz.harness import join_session_input

    valid = json.loads((VECTORS / "client_events.json").read_text())
    invalid = json.loads((VECTORS / "invalid_client_frames.json").read_text())
    msgpack_frames = [bytes.fromhex(v["msgpack_hex"]) for v in valid]
    json_frames = [v["json"] for v in valid]
    for v in invalid:
        if "frame_hex" in v:
            msgpack_frames.append(bytes.fromhex(v["frame_hex"]))
        if "frame_text" in v:
            json_frames.append(v["frame_text"])
    for frame in msgpack_frames:
        _write(CORPUS / "msgpack", frame)
    for text in json_frames:
        _write(CORPUS / "json", text.encode())
    _write(CORPUS / "session", join_session_input(Encoding.MSGPACK, list(msgpack_frames)))
    _write(CORPUS / "session", join_session_input(Encoding.JSON, list(json_frames)))
    for i in range(0, len(valid), 4):  # a few short conversations as well
        _write(CORPUS / "session", join_session_input(Encoding.MSGPACK, msgpack_frames[i : i + 4]))
        _write(CORPUS / "session", join_session_input(Encoding.JSON, json_frames[i : i + 4]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_protocol", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", action="store_true", help="(re)write the seed corpus from tests/vectors")
    parser.add_argument("--targets", default=",".join(RUNS), help="comma-separated: msgpack,json,session")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every target's input count")
    parser.add_argument("--no-write", action="store_true", help="leave tests/fuzz/corpus as it is")
    args = parser.parse_args(argv)
    if args.seed:
        seed()
        return 0
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        for target in args.targets.split(","):
            outcome = run_target(target, int(RUNS[target] * args.scale), Path(tmp), write_corpus=not args.no_write)
            outcomes.append(outcome)
            print(
                f"{target:8} {outcome.runs:>8} inputs {outcome.seconds:7.1f} s "
                f"{outcome.runs / max(outcome.seconds, 1e-9):8.0f}/s  peak RSS {outcome.peak_rss_mb} MiB  "
                f"crashes {len(outcome.crashes)}  corpus {outcome.corpus_before} -> {outcome.corpus_after}",
                flush=True,
            )
            for crash in outcome.crashes:
                kept = ROOT / "test-artifacts" / f"fuzz-{target}-{crash.name}"
                kept.parent.mkdir(exist_ok=True)
                shutil.copy(crash, kept)
                print(f"  crash input kept in {kept.relative_to(ROOT)}")
    total = sum(o.runs for o in outcomes)
    failed = [o for o in outcomes if o.crashes or o.returncode != 0]
    print(
        f"total {total} inputs in {sum(o.seconds for o in outcomes):.1f} s, "
        f"max RSS {max(o.peak_rss_mb for o in outcomes)} MiB, crashes {sum(len(o.crashes) for o in outcomes)}, "
        f"failed targets: {', '.join(o.target for o in failed) or 'none'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
