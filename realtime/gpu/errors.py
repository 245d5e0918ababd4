"""Errors of model residency. Each has a stable code; messages name models and sizes, never internals."""

from __future__ import annotations

from realtime.errors import ServerError


class GpuError(ServerError):
    """Root of the scheduler's errors."""

    code = "gpu_error"
    safe_message = "The model scheduler failed."


class ModelTooLarge(GpuError):
    """The model needs more memory than the whole budget of every device it may use: it can never load."""

    code = "model_too_large"
    safe_message = "The model does not fit in the memory of any device."


class GpuBusy(GpuError):
    """A lease waited its whole timeout for memory that models in use (or other processes) kept."""

    code = "gpu_busy"
    safe_message = "The models are busy; try again shortly."


class UnknownModel(GpuError):
    code = "unknown_model"
    safe_message = "No such model is registered."


class ModelLoadFailed(GpuError):
    """The model's own load raised or timed out; the cause is chained."""

    code = "model_load_failed"
    safe_message = "The model could not be loaded."


class SchedulerClosed(GpuError):
    code = "scheduler_closed"
    safe_message = "The server is shutting down."


class DeviceOutOfMemory(GpuError):
    """An allocation on a FixedCapacityBackend went past its capacity (what a real device would answer with OOM)."""

    code = "device_out_of_memory"
    safe_message = "The device ran out of memory."


class LeaseConflict(GpuError):
    """Waiting would never end: the lease needs a model drained that its own task (or a task waiting on
    this one, in a cycle) holds. The youngest waiter of the cycle gets this error at once."""

    code = "lease_conflict"
    safe_message = "The models are busy; try again shortly."
