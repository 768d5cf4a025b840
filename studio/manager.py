"""PipelineManager: owns every loaded model, keeps what is resident within the budget, and runs generations."""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from studio import libraries
from studio.catalog import AUTO, DTYPE_BYTES, Catalog, ModelSpec, Request
from studio.device import Device, is_out_of_memory
from studio.errors import Cancelled, DoesNotFit, InvalidInput, ModelUnavailable
from studio.estimate import Calibration, Estimate
from studio.run import Audio, LoadedModel, RunContext
from studio.settings import DEFAULT_RESERVE, format_bytes
from studio.weights import downloaded, float_bytes, module_bytes, planned_weight_bytes

log = logging.getLogger(__name__)

OFFLOAD_BANDWIDTH = 10e9  # bytes per second host -> device (PCIe 4 x16 in practice), until offload runs are measured

ON_DISK = "on disk"
NOT_DOWNLOADED = "not downloaded"
DOWNLOADING = "downloading"
LOADING = "loading"
IN_RAM = "in RAM"
ON_DEVICE = "on device"
IN_USE = "in use"

Loader = Callable[[ModelSpec, str, str], LoadedModel]


@dataclass
class _Entry:
    spec: ModelSpec
    state: str = ON_DISK
    model: LoadedModel | None = None
    placement: str | None = None  # "device", "offload" or "cpu" while loaded
    dtype: str = "float32"
    weights: int = 0  # exact once loaded
    refs: int = 0
    pinned: bool = False
    last_used: float = 0.0  # manager clock, for LRU
    last_used_wall: float | None = None  # epoch seconds, for people
    unload_requested: bool = False

    @property
    def idle(self) -> bool:
        return self.refs == 0 and self.state not in (LOADING, DOWNLOADING)


@dataclass(frozen=True)
class _Plan:
    dtype: str
    weights: int
    working: int
    placement: str
    evicts: tuple[str, ...]
    fits: bool
    budget: int
    blocked_by: tuple[str, ...]  # in use or pinned models that could not be moved
    largest_component: int = 0  # with offload, the most weight bytes on the device at once
    precision: str = AUTO  # what the request asked for; fallbacks re-decide "auto" for where they run
    load_peak: int = 0  # bytes held while loading, when more than the weights (int8 loads float32 first)

    @property
    def need(self) -> int:
        """Bytes the run needs where it runs: on the device (whole, or its largest part with offload), or in RAM."""
        if self.placement == "offload":
            return self.largest_component + self.working
        return self.weights + self.working


@dataclass
class RunResult:
    audio: Audio
    estimate: Estimate
    elapsed_s: float
    load_s: float
    compute_s: float
    peak_bytes: int | None
    placement: str
    dtype: str
    recoveries: list[str] = field(default_factory=list)


class _LoadOutOfMemory(DoesNotFit):
    """The device ran out of memory during a load; the load ladder decides what next."""


