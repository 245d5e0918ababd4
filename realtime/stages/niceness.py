"""Lower CPU priority for bulk model threads, so the event loop and the VAD keep real time beside them.

On a small machine a Whisper decode takes a whole core for 50-300 ms. At the same nice value as the event
loop it competes with every session's audio frames, and the frames' tail latency follows the decodes (at
300 streaming sessions on 2 cores: frame p99 <= 15 ms with no turns, <= 50 ms with 6 turns a minute).
At a lower priority the decode gets whatever the small, frequent real-time work leaves, which on an idle
server is everything: one session's decode is not slower.

Linux schedules threads, not processes, and a new thread starts with its creator's nice value. CTranslate2
starts its compute threads when a model is built (and they start OpenMP's later), so building the model
in a thread that first lowered its own priority puts all of them there. Raising one's own nice value needs
no privilege; nothing here ever lowers one. Elsewhere than Linux these calls do nothing.

A lower nice value is not enough on two cores: the scheduler still counts the core a niced decode runs on
as busy, so a waking event loop or VAD thread often queues behind other work instead of taking that core
at once. `idle` also puts the threads in SCHED_IDLE (Linux): a core running only such threads counts as
free, and any normal thread that wakes there preempts them. They then run only on CPU time nothing else
wants (300 streaming sessions on 2 cores, alternated in one run: frames over 10 ms 8.9 -> 4.0 % at 6 turns
a minute, 17.2 -> 7.7 % at 60, where transcripts came one bucket later; docs/reliability.md §4). The
end-of-turn model's thread can run there too (`REALTIME_TURN_MODEL_SCHED_IDLE`, off by default): during
its ~40 ms of CPU at each pause the VAD's passes took three times their CPU time (in one run, alternating
every 10 s: 0.56 -> 0.47 % of frames over 10 ms), but a single conversation's first audio came ~10 ms
later with it (docs/reliability.md §4).

`name_current_thread` gives a thread its name at the OS level too (Python's names stay inside Python), so
`top -H`, /proc and the tests can tell the VAD, the decode pool and the end-of-turn model apart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_NICE = 19


def thread_nice(tid: int | None = None) -> int:
    """The nice value of a thread of this process (default: the calling one)."""
    return os.getpriority(os.PRIO_PROCESS, tid if tid is not None else threading.get_native_id())


def thread_sched_idle(tid: int | None = None) -> bool:
    """Whether a thread of this process (default: the calling one) runs under SCHED_IDLE."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    return os.sched_getscheduler(tid if tid is not None else threading.get_native_id()) == os.SCHED_IDLE


def thread_name(tid: int | None = None) -> str:
    """A thread's OS-level name (default: the calling one's; Linux, any process); OSError once it is gone."""
    with open(f"/proc/{tid if tid is not None else threading.get_native_id()}/comm") as comm:
        return comm.read().strip()


def name_current_thread(name: str) -> None:
    """Name the calling thread for the OS (Linux: its `comm`, at most 15 bytes); elsewhere nothing."""
    tid = threading.get_native_id()
    try:
        with open(f"/proc/self/task/{tid}/comm", "w") as comm:
            comm.write(name.encode()[:15].decode(errors="ignore"))
    except OSError:  # not Linux, or /proc not mounted: the name is only for people and tests
        pass


def lower_current_thread(step: int, idle: bool = False) -> None:
    """Make the calling thread (and every thread it creates from now on) `step` nice levels lower, and with
    `idle` also SCHED_IDLE (where the OS has it)."""
    tid = threading.get_native_id()
    if step > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, thread_nice(tid) + step))
        except OSError as exc:  # a sandbox that forbids it: run at the normal priority
            log.warning("could not lower the priority of thread %s: %s", tid, exc)
    if idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            log.warning("could not put thread %s in SCHED_IDLE: %s", tid, exc)


def worker_thread_init(name: str, step: int = 0, idle: bool = False) -> None:
    """An executor's `initializer`: its thread named `name` for the OS, then lowered as `lower_current_thread`."""
    name_current_thread(name)
    lower_current_thread(step, idle)


def run_lowered(fn: Callable[[], T], step: int, *, idle: bool = False, name: str) -> T:
    """Run `fn` in a new thread `step` nice levels lower (and SCHED_IDLE with `idle`) and named `name` for
    the OS, so the threads it starts inherit that priority and that name.

    The calling thread's own priority is untouched (it may be a shared executor's). Blocks until done.
    """
    if step <= 0 and not idle:
        return fn()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        name_current_thread(name)  # inherited, as the priority, by the threads `fn` starts
        lower_current_thread(step, idle)
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
