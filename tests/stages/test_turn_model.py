"""The end-of-turn model (Smart Turn v3 from the embedded asset) on synthesized speech."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import numpy as np
import pytest

from realtime.config import load_settings
from realtime.stages.niceness import thread_name, thread_nice, thread_sched_idle
from realtime.stages.turn_model import SmartTurnModel, TurnJudge
from tests.support.speech import synthesize

PAUSE = np.zeros(3_200, np.float32)  # the 200 ms pause after which the listener asks


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    path = load_settings().turn_onnx_path
    if not path.is_file():
        pytest.fail(f"{path} missing: run ./dev setup (python -m realtime.assets fetch)")
    return SmartTurnModel(path)


def spoken(text: str) -> np.ndarray:
    """Steady (noise-free, the default) speech, then the pause."""
    return np.concatenate([synthesize(text, 16_000).astype(np.float32) / 32768, PAUSE])


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Tell me a joke about cats.",
        "Make a Python script that prints the primes below 100 and run it.",
    ],
)
def test_a_finished_sentence_is_judged_finished(model: SmartTurnModel, text: str) -> None:
    """Complete questions and requests: P(done) well above the default threshold (0.5)."""
    assert model.probability(spoken(text)) > 0.7


# With Piper's usual random prosody these were judged unfinished in every one of 8 fresh syntheses
# (P 0.01-0.23), where e.g. "Can you tell me about the" ranged 0.12-0.96; so they are the ones tested.
@pytest.mark.parametrize("text", ["So what I was thinking is, um,", "I would like to know, um,", "I was wondering if"])
def test_a_sentence_trailing_off_is_judged_unfinished(model: SmartTurnModel, text: str) -> None:
    """A filler or a dangling conjunction at the end: P(done) below the listener's default threshold (0.5)."""
    assert model.probability(spoken(text)) < 0.5


def test_only_the_last_eight_seconds_count(model: SmartTurnModel) -> None:
    """Ten seconds of earlier speech before the end change nothing: the model hears the last 8 s."""
    end = spoken("What is the capital of France?")
    long = np.concatenate([spoken("The weather was nice and we walked for a long time by the river.")] * 3 + [end])
    assert len(long) > 8 * 16_000
    window = long[-8 * 16_000 :]
    assert model.probability(long) == pytest.approx(model.probability(window), abs=1e-6)


def test_silence_and_empty_input_do_not_fail(model: SmartTurnModel) -> None:
    """No audio at all or pure silence: a probability, not an error (the listener never sends these)."""
    for audio in (np.zeros(0, np.float32), np.zeros(16_000, np.float32)):
        assert 0.0 <= model.probability(audio) <= 1.0


async def test_the_judge_refuses_rather_than_queues_when_busy(model: SmartTurnModel) -> None:
    """Past max_pending calls in flight a call gets None at once (the turn then ends by silence)."""
    judge = TurnJudge(model, max_pending=1)
    try:
        audio = spoken("What is two plus two?")
        first = asyncio.ensure_future(judge.probability(audio))
        await asyncio.sleep(0)
        assert await judge.probability(audio) is None
        assert (await first or 0) > 0.5
    finally:
        await judge.aclose()


def _threads_named(name: str) -> list[int]:
    """The threads of this process whose OS-level name is `name`."""
    found = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            if thread_name(int(tid)) == name:
                found.append(int(tid))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities and names are Linux's")
async def test_the_judge_computes_in_a_lowered_named_thread(model: SmartTurnModel) -> None:
    """nice/idle: the judge's thread (named "turn-model" for the OS) runs that many levels below its creator,
    in SCHED_IDLE, and the calling thread is left as it was; the judgement is the same as at full priority."""
    audio = spoken("What is the capital of France?")
    before = (thread_nice(), thread_sched_idle())
    judge = TurnJudge(model, nice=3, idle=True)
    try:
        assert await judge.probability(audio) == pytest.approx(model.probability(audio))
        (tid,) = _threads_named("turn-model")
        assert thread_nice(tid) == min(19, before[0] + 3)
        assert thread_sched_idle(tid)
    finally:
        await judge.aclose()
    assert (thread_nice(), thread_sched_idle()) == before
    for _ in range(100):  # closed with the judge (the OS thread ends just after Python's join returns)
        if not _threads_named("turn-model"):
            break
        await asyncio.sleep(0.01)
    assert _threads_named("turn-model") == []
