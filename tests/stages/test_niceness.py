"""Whisper computes at a lower CPU priority than the event loop, in real threads of the real model."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from realtime.config import ConfigError, load_settings
from realtime.stages.niceness import name_current_thread, run_lowered, thread_name, thread_nice, thread_sched_idle
from realtime.stages.stt import SttConfig, SttPool, WhisperEngine
from tests.support.speech import synthesize


def _threads() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def test_run_lowered_lowers_its_thread_and_the_threads_it_starts_but_not_the_caller() -> None:
    base = thread_nice()
    seen: dict[str, int] = {}

    def work() -> str:
        seen["own"] = thread_nice()
        child = threading.Thread(target=lambda: seen.__setitem__("child", thread_nice()))
        child.start()
        child.join()
        return "done"

    assert run_lowered(work, 4, name="test-lowered") == "done"
    assert seen == {"own": min(19, base + 4), "child": min(19, base + 4)}
    assert thread_nice() == base


def test_run_lowered_hands_back_the_exception_and_step_zero_runs_inline() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_lowered(fail, 3, name="test-lowered")
    assert run_lowered(threading.get_native_id, 0, name="unused") == threading.get_native_id()


def test_the_whisper_model_computes_in_lowered_threads_and_still_hears() -> None:
    """Every thread that building the model started runs lower; the decode itself is unchanged."""
    settings = load_settings()
    speech = synthesize("Please open the window.", 16_000).astype(np.float32) / 32768  # Piper's threads first
    base = thread_nice()
    before = _threads()
    engine = WhisperEngine(SttConfig(model=settings.stt_model_ref, device="cpu", nice=6))
    text = engine.transcribe(speech).text.lower()
    started = _threads() - before
    assert started, "CTranslate2 started no thread of its own"
    assert {tid: thread_nice(tid) for tid in started} == dict.fromkeys(started, min(19, base + 6))
    assert thread_nice() == base
    assert "open the window" in text


async def test_the_decode_pool_runs_its_jobs_lowered() -> None:
    base = thread_nice()
    pool = SttPool(1, nice=5)
    await pool.start()
    try:
        seen = await pool.run("session", thread_nice, final=True)
    finally:
        await pool.aclose()
    assert seen == min(19, base + 5)
    assert thread_nice() == base  # the event loop's thread is untouched


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_run_lowered_idle_puts_its_thread_and_children_in_sched_idle_but_not_the_caller() -> None:
    seen: dict[str, bool] = {}

    def work() -> None:
        seen["own"] = thread_sched_idle()
        child = threading.Thread(target=lambda: seen.__setitem__("child", thread_sched_idle()))
        child.start()
        child.join()

    run_lowered(work, 0, idle=True, name="test-idle")  # idle alone is enough to need a thread of its own
    assert seen == {"own": True, "child": True}
    assert not thread_sched_idle()
    run_lowered(work, 3, name="test-not-idle")
    assert seen == {"own": False, "child": False}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
async def test_the_decode_pool_runs_its_jobs_in_sched_idle_when_asked() -> None:
    for idle in (True, False):
        pool = SttPool(1, nice=2, idle=idle)
        await pool.start()
        try:
            assert await pool.run("session", thread_sched_idle, final=True) is idle
        finally:
            await pool.aclose()
    assert not thread_sched_idle()


def test_the_setting_is_bounded() -> None:
    assert load_settings({}).stt_sched_idle is True
    assert load_settings({"REALTIME_STT_SCHED_IDLE": "off"}).stt_sched_idle is False
    assert load_settings({}).stt_nice == 10
    assert load_settings({"REALTIME_STT_NICE": "0"}).stt_nice == 0
    for bad in ("-1", "20"):
        with pytest.raises(ConfigError, match="REALTIME_STT_NICE"):
            load_settings({"REALTIME_STT_NICE": bad})
    # the end-of-turn model's thread: its own pair, at the server's priority unless asked, the same bounds
    assert (load_settings({}).turn_model_nice, load_settings({}).turn_model_sched_idle) == (0, False)
    low = load_settings({"REALTIME_TURN_MODEL_NICE": "10", "REALTIME_TURN_MODEL_SCHED_IDLE": "on"})
    assert (low.turn_model_nice, low.turn_model_sched_idle) == (10, True)
    with pytest.raises(ConfigError, match="REALTIME_TURN_MODEL_NICE"):
        load_settings({"REALTIME_TURN_MODEL_NICE": "20"})


async def test_a_pool_without_a_step_leaves_its_threads_alone() -> None:
    pool = SttPool(1)
    await pool.start()
    try:
        seen = await pool.run("s", thread_nice, final=True)
    finally:
        await pool.aclose()
    assert seen == thread_nice()


def test_a_thread_named_for_the_os_shows_that_name_in_proc() -> None:
    """name_current_thread sets the OS-level name (15 bytes at most) of the calling thread only."""
    seen: dict[str, str] = {}
    main_name = thread_name()

    def work() -> None:
        name_current_thread("a-name-longer-than-fifteen")
        seen["own"] = thread_name()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"own": "a-name-longer-t"}
    assert thread_name() == main_name
