"""The one place that asks torch about devices and memory; and a simulated device with a byte budget."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from studio.errors import InvalidInput
from studio.settings import Settings, format_bytes

log = logging.getLogger(__name__)


# CPU flags that mean bfloat16 matrix products run natively (AVX-512 BF16, AMX); without them torch emulates
# bfloat16 in float32, which is slower than float32 itself.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; empty where there is no such file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return bool(NATIVE_BF16_FLAGS & cpu_flags())  # cpu_flags looked up at call time: tests replace it


@dataclass
class MemoryReading:
    total: int  # the device's capacity
    free: int  # what the studio could still take: driver free + torch's cached-but-unused


class Device:
    """A place to run models. Subclasses answer memory questions; accounting of what is placed is shared.

    `kind` is where memory lives (cuda, mps, cpu, sim); `compute_kind` names the hardware that does the work,
    which is what speed calibration is keyed on.
    """

    kind = "cpu"
    compute_kind = "cpu"
    torch_device = "cpu"
    key = "cpu"  # unique among the studio's devices: the planner's name for it
    separate_memory = False  # True when evicting to RAM frees this device's memory (discrete GPUs)
    supports_offload = False  # accelerate/diffusers CPU offload makes sense (an accelerator with host RAM beside it)

    def __init__(self, name: str) -> None:
        self.name = name
        self._placed: dict[str, int] = {}
        self._host: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- questions about memory -------------------------------------------------------------------
    def reading(self) -> MemoryReading:
        raise NotImplementedError

    def host_free(self) -> int:
        """Free RAM on the host, for keeping models evicted from the device."""
        import psutil

        return int(psutil.virtual_memory().available)

    # -- accounting of what the studio placed here ----------------------------------------------------
    def place(self, tag: str, nbytes: int) -> None:
        """Record that `tag` now holds `nbytes` here (a model's weights, a run's working memory)."""
        with self._lock:
            self._placed[tag] = int(nbytes)

    def remove(self, tag: str) -> None:
        with self._lock:
            self._placed.pop(tag, None)

    def placed_bytes(self) -> int:
        with self._lock:
            return sum(self._placed.values())

    def place_host(self, tag: str, nbytes: int) -> None:
        """Record weights kept in host RAM (evicted from the device, or running on the CPU)."""
        with self._lock:
            self._host[tag] = int(nbytes)

    def remove_host(self, tag: str) -> None:
        with self._lock:
            self._host.pop(tag, None)

    def host_bytes(self) -> int:
        with self._lock:
            return sum(self._host.values())

    @contextlib.contextmanager
    def working(self, tag: str, nbytes: int) -> Iterator[None]:
        """Account a run's working memory for its duration."""
        self.place(tag, nbytes)
        try:
            yield
        finally:
            self.remove(tag)

    # -- housekeeping ------------------------------------------------------------------------------
    def empty_cache(self) -> None:
        gc.collect()

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        """Peak bytes allocated since reset_peak, where the device can tell; None where it cannot."""
        return None

    def synchronize(self) -> None:
        pass


class CpuDevice(Device):
    """Models run in host RAM; peak memory is sampled from the process's resident set during a run."""

    def __init__(self) -> None:
        super().__init__(f"CPU ({os.cpu_count() or 1} cores)")
        self._sampler: _RssSampler | None = None

    def reading(self) -> MemoryReading:
        import psutil

        vm = psutil.virtual_memory()
        return MemoryReading(total=int(vm.total), free=int(vm.available))

    def reset_peak(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self._sampler = _RssSampler(self.placed_bytes())

    def peak_bytes(self) -> int | None:
        if self._sampler is None:
            return None
        return self._sampler.stop()


class _RssSampler:
    """Samples this process's RSS every 20 ms; peak = bytes placed at start + growth of RSS over the start."""

    def __init__(self, placed_at_start: int) -> None:
        import psutil

        self._process = psutil.Process()
        self._placed = placed_at_start
        self._start = self._process.memory_info().rss
        self._peak = self._start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(0.02):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def stop(self) -> int:
        if not self._done.is_set():
            self._done.set()
            self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
        return self._placed + max(0, self._peak - self._start)


class CudaDevice(Device):
    kind = "cuda"
    compute_kind = "cuda"
    separate_memory = True
    supports_offload = True

    def __init__(self, index: int = 0) -> None:
        import torch

        self.index = index
        self.torch_device = self.key = f"cuda:{index}"
        super().__init__(f"{torch.cuda.get_device_name(index)} (cuda:{index})")

    def reading(self) -> MemoryReading:
        import torch

        free, total = torch.cuda.mem_get_info(self.index)
        cached_unused = torch.cuda.memory_reserved(self.index) - torch.cuda.memory_allocated(self.index)
        return MemoryReading(total=int(total), free=int(free + max(cached_unused, 0)))

    def empty_cache(self) -> None:
        import torch

        gc.collect()
        torch.cuda.empty_cache()

    def reset_peak(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.index)

    def peak_bytes(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated(self.index))

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.index)


