"""Leases, eviction, waiting, fairness and cancellation on a FixedCapacityBackend with simulated models."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime.gpu_scheduler import (
    FixedCapacityBackend,
    GpuBusy,
    GpuScheduler,
    LeaseConflict,
    ModelLoadFailed,
    ModelState,
    ModelTooLarge,
    SchedulerClosed,
    SchedulerConfig,
    SimulatedModel,
    UnknownModel,
)
from tests.gpu.helpers import MiB, scheduler_with, settle


def state(scheduler: GpuScheduler, name: str) -> str:
    return scheduler.status()["models"][name]["state"]


async def hold(scheduler: GpuScheduler, name: str, release: asyncio.Event, order: list[str] | None = None) -> str:
    async with scheduler.lease(name) as handle:
        if order is not None:
            order.append(name)
        await release.wait()
        return handle.device


async def test_first_lease_loads_and_model_stays_resident() -> None:
    """A lease loads the model on first use; after release it stays resident and the next lease reuses it."""
    scheduler, _, models = scheduler_with({"a": 400 * MiB})
    async with scheduler.lease("a") as handle:
        assert handle.device == "cuda:0" and handle.model is models["a"]
        assert scheduler.status()["models"]["a"]["users"] == 1
    assert state(scheduler, "a") == "resident"
    async with scheduler.lease("a"):
        pass
    assert models["a"].loads == 1
    await scheduler.aclose()


async def test_lease_on_resident_model_does_not_suspend() -> None:
    """acquire() of a resident, undisputed model completes without ever yielding to the event loop."""
    scheduler, _, _ = scheduler_with({"a": 400 * MiB})
    await scheduler.preload("a")
    coro = scheduler.acquire("a")
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    lease = done.value.value
    assert lease.name == "a"
    scheduler.release(lease)
    scheduler.release(lease)  # idempotent
    assert scheduler.status()["models"]["a"]["users"] == 0
    await scheduler.aclose()


async def test_unknown_model_is_refused() -> None:
    """Leasing or unloading a name that was never registered raises UnknownModel."""
    scheduler, _, _ = scheduler_with({"a": 100 * MiB})
    with pytest.raises(UnknownModel) as err:
        async with scheduler.lease("nope"):
            pass
    assert err.value.code == "unknown_model"
    with pytest.raises(UnknownModel):
        await scheduler.unload("nope")
    await scheduler.aclose()


async def test_idle_models_are_evicted_least_recently_used_first() -> None:
    """When a load does not fit, the idle model used longest ago goes, not a more recent one."""
    scheduler, backend, models = scheduler_with({"a": 400 * MiB, "b": 400 * MiB, "c": 400 * MiB})
    for name in ("a", "b", "a"):
        async with scheduler.lease(name):
            pass
    async with scheduler.lease("c"):
        pass
    assert (state(scheduler, "a"), state(scheduler, "b"), state(scheduler, "c")) == ("resident", "unloaded", "resident")
    assert models["b"].unloads == 1 and backend.peak["cuda:0"] <= 1000 * MiB
    await scheduler.aclose()


async def test_load_waits_for_model_in_use_then_evicts_it() -> None:
    """A model in use is never evicted: the new load waits until its lease ends."""
    scheduler, _, models = scheduler_with({"a": 600 * MiB, "b": 600 * MiB})
    release = asyncio.Event()
    holder = asyncio.create_task(hold(scheduler, "a", release))
    await settle()
    waiter = asyncio.create_task(hold(scheduler, "b", asyncio.Event()))
    await asyncio.sleep(0.02)
    assert not waiter.done() and state(scheduler, "b") == "unloaded"
    assert scheduler.status()["models"]["b"]["waiting"] == 1
    release.set()
    await holder
    await settle()
    assert state(scheduler, "a") == "unloaded" and state(scheduler, "b") == "resident"
    assert not models["a"].violations
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await scheduler.aclose()


async def test_wait_is_bounded_and_answers_gpu_busy() -> None:
    """A lease that cannot get memory within its timeout raises GpuBusy naming what holds it, and leaves
    nothing behind: the model it was draining is leasable at once again."""
    scheduler, _, _ = scheduler_with({"a": 600 * MiB, "b": 600 * MiB})
    lease = await asyncio.create_task(scheduler.acquire("a"))  # held by another task
    started = time.perf_counter()
    with pytest.raises(GpuBusy) as err:
        await scheduler.acquire("b", timeout=0.05)
    assert 0.04 < time.perf_counter() - started < 1.0
    assert err.value.code == "gpu_busy" and "a (1 in use)" in err.value.message
    assert scheduler.status()["waiting"] == 0
    coro = scheduler.acquire("a")  # no longer draining: the fast path again
    with pytest.raises(StopIteration) as again:
        coro.send(None)
    scheduler.release(again.value.value)
    scheduler.release(lease)
    await scheduler.aclose()


async def test_model_larger_than_budget_fails_at_once() -> None:
    """A model bigger than the device budget (capacity minus reserve) fails immediately, loading nothing."""
    scheduler, _, models = scheduler_with({"big": 900 * MiB, "ok": 800 * MiB}, reserve_bytes=200 * MiB)
    started = time.perf_counter()
    with pytest.raises(ModelTooLarge) as err:
        await scheduler.acquire("big", timeout=30)
    assert time.perf_counter() - started < 0.1
    assert err.value.code == "model_too_large" and "big" in err.value.message
    assert models["big"].loads == 0 and scheduler.status()["waiting"] == 0
    async with scheduler.lease("ok"):
        pass
    await scheduler.aclose()


async def test_waiters_are_served_in_arrival_order() -> None:
    """Loads blocked by a model in use start in the order they were asked for."""
    scheduler, _, _ = scheduler_with(dict.fromkeys("abcd", 600 * MiB), load_delay=0.001)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(scheduler, "a", release))
    await settle()
    order: list[str] = []
    go = asyncio.Event()
    go.set()
    waiters = []
    for name in "dbc":
        waiters.append(asyncio.create_task(hold(scheduler, name, go, order)))
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, *waiters), 5)
    assert order == ["d", "b", "c"]
    await scheduler.aclose()


async def test_waiters_for_one_model_share_its_load() -> None:
    """Everyone waiting for a model is granted when it finishes loading, ahead of later loads (one swap)."""
    scheduler, _, models = scheduler_with(dict.fromkeys("abc", 600 * MiB), load_delay=0.001)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(scheduler, "a", release))
    await settle()
    order: list[str] = []
    go = asyncio.Event()
    go.set()
    waiters = []
    for name in "bcb":
        waiters.append(asyncio.create_task(hold(scheduler, name, go, order)))
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, *waiters), 5)
    assert order == ["b", "b", "c"] and models["b"].loads == 1
    await scheduler.aclose()


async def test_cancelled_waiter_leaves_no_trace() -> None:
    """A cancelled waiter is gone from the queue, blocks nobody behind it and undoes the drain it caused."""
    scheduler, _, models = scheduler_with(dict.fromkeys("abc", 600 * MiB))
    lease = await scheduler.acquire("a")
    b = asyncio.create_task(scheduler.acquire("b"))
    await settle()
    c = asyncio.create_task(scheduler.acquire("c"))
    await settle()
    assert scheduler.status()["waiting"] == 2
    b.cancel()
    await asyncio.gather(b, return_exceptions=True)
    assert scheduler.status()["waiting"] == 1
    scheduler.release(lease)
    c_lease = await asyncio.wait_for(c, 2)
    assert models["b"].loads == 0 and c_lease.name == "c"
    scheduler.release(c_lease)
    # the only waiter cancelled: the model it wanted drained is leasable at once
    lease = await scheduler.acquire("c")
    b = asyncio.create_task(scheduler.acquire("b"))
    await settle()
    b.cancel()
    await asyncio.gather(b, return_exceptions=True)
    coro = scheduler.acquire("c")
    with pytest.raises(StopIteration) as again:
        coro.send(None)
    scheduler.release(again.value.value)
    scheduler.release(lease)
    assert scheduler.status()["waiting"] == 0
    await scheduler.aclose()


async def test_waiter_cancelled_right_after_its_grant_gives_the_lease_back() -> None:
    """Granted and cancelled in the same step: the user count it was given is returned."""
    scheduler, _, _ = scheduler_with({"a": 400 * MiB, "b": 400 * MiB, "x": 600 * MiB})
    lease_a = await scheduler.acquire("a")
    lease_b = await scheduler.acquire("b")
    x = asyncio.create_task(scheduler.acquire("x"))  # drains a (least recently used): 200 free, 600 needed
    await settle()
    assert scheduler._records["a"].draining
    t = asyncio.create_task(scheduler.acquire("a"))  # a is draining: queued
    await settle()
    assert not t.done()
    scheduler.release(lease_b)  # x now only needs idle b evicted: a stops draining and t is granted...
    assert scheduler._records["a"].users == 2
    t.cancel()  # ...and cancelled before it could run
    await asyncio.gather(t, return_exceptions=True)
    assert t.cancelled() and scheduler._records["a"].users == 1
    scheduler.release(lease_a)
    scheduler.release(await asyncio.wait_for(x, 2))
    assert scheduler._ledger.holdings == {} and scheduler.status()["waiting"] == 0
    await scheduler.aclose()


async def test_failed_load_fails_its_waiters_and_the_next_lease_retries() -> None:
    """A load that raises gives ModelLoadFailed (cause chained) to its waiters; a later lease loads again."""
    scheduler, _, models = scheduler_with({"a": 400 * MiB}, load_retry_interval=None)
    models["a"].fail_loads = 1
    results = await asyncio.gather(scheduler.acquire("a"), scheduler.acquire("a"), return_exceptions=True)
    assert all(isinstance(r, ModelLoadFailed) for r in results)
    assert isinstance(results[0].__cause__, RuntimeError) and results[0].code == "model_load_failed"
    assert state(scheduler, "a") == "unloaded"
    async with scheduler.lease("a"):
        assert models["a"].loaded_on == "cuda:0"
    await scheduler.aclose()


async def test_after_a_failed_load_leases_fail_at_once_until_the_retry_interval() -> None:
    """Within load_retry_interval of a failed load, a lease fails without loading; after it, it loads again."""
    scheduler, _, models = scheduler_with({"a": 400 * MiB}, load_retry_interval=0.2)
    models["a"].fail_loads = 1
    with pytest.raises(ModelLoadFailed):
        await scheduler.acquire("a")
    loads = models["a"].loads
    with pytest.raises(ModelLoadFailed, match="tried again after"):
        await scheduler.acquire("a")
    assert models["a"].loads == loads, "no second load inside the interval"
    await asyncio.sleep(0.25)
    async with scheduler.lease("a"):
        assert models["a"].loaded_on == "cuda:0"
    await scheduler.aclose()


async def test_load_timeout_counts_as_failure() -> None:
    """A load that outlives load_timeout is abandoned with ModelLoadFailed."""
    scheduler, _, _ = scheduler_with({"a": 400 * MiB}, load_delay=1.0, load_timeout=0.02)
    with pytest.raises(ModelLoadFailed) as err:
        await scheduler.acquire("a")
    assert isinstance(err.value.__cause__, TimeoutError)
    await scheduler.aclose()


async def test_unload_refuses_models_in_use_and_lists_them() -> None:
    """unload(None) unloads the idle models and names those in use; one in-use model is refused alone."""
    scheduler, backend, _ = scheduler_with({"a": 300 * MiB, "b": 300 * MiB, "c": 300 * MiB})
    await scheduler.preload("a", "c")
    lease = await scheduler.acquire("b")
    result = await scheduler.unload(None)
    assert result.unloaded == ("a", "c") and result.in_use == ("b",) and not result.complete
    result = await scheduler.unload("b")
    assert result.in_use == ("b",) and state(scheduler, "b") == "resident"
    scheduler.release(lease)
    result = await scheduler.unload("b")
    assert result.complete and result.unloaded == ("b",) and backend.allocated("cuda:0") == 0
    await scheduler.aclose()


async def test_unload_with_wait_drains_then_unloads() -> None:
    """unload(wait=True): new leases queue while the current one finishes; then it unloads, and the queued
    lease loads it again afterwards."""
    scheduler, _, models = scheduler_with({"a": 300 * MiB})
    lease = await scheduler.acquire("a")
    unloading = asyncio.create_task(scheduler.unload("a", wait=True, timeout=2))
    await settle()
    late = asyncio.create_task(scheduler.acquire("a"))
    await settle()
    assert not late.done() and not unloading.done()
    scheduler.release(lease)
    result = await asyncio.wait_for(unloading, 2)
    assert result.complete and models["a"].unloads == 1
    scheduler.release(await asyncio.wait_for(late, 2))
    assert models["a"].loads == 2 and not models["a"].violations
    await scheduler.aclose()


async def test_unload_with_wait_is_bounded() -> None:
    """A lease that outlasts the unload's timeout keeps its model, which is listed as in use."""
    scheduler, _, _ = scheduler_with({"a": 300 * MiB})
    lease = await scheduler.acquire("a")
    result = await scheduler.unload("a", wait=True, timeout=0.03)
    assert result.in_use == ("a",) and state(scheduler, "a") == "resident"
    assert not scheduler._records["a"].draining
    scheduler.release(lease)
    await scheduler.aclose()