class Lease:
    """A model held for use; the manager never evicts it while the lease is open."""

    def __init__(self, manager: "PipelineManager", entry: _Entry, recoveries: list[str] | None = None) -> None:
        self._manager = manager
        self._entry = entry
        self.released = False
        self.recoveries = recoveries or []  # what the load had to do to succeed, for the user to see

    @property
    def model(self) -> LoadedModel:
        assert self._entry.model is not None  # a lease exists only for a loaded model
        return self._entry.model

    @property
    def placement(self) -> str:
        return self._entry.placement or "device"

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._release(self._entry)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class PipelineManager:
    """One per process. Loads lazily, evicts idle models least-recently-used first, recovers from OOM.

    Locks, always taken in this order: `_run_lock` (one generation on the device at a time),
    `_load_lock` (one load, move or eviction at a time), `_lock` (the entries' fields).
    """

    def __init__(
        self,
        catalog: Catalog,
        device: Device,
        *,
        calibration: Calibration | None = None,
        budget_cap: int | None = None,
        reserve: int = DEFAULT_RESERVE,
        loader: Loader | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.device = device
        self.calibration = calibration or Calibration(None)
        self.budget_cap = budget_cap
        self.reserve = reserve
        self._loader = loader
        self._clock = clock
        self._wall = wall_clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.RLock()
        self._run_lock = threading.Lock()
        self.max_resident_seen = 0  # the most bytes the manager ever had placed on the device
        self._loaded_once = False

    def warm_up(self) -> threading.Thread:
        """Decide the device and import torch and transformers in the background, after the page is up."""

        def work() -> None:
            resolve = getattr(self.device, "resolve", None)
            if resolve is not None:
                resolve()
            if not libraries.imported("torch", "transformers"):
                seconds = libraries.ensure("torch", "transformers")
                if seconds:  # 0.0: a load imported them while this thread waited
                    self.calibration.record_import(seconds)

        thread = threading.Thread(target=work, name="studio-warm-up", daemon=True)
        thread.start()
        return thread

    # ---------------------------------------------------------------- memory questions
    def budget(self) -> int:
        """Bytes the studio may hold on the device: what it holds + what is free, minus the reserve, capped."""
        reading = self.device.reading()
        budget = self.device.placed_bytes() + reading.free - self.reserve
        if self.budget_cap is not None:
            budget = min(budget, self.budget_cap)
        return max(0, budget)

    def used_bytes(self) -> int:
        return self.device.placed_bytes()

    def snapshot(self) -> dict:
        """The /memory contract: device, totals and one row per model known to the manager."""
        reading = self.device.reading()
        with self._lock:
            rows = [
                {
                    "id": e.spec.repo_id,
                    "label": e.spec.label,
                    "state": self._shown_state(e),
                    "bytes": e.weights if e.model is not None else 0,
                    "placement": e.placement,
                    "dtype": e.dtype if e.model is not None else None,
                    "pinned": e.pinned,
                    "last_used": e.last_used_wall,
                }
                for e in sorted(self._entries.values(), key=lambda e: -(e.last_used or 0))
            ]
        return {
            "device": self.device.name,
            "device_kind": self.device.kind,
            "total_bytes": reading.total,
            "budget_bytes": self.budget(),
            "used_bytes": self.used_bytes(),
            "ram_bytes": self.device.host_bytes(),
            "models": rows,
        }

    def state_of(self, model_id: str) -> str:
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None:
                return ON_DISK if downloaded(model_id) else NOT_DOWNLOADED
            return self._shown_state(entry)

    def _shown_state(self, entry: _Entry) -> str:
        if entry.model is not None:
            return IN_USE if entry.refs > 0 else entry.state
        if entry.state in (ON_DISK, NOT_DOWNLOADED):  # files may have come or gone since (a pin makes an entry)
            return ON_DISK if downloaded(entry.spec.repo_id) else NOT_DOWNLOADED
        return entry.state

    # ---------------------------------------------------------------- estimates
    def estimate_run(self, request: Request) -> Estimate:
        """Memory and time for `request`, and what would be unloaded, without loading anything."""
        spec = self.catalog.get(request.model)
        with self._lock:
            entry = self._entries.get(spec.repo_id)
            plan = self._plan(spec, request, entry)
            resident = entry is not None and entry.model is not None and entry.placement == plan.placement
        cached = resident or (entry is not None and entry.model is not None) or downloaded(spec.repo_id)
        load_s = 0.0 if resident else self.calibration.load_seconds(
            self.device.kind, plan.weights, first_in_process=not self._loaded_once)
        if not resident and not libraries.imported("torch", "transformers"):
            load_s += self.calibration.import_seconds()
        compute_s = self._predict_compute(spec, request, plan)
        return Estimate(
            model=spec.repo_id,
            seconds=load_s + compute_s,
            bytes=plan.need,
            fits=plan.fits,
            evicts=plan.evicts,
            weights_bytes=plan.weights,
            working_bytes=plan.working,
            load_seconds=load_s,
            compute_seconds=compute_s,
            placement=plan.placement,
            resident=resident,
            cached=cached,
            budget_bytes=plan.budget,
            dtype=plan.dtype,
        )

    def _predict_compute(self, spec: ModelSpec, request: Request, plan: _Plan) -> float:
        units = self.catalog.family(spec).work_units(spec, request)
        key = Calibration.key(spec.repo_id, self._speed_kind(plan.placement), plan.dtype)
        prior = spec.speed_prior(self._compute_kind(plan.placement), plan.dtype)
        seconds = self.calibration.compute_seconds(key, units, prior)
        if plan.placement == "offload" and not self.calibration.has_runs(key):
            # Until measured: every component crosses to the device once per run.
            seconds += plan.weights / OFFLOAD_BANDWIDTH
        return seconds

    def _compute_kind(self, placement: str) -> str:
        return "cpu" if placement == "cpu" else self.device.compute_kind

    def _speed_kind(self, placement: str) -> str:
        """Calibration key part: offload runs are slower than whole-model runs on the same device."""
        kind = self._compute_kind(placement)
        return f"{kind}+offload" if placement == "offload" else kind

    def _dtype(self, spec: ModelSpec, placement: str = "device", precision: str = AUTO) -> str:
        """The precision a run uses: the one asked for, or what "auto" picks for the hardware doing the work."""
        if precision != AUTO:
            return precision
        return self.catalog.family(spec).preferred_dtypes.get(self._compute_kind(placement), "float32")

    def _float_bytes(self, dtype: str, placement: str) -> int:
        """Bytes per element of what stays floating: activations, and with int8 the unquantized weights."""
        return float_bytes(dtype, self._compute_kind(placement))

    def _weights_label(self, dtype: str, placement: str) -> str:
        """Calibration key for loaded weight bytes: int8 models differ in size on the CPU and on CUDA."""
        return f"int8/{self._compute_kind(placement)}" if dtype == "int8" else dtype

    def _weights_for(self, spec: ModelSpec, entry: _Entry | None, dtype: str, placement: str = "device") -> int:
        if entry is not None and entry.model is not None and entry.dtype == dtype:
            return entry.weights
        measured = self.calibration.known_weights(spec.repo_id, self._weights_label(dtype, placement))
        if measured is not None:
            return measured
        int8_parts = self.catalog.family(spec).int8_parts
        return planned_weight_bytes(spec, dtype, self._float_bytes(dtype, placement), int8_parts)

    def _load_peak(self, spec: ModelSpec, dtype: str, placement: str) -> int:
        """Bytes held while loading beyond the final weights: int8 on the CPU loads float32, then quantizes."""
        if dtype != "int8" or self._compute_kind(placement) != "cpu":
            return 0
        return self._weights_for(spec, None, "float32", placement)

    def _sizes(self, spec: ModelSpec, request: Request | None, entry: _Entry | None, placement: str,
               precision: str) -> tuple[str, int, int, int]:
        """(dtype, weight bytes, working bytes, load peak) of running `request` with `placement`."""
        dtype = self._dtype(spec, placement, precision)
        weights = self._weights_for(spec, entry, dtype, placement)
        family = self.catalog.family(spec)
        working = family.working_bytes(spec, request, self._float_bytes(dtype, placement)) if request is not None else 0
        return dtype, weights, working, self._load_peak(spec, dtype, placement)

    def _plan(self, spec: ModelSpec, request: Request | None, entry: _Entry | None) -> _Plan:
        """Where the run goes and what must leave the device first. Call with `_lock` held."""
        family = self.catalog.family(spec)
        precision = requested_precision(request)
        dtype, weights, working, load_peak = self._sizes(spec, request, entry, "device", precision)
        budget = self.budget()
        on_device = entry is not None and entry.model is not None and entry.placement == "device"
        if on_device and entry.dtype == dtype:
            needed = working
        else:  # loads (a model in another precision is dropped first); int8 passes through float32 on the way
            needed = max(weights + working, load_peak) - (entry.weights if on_device else 0)
        deficit = self.used_bytes() + needed - budget
        others = [e for e in self._entries.values()
                  if e.model is not None and e.placement == "device" and e.spec.repo_id != spec.repo_id]
        blocked = tuple(e.spec.repo_id for e in others if not e.idle or e.pinned)
        plan = functools.partial(_Plan, precision=precision, load_peak=load_peak)
        if deficit <= 0:
            return plan(dtype, weights, working, "device", (), True, budget, blocked)
        candidates = [e for e in others if e.idle and not e.pinned]
        sizes = [(e.spec.repo_id, e.weights, e.last_used) for e in candidates]
        chosen = choose_evictions(sizes, deficit)
        if chosen is not None:
            return plan(dtype, weights, working, "device", tuple(chosen), True, budget, blocked)
        if family.components is not None and self.device.supports_offload:
            # Does not fit whole: keep the weights in RAM and bring one component at a time to the device.
            largest = max(family.components(spec, DTYPE_BYTES[dtype]).values(), default=weights)
            in_ram = entry is not None and entry.model is not None and entry.placement == "offload"
            host_room = self.device.host_free() - self.reserve + (weights if in_ram else 0)
            deficit = self.used_bytes() + largest + working - budget
            chosen = [] if deficit <= 0 else choose_evictions(sizes, deficit)
            if chosen is not None and weights <= host_room:
                return plan(dtype, weights, working, "offload", tuple(chosen), True, budget, blocked, largest)
        if self.device.kind == "cpu":
            return plan(dtype, weights, working, "device", (), False, budget, blocked)
        # Does not fit the accelerator: run from host RAM on the CPU instead of failing with OOM.
        cpu_dtype, cpu_weights, cpu_working, cpu_peak = self._sizes(spec, request, entry, "cpu", precision)
        in_ram = entry is not None and entry.model is not None and entry.placement != "device"
        host_room = self.device.host_free() - self.reserve + (entry.weights if in_ram else 0)
        fits = max(cpu_weights + cpu_working, cpu_peak) <= host_room
        return _Plan(cpu_dtype, cpu_weights, cpu_working, "cpu", (), fits, budget, blocked, precision=precision,
                     load_peak=cpu_peak)

    # ---------------------------------------------------------------- acquire / release
    def acquire(self, request: Request, ctx: RunContext | None = None) -> Lease:
        """Make the request's model ready where its plan says, loading and evicting as needed; pin it while held."""
        spec = self.catalog.get(request.model)
        ctx = ctx or RunContext()
        with self._lock:
            entry = self._entries.setdefault(spec.repo_id, _Entry(spec=spec))
            entry.refs += 1
            entry.last_used = self._clock()
        try:
            with self._load_lock:
                recoveries = self._make_ready(entry, request, ctx)
        except BaseException:
            self._release(entry)
            raise
        return Lease(self, entry, recoveries)

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.refs = max(0, entry.refs - 1)
            entry.last_used = self._clock()
            entry.last_used_wall = self._wall()
            if entry.model is not None:
                entry.state = ON_DEVICE if entry.placement == "device" else IN_RAM
        self._process_deferred_unloads()

    def _make_ready(self, entry: _Entry, request: Request, ctx: RunContext) -> list[str]:
        """Evict, move or load as the plan says; returns the out-of-memory recoveries a load needed."""
        with self._lock:
            plan = self._plan(entry.spec, request, entry)
        if not plan.fits:
            raise DoesNotFit(self._does_not_fit_message(entry.spec, plan))
        for model_id in plan.evicts:
            self._evict(self._entries[model_id])
        if entry.model is not None and entry.placement == plan.placement and entry.dtype == plan.dtype:
            return []
        if (entry.model is not None and entry.dtype == plan.dtype and self._movable(entry)
                and "offload" not in (entry.placement, plan.placement)):
            self._move(entry, plan.placement)
            return []
        if entry.model is not None:  # other precision, or offload hooks to add or remove: load afresh
            self._drop(entry)
        return self._load_with_ladder(entry, plan, ctx)

    def _load_with_ladder(self, entry: _Entry, plan: _Plan, ctx: RunContext) -> list[str]:
        """Load; on OOM (memory taken by someone else meanwhile) evict every idle model and retry, then use the CPU.

        Returns what it had to do, in words for the result's metadata: a model that ends up on the CPU is slower,
        and the user should know why.
        """
        recoveries: list[str] = []
        try:
            self._load(entry, plan, ctx)
            return recoveries
        except _LoadOutOfMemory:
            log.warning("OOM loading %s; unloading idle models and retrying", entry.spec.repo_id)
        evicted = self._evict_idle_from_device(keep=entry)
        recoveries.append(f"out of memory loading; unloaded {evicted} idle model(s) and loaded again")
        try:
            self._load(entry, plan, ctx)
            return recoveries
        except _LoadOutOfMemory as error:
            if plan.placement != "device" or self.device.kind == "cpu":
                raise DoesNotFit(
                    f"{entry.spec.repo_id} ran out of memory while loading ({format_bytes(plan.weights)} of weights; "
                    f"budget {format_bytes(self.budget())}): unload other models, close other programs using "
                    f"the memory, or raise --memory-budget"
                ) from error
        log.warning("OOM loading %s again; loading it for the CPU instead", entry.spec.repo_id)
        cpu_dtype, cpu_weights, _, cpu_peak = self._sizes(entry.spec, None, None, "cpu", plan.precision)
        cpu_plan = _Plan(cpu_dtype, cpu_weights, plan.working, "cpu", (), True, plan.budget, plan.blocked_by,
                         precision=plan.precision, load_peak=cpu_peak)
        try:
            self._load(entry, cpu_plan, ctx)
        except _LoadOutOfMemory as error:
            raise DoesNotFit(
                f"{entry.spec.repo_id} does not fit in RAM either ({format_bytes(cpu_plan.weights)} of weights): "
                f"close other programs or pick a smaller model"
            ) from error
        recoveries.append(f"out of memory loading again; loaded on the CPU instead ({cpu_dtype})")
        return recoveries

    def _evict_idle_from_device(self, keep: _Entry) -> int:
        with self._lock:
            idle = [e for e in self._entries.values()
                    if e is not keep and e.model is not None and e.placement == "device" and e.idle and not e.pinned]
        for other in idle:
            self._evict(other)
        return len(idle)

    def _does_not_fit_message(self, spec: ModelSpec, plan: _Plan) -> str:
        need = plan.weights + plan.working
        where = "in RAM" if plan.placement == "cpu" else "on the device"
        held = ""
        if plan.blocked_by:
            held = f"; held by models in use or pinned: {', '.join(plan.blocked_by)}"
        return (
            f"{spec.repo_id} needs {format_bytes(need)} {where} (weights {format_bytes(plan.weights)} + working "
            f"{format_bytes(plan.working)}) but the budget is {format_bytes(plan.budget)}{held}: unpin or unload "
            f"models, shorten the request, raise --memory-budget, or pick a smaller model"
        )

    # ---------------------------------------------------------------- loading and moving
    def _tag(self, entry: _Entry) -> str:
        return f"weights:{entry.spec.repo_id}"

    def _load(self, entry: _Entry, plan: _Plan, ctx: RunContext) -> None:
        spec = entry.spec
        downloading = not downloaded(spec.repo_id)
        with self._lock:
            entry.state = DOWNLOADING if downloading else LOADING
        ctx.stage("downloading" if downloading else "loading")
        self._make_host_room(max(plan.weights, plan.load_peak), exclude=entry)
        tag = self._tag(entry)
        torch_device = self.device.torch_device if plan.placement == "device" else "cpu"
        place = self.device.place if plan.placement == "device" else self.device.place_host  # offload: RAM
        needed = self.catalog.family(spec).libraries
        if not libraries.imported(*needed):
            seconds = libraries.ensure(*needed)  # waits while the warm-up imports them
            if seconds:
                self.calibration.record_import(seconds)
        started = self._clock()
        model = None
        try:
            place(tag, max(plan.weights, plan.load_peak))  # claim first: a simulated device says no here, as CUDA would
            loader = self._loader or self.catalog.family(spec).load
            model = loader(spec, torch_device, plan.dtype)
            weights = module_bytes(model.modules())
            place(tag, weights)  # the exact figure (non-persistent buffers included)
            if plan.placement == "offload":
                model.enable_offload(self.device.torch_device, self._offload_accountant(spec.repo_id))
        except BaseException as error:
            model = None
            self.device.remove(tag)
            self.device.remove_host(tag)
            with self._lock:
                entry.state = ON_DISK if downloaded(spec.repo_id) else NOT_DOWNLOADED
            self.device.empty_cache()
            if is_out_of_memory(error):
                raise _LoadOutOfMemory(str(error)) from None
            if isinstance(error, (Cancelled, DoesNotFit, ModelUnavailable, InvalidInput)):
                raise
            raise ModelUnavailable(describe_load_error(spec, error)) from error
        elapsed = self._clock() - started
        self._note_resident()
        self.calibration.record_weights(spec.repo_id, self._weights_label(plan.dtype, plan.placement), weights)
        if not downloading:
            self.calibration.record_load(self.device.kind, weights, elapsed, first_in_process=not self._loaded_once)
        with self._lock:
            entry.model = model
            entry.placement = plan.placement
            entry.dtype = plan.dtype
            entry.weights = weights
            entry.state = ON_DEVICE if plan.placement == "device" else IN_RAM
        self._loaded_once = True
        log.info("loaded %s (%s, %s, %s) in %.1f s", spec.repo_id, plan.placement, plan.dtype,
                 format_bytes(weights), elapsed)

    def _offload_accountant(self, model_id: str):
        """With offload, the device holds one component at a time: account exactly that one."""
        tag = f"offload:{model_id}"

        def on_component(nbytes: int) -> None:
            if nbytes:
                self.device.place(tag, nbytes)  # replaces the previous component; a simulated device may say OOM
                self._note_resident()
            else:
                self.device.remove(tag)

        return on_component

    def _move(self, entry: _Entry, placement: str) -> None:
        tag = self._tag(entry)
        assert entry.model is not None
        if placement == "device":
            self.device.place(tag, entry.weights)
            try:
                entry.model.move(self.device.torch_device)
            except BaseException:
                self.device.remove(tag)
                entry.model.move("cpu")
                self.device.empty_cache()
                raise
            self.device.remove_host(tag)
            self._note_resident()
            with self._lock:
                entry.placement, entry.state = "device", ON_DEVICE
        else:
            entry.model.move("cpu")
            self.device.remove(tag)
            self.device.place_host(tag, entry.weights)
            self.device.empty_cache()
            with self._lock:
                entry.placement, entry.state = "cpu", IN_RAM

    def _movable(self, entry: _Entry) -> bool:
        """Quantized int8 modules (PyTorch's on the CPU, bitsandbytes' on CUDA) cannot change device."""
        return entry.dtype != "int8" or self.device.torch_device == "cpu"

    def _evict(self, entry: _Entry) -> None:
        """Off the device: to RAM when the device has memory of its own and RAM has room, else out entirely."""
        if (self.device.separate_memory and self._movable(entry)
                and entry.weights <= self.device.host_free() - self.reserve):
            log.info("moving %s from the device to RAM to make room", entry.spec.repo_id)
            self._move(entry, "cpu")
        else:
            log.info("unloading %s to make room", entry.spec.repo_id)
            self._drop(entry)

    def _make_host_room(self, nbytes: int, *, exclude: _Entry) -> None:
        """Drop idle models kept in RAM, least recently used first, until `nbytes` fit in RAM."""
        in_ram = sorted(
            (e for e in self._entries.values()
             if e is not exclude and e.model is not None and e.placement == "cpu" and e.idle and not e.pinned),
            key=lambda e: e.last_used,
        )
        for victim in in_ram:
            if self.device.host_free() - self.reserve >= nbytes:
                return
            log.info("unloading %s from RAM to make room", victim.spec.repo_id)
            self._drop(victim)

    def _drop(self, entry: _Entry) -> bool:
        """Unload completely; True when a weak reference shows the weights are really gone."""
        with self._lock:
            model, entry.model = entry.model, None
            entry.placement = None
            entry.state = ON_DISK
        if model is None:
            return True
        refs = [weakref.ref(m) for m in model.modules()]
        refs.append(weakref.ref(model))
        del model
        tag = self._tag(entry)
        self.device.remove(tag)
        self.device.remove(f"offload:{entry.spec.repo_id}")
        self.device.remove_host(tag)
        gc.collect()
        self.device.empty_cache()
        leaked = [r() for r in refs if r() is not None]
        if leaked:
            log.warning("unloading %s left %d objects alive (a reference leak): %s",
                        entry.spec.repo_id, len(leaked), ", ".join(type(o).__name__ for o in leaked[:5]))
            return False
        return True

    def _note_resident(self) -> None:
        self.max_resident_seen = max(self.max_resident_seen, self.device.placed_bytes())

    # ---------------------------------------------------------------- unload and pin (user actions)
    def unload(self, model_id: str) -> str:
        """Unload now if idle ('unloaded'); if it is loading or generating, once it is done ('deferred')."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None or (entry.model is None and entry.idle):
                return "not loaded"
            entry.unload_requested = True
        self._process_deferred_unloads()
        with self._lock:
            return "deferred" if entry.unload_requested else "unloaded"

    def unload_all(self) -> dict[str, str]:
        with self._lock:
            ids = list(self._entries)
        return {model_id: self.unload(model_id) for model_id in ids}

    def pin(self, model_id: str, pinned: bool = True) -> None:
        spec = self.catalog.get(model_id)
        with self._lock:
            self._entries.setdefault(spec.repo_id, _Entry(spec=spec)).pinned = bool(pinned)

    def _process_deferred_unloads(self) -> None:
        if not self._load_lock.acquire(blocking=False):
            return  # a load holds the lock; it calls this again when it releases its lease
        try:
            with self._lock:
                due = [e for e in self._entries.values() if e.unload_requested and e.idle]
            for entry in due:
                entry.unload_requested = False
                self._drop(entry)
        finally:
            self._load_lock.release()

    # ---------------------------------------------------------------- running
    def run(self, request: Request, ctx: RunContext | None = None) -> RunResult:
        """One generation: wait for the device, make the model ready, generate with the OOM ladder, learn."""
        ctx = ctx or RunContext()
        ctx.stage("queued")
        with self._run_lock:
            ctx.check()
            started = self._clock()
            estimate = self.estimate_run(request)
            lease = self.acquire(request, ctx)  # refuses with the numbers, before running, when it cannot fit
            try:
                load_s = self._clock() - started
                audio, compute_s, peak, run_recoveries = self._generate_with_ladder(lease, request, ctx)
            except BaseException as error:
                # The traceback's frames hold the adapter's tensors; clear them so that an unload waiting for
                # this run (released just below) really frees the model instead of finding it still referenced.
                traceback.clear_frames(error.__traceback__)
                raise
            finally:
                lease.release()
        spec = self.catalog.get(request.model)
        with self._lock:
            entry = self._entries[spec.repo_id]
            placement, dtype = entry.placement or lease.placement, entry.dtype
        if not run_recoveries:  # a retried run's time is no measure of the model's speed (a retried load's is apart)
            units = self.catalog.family(spec).work_units(spec, request)
            self.calibration.record_run(Calibration.key(spec.repo_id, self._speed_kind(placement), dtype), units, compute_s)
        return RunResult(
            audio=audio, estimate=estimate, elapsed_s=self._clock() - started, load_s=load_s,
            compute_s=compute_s, peak_bytes=peak, placement=placement, dtype=dtype,
            recoveries=lease.recoveries + run_recoveries,
        )

    def _generate_with_ladder(self, lease: Lease, request: Request, ctx: RunContext):
        """Generate; on OOM free intermediates and evict everything idle, retry; then retry on the CPU; then explain."""
        recoveries: list[str] = []
        entry = lease._entry
        for attempt in range(3):
            family = self.catalog.family(entry.spec)
            working = family.working_bytes(entry.spec, request, self._float_bytes(entry.dtype, entry.placement or "device"))
            self.device.reset_peak()
            started = self._clock()
            try:
                ctx.stage("generating")
                if entry.placement in ("device", "offload"):
                    try:
                        with self.device.working(f"run:{entry.spec.repo_id}", working):
                            self._note_resident()
                            audio = lease.model.generate(request, ctx)
                    finally:
                        self.device.remove(f"offload:{entry.spec.repo_id}")  # hooks put everything back in RAM
                else:
                    audio = lease.model.generate(request, ctx)
                self.device.synchronize()
                return audio, self._clock() - started, self.device.peak_bytes(), recoveries
            except BaseException as error:
                self.device.peak_bytes()  # stops a CPU sampler
                if not is_out_of_memory(error):
                    if isinstance(error, Cancelled):
                        self.device.empty_cache()
                    raise
                del error  # its traceback holds the intermediates
                self.device.empty_cache()
                if attempt == 0:
                    with self._load_lock:
                        evicted = self._evict_idle_from_device(keep=entry)
                    recoveries.append(f"out of memory; unloaded {evicted} idle model(s) and retried")
                    log.warning("OOM running %s: %s", entry.spec.repo_id, recoveries[-1])
                    continue
                if attempt == 1 and entry.placement != "cpu" and self.device.kind != "cpu":
                    with self._load_lock:
                        placement = self._degrade(entry, requested_precision(request))
                    recoveries.append(f"out of memory again; retried {'with CPU offload' if placement == 'offload' else 'on the CPU'}")
                    log.warning("OOM running %s: %s", entry.spec.repo_id, recoveries[-1])
                    continue
                # CPU and Apple MPS share the machine's RAM with everything else; a discrete GPU's memory is its own.
                others = "close other programs using memory" if self.device.kind in ("cpu", "mps") \
                    else "close other GPU programs"
                raise DoesNotFit(
                    f"{entry.spec.repo_id} ran out of memory generating (estimated {format_bytes(entry.weights)} "
                    f"weights + {format_bytes(working)} working; budget {format_bytes(self.budget())}, "
                    f"in use {format_bytes(self.used_bytes())}): shorten the request, {others}, "
                    f"or lower --memory-budget so the estimate leaves more headroom"
                ) from None
        raise AssertionError("unreachable")

    def _degrade(self, entry: _Entry, precision: str = AUTO) -> str:
        """One step down the ladder: whole on the device -> CPU offload (where the family has parts) -> the CPU."""
        family = self.catalog.family(entry.spec)
        target = "offload" if (entry.placement == "device" and family.components is not None
                               and self.device.supports_offload) else "cpu"
        dtype, weights, _, load_peak = self._sizes(entry.spec, None, None, target, precision)
        if entry.placement == "device" and target == "cpu" and entry.dtype == dtype and self._movable(entry):
            self._move(entry, "cpu")
            return target
        self._drop(entry)  # the lease's reference count stays; only the weights go
        largest = max(family.components(entry.spec, DTYPE_BYTES[dtype]).values(), default=weights) \
            if target == "offload" else 0
        self._load(entry, _Plan(dtype, weights, 0, target, (), True, self.budget(), (), largest, precision=precision,
                                load_peak=load_peak), RunContext())
        return target


def requested_precision(request: Request | None) -> str:
    """The precision a request asks for: a model's Precision setting, "auto" when it has none or none is given."""
    return request.params.get("precision", AUTO) if request is not None else AUTO


def choose_evictions(candidates: list[tuple[str, int, float]], deficit: int) -> list[str] | None:
    """The fewest idle models that free `deficit` bytes, least recently used first among equals.

    `candidates` are (id, bytes, last_used). Combinations are tried by size, each size in LRU order,
    so a single model that frees enough beats two, and an older model beats a newer one.
    """
    ordered = sorted(candidates, key=lambda c: c[2])
    if sum(c[1] for c in ordered) < deficit:
        return None
    if len(ordered) > 12:  # combinations explode; take LRU order
        freed, chosen = 0, []
        for model_id, nbytes, _ in ordered:
            chosen.append(model_id)
            freed += nbytes
            if freed >= deficit:
                return chosen
    for size in range(1, len(ordered) + 1):
        for combo in itertools.combinations(ordered, size):
            if sum(c[1] for c in combo) >= deficit:
                return [c[0] for c in combo]
    return None


def describe_load_error(spec: ModelSpec, error: BaseException) -> str:
    """A load failure in words a user can act on: not cached offline, gated, corrupt files."""
    import os

    name = type(error).__name__
    text = str(error)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    lowered = text.lower()
    missing = name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError") or any(
        phrase in lowered for phrase in ("couldn't connect", "cannot find the requested files", "not fully cached",
                                         "not cached locally", "local_files_only")) or (offline and "offline" in lowered)
    gated = "gated" in lowered or "401" in text or "403" in text or name in ("GatedRepoError", "HfHubHTTPError")
    if spec.gated and (gated or missing):
        where = " (and HF_HUB_OFFLINE=1 is set, so nothing can be downloaded now)" if offline else ""
        return (
            f"{spec.repo_id} is a gated model and its files are not in the cache{where}: accept its licence at "
            f"https://huggingface.co/{spec.repo_id}, then run `hf auth login` or set HF_TOKEN, and try again"
        )
    if missing:
        hint = "HF_HUB_OFFLINE=1 is set: run once online or copy the model into the cache" if offline else \
            "check your internet connection, or download it once with `hf download " + spec.repo_id + "`"
        return f"{spec.repo_id} is not in the Hugging Face cache and could not be downloaded ({hint})"
    if name in ("SafetensorError", "HeaderTooLarge", "UnpicklingError") or "safetensors" in lowered \
            or "incomplete" in lowered or "truncated" in lowered:
        return (
            f"{spec.repo_id}'s files in the cache look corrupt or incomplete ({name}): delete them with "
            f"`hf cache delete` (or remove the folder under HF_HOME) and download again"
        )
    first_line = text.strip().splitlines()[0] if text.strip() else name
    return f"{spec.repo_id} could not be loaded: {first_line[:300]}"
