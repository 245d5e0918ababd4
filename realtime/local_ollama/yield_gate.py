"""One stage at a time on a small CPU: the embedded LLM pauses between tokens while a reply's first piece
is synthesized.

On two cores, Piper and llama.cpp each want both. When the first spoken piece is cut, the LLM goes on
writing the rest of the reply, which nobody needs for another second or two (the first piece is still to
be played), and Piper's run for that piece, which the listener is waiting for, takes twice as long beside
it (96 against 48 ms at p50). Niceness and SCHED_IDLE barely help: Piper's threads sleep between model
steps and the LLM fills every gap. So the voice server asks the embedded LLM to stop between tokens until
the first piece's audio is out (docs/performance.md, "The LLM yields to the first piece").

The two processes share one small file, mapped by both: 8 bytes holding a deadline on the monotonic clock
(CLOCK_MONOTONIC on Linux is the same for every process). The LLM's token loop sleeps while the deadline
is ahead. A deadline rather than a flag: if the server dies or forgets to end a hold, it ends by itself.
Only our embedded endpoint reads the file; a real Ollama is never paused.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path

_FORMAT = "<d"
SIZE = struct.calcsize(_FORMAT)
POLL = 0.003  # how often a paused LLM looks at the deadline again (it resumes at most this late)
LONGEST_WAIT = 1.0  # the LLM never waits longer per token, whatever the file says


class YieldGate:
    """The shared deadline: set on the server's side (through `LlmYield`), waited on in the LLM's token loop."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, SIZE)
                os.pwrite(fd, struct.pack(_FORMAT, 0.0), 0)
            elif os.fstat(fd).st_size < SIZE:
                raise ValueError(f"{path} is not a yield file")
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def deadline(self) -> float:
        return struct.unpack_from(_FORMAT, self._map, 0)[0]

    def set_deadline(self, at: float) -> None:
        struct.pack_into(_FORMAT, self._map, 0, at)

    def wait(self) -> float:
        """Sleep while a hold is on (never more than LONGEST_WAIT); the seconds slept."""
        start = now = time.monotonic()
        while (until := min(self.deadline(), start + LONGEST_WAIT)) > now:
            time.sleep(min(POLL, until - now))
            now = time.monotonic()
        return now - start

    def close(self) -> None:
        self._map.close()


class LlmYield:
    """The server's side: holds from any number of sessions, each bounded; the LLM runs again when the last
    one ends or when the holding has lasted `longest` (after which no hold extends it until all have ended:
    a stream of first pieces from many sessions cannot starve the LLM)."""

    def __init__(self, gate: YieldGate, longest: float) -> None:
        self._gate = gate
        self._longest = longest
        self._holders = 0
        self._started = 0.0  # when the current stretch of holding began
        self.holds = 0  # holds granted, ever (for /metrics)
        self.held_seconds = 0.0  # time the LLM was asked to wait, ever (stretches that ended)

    def hold(self) -> Hold:
        """Pause the LLM now, until the hold ends (or `longest` has passed)."""
        now = time.monotonic()
        if self._holders == 0:
            self._started = now
        self._holders += 1
        self.holds += 1
        if now - self._started < self._longest:
            self._gate.set_deadline(self._started + self._longest)
        return Hold(self)

    @property
    def holders(self) -> int:
        return self._holders

    def _release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._gate.set_deadline(0.0)
            self.held_seconds += min(time.monotonic() - self._started, self._longest)


class Hold:
    """One holder's pause; `end` (or leaving the `with`) lets the LLM go on, once."""

    def __init__(self, owner: LlmYield) -> None:
        self._owner: LlmYield | None = owner

    def end(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
