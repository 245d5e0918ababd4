"""The kept fuzzing corpus (tests/fuzz/corpus/<target>/): every input replays clean, the corpus stays small,
and a short coverage-guided run (atheris) finds nothing. The long run is `python -m bench.fuzz_protocol`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.harness import CORPUS, ROOT, TARGETS

MAX_FILES = 500
MAX_FILE_SIZE = 4096  # bench/fuzz_protocol.py's -max_len


def _inputs(target: str) -> list[Path]:
    return sorted((CORPUS / target).iterdir())


@pytest.mark.parametrize("target", list(TARGETS))
def test_corpus_replays_without_findings(target: str) -> None:
    """Every kept input of the target passes its checks (a regression test for whatever fuzzing found)."""
    inputs = _inputs(target)
    assert inputs, f"no corpus for {target}: run python -m bench.fuzz_protocol --seed"
    for path in inputs:
        TARGETS[target](path.read_bytes())


def test_corpus_stays_small() -> None:
    """The corpus is a few hundred small files, not a dump of every input ever tried."""
    files = [p for target in TARGETS for p in _inputs(target)]
    assert len(files) <= MAX_FILES
    assert all(p.stat().st_size <= MAX_FILE_SIZE for p in files)


def test_short_coverage_guided_run() -> None:
    """A few thousand atheris inputs on the decoders, from the corpus: no crash, corpus left unchanged."""
    pytest.importorskip("atheris")
    before = {p.name for target in TARGETS for p in _inputs(target)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.fuzz_protocol", "--targets", "msgpack,json", "--scale", "0.03", "--no-write"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "crashes 0" in result.stdout
    assert before == {p.name for target in TARGETS for p in _inputs(target)}