async def test_memory_of_other_processes_is_respected() -> None:
    """Free memory is read from the device: another process's use blocks a load that our sums would allow,
    until it frees its memory."""
    scheduler, backend, _ = scheduler_with({"a": 600 * MiB})
    backend.set_external("cuda:0", 500 * MiB)
    with pytest.raises(GpuBusy) as err:
        await scheduler.acquire("a", timeout=0.05)
    assert "other processes" in err.value.message
    assert scheduler.status()["devices"]["cuda:0"]["used_by_others_bytes"] == 500 * MiB
    pending = asyncio.create_task(scheduler.acquire("a", timeout=2))
    await asyncio.sleep(0.03)
    backend.set_external("cuda:0", 100 * MiB)
    scheduler.release(await pending)
    assert state(scheduler, "a") == "resident"
    await scheduler.aclose()


async def test_measured_size_replaces_the_estimate() -> None:
    """Once loaded, a model counts for what it measured, so a generous estimate does not waste memory."""
    backend = FixedCapacityBackend({"cuda:0": 1000 * MiB})
    scheduler = GpuScheduler(backend, SchedulerConfig(reserve_bytes=0))
    scheduler.register(SimulatedModel("a", 300 * MiB, backend, estimate_bytes=600 * MiB))
    scheduler.register(SimulatedModel("b", 600 * MiB, backend))
    async with scheduler.lease("a"), scheduler.lease("b"):
        memory = scheduler.status()["models"]["a"]["memory"]
        assert memory == {"estimated_bytes": 600 * MiB, "measured_bytes": 300 * MiB, "measured_on": "cuda:0"}
    await scheduler.aclose()


