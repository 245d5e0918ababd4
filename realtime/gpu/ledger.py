"""Model residency as pure data: which models hold memory where, who uses them, who waits, what to do next.

Sans-I/O: no asyncio, no clock, no device calls. The caller passes `now` and the devices' readings and
carries out the returned actions (Grant, Fail, Load, Unload); state changes happen here, synchronously,
so a decision and the bookkeeping it implies can never be interleaved with another task.

Accounting. On a device, the headroom for a new model is
    min(budget - ours, free - reserve - loading)
where budget = total - reserve, `ours` is what our models on it account for (measured size once loaded,
else the estimate), `free` is the device's own reading (other processes included) and `loading` what our
loads in flight will still take. The first term keeps our sum within the budget, the second keeps
memory we do not manage (Ollama's, another program's, an estimate that was too small) from being
promised twice.

Leases and fairness. A lease on a resident model that nobody is waiting to remove is granted at once
(the fast path). Everything else waits in one FIFO queue, walked in order by `pump`:
- a waiter whose model is resident and not draining is granted;
- a waiter whose model is unloaded gets a plan for the best device: load now if it fits, or else evict
  idle models (least recently used first) and, if that is not enough, mark models in use as draining:
  new leases on a draining model queue up behind, so its users finish and it can go;
- on a device where an earlier waiter waits, a later one may only load beside it, in the headroom the
  earlier one will not take, without evicting or draining anything (nor taking the low_vram slot);
- when a model finishes loading, every waiter for it is granted together (one swap serves them all).
Nobody is overtaken for the memory they wait for, and nobody starves: whoever drains a model arrived
before everyone queued behind it.

Nested leases. A waiter whose owner (its task) already holds leases goes first: it is granted a draining
model and plans as if it were first in the queue, since making it wait could only make its own leases
wait longer. A waiter that could only go on once a lease its owner holds ends, or that closes a
cycle of owners waiting on each other's leases, fails at once with LeaseConflict (the youngest of the
cycle) instead of waiting for its timeout.

low_vram: at most one large model per device holds memory (loading, resident or unloading); loading a
large model first drains and evicts the other large ones there. Small models stay.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from realtime.gpu.devices import CPU, is_accelerator
from realtime.gpu.errors import LeaseConflict, ModelTooLarge


class ModelState(StrEnum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    RESIDENT = "resident"
    UNLOADING = "unloading"


@dataclass(frozen=True, slots=True)
class DeviceReading:
    total: int
    free: int
    reserve: int

    @property
    def budget(self) -> int:
        return max(self.total - self.reserve, 0)


@dataclass(eq=False, slots=True)
class ModelRecord:
    name: str
    kind: str
    estimate: int
    large: bool
    pinned: str | None = None
    model: Any = None  # the ManagedModel; the ledger never calls it
    state: ModelState = ModelState.UNLOADED
    device: str | None = None  # where it holds memory (None while unloaded)
    measured: int | None = None  # bytes measured after the last load
    measured_on: str | None = None
    users: int = 0
    last_used: float | None = None
    draining: bool = False  # new leases wait: an earlier waiter or an unload needs it gone
    unload_requests: int = 0  # admin unloads waiting for it

    @property
    def size(self) -> int:
        """What it accounts for while it holds memory."""
        if self.state is not ModelState.UNLOADED and self.measured is not None and self.measured_on == self.device:
            return self.measured
        return self.estimate

    def need_on(self, device: str) -> int:
        """What a load on `device` must find: the estimate, or more if a load there measured more."""
        if self.measured is not None and self.measured_on == device:
            return max(self.estimate, self.measured)
        return self.estimate

    @property
    def busy(self) -> bool:
        return self.users > 0 or self.state is ModelState.LOADING


@dataclass(eq=False, slots=True)
class Waiter:
    record: ModelRecord
    seq: int
    owner: Hashable = None  # who asks (the task): its leases give it priority, and reveal deadlocks
    ticket: Any = None  # the I/O layer's handle (its future)


@dataclass(frozen=True, slots=True)
class Grant:
    waiter: Waiter  # the record's user count already includes it


@dataclass(frozen=True, slots=True)
class Fail:
    waiter: Waiter
    error: Exception


@dataclass(frozen=True, slots=True)
class Load:
    record: ModelRecord
    device: str


@dataclass(frozen=True, slots=True)
class Unload:
    record: ModelRecord


Action = Grant | Fail | Load | Unload


@dataclass(slots=True)
class Option:
    """A plan for loading one model on one device."""

    device: str
    headroom: int
    ready: bool = False  # fits now: load
    evict: list[ModelRecord] = field(default_factory=list)  # idle: unload (once nothing must drain)
    drain: list[ModelRecord] = field(default_factory=list)  # in use: let finish, then unload
    external: bool = False  # even with all of ours gone it would not fit: memory we do not manage
    behind: bool = False  # an earlier waiter waits on this device and this does not fit beside it: wait

    def rank(self, keep: Mapping[str, int] | None = None) -> tuple[bool, bool, bool, bool, int, int, int]:
        """Ready first, then not behind an earlier waiter, then fits without other processes shrinking,
        then without draining `keep` (what the asker holds), fewest drained, fewest bytes moved, most room."""
        cost = sum(r.size for r in self.evict) + sum(r.size for r in self.drain)
        own = bool(keep) and any(r.name in keep for r in self.drain)
        return (not self.ready, self.behind, self.external, own, len(self.drain), cost, -self.headroom)


_HOLDING = (ModelState.LOADING, ModelState.RESIDENT, ModelState.UNLOADING)


class Ledger:
    def __init__(self, *, low_vram: bool = False, large_threshold: int = 1 << 30) -> None:
        self.low_vram = low_vram
        self.large_threshold = large_threshold
        self.records: dict[str, ModelRecord] = {}
        self.queue: dict[int, Waiter] = {}  # insertion order is arrival order
        self.holdings: dict[Hashable, dict[str, int]] = {}  # owner -> model -> leases held
        self._seq = 0

    def add(
        self,
        name: str,
        kind: str,
        estimate: int,
        *,
        large: bool | None = None,
        pinned: str | None = None,
        model: Any = None,
    ) -> ModelRecord:
        if name in self.records:
            raise ValueError(f"model {name!r} is already registered")
        if estimate <= 0:
            raise ValueError(f"model {name!r}: estimate_bytes must be > 0")
        is_large = estimate >= self.large_threshold if large is None else large
        record = ModelRecord(name, kind, estimate, is_large, pinned, model)
        self.records[name] = record
        return record

    # ---- leases ----

    def try_acquire(self, record: ModelRecord, now: float, owner: Hashable = None) -> bool:
        """The fast path: a resident model nobody waits to remove."""
        if record.state is ModelState.RESIDENT and not record.draining:
            self._hold(record, now, owner)
            return True
        return False

    def release(self, record: ModelRecord, now: float, owner: Hashable = None) -> bool:
        """One user fewer; True when the queue or an unload may now move (call pump)."""
        held = self.holdings.get(owner)
        if record.users <= 0 or held is None or record.name not in held:
            raise RuntimeError(f"model {record.name}: release without a lease")
        if held[record.name] == 1:
            del held[record.name]
            if not held:
                del self.holdings[owner]
        else:
            held[record.name] -= 1
        record.users -= 1
        record.last_used = now
        return record.users == 0 and (bool(self.queue) or record.unload_requests > 0)

    def enqueue(self, record: ModelRecord, owner: Hashable = None) -> Waiter:
        self._seq += 1
        waiter = Waiter(record, self._seq, owner)
        self.queue[waiter.seq] = waiter
        return waiter

    def withdraw(self, waiter: Waiter) -> bool:
        """Take a waiter out of the queue (timed out or cancelled); False if it was already served."""
        return self.queue.pop(waiter.seq, None) is not None

    # ---- results of the caller's I/O ----

    def load_done(self, record: ModelRecord, measured: int | None, now: float) -> list[Action]:
        """Resident: every waiter for it is granted, wherever it is in the queue."""
        record.state = ModelState.RESIDENT
        if measured is not None:
            record.measured, record.measured_on = measured, record.device
        return [self._grant(w, now) for w in self._waiters_of(record)]

    def load_failed(self, record: ModelRecord, error: Callable[[], Exception]) -> list[Action]:
        """Unloaded again; its waiters fail (with one error each) rather than retry a load that fails."""
        record.state, record.device = ModelState.UNLOADED, None
        return self._fail_all(record, error)

    def begin_unload(self, record: ModelRecord) -> bool:
        """An unload asked from outside (admin, shutdown): only a resident model without users."""
        if record.state is ModelState.RESIDENT and record.users == 0:
            record.state = ModelState.UNLOADING
            return True
        return False

    def unload_done(self, record: ModelRecord) -> None:
        record.state, record.device = ModelState.UNLOADED, None

    # ---- queries ----

    def on_device(self, device: str) -> list[ModelRecord]:
        return [r for r in self.records.values() if r.device == device and r.state in _HOLDING]

    def used_by_us(self, device: str) -> int:
        return sum(r.size for r in self.on_device(device))

    def headroom(self, device: str, reading: DeviceReading) -> int:
        held = self.on_device(device)
        ours = sum(r.size for r in held)
        loading = sum(r.size for r in held if r.state is ModelState.LOADING)
        return min(reading.budget - ours, reading.free - reading.reserve - loading)

    def candidates(self, record: ModelRecord, devices: Iterable[str]) -> list[str]:
        """Its pinned device, else the accelerators, else "cpu"."""
        if record.pinned is not None:
            return [record.pinned]
        names = list(devices)
        accelerators = [d for d in names if is_accelerator(d)]
        return accelerators or [d for d in names if d == CPU]

    # ---- the scheduler's step ----

    def pump(self, readings: Mapping[str, DeviceReading], now: float) -> list[Action]:
        """Walk the queue in order and decide; state changes are applied, actions returned for the caller."""
        actions: list[Action] = []
        while True:
            drains = self._walk(readings, now, actions)
            victim = self._deadlocked(drains)
            if victim is None:
                return actions
            del self.queue[victim.seq]
            actions.append(Fail(victim, _conflict(victim, drains[victim.seq])))

    def _walk(self, readings: Mapping[str, DeviceReading], now: float, actions: list[Action]) -> dict[int, list[str]]:
        """One pass over the queue; returns, per waiter that waits on models in use, the models it drains."""
        for record in self.records.values():
            record.draining = record.unload_requests > 0
        promised: dict[str, int] = {}  # device -> headroom earlier waiters there will take
        large_slot: set[str] = set()  # devices where an earlier large waiter waits for the low_vram slot
        planned: set[str] = set()
        drains: dict[int, list[str]] = {}
        for waiter in list(self.queue.values()):
            if waiter.seq not in self.queue:  # failed with an earlier waiter of the same model
                continue
            record = waiter.record
            keep = self.holdings.get(waiter.owner)
            if record.state is ModelState.RESIDENT:
                if not record.draining or keep:
                    actions.append(self._grant(waiter, now))
                continue
            if record.state is not ModelState.UNLOADED or record.unload_requests:
                continue  # loading (granted when done), unloading, or held for an unload
            if record.name in planned and not keep:
                continue
            planned.add(record.name)
            devices = self.candidates(record, readings)
            if all(record.need_on(d) > readings[d].budget for d in devices):
                actions += self._fail_all(record, lambda r=record, ds=devices: _too_large(r, ds, readings))
                continue
            behind = (None, frozenset()) if keep else (promised, large_slot)
            option = self.best_option(record, devices, readings, *behind, keep=keep)
            if option is None:
                continue
            if option.ready:
                record.state, record.device = ModelState.LOADING, option.device
                actions.append(Load(record, option.device))
                continue
            need = record.need_on(option.device)
            promised[option.device] = promised.get(option.device, 0) + max(min(need, option.headroom), 0)
            if self.low_vram and record.large:
                large_slot.add(option.device)
            if option.external or option.behind:
                continue
            if option.drain:
                drains[waiter.seq] = [r.name for r in option.drain]
                for victim in option.drain + option.evict:
                    victim.draining = True
            else:
                for victim in option.evict:
                    victim.state = ModelState.UNLOADING
                    actions.append(Unload(victim))
        return drains

    def _deadlocked(self, drains: dict[int, list[str]]) -> Waiter | None:
        """The youngest waiter of a cycle of owners waiting on each other's leases (or on their own)."""
        waiting: dict[Hashable, Waiter] = {}
        for seq in drains:
            waiter = self.queue[seq]
            if waiter.owner in self.holdings:  # an owner without leases blocks nobody
                waiting[waiter.owner] = waiter
        edges = {
            owner: [o for o in waiting if any(n in self.holdings[o] for n in drains[w.seq])]
            for owner, w in waiting.items()
        }
        finished: set[Hashable] = set()
        for root in edges:
            if root in finished:
                continue
            path, stack = [root], [iter(edges[root])]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    finished.add(path.pop())
                    stack.pop()
                elif nxt in path:
                    return max((waiting[o] for o in path[path.index(nxt) :]), key=lambda w: w.seq)
                elif nxt not in finished:
                    path.append(nxt)
                    stack.append(iter(edges[nxt]))
        return None

    def best_option(
        self,
        record: ModelRecord,
        devices: Iterable[str],
        readings: Mapping[str, DeviceReading],
        promised: Mapping[str, int] | None = None,
        large_slot: set[str] | frozenset[str] = frozenset(),
        *,
        keep: Mapping[str, int] | None = None,
    ) -> Option | None:
        """The best plan over `devices`. Where earlier waiters wait (`promised`: the headroom they will take;
        `large_slot`: an earlier large model waits for the low_vram slot), a later model may only load
        beside them, in what is left, without evicting or draining anything."""
        options = []
        for device in devices:
            need = record.need_on(device)
            if need > readings[device].budget:
                continue
            option = self._option(record, device, readings[device], keep or {})
            if promised is not None and device in promised:
                option.headroom -= promised[device]
                slot_taken = self.low_vram and record.large and device in large_slot
                if not (option.ready and option.headroom >= need and not slot_taken):
                    option = Option(device, option.headroom, behind=True)
            options.append(option)
        return min(options, key=lambda o: o.rank(keep)) if options else None

    def _option(self, record: ModelRecord, device: str, reading: DeviceReading, keep: Mapping[str, int]) -> Option:
        need = record.need_on(device)
        held = self.on_device(device)
        headroom = self.headroom(device, reading)
        option = Option(device, headroom)
        large_others = [r for r in held if r.large] if self.low_vram and record.large else []
        if headroom >= need and not large_others:
            option.ready = True
            return option
        # what will come back: unloads in flight, then what must go anyway, then idle LRU, then busy LRU
        # (models the asker holds itself last)
        short = need - headroom - sum(r.size for r in held if r.state is ModelState.UNLOADING)
        leaving = [r for r in large_others if r.state is not ModelState.UNLOADING]
        short -= sum(r.size for r in leaving)
        by_age = sorted(held, key=lambda r: r.last_used if r.last_used is not None else float("-inf"))
        idle = [r for r in by_age if r.state is ModelState.RESIDENT and not r.busy and r not in leaving]
        busy = sorted((r for r in by_age if r.busy and r not in leaving), key=lambda r: r.name in keep)
        for r in idle:
            if short <= 0:
                break
            leaving.append(r)
            short -= r.size
        for r in busy:
            if short <= 0:
                break
            leaving.append(r)
            short -= r.size
        option.external = short > 0
        option.evict = [r for r in leaving if not r.busy]
        option.drain = [r for r in leaving if r.busy]
        return option

    def _grant(self, waiter: Waiter, now: float) -> Grant:
        del self.queue[waiter.seq]
        self._hold(waiter.record, now, waiter.owner)
        return Grant(waiter)

    def _hold(self, record: ModelRecord, now: float, owner: Hashable) -> None:
        record.users += 1
        record.last_used = now
        held = self.holdings.get(owner)
        if held is None:
            self.holdings[owner] = {record.name: 1}
        else:
            held[record.name] = held.get(record.name, 0) + 1

    def _waiters_of(self, record: ModelRecord) -> list[Waiter]:
        return [w for w in self.queue.values() if w.record is record]

    def _fail_all(self, record: ModelRecord, error: Callable[[], Exception]) -> list[Action]:
        failed: list[Action] = []
        for waiter in self._waiters_of(record):
            del self.queue[waiter.seq]
            failed.append(Fail(waiter, error()))
        return failed


def _too_large(record: ModelRecord, devices: list[str], readings: Mapping[str, DeviceReading]) -> ModelTooLarge:
    budgets = ", ".join(f"{d} {_mib(readings[d].budget)}" for d in devices)
    return ModelTooLarge(
        f"model {record.name} needs {_mib(record.estimate)}, more than the whole budget of {budgets}", param=record.name
    )


def _conflict(waiter: Waiter, drained: list[str]) -> LeaseConflict:
    return LeaseConflict(
        f"model {waiter.record.name} would wait for leases on {', '.join(drained)} to end, while those wait on "
        "leases its own task holds: release them before asking for it",
        param=waiter.record.name,
    )


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.0f} MiB"
