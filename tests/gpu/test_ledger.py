"""The sans-I/O ledger: decisions as data, checked without an event loop, and a stateful property test."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from realtime.gpu.errors import LeaseConflict, ModelLoadFailed, ModelTooLarge
from realtime.gpu.ledger import DeviceReading, Fail, Grant, Ledger, Load, ModelRecord, ModelState, Unload

GPU = "cuda:0"


def readings(free: int = 10, total: int = 10, reserve: int = 0, device: str = GPU) -> dict[str, DeviceReading]:
    return {device: DeviceReading(total, free, reserve)}


def loaded(ledger: Ledger, name: str, device: str = GPU, now: float = 0.0) -> ModelRecord:
    record = ledger.records[name]
    record.state, record.device = ModelState.LOADING, device
    ledger.load_done(record, None, now)
    return record


def test_ready_model_is_loaded_on_the_device_with_most_headroom() -> None:
    """An unloaded model that fits is loaded where the headroom is largest."""
    ledger = Ledger()
    ledger.add("a", "x", 4)
    waiter = ledger.enqueue(ledger.records["a"])
    two = {"cuda:0": DeviceReading(10, 5, 0), "cuda:1": DeviceReading(10, 8, 0), "cpu": DeviceReading(64, 64, 0)}
    actions = ledger.pump(two, 0.0)
    assert actions == [Load(ledger.records["a"], "cuda:1")] and waiter.seq in ledger.queue
    assert ledger.load_done(ledger.records["a"], 3, 1.0) == [Grant(waiter)]
    assert ledger.records["a"].users == 1 and ledger.records["a"].size == 3


def test_headroom_is_the_smaller_of_budget_and_device_free() -> None:
    """Memory used by others (a low free reading) limits the headroom as much as our own sum does."""
    ledger = Ledger()
    ledger.add("a", "x", 3)
    loaded(ledger, "a")
    assert ledger.headroom(GPU, DeviceReading(10, 7, 1)) == 6  # budget 9 - ours 3
    assert ledger.headroom(GPU, DeviceReading(10, 4, 1)) == 3  # free 4 - reserve 1: others use 3


def test_idle_models_are_evicted_in_lru_order_and_busy_ones_drained() -> None:
    """Eviction takes the least recently used idle model; if not enough, models in use are drained."""
    ledger = Ledger()
    for name, size in (("old", 3), ("new", 3), ("busy", 3), ("want", 6)):
        ledger.add(name, "x", size)
    loaded(ledger, "old", now=1.0)
    loaded(ledger, "new", now=2.0)
    loaded(ledger, "busy", now=0.5)
    for name, when in (("old", 1.0), ("new", 2.0), ("busy", 0.5)):
        ledger.records[name].last_used = when
    ledger.records["busy"].users = 1
    ledger.holdings["t"] = {"busy": 1}
    ledger.enqueue(ledger.records["want"])
    actions = ledger.pump(readings(free=1), 3.0)  # 1 free + old 3 + new 3 = 7 >= 6
    assert actions == [Unload(ledger.records["old"]), Unload(ledger.records["new"])]
    assert not ledger.records["busy"].draining


def test_model_in_use_is_drained_not_unloaded() -> None:
    """A model in use is never unloaded: it is marked draining, so new leases queue behind the waiter."""
    ledger = Ledger()
    ledger.add("a", "x", 6)
    ledger.add("b", "x", 6)
    a = loaded(ledger, "a")
    assert ledger.try_acquire(a, 0.0, "t1")
    ledger.enqueue(ledger.records["b"], "t2")
    assert ledger.pump(readings(free=4), 1.0) == []
    assert a.draining and not ledger.try_acquire(a, 1.0, "t3")
    assert ledger.release(a, 2.0, "t1")
    assert ledger.pump(readings(free=4), 2.0) == [Unload(a)]


def test_too_large_fails_every_waiter_of_the_model() -> None:
    """A model over the budget of every device it may use fails at once, for all its waiters."""
    ledger = Ledger()
    ledger.add("big", "x", 10)
    w1, w2 = ledger.enqueue(ledger.records["big"]), ledger.enqueue(ledger.records["big"])
    actions = ledger.pump(readings(reserve=1), 0.0)
    assert [type(a) for a in actions] == [Fail, Fail] and {a.waiter for a in actions} == {w1, w2}
    assert all(isinstance(a.error, ModelTooLarge) for a in actions) and not ledger.queue


def test_later_waiter_loads_beside_an_earlier_one_only_in_what_is_left() -> None:
    """Behind a waiter, a small model loads in the headroom the earlier one will not take; a bigger one
    waits, and evicts or drains nothing for itself."""
    ledger = Ledger(low_vram=True)
    ledger.add("llm", "x", 4, large=True)
    ledger.add("stt", "x", 4, large=True)
    ledger.add("vad", "x", 1)
    ledger.add("tts", "x", 3)
    llm = loaded(ledger, "llm")
    ledger.try_acquire(llm, 0.0, "t1")
    ledger.enqueue(ledger.records["stt"], "t2")  # waits for the large slot; will take 4 of the 6 free
    ledger.enqueue(ledger.records["vad"], "t3")  # 1 <= 6 - 4: loads now
    ledger.enqueue(ledger.records["tts"], "t4")  # 3 > 6 - 4 - 1: waits (and takes what is left, 1)
    ledger.enqueue(ledger.records["vad"], "t5")  # loading: granted with the first when it is loaded
    assert ledger.pump(readings(free=6), 1.0) == [Load(ledger.records["vad"], GPU)]
    assert llm.draining and ledger.records["tts"].state is ModelState.UNLOADED


def test_low_vram_drains_the_other_large_model_even_with_room() -> None:
    """low_vram: a large model's load evicts the resident large one though both would fit."""
    ledger = Ledger(low_vram=True)
    ledger.add("stt", "x", 2, large=True)
    ledger.add("llm", "x", 2, large=True)
    stt = loaded(ledger, "stt")
    ledger.enqueue(ledger.records["llm"])
    assert ledger.pump(readings(free=8), 1.0) == [Unload(stt)]
    ledger.unload_done(stt)
    assert ledger.pump(readings(free=10), 2.0) == [Load(ledger.records["llm"], GPU)]


