"""The scheduler: leases, loads and unloads on the event loop, around the sans-I/O ledger.

    scheduler = GpuScheduler(detect_backend(), SchedulerConfig(low_vram=True))
    scheduler.register(OllamaModel("llm", tag="qwen3:8b", base_url=url, estimate_bytes=6 << 30))
    async with scheduler.lease("llm") as handle:
        ...  # the model stays loaded until the block ends

Every decision is taken synchronously by the ledger in `_pump`; this module only runs what it decides
(a load or unload is one task each, owned here; on close, loads are cancelled and undone, unloads
finish), wakes waiters and bounds every wait. A waiter that times out or is cancelled is taken out of
the queue, or, if it was granted in the meantime, its grant is given back: nothing of it remains.

Leases are taken and released on the event loop's thread; the work done under a lease may of course
run in a worker thread (STYLE.md: inference runs in executors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

from realtime.gpu.devices import CPU, DeviceBackend, is_accelerator
from realtime.gpu.errors import GpuBusy, ModelLoadFailed, SchedulerClosed, UnknownModel
from realtime.gpu.lease import Lease, LeaseContext, SchedulerConfig, UnloadResult
from realtime.gpu.ledger import (
    Action,
    DeviceReading,
    Fail,
    Grant,
    Ledger,
    Load,
    ModelRecord,
    ModelState,
    Unload,
    Waiter,
)
from realtime.gpu.models import ManagedModel
from realtime.gpu.status import build_status

log = logging.getLogger("realtime.gpu")

_DEFAULT: Any = object()


class _DeviceOps:
    """Loads and unloads in flight on one device: a free-memory delta measures a load only when it ran alone."""

    __slots__ = ("in_flight", "started")

    def __init__(self) -> None:
        self.in_flight = 0
        self.started = 0


class _Readings(Mapping[str, DeviceReading]):
    """The devices' memory, read at most once per decision, and only for the devices the decision looks at."""

    def __init__(self, scheduler: GpuScheduler) -> None:
        self._scheduler = scheduler
        self._cache: dict[str, DeviceReading] = {}

    def __getitem__(self, device: str) -> DeviceReading:
        reading = self._cache.get(device)
        if reading is None:
            reading = self._cache[device] = self._scheduler.read_device(device)
        return reading

    def __iter__(self) -> Iterator[str]:
        return iter(self._scheduler.devices)

    def __len__(self) -> int:
        return len(self._scheduler.devices)