async def test_device_reading_measures_models_that_cannot() -> None:
    """A model whose load reports nothing is measured by the device's free memory before and after."""
    backend = FixedCapacityBackend({"cuda:0": 1000 * MiB})
    scheduler = GpuScheduler(backend, SchedulerConfig(reserve_bytes=0))
    scheduler.register(SimulatedModel("a", 300 * MiB, backend, estimate_bytes=500 * MiB, report=False))
    await scheduler.preload("a")
    assert scheduler.status()["models"]["a"]["memory"]["measured_bytes"] == 300 * MiB
    await scheduler.aclose()


async def test_models_go_to_the_device_with_most_room_or_where_pinned() -> None:
    """Several GPUs: a model goes where there is most headroom, unless pinned by configuration."""
    capacities = {"cuda:0": 1000 * MiB, "cuda:1": 1000 * MiB}
    scheduler, _, _ = scheduler_with({"a": 600 * MiB, "b": 300 * MiB, "c": 300 * MiB}, capacities, pins={"c": "cuda:0"})
    devices = {}
    for name in "abc":
        async with scheduler.lease(name) as handle:
            devices[name] = handle.device
    assert devices == {"a": "cuda:0", "b": "cuda:1", "c": "cuda:0"}
    with pytest.raises(ValueError, match="not one of"):
        scheduler.register(SimulatedModel("d", MiB, FixedCapacityBackend({"cpu": MiB})), device="cuda:7")
    await scheduler.aclose()


