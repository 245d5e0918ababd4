"""The scheduler's state as a JSON-ready dict: for the admin route, a protocol event, or logs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from realtime.gpu.ledger import DeviceReading, Ledger


def build_status(
    ledger: Ledger,
    devices: Iterable[str],
    read_device: Callable[[str], DeviceReading],
    *,
    low_vram: bool,
    now: float,
    wall: float,
) -> dict[str, Any]:
    """Per device: total, free, reserve, budget, used by us and by others, headroom (bytes); per model:
    kind, device, state, size class, memory (estimated/measured), users, last use (ISO time), waiters.
    `now` is the ledger's clock (monotonic), `wall` the same instant as Unix time."""
    device_status: dict[str, Any] = {}
    for device in devices:
        reading = read_device(device)
        ours = ledger.used_by_us(device)
        device_status[device] = {
            "total_bytes": reading.total,
            "free_bytes": reading.free,
            "reserve_bytes": reading.reserve,
            "budget_bytes": reading.budget,
            "used_by_us_bytes": ours,
            "used_by_others_bytes": max(reading.total - reading.free - ours, 0),
            "headroom_bytes": max(ledger.headroom(device, reading), 0),
        }
    waiting: dict[str, int] = {}
    for waiter in ledger.queue.values():
        waiting[waiter.record.name] = waiting.get(waiter.record.name, 0) + 1
    models: dict[str, Any] = {}
    for r in ledger.records.values():
        last = None if r.last_used is None else datetime.fromtimestamp(wall - (now - r.last_used), UTC).isoformat()
        models[r.name] = {
            "kind": r.kind,
            "device": r.device,
            "pinned_device": r.pinned,
            "state": r.state.value,
            "large": r.large,
            "memory": {"estimated_bytes": r.estimate, "measured_bytes": r.measured, "measured_on": r.measured_on},
            "users": r.users,
            "last_used": last,
            "waiting": waiting.get(r.name, 0),
        }
    return {"low_vram": low_vram, "waiting": len(ledger.queue), "devices": device_status, "models": models}
