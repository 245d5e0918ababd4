"""Shared pieces of the scheduler tests: simulated models that check the invariants as they run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from realtime.gpu_scheduler import FixedCapacityBackend, GpuScheduler, SchedulerConfig, SimulatedModel

MiB = 1 << 20


class CheckedModel(SimulatedModel):
    """A simulated model that fails loudly if it is unloaded while in use, or if low_vram would hold two
    large models on one device. `active` counts the test's own users (inside their lease blocks)."""

    def __init__(self, *args: object, registry: dict[str, CheckedModel] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.active = 0
        self.violations: list[str] = []
        self.registry = registry if registry is not None else {}
        self.registry[self.name] = self
        self.low_vram = False

    async def load(self, device: str) -> int | None:
        if self.low_vram and self.large:
            others = [m.name for m in self.registry.values() if m is not self and m.large and m.loaded_on == device]
            if others:
                self.violations.append(f"{self.name} loads on {device} while large {others} are loaded")
        return await super().load(device)

    async def unload(self) -> None:
        if self.active:
            self.violations.append(f"{self.name} unloaded with {self.active} active users")
        await super().unload()
        if self.active:
            self.violations.append(f"{self.name} unloaded with {self.active} active users (after)")


def scheduler_with(
    sizes: dict[str, int],
    capacity: int | dict[str, int] = 1000 * MiB,
    *,
    large: Iterable[str] = (),
    load_delay: float = 0.0,
    unload_delay: float = 0.0,
    **config: object,
) -> tuple[GpuScheduler, FixedCapacityBackend, dict[str, CheckedModel]]:
    """A scheduler over a FixedCapacityBackend (no reserve unless given) with one CheckedModel per size."""
    capacities = {"cuda:0": capacity} if isinstance(capacity, int) else capacity
    backend = FixedCapacityBackend(capacities)
    config.setdefault("reserve_bytes", 0)
    config.setdefault("poll_interval", 0.01)
    settings = SchedulerConfig(**config)  # type: ignore[arg-type]
    scheduler = GpuScheduler(backend, settings)
    models: dict[str, CheckedModel] = {}
    large_set = set(large)
    for name, size in sizes.items():
        model = CheckedModel(
            name,
            size,
            backend,
            registry=models,
            load_delay=load_delay,
            unload_delay=unload_delay,
            large=name in large_set,
        )
        model.low_vram = settings.low_vram
        scheduler.register(model)
    return scheduler, backend, models


async def settle(rounds: int = 20) -> None:
    """Let callbacks and tasks run (loads and unloads with no delay finish within a few rounds)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