class GpuScheduler:
    """Which models are loaded where, within each device's memory budget, for any number of sessions."""

    def __init__(
        self,
        backend: DeviceBackend,
        config: SchedulerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.backend = backend
        self.devices: tuple[str, ...] = tuple(backend.devices())
        if not self.devices:
            raise ValueError("the device backend lists no device")
        self._ledger = Ledger(low_vram=self.config.low_vram, large_threshold=self.config.large_threshold_bytes)
        self._records = self._ledger.records
        self._clock = clock
        self._ops = {d: _DeviceOps() for d in self.devices}
        self._totals: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # loads and unloads in flight
        self._loads: set[asyncio.Task[None]] = set()
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._poll_handle: asyncio.TimerHandle | None = None
        self._pumping = False
        self._again = False
        self._closed = False
        self._failed_loads: dict[str, tuple[float, str]] = {}  # name -> (when, device) of its last failed load

    # ---- registration ----

    def register(self, model: ManagedModel, *, device: str | None = None, large: bool | None = None) -> None:
        """Add a model (unloaded). `device` pins it (else configuration's pins, else the model's own `device`
        attribute, else automatic placement); `large` overrides the size class for low_vram mode."""
        pinned = device or self.config.pins.get(model.name) or getattr(model, "device", None)
        if pinned is not None and pinned not in self.devices:
            raise ValueError(f"model {model.name}: device {pinned!r} is not one of {', '.join(self.devices)}")
        if large is None:
            large = getattr(model, "large", None)
        self._ledger.add(model.name, model.kind, int(model.estimate_bytes), large=large, pinned=pinned, model=model)

    def model(self, name: str) -> Any:
        return self._record(name).model

    def is_registered(self, name: str) -> bool:
        return name in self._records

    # ---- leases ----

    def lease(self, name: str, *, timeout: float | None = _DEFAULT) -> LeaseContext:
        """`async with scheduler.lease(name) as handle:` the model is loaded and stays so inside the block.

        Raises UnknownModel, ModelTooLarge (at once), GpuBusy (after `timeout`, default lease_timeout),
        ModelLoadFailed, SchedulerClosed.
        """
        return LeaseContext(self, name, self.config.lease_timeout if timeout is _DEFAULT else timeout)

    async def acquire(self, name: str, *, timeout: float | None = _DEFAULT) -> Lease:  # noqa: ASYNC109
        """A lease without a context manager; give it back with `release(lease)` exactly once.

        (`timeout` is part of the answer, not only a cancellation: on expiry the waiter leaves the queue
        and GpuBusy says which models held the memory.)
        """
        record = self._records.get(name)
        if record is None:
            raise UnknownModel(f"no model named {name!r} is registered", param=name)
        if self._closed:
            raise SchedulerClosed()
        self._refuse_recent_failure(record)
        owner = asyncio.current_task()
        if self._ledger.try_acquire(record, self._clock(), owner):
            return Lease(self, record, owner)
        return await self._wait(record, owner, self.config.lease_timeout if timeout is _DEFAULT else timeout)

    def _refuse_recent_failure(self, record: ModelRecord) -> None:
        failed = self._failed_loads.get(record.name)
        retry = self.config.load_retry_interval
        if failed is None or retry is None or record.state is not ModelState.UNLOADED:
            return
        at, device = failed
        ago = self._clock() - at
        if ago < retry:
            raise ModelLoadFailed(
                f"model {record.name} failed to load on {device} {ago:.1f} s ago; it is tried again after {retry:g} s",
                param=record.name,
            )

    def release(self, lease: Lease) -> None:
        if lease._released:
            return
        lease._released = True
        if self._ledger.release(lease._record, self._clock(), lease._owner):
            self._pump()

    async def preload(self, *names: str) -> None:
        """Load the models (one after the other) and leave them resident and idle."""
        for name in names:
            async with self.lease(name):
                pass

    async def _wait(self, record: ModelRecord, owner: object, limit: float | None) -> Lease:
        waiter = self._ledger.enqueue(record, owner)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.ticket = future
        self._pump()
        try:
            if not future.done():
                async with asyncio.timeout(limit):
                    await future
            future.result()
        except TimeoutError:
            self._abandon(waiter)
            raise self._busy(record, limit) from None
        except BaseException:
            self._abandon(waiter)
            raise
        return Lease(self, record, owner)

    def _abandon(self, waiter: Waiter) -> None:
        """A waiter gives up: out of the queue, or its grant given back if it was granted meanwhile."""
        future: asyncio.Future[None] = waiter.ticket
        if self._ledger.withdraw(waiter):
            future.cancel()
            self._pump()  # the drains it caused may no longer be needed
        elif (
            future.done()
            and not future.cancelled()
            and future.exception() is None
            and self._ledger.release(waiter.record, self._clock(), waiter.owner)
        ):
            self._pump()

    def _busy(self, record: ModelRecord, timeout: float | None) -> GpuBusy:
        devices = self._ledger.candidates(record, self.devices)
        users = [f"{r.name} ({r.users} in use)" for r in self._records.values() if r.device in devices and r.busy]
        if users:
            why = "models in use: " + ", ".join(users)
        elif self._ledger.queue:
            why = f"{len(self._ledger.queue)} earlier requests still wait"
        else:
            why = "memory is held by other processes"
        return GpuBusy(
            f"model {record.name} waited {timeout:g} s for memory on {' or '.join(devices)}; {why}", param=record.name
        )

    # ---- decisions and their execution ----

    def read_device(self, device: str) -> DeviceReading:
        """One reading; a failing read counts as no free memory (nothing is loaded on a guess)."""
        reserve = self.config.cpu_reserve_bytes if device == CPU else self.config.reserve_bytes
        try:
            total = self._totals.get(device) or self.backend.total_bytes(device)
            self._totals[device] = total
            free = self.backend.free_bytes(device)
        except Exception:
            log.exception("reading the memory of %s failed", device)
            return DeviceReading(self._totals.get(device, 0), 0, reserve)
        return DeviceReading(total, free, reserve)

    def _pump(self) -> None:
        if self._pumping:  # an action applied during a pump asked for another: run it after this one
            self._again = True
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                actions = self._ledger.pump(_Readings(self), self._clock())
                self._apply(actions)
                if not self._again:
                    break
        finally:
            self._pumping = False
        self._arm_poll()
        self._changed.set()
        self._changed = asyncio.Event()

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Grant):
                future: asyncio.Future[None] = action.waiter.ticket
                if future.done():  # its task was cancelled before it could run: give the grant back
                    if self._ledger.release(action.waiter.record, self._clock(), action.waiter.owner):
                        self._again = True
                else:
                    future.set_result(None)
            elif isinstance(action, Fail):
                future = action.waiter.ticket
                if not future.done():
                    future.set_exception(action.error)
            elif isinstance(action, Load):
                task = self._spawn(self._load(action.record, action.device), f"gpu-load-{action.record.name}")
                self._loads.add(task)
                task.add_done_callback(self._loads.discard)
            elif isinstance(action, Unload):
                self._start_unload(action.record)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _arm_poll(self) -> None:
        if self._ledger.queue and self._poll_handle is None and not self._closed:
            self._poll_handle = asyncio.get_running_loop().call_later(self.config.poll_interval, self._on_poll)

    def _on_poll(self) -> None:
        self._poll_handle = None
        self._pump()

    async def _load(self, record: ModelRecord, device: str) -> None:
        ops = self._ops[device]
        solo = ops.in_flight == 0
        ops.in_flight += 1
        ops.started += 1
        mark = ops.started
        before = self.read_device(device).free if solo and is_accelerator(device) else None
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.config.load_timeout):
                    measured = await record.model.load(device)
                if measured is not None and (not isinstance(measured, int) or measured < 0):
                    raise TypeError(f"load() returned {measured!r}, not a byte count or None")
            except Exception as exc:
                log.warning("loading %s on %s failed: %r", record.name, device, exc)
                self._failed_loads[record.name] = (self._clock(), device)
                await self._cleanup_failed_load(record)
                self._apply(self._ledger.load_failed(record, lambda cause=exc: _load_failed(record, device, cause)))
                return
            except asyncio.CancelledError:  # closing: undo what the load may have done
                await self._cleanup_failed_load(record)
                self._apply(self._ledger.load_failed(record, SchedulerClosed))
                raise
            if measured is None and before is not None and ops.started == mark:
                grown = before - self.read_device(device).free
                measured = grown if grown > 0 else None
            log.info(
                "loaded %s on %s in %.2f s (%s)",
                record.name,
                device,
                time.perf_counter() - started,
                "estimate" if measured is None else f"{measured / (1 << 20):.0f} MiB measured",
            )
            if measured is not None and measured > record.estimate * 1.1:
                log.warning(
                    "%s takes %d MiB, more than its estimate of %d MiB: raise the estimate, or loads may find "
                    "less memory than they were promised",
                    record.name,
                    measured >> 20,
                    record.estimate >> 20,
                )
            self._failed_loads.pop(record.name, None)
            self._apply(self._ledger.load_done(record, measured, self._clock()))
        finally:
            ops.in_flight -= 1
            self._pump()

    async def _cleanup_failed_load(self, record: ModelRecord) -> None:
        try:
            async with asyncio.timeout(self.config.unload_timeout):
                await record.model.unload()
        except Exception as exc:
            log.warning("cleaning up after the failed load of %s: %r", record.name, exc)

    async def _unload(self, record: ModelRecord) -> None:
        device = record.device or CPU
        ops = self._ops[device]
        ops.in_flight += 1
        ops.started += 1
        try:
            async with asyncio.timeout(self.config.unload_timeout):
                await record.model.unload()
            log.info("unloaded %s from %s", record.name, device)
        except Exception as exc:  # its memory is in an unknown state: the free reading will tell
            log.error("unloading %s from %s failed: %r", record.name, device, exc)
        finally:
            ops.in_flight -= 1
            self._ledger.unload_done(record)
            self._pump()

    # ---- control ----

    async def unload(
        self,
        name: str | None = None,
        *,
        wait: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (with wait=True the deadline decides the result)
    ) -> UnloadResult:
        """Unload one model, or all with None. Without `wait`, models in use are refused (listed in
        `in_use`); with it, new leases on them queue while the current ones finish, for at most `timeout`
        seconds (default unload_timeout), and the models are unloaded as each becomes idle."""
        records = [self._record(name)] if name is not None else list(self._records.values())
        limit = self.config.unload_timeout if timeout is None else timeout
        if not wait:
            result = UnloadResult(
                tuple(r.name for r in records if not r.busy), tuple(r.name for r in records if r.busy)
            )
            for name in result.unloaded:
                self._begin_unload(self._records[name])
            unloading = [self._unloading[n] for n in result.unloaded if n in self._unloading]
            if unloading:  # each is bounded by unload_timeout; asyncio.wait does not cancel them if we are
                await asyncio.wait(unloading)
            return result
        for record in records:
            record.unload_requests += 1
        self._pump()
        try:
            async with asyncio.timeout(limit):
                await self._until(lambda: self._unload_idle(records))
        except TimeoutError:
            pass
        finally:
            result = self._unload_result(records)  # before queued leases may load them again
            for record in records:
                record.unload_requests -= 1
            self._pump()
        return result

    def _unload_idle(self, records: list[ModelRecord]) -> bool:
        for record in records:
            self._begin_unload(record)
        return all(r.state is ModelState.UNLOADED for r in records)

    def _begin_unload(self, record: ModelRecord) -> None:
        if self._ledger.begin_unload(record):
            self._start_unload(record)

    def _start_unload(self, record: ModelRecord) -> None:
        task = self._spawn(self._unload(record), f"gpu-unload-{record.name}")
        self._unloading[record.name] = task
        task.add_done_callback(lambda done: self._unloaded(record.name, done))

    def _unloaded(self, name: str, task: asyncio.Task[None]) -> None:
        if self._unloading.get(name) is task:
            del self._unloading[name]

    def _unload_result(self, records: list[ModelRecord]) -> UnloadResult:
        return UnloadResult(
            unloaded=tuple(r.name for r in records if r.state is ModelState.UNLOADED),
            in_use=tuple(r.name for r in records if r.state is not ModelState.UNLOADED),
        )

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._changed.wait()

    def _record(self, name: str) -> ModelRecord:
        record = self._records.get(name)
        if record is None:
            raise UnknownModel(f"no model named {name!r} is registered", param=name)
        return record

    def status(self) -> dict[str, Any]:
        """Per device: memory figures; per model: where, state, memory, users, last use. JSON-ready."""
        return build_status(
            self._ledger,
            self.devices,
            self.read_device,
            low_vram=self.config.low_vram,
            now=self._clock(),
            wall=time.time(),
        )

    async def aclose(self, *, unload_models: bool = True) -> None:
        """Fail every waiter, cancel loads in flight (undoing them), let unloads in flight finish, then (by
        default) unload every idle model. Models still leased stay loaded."""
        self._closed = True
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
        for waiter in list(self._ledger.queue.values()):
            self._ledger.withdraw(waiter)
            if not waiter.ticket.done():
                waiter.ticket.set_exception(SchedulerClosed())
        for task in self._loads:
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if unload_models:
            for record in self._records.values():
                self._begin_unload(record)
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _load_failed(record: ModelRecord, device: str, cause: BaseException) -> ModelLoadFailed:
    error = ModelLoadFailed(f"model {record.name} failed to load on {device}", param=record.name)
    error.__cause__ = cause
    return error
