"""What the scheduler manages: the `ManagedModel` interface its owners implement, and two implementations.

`FactoryModel` wraps any in-process model (Whisper, Silero, Piper...): its constructor runs in a thread on
load, the object is dropped on unload. `SimulatedModel` allocates on a FixedCapacityBackend, for tests and
benchmarks. The Ollama adapter is in realtime/gpu/ollama.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, runtime_checkable

from realtime.gpu.devices import FixedCapacityBackend

T = TypeVar("T")


@runtime_checkable
class ManagedModel(Protocol):
    """A model the scheduler can load and unload. `estimate_bytes` is what it needs on a device before
    it is loaded; `load` returns the bytes it measured once loaded, or None when it cannot tell.

    Optional attributes read at registration: `large: bool` (a size class for low_vram mode; default by
    the configured threshold) and `device: str` (pin it to one device, e.g. "cpu" for an ONNX model).
    `load` is only called while unloaded and `unload` only while loaded and unused, never concurrently.
    """

    name: str
    kind: str
    estimate_bytes: int

    async def load(self, device: str) -> int | None: ...

    async def unload(self) -> None: ...


class FactoryModel(Generic[T]):
    """An in-process model: `factory(device)` builds it in a worker thread, `instance` is it while loaded.

    `measure(instance, device)` may report its bytes (e.g. from torch.cuda.memory_allocated deltas);
    with `measure_rss`, a load on "cpu" reports this process's RSS growth (exact only when nothing else
    loads at the same time). `close(instance)` runs in a thread on unload, before the object is dropped.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        estimate_bytes: int,
        factory: Callable[[str], T],
        *,
        close: Callable[[T], None] | None = None,
        measure: Callable[[T, str], int | None] | None = None,
        measure_rss: bool = False,
        large: bool | None = None,
        device: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.estimate_bytes = estimate_bytes
        self.large = large
        self.device = device
        self._factory = factory
        self._close = close
        self._measure = measure
        self._measure_rss = measure_rss
        self._instance: T | None = None
        self.loaded_on: str | None = None

    @property
    def instance(self) -> T:
        """The loaded object; only valid while a lease on this model is held."""
        if self._instance is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self._instance

    async def load(self, device: str) -> int | None:
        before = rss_bytes() if self._measure_rss and device == "cpu" else None
        instance = await asyncio.to_thread(self._factory, device)
        self._instance, self.loaded_on = instance, device
        if self._measure is not None:
            return self._measure(instance, device)
        if before is not None:
            grown = rss_bytes() - before
            return grown if grown > 0 else None
        return None

    async def unload(self) -> None:
        instance, self._instance, self.loaded_on = self._instance, None, None
        if instance is not None and self._close is not None:
            await asyncio.to_thread(self._close, instance)
        del instance
        await asyncio.to_thread(_collect)


def _collect() -> None:
    """Free what the dropped model held: Python objects, and torch's cached CUDA blocks (which the device
    would otherwise still count as used)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def rss_bytes() -> int:
    """This process's resident set size."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


class SimulatedModel:
    """A model that allocates `size_bytes` on a FixedCapacityBackend while loaded (tests and benchmarks).

    `load_delay`/`unload_delay` are seconds spent in load/unload; `fail_loads` makes the next loads raise;
    `report` False makes load return None (an owner that cannot measure).
    """

    def __init__(
        self,
        name: str,
        size_bytes: int,
        backend: FixedCapacityBackend,
        *,
        kind: str = "simulated",
        estimate_bytes: int | None = None,
        load_delay: float = 0.0,
        unload_delay: float = 0.0,
        report: bool = True,
        large: bool | None = None,
        device: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.size_bytes = size_bytes
        self.estimate_bytes = size_bytes if estimate_bytes is None else estimate_bytes
        self.large = large
        self.device = device
        self.load_delay = load_delay
        self.unload_delay = unload_delay
        self.report = report
        self.fail_loads = 0
        self.loads = 0
        self.unloads = 0
        self.loaded_on: str | None = None
        self._backend = backend

    async def load(self, device: str) -> int | None:
        if self.loaded_on is not None:
            raise RuntimeError(f"{self.name} loaded twice")
        await asyncio.sleep(self.load_delay)
        if self.fail_loads:
            self.fail_loads -= 1
            raise RuntimeError(f"{self.name}: simulated load failure")
        self._backend.allocate(device, self.size_bytes)
        self.loaded_on = device
        self.loads += 1
        return self.size_bytes if self.report else None

    async def unload(self) -> None:
        if self.loaded_on is None:
            return
        await asyncio.sleep(self.unload_delay)
        self._backend.release(self.loaded_on, self.size_bytes)
        self.loaded_on = None
        self.unloads += 1
