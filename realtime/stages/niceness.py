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


def lower_current_thread(step: int) -> None:
    """Make the calling thread (and every thread it creates from now on) `step` nice levels lower."""
    if step <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, thread_nice(tid) + step))
    except OSError as exc:  # a sandbox that forbids it: run at the normal priority
        log.warning("could not lower the priority of thread %s: %s", tid, exc)


def run_lowered(fn: Callable[[], T], step: int, *, name: str) -> T:
    """Run `fn` in a new thread `step` nice levels lower, so the threads it starts inherit that priority.

    The calling thread's own priority is untouched (it may be a shared executor's). Blocks until done.
    """
    if step <= 0:
        return fn()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        lower_current_thread(step)
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