async def test_cpu_only_has_the_same_accounting() -> None:
    """Without GPUs everything runs on "cpu", with cpu_reserve_bytes kept free, and the same leases."""
    backend = FixedCapacityBackend({"cpu": 2000 * MiB})
    scheduler = GpuScheduler(backend, SchedulerConfig(cpu_reserve_bytes=500 * MiB))
    scheduler.register(SimulatedModel("a", 1000 * MiB, backend))
    scheduler.register(SimulatedModel("b", 1000 * MiB, backend))
    scheduler.register(SimulatedModel("huge", 1600 * MiB, backend))
    async with scheduler.lease("a") as handle:
        assert handle.device == "cpu"
    async with scheduler.lease("b"):
        pass
    assert state(scheduler, "a") == "unloaded"
    with pytest.raises(ModelTooLarge):
        await scheduler.acquire("huge")
    assert scheduler.status()["devices"]["cpu"]["budget_bytes"] == 1500 * MiB
    await scheduler.aclose()


async def test_low_vram_keeps_one_large_model_and_the_small_ones() -> None:
    """low_vram: loading a large model evicts the other large one even when both would fit; small stay."""
    sizes = {"stt": 300 * MiB, "llm": 300 * MiB, "vad": 50 * MiB}
    scheduler, _, models = scheduler_with(sizes, low_vram=True, large=("stt", "llm"))
    async with scheduler.lease("stt"), scheduler.lease("vad"):
        pass
    async with scheduler.lease("llm"):
        assert (state(scheduler, "stt"), state(scheduler, "vad")) == ("unloaded", "resident")
    async with scheduler.lease("stt"):
        assert state(scheduler, "llm") == "unloaded"
    assert not any(m.violations for m in models.values())
    await scheduler.aclose()