class MpsDevice(Device):
    """Apple silicon: unified memory, so evicting to 'RAM' frees nothing; evicted models are dropped."""

    kind = "mps"
    compute_kind = "mps"
    torch_device = "mps"
    key = "mps"

    def __init__(self) -> None:
        super().__init__("Apple GPU (MPS)")

    def reading(self) -> MemoryReading:
        import psutil
        import torch

        limit = int(torch.mps.recommended_max_memory())
        in_use = int(torch.mps.driver_allocated_memory())
        available = int(psutil.virtual_memory().available)
        return MemoryReading(total=limit, free=max(0, min(limit - in_use, available)))

    def empty_cache(self) -> None:
        import torch

        gc.collect()
        torch.mps.empty_cache()

    def synchronize(self) -> None:
        import torch

        torch.mps.synchronize()


class SimulatedDevice(Device):
    """An accelerator that exists only as a byte budget; computation runs on the CPU.

    Everything placed on it is counted; a placement that would exceed the capacity raises
    torch.OutOfMemoryError, as CUDA would. `occupy` stands for another program's memory, and
    `working_factor` makes runs need more than estimated, to exercise the OOM ladder.
    """

    kind = "sim"
    compute_kind = "cpu"
    separate_memory = True
    # Offload runs for real (parts move in turn, accounted one at a time); only the bytes are pretend.
    supports_offload = True

    def __init__(self, capacity: int, *, host_capacity: int | None = None, index: int | None = None) -> None:
        number = "" if index is None else f" {index}"
        super().__init__(f"Simulated GPU{number} ({format_bytes(capacity)})")
        self.key = f"sim:{index or 0}"
        self.capacity = int(capacity)
        self.host_capacity = host_capacity
        self.external = 0
        self.working_factor = 1.0
        self.fail_next = 0  # raise OOM on this many coming working-memory placements
        self.peak = 0
        self.ooms = 0

    def reading(self) -> MemoryReading:
        return MemoryReading(total=self.capacity, free=self.capacity - self.external - self.placed_bytes())

    def host_free(self) -> int:
        if self.host_capacity is None:
            return super().host_free()
        return self.host_capacity - self.host_bytes()

    def place(self, tag: str, nbytes: int) -> None:
        import torch

        with self._lock:
            others = sum(v for k, v in self._placed.items() if k != tag)
            if others + nbytes + self.external > self.capacity:
                self.ooms += 1
                raise torch.OutOfMemoryError(
                    f"Simulated OOM: tried to place {format_bytes(nbytes)} ({tag}) with "
                    f"{format_bytes(others + self.external)} in use of {format_bytes(self.capacity)}"
                )
            self._placed[tag] = int(nbytes)
            self.peak = max(self.peak, others + int(nbytes))

    @contextlib.contextmanager
    def working(self, tag: str, nbytes: int) -> Iterator[None]:
        import torch

        if self.fail_next > 0:
            self.fail_next -= 1
            self.ooms += 1
            raise torch.OutOfMemoryError(f"Simulated OOM while running {tag}")
        with super().working(tag, int(nbytes * self.working_factor)):
            yield

    def occupy(self, nbytes: int) -> None:
        """Pretend another program holds `nbytes` of this device."""
        self.external = int(nbytes)

    def reset_peak(self) -> None:
        self.peak = self.placed_bytes()

    def peak_bytes(self) -> int | None:
        return self.peak


def pick_devices(settings: Settings) -> "Devices":
    """The devices the settings ask for; 'auto' takes every visible CUDA device, else MPS, else the CPU.

    Telling CUDA and MPS apart needs torch, which takes seconds to import: for 'auto' the choice is
    deferred to first use (or to warm_up in the background), so the page is served before torch loads.
    An explicit cuda, cuda:N list or mps is checked at once, so a wrong flag fails at start.
    """
    sizes = settings.simulated_sizes
    if sizes is not None:
        if len(sizes) == 1:
            return Devices([SimulatedDevice(sizes[0])])
        return Devices([SimulatedDevice(size, index=i) for i, size in enumerate(sizes)])
    if settings.device == "cpu":
        return Devices([CpuDevice()])
    if settings.device == "auto":
        return Devices(lambda: _detect("auto"))
    return Devices(_detect(settings.device))