def test_waiting_on_own_lease_is_a_conflict() -> None:
    """An owner waiting for a load that needs its own lease drained fails with LeaseConflict."""
    ledger = Ledger()
    ledger.add("a", "x", 6)
    ledger.add("b", "x", 6)
    a = loaded(ledger, "a")
    ledger.try_acquire(a, 0.0, "t1")
    waiter = ledger.enqueue(ledger.records["b"], "t1")
    actions = ledger.pump(readings(free=4), 1.0)
    assert len(actions) == 1 and isinstance(actions[0], Fail) and actions[0].waiter is waiter
    assert isinstance(actions[0].error, LeaseConflict) and not a.draining


def test_cycle_between_owners_fails_the_youngest() -> None:
    """Two owners each waiting for the other's lease to end: the later waiter fails, the other waits on."""
    ledger = Ledger()
    for name, size in (("a", 4), ("b", 4), ("x", 5), ("y", 5)):
        ledger.add(name, "x", size)
    a, b = loaded(ledger, "a"), loaded(ledger, "b")
    ledger.try_acquire(a, 0.0, "t1")
    ledger.try_acquire(b, 0.0, "t2")
    ledger.enqueue(ledger.records["x"], "t1")
    young = ledger.enqueue(ledger.records["y"], "t2")
    actions = ledger.pump(readings(free=2), 1.0)
    assert [a.waiter for a in actions if isinstance(a, Fail)] == [young]
    assert len(ledger.queue) == 1


def test_holder_is_granted_a_draining_model() -> None:
    """An owner that holds a lease gets a model that is draining for a waiter, rather than deadlock."""
    ledger = Ledger()
    ledger.add("a", "x", 6)
    ledger.add("b", "x", 6)
    ledger.add("c", "x", 1)
    a, c = loaded(ledger, "a"), loaded(ledger, "c")
    ledger.try_acquire(a, 0.0, "t1")
    ledger.try_acquire(c, 0.0, "t2")
    ledger.enqueue(ledger.records["b"], "t3")
    ledger.pump(readings(free=3), 1.0)
    assert a.draining
    nested = ledger.enqueue(a, "t2")
    assert ledger.pump(readings(free=3), 2.0) == [Grant(nested)]


# ---- stateful property test ----

CAPACITY = 10


