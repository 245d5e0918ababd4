"""Random interleavings of concurrent leases, nested leases, cancellations and unloads on the real scheduler.

Each example runs a fresh event loop with simulated models that allocate on a FixedCapacityBackend (an
allocation past capacity raises, as a GPU would) and check, as they run, that no model in use is unloaded
and that low_vram never holds two large models on a device.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.gpu_scheduler import (
    DeviceOutOfMemory,
    GpuBusy,
    GpuScheduler,
    LeaseConflict,
    ModelLoadFailed,
    ModelTooLarge,
)
from tests.gpu.helpers import CheckedModel, MiB, scheduler_with

CAPACITY = 1000 * MiB


@dataclass(frozen=True)
class Step:
    model: int
    hold_ms: float
    nested: int | None
    cancel_ms: float | None


steps = st.builds(
    Step,
    model=st.integers(0, 5),
    hold_ms=st.floats(0, 3),
    nested=st.none() | st.integers(0, 5),
    cancel_ms=st.none() | st.none() | st.floats(0, 4),
)

scenarios = st.fixed_dictionaries(
    {
        "sizes": st.lists(st.integers(50, 700), min_size=2, max_size=6),
        "large": st.lists(st.booleans(), min_size=6, max_size=6),
        "low_vram": st.booleans(),
        "two_devices": st.booleans(),
        "delay_ms": st.floats(0, 2),
        "clients": st.lists(st.lists(steps, min_size=1, max_size=4), min_size=2, max_size=12),
        "unloads": st.lists(st.tuples(st.floats(0, 10), st.none() | st.integers(0, 5), st.booleans()), max_size=3),
        "failing": st.none() | st.integers(0, 5),
    }
)


class Violation(AssertionError):
    pass


async def run_scenario(sc: dict) -> None:
    names = [f"m{i}" for i in range(len(sc["sizes"]))]
    sizes = {n: size * MiB for n, size in zip(names, sc["sizes"], strict=True)}
    capacity = {"cuda:0": CAPACITY, "cuda:1": CAPACITY} if sc["two_devices"] else CAPACITY
    large = [n for n, flag in zip(names, sc["large"], strict=False) if flag]
    delay = sc["delay_ms"] / 1000
    scheduler, backend, models = scheduler_with(
        sizes,
        capacity,
        large=large,
        load_delay=delay,
        unload_delay=delay,
        low_vram=sc["low_vram"],
        lease_timeout=5.0,
        load_retry_interval=None,  # the failing model is leased again at the end (the back-off has its own test)
    )
    if sc["failing"] is not None and sc["failing"] < len(names):
        models[names[sc["failing"]]].fail_loads = 1
    stop = asyncio.Event()
    monitor = asyncio.create_task(watch(scheduler, stop))
    clients = [asyncio.create_task(client(scheduler, models, names, plan)) for plan in sc["clients"]]
    admins = [asyncio.create_task(admin(scheduler, names, at, which, wait)) for at, which, wait in sc["unloads"]]
    try:
        async with asyncio.timeout(8):
            await asyncio.gather(*clients, *admins)
    finally:
        stop.set()
        await monitor
    for model in models.values():
        assert not model.violations, model.violations
    assert scheduler.status()["waiting"] == 0 and scheduler._ledger.holdings == {}
    assert all(r.users == 0 and not r.draining for r in scheduler._records.values())
    for name in names:  # nothing left behind: every model can still be leased
        models[name].fail_loads = 0
        async with asyncio.timeout(2), scheduler.lease(name) as handle:
            assert models[name].loaded_on == handle.device
    await scheduler.aclose()
    assert sum(backend.allocated(d) for d in backend.devices()) == 0


async def client(scheduler: GpuScheduler, models: dict[str, CheckedModel], names: list[str], plan: list[Step]) -> None:
    for step in plan:
        work = asyncio.create_task(use(scheduler, models, names, step))
        if step.cancel_ms is not None:
            await asyncio.sleep(step.cancel_ms / 1000)
            work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            if not work.cancelled():
                raise
        except (LeaseConflict, ModelLoadFailed) as exc:
            if isinstance(exc.__cause__, DeviceOutOfMemory):
                raise Violation(f"device overcommitted: {exc.__cause__}") from exc
        except GpuBusy as exc:
            raise Violation(f"a lease waited out its timeout: {exc}") from exc


async def use(scheduler: GpuScheduler, models: dict[str, CheckedModel], names: list[str], step: Step) -> None:
    name = names[step.model % len(names)]
    async with scheduler.lease(name) as handle:
        model = models[name]
        model.active += 1
        try:
            assert model.loaded_on == handle.device
            await asyncio.sleep(step.hold_ms / 1000)
            if step.nested is not None:
                inner = names[step.nested % len(names)]
                async with scheduler.lease(inner) as nested:
                    models[inner].active += 1
                    try:
                        assert models[inner].loaded_on == nested.device
                        await asyncio.sleep(step.hold_ms / 2000)
                    finally:
                        models[inner].active -= 1
            assert model.loaded_on == handle.device
        finally:
            model.active -= 1


async def admin(scheduler: GpuScheduler, names: list[str], at_ms: float, which: int | None, wait: bool) -> None:
    await asyncio.sleep(at_ms / 1000)
    name = None if which is None else names[which % len(names)]
    result = await scheduler.unload(name, wait=wait, timeout=0.01)
    assert set(result.unloaded) | set(result.in_use) == ({name} if name else set(names))


async def watch(scheduler: GpuScheduler, stop: asyncio.Event) -> None:
    """Every loop iteration: our accounting stays within each device's budget."""
    while not stop.is_set():
        for device in scheduler.devices:
            reading = scheduler.read_device(device)
            assert scheduler._ledger.used_by_us(device) <= reading.budget, "budget exceeded"
        await asyncio.sleep(0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_random_interleavings_keep_the_invariants(sc: dict) -> None:
    """Concurrent, nested and cancelled leases with unloads in between: the budget holds, no model in use
    is unloaded, low_vram keeps one large model, no lease times out, and nothing is left behind."""
    asyncio.run(run_scenario(sc))


def test_too_large_among_concurrent_leases_fails_alone() -> None:
    """A too-large model fails its own leases at once while the others go on."""

    async def scenario() -> None:
        scheduler, _, _ = scheduler_with({"huge": 2 * CAPACITY, "a": 300 * MiB, "b": 300 * MiB})

        async def lease(name: str) -> str:
            async with scheduler.lease(name):
                await asyncio.sleep(0.001)
                return name

        results = await asyncio.gather(*(lease(n) for n in ["a", "huge", "b", "huge", "a"]), return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["str", "ModelTooLarge", "str", "ModelTooLarge", "str"]
        assert isinstance(results[1], ModelTooLarge)
        await scheduler.aclose()

    asyncio.run(scenario())


def test_many_concurrent_leasers_all_complete() -> None:
    """200 tasks leasing 4 models that cannot all fit, in a random order: everyone is served, in time."""

    async def scenario() -> None:
        scheduler, backend, models = scheduler_with(
            {"a": 400 * MiB, "b": 400 * MiB, "c": 400 * MiB, "d": 100 * MiB}, load_delay=0.001, lease_timeout=10
        )
        order = [("abcd"[(i * 7) % 4], (i % 5) / 1000) for i in range(200)]

        async def lease(name: str, hold: float) -> None:
            async with scheduler.lease(name):
                models[name].active += 1
                await asyncio.sleep(hold)
                models[name].active -= 1

        async with asyncio.timeout(10):
            await asyncio.gather(*(lease(n, h) for n, h in order))
        assert backend.peak["cuda:0"] <= CAPACITY and not any(m.violations for m in models.values())
        await scheduler.aclose()

    asyncio.run(scenario())
