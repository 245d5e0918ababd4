"""Model residency: which models are loaded where, within a memory budget, shared by every session.

The implementation is the package realtime/gpu/ (ledger: the sans-I/O decisions; scheduler: leases on
the event loop; devices: NVML / torch / RAM backends; models and ollama: what gets loaded; routes: the
admin HTTP API). This module is its public face:

    scheduler = GpuScheduler(detect_backend(), SchedulerConfig(low_vram=settings.low_vram))
    scheduler.register(FactoryModel("whisper", "stt", 300 << 20, build_whisper))
    async with scheduler.lease("whisper") as handle:
        handle.model.instance.transcribe(...)
"""

from __future__ import annotations

from realtime.gpu.devices import (
    CPU,
    CombinedBackend,
    CpuBackend,
    DeviceBackend,
    FixedCapacityBackend,
    NvmlBackend,
    TorchCudaBackend,
    detect_backend,
)
from realtime.gpu.errors import (
    DeviceOutOfMemory,
    GpuBusy,
    GpuError,
    LeaseConflict,
    ModelLoadFailed,
    ModelTooLarge,
    SchedulerClosed,
    UnknownModel,
)
from realtime.gpu.lease import Lease, LeaseContext, SchedulerConfig, UnloadResult
from realtime.gpu.ledger import ModelState
from realtime.gpu.models import FactoryModel, ManagedModel, SimulatedModel, rss_bytes
from realtime.gpu.ollama import OllamaModel
from realtime.gpu.routes import models_status, routes
from realtime.gpu.scheduler import GpuScheduler

__all__ = [
    "CPU",
    "CombinedBackend",
    "CpuBackend",
    "DeviceBackend",
    "DeviceOutOfMemory",
    "FactoryModel",
    "FixedCapacityBackend",
    "GpuBusy",
    "GpuError",
    "GpuScheduler",
    "Lease",
    "LeaseConflict",
    "LeaseContext",
    "ManagedModel",
    "ModelLoadFailed",
    "ModelState",
    "ModelTooLarge",
    "NvmlBackend",
    "OllamaModel",
    "SchedulerClosed",
    "SchedulerConfig",
    "SimulatedModel",
    "TorchCudaBackend",
    "UnknownModel",
    "UnloadResult",
    "detect_backend",
    "models_status",
    "routes",
    "rss_bytes",
]