class LedgerMachine(RuleBasedStateMachine):
    """Random requests, releases, withdrawals, load/unload completions and failures, against invariants:
    the budget is never exceeded (neither our sums nor the device), a model in use is never unloaded,
    low_vram holds at most one large model per device, and nothing stalls without a reason."""

    @initialize(
        sizes=st.lists(st.integers(1, 8), min_size=2, max_size=6),
        large=st.lists(st.booleans(), min_size=6, max_size=6),
        low_vram=st.booleans(),
        two_devices=st.booleans(),
        external=st.integers(0, 3),
    )
    def setup(self, sizes: list[int], large: list[bool], low_vram: bool, two_devices: bool, external: int) -> None:
        self.ledger = Ledger(low_vram=low_vram)
        for i, size in enumerate(sizes):
            self.ledger.add(f"m{i}", "sim", size, large=large[i])
        self.devices = ["cuda:0", "cuda:1"] if two_devices else ["cuda:0"]
        self.external = {d: external if d == "cuda:0" else 0 for d in self.devices}
        self.allocated = dict.fromkeys(self.devices, 0)
        self.leases: list[tuple[ModelRecord, int]] = []
        self.waiting: dict[int, object] = {}  # owner -> its one pending waiter
        self.loading: list[ModelRecord] = []
        self.unloading: list[ModelRecord] = []
        self.now = 0.0

    def readings(self) -> dict[str, DeviceReading]:
        return {d: DeviceReading(CAPACITY, CAPACITY - self.external[d] - self.allocated[d], 0) for d in self.devices}

    def pump(self) -> None:
        self.now += 1.0
        self.apply(self.ledger.pump(self.readings(), self.now))

    def apply(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Grant):
                owner = action.waiter.owner
                assert self.waiting.pop(owner) is action.waiter
                self.leases.append((action.waiter.record, owner))
            elif isinstance(action, Fail):
                assert self.waiting.pop(action.waiter.owner) is action.waiter
                assert isinstance(action.error, ModelTooLarge | LeaseConflict | ModelLoadFailed)
            elif isinstance(action, Load):
                assert action.record.state is ModelState.LOADING
                self.loading.append(action.record)
            elif isinstance(action, Unload):
                assert action.record.users == 0, "a model in use is unloaded"
                self.unloading.append(action.record)

    @rule(data=st.data(), owner=st.integers(0, 4))
    def request(self, data: st.DataObject, owner: int) -> None:
        if owner in self.waiting:  # a task waits for one lease at a time
            return
        record = data.draw(st.sampled_from(list(self.ledger.records.values())))
        self.now += 1.0
        if self.ledger.try_acquire(record, self.now, owner):
            self.leases.append((record, owner))
            return
        self.waiting[owner] = self.ledger.enqueue(record, owner)
        self.pump()

    @precondition(lambda self: any(owner not in self.waiting for _, owner in self.leases))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        free = [lease for lease in self.leases if lease[1] not in self.waiting]  # blocked tasks cannot release
        record, owner = data.draw(st.sampled_from(free))
        self.leases.remove((record, owner))
        self.now += 1.0
        if self.ledger.release(record, self.now, owner):
            self.pump()

    @precondition(lambda self: bool(self.waiting))
    @rule(data=st.data())
    def give_up(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.waiting)))
        assert self.ledger.withdraw(self.waiting.pop(owner))
        self.pump()

    @precondition(lambda self: bool(self.loading))
    @rule(data=st.data(), fail=st.booleans())
    def finish_load(self, data: st.DataObject, fail: bool) -> None:
        record = data.draw(st.sampled_from(self.loading))
        self.loading.remove(record)
        if fail:
            self.apply(self.ledger.load_failed(record, ModelLoadFailed))
        else:
            device = record.device
            assert self.allocated[device] + self.external[device] + record.estimate <= CAPACITY, "device overcommitted"
            self.allocated[device] += record.estimate
            self.apply(self.ledger.load_done(record, record.estimate, self.now))
        self.pump()

    @precondition(lambda self: bool(self.unloading))
    @rule(data=st.data())
    def finish_unload(self, data: st.DataObject) -> None:
        record = data.draw(st.sampled_from(self.unloading))
        self.unloading.remove(record)
        self.allocated[record.device] -= record.estimate
        self.ledger.unload_done(record)
        self.pump()

    @invariant()
    def within_budget(self) -> None:
        for device in self.devices:
            assert self.ledger.used_by_us(device) + self.external[device] <= CAPACITY

    @invariant()
    def users_only_on_resident_models(self) -> None:
        for record in self.ledger.records.values():
            assert record.users == sum(1 for r, _ in self.leases if r is record)
            assert record.users == 0 or record.state is ModelState.RESIDENT

    @invariant()
    def low_vram_one_large_per_device(self) -> None:
        if self.ledger.low_vram:
            for device in self.devices:
                assert sum(1 for r in self.ledger.on_device(device) if r.large) <= 1

    @invariant()
    def no_stall_without_cause(self) -> None:
        """Nothing in flight and every lease holder blocked: then the queue is empty, unless memory of
        other processes keeps a waiter out."""
        if self.loading or self.unloading or any(o not in self.waiting for _, o in self.leases):
            return
        for waiter in self.ledger.queue.values():
            record = waiter.record
            if all(record.estimate > CAPACITY - self.external[d] for d in self.devices):
                return
        assert not self.ledger.queue, f"stalled: {[w.record.name for w in self.ledger.queue.values()]}"


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