async def test_low_vram_swap_stalls_only_the_large_models() -> None:
    """While a large model is in use and another waits for the swap, a small model is leased at once."""
    sizes = {"stt": 300 * MiB, "llm": 300 * MiB, "vad": 50 * MiB}
    scheduler, _, _ = scheduler_with(sizes, low_vram=True, large=("stt", "llm"))
    release = asyncio.Event()
    llm = asyncio.create_task(hold(scheduler, "llm", release))
    await settle()
    stt = asyncio.create_task(scheduler.acquire("stt"))
    await settle()
    assert not stt.done()
    started = time.perf_counter()
    async with scheduler.lease("vad"):
        assert time.perf_counter() - started < 0.05
    release.set()
    await llm
    scheduler.release(await asyncio.wait_for(stt, 2))
    await scheduler.aclose()


async def test_lease_that_would_wait_on_its_own_lease_fails_at_once() -> None:
    """In low_vram mode, asking for a second large model while holding the first raises LeaseConflict
    immediately instead of waiting out the timeout."""
    scheduler, _, _ = scheduler_with({"stt": 300 * MiB, "llm": 300 * MiB}, low_vram=True, large=("stt", "llm"))
    async with scheduler.lease("stt"):
        started = time.perf_counter()
        with pytest.raises(LeaseConflict) as err:
            await scheduler.acquire("llm", timeout=10)
        assert time.perf_counter() - started < 0.1 and err.value.code == "lease_conflict"
    async with scheduler.lease("llm"):
        pass
    await scheduler.aclose()


