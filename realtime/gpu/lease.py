"""The scheduler's small value types: its configuration, a lease handle, and what an unload answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from realtime.gpu.devices import CPU
from realtime.gpu.ledger import ModelRecord


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Durations in seconds (None: no limit), sizes in bytes."""

    reserve_bytes: int = 512 << 20  # per GPU, kept free: CUDA contexts, activations, fragmentation
    cpu_reserve_bytes: int = 1 << 30  # on "cpu": the server itself, sessions, page cache
    low_vram: bool = False
    large_threshold_bytes: int = 1 << 30  # a model this big or bigger is "large" unless registered otherwise
    lease_timeout: float | None = 60.0  # how long a lease may wait for memory
    load_timeout: float | None = 300.0
    unload_timeout: float | None = 60.0
    poll_interval: float = 0.5  # re-read free memory this often while someone waits (other processes change it)
    # After a failed load, leases of that model fail at once for this long instead of loading again: an
    # upstream that cannot load (an Ollama-API proxy without /api/generate, a broken model file) would
    # otherwise cost every turn a failed load. None: retry on every lease.
    load_retry_interval: float | None = 10.0
    pins: Mapping[str, str] = field(default_factory=dict)  # model name -> device


@dataclass(frozen=True, slots=True)
class UnloadResult:
    unloaded: tuple[str, ...]  # unloaded now (or already)
    in_use: tuple[str, ...]  # refused: leases held (with wait=True: still held at the deadline)

    @property
    def complete(self) -> bool:
        return not self.in_use


class _Scheduler(Protocol):
    async def acquire(self, name: str, *, timeout: float | None = ...) -> Lease: ...  # noqa: ASYNC109

    def release(self, lease: Lease) -> None: ...


class Lease:
    """A model in use: loaded on `device` until released. `model` is the registered ManagedModel."""

    __slots__ = ("_owner", "_record", "_released", "_scheduler", "device", "model", "name")

    def __init__(self, scheduler: _Scheduler, record: ModelRecord, owner: object) -> None:
        self._scheduler = scheduler
        self._record = record
        self._owner = owner
        self._released = False
        self.name = record.name
        self.device: str = record.device or CPU
        self.model: Any = record.model

    def release(self) -> None:
        self._scheduler.release(self)


class LeaseContext:
    """What `scheduler.lease(name)` returns: `async with` it for a Lease, released when the block ends."""

    __slots__ = ("_lease", "_name", "_scheduler", "_timeout")

    def __init__(self, scheduler: _Scheduler, name: str, timeout: float | None) -> None:
        self._scheduler = scheduler
        self._name = name
        self._timeout = timeout
        self._lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        self._lease = await self._scheduler.acquire(self._name, timeout=self._timeout)
        return self._lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lease is not None:
            self._scheduler.release(self._lease)