def expected_device_count(settings: Settings) -> int:
    """How many devices `pick_devices(settings)` gives, without importing torch (the web queue's limit is set
    before the page is served). For 'auto' it counts the NVIDIA GPUs the driver lists; the manager queues any
    run beyond the real count, so a wrong guess costs waiting, never two runs on one device."""
    if settings.simulated_sizes is not None:
        return len(settings.simulated_sizes)
    if settings.device.startswith("cuda:"):
        return settings.device.count(",") + 1
    if settings.device != "auto":
        return 1
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        listed = []
        for item in visible.split(","):  # CUDA stops at the first invalid entry, e.g. -1
            if not item.strip() or item.strip().startswith("-"):
                break
            listed.append(item)
        return max(1, len(listed))
    try:
        return max(1, len(os.listdir("/proc/driver/nvidia/gpus")))
    except OSError:
        return 1


def expected_device_kind(settings: Settings) -> str:
    """Where the first device of `pick_devices(settings)` keeps its memory (Device.kind: cuda, mps, cpu, or sim for a
    simulated GPU), without importing torch: the pickers' default model depends on it and the page is built before
    the devices are decided. For 'auto' a GPU the NVIDIA driver lists means cuda, Apple silicon mps; the pickers only
    order models by it."""
    if settings.simulated_sizes is not None:
        return SimulatedDevice.kind
    for kind in ("cuda", "mps", "cpu"):
        if settings.device.startswith(kind):
            return kind
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip()[:1] in ("", "-")  # "" or "-1": no GPU for CUDA
    if not hidden and os.path.isdir("/proc/driver/nvidia/gpus") and os.listdir("/proc/driver/nvidia/gpus"):
        return "cuda"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


def _detect(choice: str) -> list[Device]:
    from studio import libraries

    libraries.ensure("torch")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if choice.startswith("cuda:"):
        indices = [int(item.split(":", 1)[1]) for item in choice.split(",")]
        missing = [i for i in indices if i >= count]
        if missing:
            seen = f"torch sees {count} CUDA device(s)" + (f" (cuda:0 to cuda:{count - 1})" if count else "")
            raise InvalidInput(f"--device {choice} names cuda:{missing[0]}, but {seen}: name those, or use --device auto")
        return [CudaDevice(i) for i in indices]
    if choice in ("auto", "cuda") and count:
        return [CudaDevice(i) for i in range(count)] if choice == "auto" else [CudaDevice(torch.cuda.current_device())]
    if choice in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return [MpsDevice()]
    if choice != "auto":
        raise InvalidInput(f"--device {choice} was asked for but torch finds no {choice.upper()} device here: use --device auto or cpu")
    return [CpuDevice()]


class Devices:
    """The devices the studio runs on, in order; with 'auto', decided by the first question (or warm_up)."""

    def __init__(self, choose: Callable[[], Sequence[Device]] | Sequence[Device]) -> None:
        self._choose = choose if callable(choose) else None
        self._devices: tuple[Device, ...] | None = None if callable(choose) else tuple(choose)
        self._lock = threading.Lock()

    @property
    def resolved(self) -> bool:
        return self._devices is not None

    def resolve(self) -> tuple[Device, ...]:
        with self._lock:
            if self._devices is None:
                assert self._choose is not None
                self._devices = tuple(self._choose())
                log.info("devices: %s", ", ".join(d.name for d in self._devices))
            return self._devices

    def warm_up(self) -> threading.Thread:
        """Decide (importing torch) on a background thread, so the first real question does not wait."""
        thread = threading.Thread(target=self.resolve, name="device-warm-up", daemon=True)
        thread.start()
        return thread

    def __iter__(self) -> Iterator[Device]:
        return iter(self.resolve())

    def __len__(self) -> int:
        return len(self.resolve())

    def __getitem__(self, index: int) -> Device:
        return self.resolve()[index]


def is_out_of_memory(error: BaseException) -> bool:
    """torch.OutOfMemoryError, or the RuntimeError MPS and some CUDA paths raise instead."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "mps backend out of memory" in text)
