"""Device backends: which devices exist, and their total and free memory as the device reports it.

The free figure is the whole device's (other processes included, e.g. Ollama), not what this process
allocated: NVML first, then torch.cuda.mem_get_info, then plain RAM for "cpu". Reads are synchronous and
cheap (microseconds); the scheduler reads only when it must decide where a model goes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from realtime.gpu.errors import DeviceOutOfMemory

CPU = "cpu"


class DeviceBackend(Protocol):
    """The devices models can be placed on ("cuda:0", "cuda:1", "cpu"), and their memory in bytes."""

    def devices(self) -> Sequence[str]: ...

    def total_bytes(self, device: str) -> int: ...

    def free_bytes(self, device: str) -> int: ...


def is_accelerator(device: str) -> bool:
    return device != CPU


class FixedCapacityBackend:
    """Devices of a given capacity whose free memory is capacity minus what was allocated on them.

    Simulated models allocate and release here, as a real model allocates on a GPU; `external` stands for
    other processes. An allocation past the capacity raises DeviceOutOfMemory, as a real device would.
    """

    def __init__(self, capacities: Mapping[str, int], *, external: Mapping[str, int] | None = None) -> None:
        if not capacities:
            raise ValueError("at least one device")
        self._capacity = dict(capacities)
        self._allocated = dict.fromkeys(self._capacity, 0)
        self._external = dict.fromkeys(self._capacity, 0) | dict(external or {})
        self.peak = dict.fromkeys(self._capacity, 0)

    def devices(self) -> Sequence[str]:
        return list(self._capacity)

    def total_bytes(self, device: str) -> int:
        return self._capacity[device]

    def free_bytes(self, device: str) -> int:
        return max(self._capacity[device] - self._allocated[device] - self._external[device], 0)

    def allocated(self, device: str) -> int:
        return self._allocated[device]

    def allocate(self, device: str, nbytes: int) -> None:
        if nbytes > self.free_bytes(device):
            raise DeviceOutOfMemory(f"{device}: {nbytes} bytes asked, {self.free_bytes(device)} free")
        self._allocated[device] += nbytes
        self.peak[device] = max(self.peak[device], self._allocated[device] + self._external[device])

    def release(self, device: str, nbytes: int) -> None:
        if nbytes > self._allocated[device]:
            raise ValueError(f"{device}: releasing {nbytes} bytes, only {self._allocated[device]} allocated")
        self._allocated[device] -= nbytes

    def set_external(self, device: str, nbytes: int) -> None:
        """Memory used by something the scheduler does not manage (another process)."""
        self._external[device] = nbytes


class CpuBackend:
    """One device, "cpu": the budget is configured, or the machine's RAM; free is the RAM still available."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self._total = budget_bytes if budget_bytes is not None else physical_memory()

    def devices(self) -> Sequence[str]:
        return [CPU]

    def total_bytes(self, device: str) -> int:
        _check_cpu(device)
        return self._total

    def free_bytes(self, device: str) -> int:
        _check_cpu(device)
        return min(available_memory(), self._total)


def _check_cpu(device: str) -> None:
    if device != CPU:
        raise KeyError(device)


def physical_memory() -> int:
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(psutil.virtual_memory().total)


def available_memory() -> int:
    """RAM that can be allocated without swapping (MemAvailable, which counts reclaimable page cache)."""
    try:
        import psutil
    except ImportError:
        with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return int(psutil.virtual_memory().available)


class NvmlBackend:
    """NVIDIA GPUs through NVML: the memory figures cover every process on the device (Ollama included).

    `indices` are NVML (physical, PCI order) indices, listed as cuda:0, cuda:1... in the given order,
    which is CUDA's numbering when CUDA_DEVICE_ORDER=PCI_BUS_ID (see visible_nvml_indices).
    """

    def __init__(self, indices: Sequence[int] | None = None) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml: Any = pynvml
        count = pynvml.nvmlDeviceGetCount()
        chosen = list(range(count)) if indices is None else list(indices)
        self._handles = {f"cuda:{i}": pynvml.nvmlDeviceGetHandleByIndex(n) for i, n in enumerate(chosen)}

    def devices(self) -> Sequence[str]:
        return list(self._handles)

    def total_bytes(self, device: str) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handles[device]).total)

    def free_bytes(self, device: str) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handles[device]).free)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def visible_nvml_indices(cuda_visible_devices: str | None, count: int) -> list[int]:
    """NVML indices of the GPUs CUDA_VISIBLE_DEVICES exposes, in CUDA's order (numeric lists only; a UUID
    or MIG entry stops the list, as CUDA ignores everything after an entry it cannot parse)."""
    if cuda_visible_devices is None:
        return list(range(count))
    out: list[int] = []
    for part in cuda_visible_devices.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) >= count or int(part) in out:
            break
        out.append(int(part))
    return out


class TorchCudaBackend:
    """GPUs through torch.cuda.mem_get_info (cudaMemGetInfo: whole-device figures). Creates a CUDA context
    on each device on first read (a few hundred MiB each): NVML is preferred when installed."""

    def __init__(self) -> None:
        import torch

        self._cuda: Any = torch.cuda
        self._names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    def devices(self) -> Sequence[str]:
        return list(self._names)

    def total_bytes(self, device: str) -> int:
        return int(self._cuda.mem_get_info(self._index(device))[1])

    def free_bytes(self, device: str) -> int:
        return int(self._cuda.mem_get_info(self._index(device))[0])

    def _index(self, device: str) -> int:
        if device not in self._names:
            raise KeyError(device)
        return int(device.partition(":")[2])


class CombinedBackend:
    """Several backends as one, e.g. the GPUs plus "cpu" for models that always run on the CPU."""

    def __init__(self, backends: Iterable[DeviceBackend]) -> None:
        self._by_device: dict[str, DeviceBackend] = {}
        for backend in backends:
            for device in backend.devices():
                if device in self._by_device:
                    raise ValueError(f"device {device} listed twice")
                self._by_device[device] = backend

    def devices(self) -> Sequence[str]:
        return list(self._by_device)

    def total_bytes(self, device: str) -> int:
        return self._by_device[device].total_bytes(device)

    def free_bytes(self, device: str) -> int:
        return self._by_device[device].free_bytes(device)


def detect_backend(
    *, cpu_budget_bytes: int | None = None, prefer: str = "auto", environ: Mapping[str, str] | None = None
) -> DeviceBackend:
    """The GPUs (NVML if pynvml imports, else torch) plus "cpu"; only "cpu" without GPUs or with prefer="cpu".

    prefer: auto | nvml | torch | cpu. `environ` (default os.environ) is read for CUDA_VISIBLE_DEVICES.
    """
    cpu = CpuBackend(cpu_budget_bytes)
    if prefer == "cpu":
        return cpu
    env = os.environ if environ is None else environ
    gpus: DeviceBackend | None = None
    if prefer in {"auto", "nvml"}:
        gpus = _try_nvml(env.get("CUDA_VISIBLE_DEVICES"))
    if gpus is None and prefer in {"auto", "torch"}:
        gpus = _try_torch()
    if gpus is None or not gpus.devices():
        return cpu
    return CombinedBackend([gpus, cpu])


def _try_nvml(cuda_visible_devices: str | None) -> DeviceBackend | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:  # not installed, no driver, no GPU
        return None
    return NvmlBackend(visible_nvml_indices(cuda_visible_devices, count))


def _try_torch() -> DeviceBackend | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
    except Exception:
        return None
    return TorchCudaBackend()