async def test_task_holding_a_lease_goes_ahead_of_waiters() -> None:
    """A nested lease that fits goes ahead of an earlier waiter, which is waiting for the outer lease."""
    scheduler, _, _ = scheduler_with({"a": 500 * MiB, "b": 600 * MiB, "c": 300 * MiB})
    outer_held = asyncio.Event()
    go_on = asyncio.Event()

    async def nested() -> None:
        async with scheduler.lease("a"):
            outer_held.set()
            await go_on.wait()
            async with scheduler.lease("c", timeout=2):
                pass

    task = asyncio.create_task(nested())
    await outer_held.wait()
    waiter = asyncio.create_task(scheduler.acquire("b", timeout=2))  # needs a drained; holds the device
    await settle()
    go_on.set()
    await asyncio.wait_for(task, 2)
    scheduler.release(await asyncio.wait_for(waiter, 2))
    await scheduler.aclose()


async def test_cycle_of_nested_leases_is_broken_at_once() -> None:
    """Two tasks each holding what the other's next lease needs drained: the younger waiter gets
    LeaseConflict at once and the other completes."""
    scheduler, _, _ = scheduler_with({"a": 400 * MiB, "b": 400 * MiB, "x": 500 * MiB, "y": 500 * MiB})
    both_held = asyncio.Barrier(2)

    async def nested(first: str, second: str, delay: float) -> str:
        async with scheduler.lease(first):
            await both_held.wait()
            await asyncio.sleep(delay)
            async with scheduler.lease(second, timeout=5):
                return "ok"

    results = await asyncio.wait_for(
        asyncio.gather(nested("a", "x", 0.0), nested("b", "y", 0.01), return_exceptions=True), 2
    )
    assert sorted(type(r).__name__ for r in results) == ["LeaseConflict", "str"]
    await scheduler.aclose()


async def test_close_fails_waiters_and_unloads() -> None:
    """aclose(): waiters get SchedulerClosed, idle models are unloaded, new leases are refused."""
    scheduler, backend, _ = scheduler_with({"a": 600 * MiB, "b": 600 * MiB})
    lease = await scheduler.acquire("a")
    waiter = asyncio.create_task(scheduler.acquire("b"))
    await settle()
    scheduler.release(lease)
    await scheduler.aclose()
    with pytest.raises(SchedulerClosed):
        await waiter
    with pytest.raises(SchedulerClosed):
        await scheduler.acquire("a")
    assert backend.allocated("cuda:0") == 0


async def test_status_reports_devices_and_models() -> None:
    """status(): per device total/free/budget/used by us; per model device, state, memory, users, last use."""
    scheduler, backend, _ = scheduler_with({"a": 300 * MiB, "b": 200 * MiB}, reserve_bytes=100 * MiB)
    backend.set_external("cuda:0", 50 * MiB)
    async with scheduler.lease("a"):
        status = scheduler.status()
    device = status["devices"]["cuda:0"]
    assert device == {
        "total_bytes": 1000 * MiB,
        "free_bytes": 650 * MiB,
        "reserve_bytes": 100 * MiB,
        "budget_bytes": 900 * MiB,
        "used_by_us_bytes": 300 * MiB,
        "used_by_others_bytes": 50 * MiB,
        "headroom_bytes": 550 * MiB,
    }
    a, b = status["models"]["a"], status["models"]["b"]
    assert (a["state"], a["device"], a["users"], a["kind"]) == ("resident", "cuda:0", 1, "simulated")
    assert a["last_used"] is not None and b["last_used"] is None
    assert (b["state"], b["device"], b["memory"]["measured_bytes"]) == ("unloaded", None, None)
    assert ModelState(a["state"]) is ModelState.RESIDENT
    await scheduler.aclose()
