"""Measuring one run: wall time and the peak of the process's resident memory, sampled by a thread."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable


def trim_heap() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS growth measures this run.

    Without it, memory an earlier run freed stays in the allocator's arenas and a later run reuses it
    without RSS growing: its working memory would read as zero.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssPeak:
    """Samples this process's RSS every `interval` s between start() and stop(); growth = peak - start."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_rss = 0
        self.peak_rss = 0

    def start(self) -> "RssPeak":
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            rss = self._process.memory_info().rss
            if rss > self.peak_rss:
                self.peak_rss = rss

    def stop(self) -> int:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        return self.growth

    @property
    def growth(self) -> int:
        return max(0, self.peak_rss - self.start_rss)


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes on the machine have spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal; guest is inside user
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    seconds: float
    rss_growth: int  # bytes the process's RSS rose above its level at the start of the run
    value: Any
    cpu_s: float = 0.0  # this process's CPU seconds during the run
    others_load: float | None = None  # cores other processes kept busy on average during the run


def measure(fn: Callable[[], Any], *, memory: bool = True) -> Measured:
    """Run `fn()` once: wall seconds and (if `memory`) the RSS growth during it, from a trimmed heap."""
    if memory:
        trim_heap()
    sampler = RssPeak().start() if memory else None
    busy0, cpu0 = _busy_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        busy1 = _busy_cpu_seconds()
        growth = sampler.stop() if sampler is not None else 0
    others = None
    if busy0 is not None and busy1 is not None and seconds > 0:
        others = max(0.0, (busy1 - busy0 - cpu) / seconds)
    return Measured(seconds=seconds, rss_growth=growth, value=value, cpu_s=cpu, others_load=others)


def module_bytes(modules) -> int:
    """Bytes of the distinct parameter and buffer storages of `modules` (shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen or storage.nbytes() == 0:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def parameter_count(modules) -> int:
    seen: set[int] = set()
    count = 0
    for module in modules:
        for p in module.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                count += p.numel()
    return count


def max_abs_difference(a, b) -> float | None:
    """Largest |a - b| over the common length of two audio arrays; None when the shapes differ in channels."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != b.ndim or a.shape[:-1] != b.shape[:-1]:
        return None
    n = min(a.shape[-1], b.shape[-1])
    if n == 0:
        return None
    return float(np.max(np.abs(a[..., :n] - b[..., :n])))
