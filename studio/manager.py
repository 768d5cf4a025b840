"""PipelineManager, the executor: locks, reference counts and leases; it loads, moves and drops models as the
planner (studio.planner) says, and walks the plan's fallbacks when a device runs out of memory.

What a request costs comes from the sizer (studio.sizer), how long it takes from the time estimator
(studio.estimate.TimeEstimator); this module only acts.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from studio import compiling, libraries
from studio.catalog import AUTO, DTYPE_BYTES, Catalog, ModelSpec, Request
from studio.compiling import COMPILED_PATH, EAGER_PATH, CompilePolicy
from studio.device import Device, Devices, is_out_of_memory
from studio.errors import Cancelled, DoesNotFit, InvalidInput, ModelUnavailable, StudioError
from studio.estimate import Calibration, Estimate, TimeEstimator
from studio.precision_probe import Stopped, layer_shapes, probe, probe_bytes
from studio.planner import DeviceView, Need, Placement, Plan, Resident, State, plan
from studio.run import Audio, LoadedModel, RunContext
from studio.settings import DEFAULT_RESERVE, budget_caps, format_bytes
from studio.sizer import PrecisionSpeeds, Sizer, weights_label
from studio.memory import DeviceRow, MemorySnapshot, ModelRow
from studio.user_models import check_repo
from studio.weights import downloaded, explain_load_failure, float_bytes, module_bytes, offline, require_files

log = logging.getLogger(__name__)

Loader = Callable[[ModelSpec, str, str], LoadedModel]
CPU_SLOT = "host"  # the run slot of models running on the CPU beside the accelerators


@dataclass
class _Entry:
    """One model the manager knows: its state and, while loaded, where its weights are."""

    spec: ModelSpec
    state: State = State.ON_DISK
    model: LoadedModel | None = None
    placement: Placement | None = None  # while loaded
    device: Device | None = None  # holding it (DEVICE) or running its parts (OFFLOAD); None on the CPU
    dtype: str = "float32"
    weights: int = 0  # exact once loaded
    refs: int = 0  # runs and leases holding it
    pinned: bool = False
    last_used: float = 0.0  # manager clock, for LRU
    last_used_wall: float | None = None  # epoch seconds, for people
    unload_requested: bool = False

    @property
    def idle(self) -> bool:
        return self.refs == 0 and self.state not in (State.LOADING, State.DOWNLOADING)


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
    device: str  # the name of the device that ran it ("CPU ..." for a run on the CPU)
    recoveries: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Waiter:
    """A run waiting in `_claim_slot`: the slot its plan wants now, and its own estimated seconds."""

    slot: str
    seconds: float
    model: str = ""


PROBE_ATTEMPTS = 20  # a probe stopped by runs this often gives up until the next process
PROBE_IDLE_S = 1.0


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
        if self._entry.model is None:
            raise RuntimeError("the leased model is not loaded")  # cannot happen while the lease is open
        return self._entry.model

    @property
    def placement(self) -> Placement:
        return self._entry.placement or Placement.DEVICE

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._release(self._entry)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class PipelineManager:
    """One per process. Loads lazily, places each model by the plan, one generation per device at a time.

    Locks, always taken in this order: `_slots` (which devices run a generation), `_load_lock` (one load,
    move or eviction at a time), `_lock` (the entries' fields).
    """

    def __init__(
        self,
        catalog: Catalog,
        devices: Device | Sequence[Device] | Devices,
        *,
        calibration: Calibration | None = None,
        budget_cap: int | tuple[int, ...] | None = None,
        reserve: int = DEFAULT_RESERVE,
        loader: Loader | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        speeds: PrecisionSpeeds | None = None,
        compile_policy: CompilePolicy | None = None,
    ) -> None:
        self.catalog = catalog
        # Where decoders are compiled (models.compiled); None: never.
        self.compile_policy = compile_policy
        if compile_policy is not None and compile_policy.mode != "off":
            # Now, before torch is imported: torch puts its own default (a folder in /tmp, which many systems empty at
            # boot) into the environment when Dynamo is imported, as transformers' model modules do, and a folder set
            # after that would be taken for the user's own choice and ignored. A folder the user set is kept.
            compiling.use_cache_dir(compile_policy.cache_dir)
        self._compiling: set[str] = set()  # models whose background compile is scheduled or under way
        # What the precision probe measured on this CPU (studio.precision_probe); None: no probe, published defaults.
        self.speeds = speeds
        self._probing: set[str] = set()  # models whose probe is scheduled or under way
        if isinstance(devices, Device):
            devices = [devices]
        self.devices = devices if isinstance(devices, Devices) else Devices(list(devices))
        self.calibration = calibration or Calibration(None)
        self.budget_cap = budget_cap
        self.reserve = reserve
        self._loader = loader
        self._clock = clock
        self._wall = wall_clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.RLock()
        self._slots = threading.Condition()
        self._busy: set[str] = set()  # run slots (device keys, or CPU_SLOT) with a generation running
        # slot -> (started, estimated seconds, its RunContext) of the run on it
        self._running: dict[str, tuple[float, float, RunContext | None]] = {}
        self._waiting: list[_Waiter] = []  # runs waiting for a slot, first come first served
        self._running_models: dict[str, str] = {}  # slot -> the model running there
        self.max_resident_seen = 0  # the most bytes the manager ever had placed on any one device
        self.max_resident_by_device: dict[str, int] = {}
        self._loaded_once = False

    @property
    def calibration(self) -> Calibration:
        return self._calibration

    @calibration.setter
    def calibration(self, calibration: Calibration) -> None:
        self._calibration = calibration
        self.sizer = Sizer(self.catalog, calibration, self.speeds)
        self.timer = TimeEstimator(calibration)

    @property
    def device(self) -> Device:
        """The first device (the only one on most machines); host RAM is accounted on it."""
        return self.devices[0]

    def warm_up(self) -> threading.Thread:
        """Decide the devices and import torch and transformers in the background, after the page is up; then, where
        a model may compile its decoder and one has compiled on this machine before, prepare torch's compiler once the
        studio is idle (_prepare_compiler)."""

        def work() -> None:
            devices = self.devices.resolve()
            self._import(("torch", "transformers"))
            for kind in sorted({device.compute_kind for device in devices}):
                self._prepare_compiler(kind)

        thread = threading.Thread(target=work, name="studio-warm-up", daemon=True)
        thread.start()
        return thread

    def _import(self, names: tuple[str, ...]) -> None:
        """Import the heavy libraries (waiting for an import under way elsewhere); the importer records the time."""
        seconds = libraries.ensure(*names)
        if seconds > 0:  # a thread that only waited for another's import reports 0: not a measure
            self.calibration.record_import(seconds)

    # ---------------------------------------------------------------- memory questions
    def budget(self, device: Device | None = None) -> int:
        """Bytes the studio may hold on `device` (all devices together when None): what it holds + what is free,
        minus the reserve, capped by --memory-budget."""
        if device is None:
            return sum(self.budget(d) for d in self.devices)
        budget = device.placed_bytes() + device.reading().free - self.reserve
        cap = self._caps()[device.key]
        if cap is not None:
            budget = min(budget, cap)
        return max(0, budget)

    def _caps(self) -> dict[str, int | None]:
        devices = self.devices.resolve()
        return dict(zip((d.key for d in devices), budget_caps(self.budget_cap, len(devices))))

    def used_bytes(self) -> int:
        return sum(d.placed_bytes() for d in self.devices)

    def memory(self) -> MemorySnapshot:
        """The device(s), totals and one row per model known to the manager."""
        devices = self.devices.resolve()
        readings = {d.key: d.reading() for d in devices}
        with self._lock:
            # Listed: what holds memory or is about to (loaded, loading, downloading) and what is pinned. A model
            # unloaded, or whose download or load failed, leaves no row.
            entries = sorted((e for e in self._entries.values() if self._listed(e)), key=lambda e: -(e.last_used or 0))
            rows = [(e.device, ModelRow(
                id=e.spec.repo_id, label=e.spec.label, state=self._shown_state(e).value,
                bytes=e.weights if e.model is not None else 0,
                placement=e.placement.value if e.model is not None and e.placement else None,
                dtype=e.dtype if e.model is not None else None, pinned=e.pinned, last_used=e.last_used_wall,
                device=e.device.name if e.model is not None and e.device is not None else None,
            )) for e in entries]
        per_device = tuple(DeviceRow(
            name=d.name, kind=d.kind, total_bytes=readings[d.key].total, budget_bytes=self.budget(d),
            used_bytes=d.placed_bytes(),
            models=tuple(row for holder, row in rows if holder is d and row.device is not None),
        ) for d in devices)
        return MemorySnapshot(
            device=" + ".join(d.name for d in devices), device_kind=devices[0].kind,
            total_bytes=sum(r.total for r in readings.values()),
            budget_bytes=sum(d.budget_bytes for d in per_device),
            used_bytes=sum(d.used_bytes for d in per_device), ram_bytes=self.device.host_bytes(),
            models=tuple(row for _, row in rows), devices=per_device,
        )

    def snapshot(self) -> dict:
        """The /memory contract as a dict (see MemorySnapshot)."""
        return self.memory().to_dict()

    def state_of(self, model_id: str) -> State:
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None:
                return State.ON_DISK if downloaded(model_id) else State.NOT_DOWNLOADED
            return self._shown_state(entry)

    @staticmethod
    def _loaded(entry: _Entry) -> bool:
        """Holding memory now or about to: loaded, loading or downloading."""
        return entry.model is not None or entry.state in (State.LOADING, State.DOWNLOADING)

    def _listed(self, entry: _Entry) -> bool:
        return self._loaded(entry) or entry.pinned

    def _shown_state(self, entry: _Entry) -> State:
        if entry.model is not None:
            return State.IN_USE if entry.refs > 0 else entry.state
        if entry.state in (State.ON_DISK, State.NOT_DOWNLOADED):  # files may have come or gone (a pin makes an entry)
            return State.ON_DISK if downloaded(entry.spec.repo_id) else State.NOT_DOWNLOADED
        return entry.state

    # ---------------------------------------------------------------- planning
    def _device(self, key: str | None) -> Device | None:
        return next((d for d in self.devices if d.key == key), None) if key is not None else None

    def _compute_kind(self, placement: Placement | None, device: Device | None) -> str:
        return "cpu" if placement is Placement.CPU or device is None else device.compute_kind

    def _plan(self, spec: ModelSpec, request: Request, *, only: str | None = None, holding: int = 0) -> Plan:
        """The planner's answer for `request` now. `only` keeps it to one run slot (a device key, or CPU_SLOT
        for the CPU); `holding` is how many of the model's references the caller holds itself."""
        with self._lock:
            entry = self._entries.get(spec.repo_id)
            loaded = (entry.dtype, entry.weights) if entry is not None and entry.model is not None else None
            devices = self.devices.resolve()
            need = Need(
                model=spec.repo_id,
                on_device=self.sizer.sizes(spec, request, devices[0].compute_kind, loaded=loaded),
                on_cpu=self.sizer.sizes(spec, request, "cpu", loaded=loaded),
                host_room=self.device.host_free() - self.reserve,
            )
            residents = tuple(
                Resident(model=e.spec.repo_id, device=e.device.key if e.device is not None else None,
                         placement=e.placement or Placement.DEVICE, dtype=e.dtype, bytes=e.weights,
                         last_used=e.last_used, pinned=e.pinned, movable=self._movable(e),
                         in_use=(e.refs - (holding if e is entry else 0)) > 0
                         or e.state in (State.LOADING, State.DOWNLOADING))
                for e in self._entries.values() if e.model is not None)
            views = tuple(
                DeviceView(key=d.key, budget=self.budget(d), used=d.placed_bytes(), accelerator=d.kind != "cpu",
                           offload=d.supports_offload, separate_memory=d.separate_memory, busy=d.key in self._busy)
                for d in devices if only is None or d.key == only)
        return plan(need, residents, views)

    def estimate_run(self, request: Request, *, only: str | None = None) -> Estimate:
        """Memory and time for `request`, and what would be unloaded, without loading anything."""
        spec = self.catalog.get(request.model)
        family = self.catalog.family(spec)
        chosen = self._plan(spec, request, only=only)
        device = self._device(chosen.device)
        with self._lock:
            entry = self._entries.get(spec.repo_id)
            loaded = entry is not None and entry.model is not None
            resident = loaded and entry.placement == chosen.placement and entry.device is device \
                and entry.dtype == chosen.dtype
        load_s = 0.0 if resident else self.timer.load_seconds(
            (device or self.device).kind, chosen.weights, first_in_process=not self._loaded_once,
            importing=not libraries.imported(*family.libraries))
        preparation = None if loaded else self._preparation(spec)  # a model loaded once is prepared
        prepare_s = self.timer.prepare_seconds(family.name, preparation.io_bytes) if preparation else 0.0
        load_s += prepare_s
        path = (self.decode_path(spec.repo_id) or "") if resident else ""
        speed = dict(compute_kind=self._compute_kind(chosen.placement, device), placement=chosen.placement.value,
                     dtype=chosen.dtype, weights=chosen.weights, compiled=path == COMPILED_PATH)
        compute_s = self.timer.compute_seconds(spec, family.work_units(spec, request), **speed)
        first_units = family.first_audio_units(spec, request) if family.first_audio_units is not None else None
        first_audio_s = None if first_units is None else \
            load_s + min(compute_s, self.timer.compute_seconds(spec, first_units, **speed))
        return Estimate(
            model=spec.repo_id, seconds=load_s + compute_s, bytes=chosen.need, fits=chosen.fits,
            evicts=chosen.evicts, weights_bytes=chosen.weights, working_bytes=chosen.working, load_seconds=load_s,
            compute_seconds=compute_s, placement=chosen.placement.value, resident=resident,
            cached=loaded or downloaded(spec.repo_id), budget_bytes=chosen.budget, dtype=chosen.dtype,
            device=device.name if device is not None and len(self.devices) > 1 else None,
            faster=family.speed_param if family.speed_param and spec.param(family.speed_param) else None,
            reserve_bytes=self.reserve if self._reserve_takes_all(device or self.device) else 0,
            work=family.describe(spec, request) if family.describe is not None else "",
            prepares=preparation.summary if preparation else "", prepare_seconds=prepare_s,
            fits_in=self._fits_in(spec, request, chosen.dtype, only=only) if not chosen.fits else "",
            first_audio_seconds=first_audio_s, dtype_reason=self._dtype_reason(spec, request, chosen.dtype, speed),
            decoder=path if path != EAGER_PATH else "",
        )

    def _dtype_reason(self, spec: ModelSpec, request: Request, dtype: str, speed: dict) -> str:
        """Why auto runs `dtype` on the CPU, when it was measured there (studio.precision_probe); else ""."""
        if speed["compute_kind"] != "cpu" or request.params.get("precision", AUTO) != AUTO:
            return ""
        choice = self.sizer.auto_choice(spec)
        return choice.reason() if choice is not None and choice.dtype == dtype else ""

    def _fits_in(self, spec: ModelSpec, request: Request, current: str, *, only: str | None = None) -> str:
        """For a run that fits nowhere in `current` (its plan's dtype): the model's other precision that would fit
        (the smallest first), or "".
        e.g. ACE-Step's XL in float32 on a 12 GB GPU: its DiT alone (16.7 GB) is more than offload can hold, and
        bfloat16 (8.3 GB) runs with offload."""
        param = spec.param("precision")
        if param is None or not param.choices:
            return ""
        # int8 is no suggestion for a GPU: dynamic int8 runs on the CPU only, CUDA's needs bitsandbytes.
        # Of two the same size, the one auto picks here first (bfloat16 for a model published in it).
        first = self.devices.resolve()[0]
        accelerator, preferred = first.kind != "cpu", self.sizer.dtype(spec, first.compute_kind)
        others = sorted((c for c in param.choices if c not in (AUTO, current) and not (accelerator and c == "int8")),
                        key=lambda c: (DTYPE_BYTES.get(c, 4), c != preferred))
        for choice in others:
            try:
                other = replace(request, params={**request.params, "precision": choice})
                if self._plan(spec, other, only=only).fits:
                    return choice
            except StudioError:  # a precision this device cannot run
                continue
        return ""

    def _preparation(self, spec: ModelSpec):
        """The one-time preparation `spec`'s family still has to do before loading it (catalog.Preparation), or None."""
        family = self.catalog.family(spec)
        return family.preparation(spec) if family.preparation is not None else None

    def _reserve_takes_all(self, device: Device) -> bool:
        """Whether the reserve alone leaves `device` no budget (what the studio holds there + free <= reserve)."""
        return self.reserve > 0 and device.placed_bytes() + device.reading().free <= self.reserve

    # ---------------------------------------------------------------- acquire / release
    def acquire(self, request: Request, ctx: RunContext | None = None, *, only: str | None = None) -> Lease:
        """Make the request's model ready where its plan says, loading and evicting as needed; pin it while held."""
        spec = self.catalog.get(request.model)
        ctx = ctx or RunContext()
        with self._lock:
            entry = self._entries.setdefault(spec.repo_id, _Entry(spec=spec))
            entry.refs += 1
            entry.last_used = self._clock()
        try:
            with self._load_lock:
                chosen = self._plan(spec, request, only=only, holding=1)
                if not chosen.fits:
                    raise DoesNotFit(self._does_not_fit_message(spec, chosen))
                recoveries = self._realize(entry, chosen, ctx)
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
                entry.state = State.ON_DEVICE if entry.placement is Placement.DEVICE else State.IN_RAM
        self._process_deferred_unloads()

    def _realize(self, entry: _Entry, chosen: Plan, ctx: RunContext) -> list[str]:
        """Evict, move or load as the plan says; returns the out-of-memory recoveries a load needed."""
        self._evict(chosen)
        target = self._device(chosen.device)
        if entry.model is not None and entry.dtype == chosen.dtype:
            if entry.placement == chosen.placement and entry.device is target:
                return []
            if self._movable(entry) and Placement.OFFLOAD not in (entry.placement, chosen.placement):
                self._move(entry, chosen.placement, target)
                return []
        if entry.model is not None:  # another precision, or offload hooks to add or remove: load afresh
            self._drop(entry)
        return self._load_with_ladder(entry, chosen, ctx)

    def _load_with_ladder(self, entry: _Entry, chosen: Plan, ctx: RunContext) -> list[str]:
        """Load; on OOM (memory taken by someone else meanwhile) walk the plan's fallbacks: unload every idle model
        and retry, then offload, then the CPU. Returns what it had to do, in words for the result's metadata: a
        model that ends up on the CPU is slower, and the user should know why."""
        recoveries: list[str] = []
        steps = (chosen, *chosen.fallbacks)
        for number, step in enumerate(steps):
            if number == 1:
                recoveries.append(f"out of memory loading; unloaded {len(step.evicts)} idle model(s) and loaded again")
            elif number > 1:
                recoveries.append("out of memory loading again; " + (
                    "loaded with CPU offload" if step.placement is Placement.OFFLOAD
                    else f"loaded on the CPU instead ({step.dtype})"))
            if number:
                log.warning("OOM loading %s: %s", entry.spec.repo_id, recoveries[-1])
                self._evict(step)
            try:
                self._load(entry, step, ctx)
                return recoveries
            except _LoadOutOfMemory as error:
                failed = error
        last = steps[-1]
        if last.placement is Placement.CPU:
            message = (f"{entry.spec.repo_id} does not fit in RAM either ({format_bytes(last.weights)} of weights): "
                       f"close other programs or pick a smaller model")
        else:
            message = (f"{entry.spec.repo_id} ran out of memory while loading ({format_bytes(last.weights)} of "
                       f"weights; budget {format_bytes(last.budget)}): unload other models, close other programs "
                       f"using the memory, or raise --memory-budget")
        raise DoesNotFit(message) from failed

    def _does_not_fit_message(self, spec: ModelSpec, chosen: Plan) -> str:
        where = "in RAM" if chosen.placement is Placement.CPU else "on the device"
        held = f"; held by models in use or pinned: {', '.join(chosen.blocked_by)}" if chosen.blocked_by else ""
        return (
            f"{spec.repo_id} needs {format_bytes(chosen.weights + chosen.working)} {where} (weights "
            f"{format_bytes(chosen.weights)} + working {format_bytes(chosen.working)}) but the budget is "
            f"{format_bytes(chosen.budget)}{held}: unpin or unload models, shorten the request, raise "
            f"--memory-budget, or pick a smaller model"
        )

    # ---------------------------------------------------------------- loading, moving, dropping
    def _tag(self, entry: _Entry) -> str:
        return f"weights:{entry.spec.repo_id}"

    def _load(self, entry: _Entry, step: Plan, ctx: RunContext) -> None:
        spec = entry.spec
        family = self.catalog.family(spec)
        device = self._device(step.device)
        downloading = not downloaded(spec.repo_id)
        with self._lock:
            entry.state = State.DOWNLOADING if downloading else State.LOADING
        ctx.stage("downloading" if downloading else "loading")
        preparation = self._preparation(spec)
        self._make_host_room(max(step.weights, step.load_peak, preparation.peak_bytes if preparation else 0),
                             exclude=entry)
        tag = self._tag(entry)
        whole = step.placement is Placement.DEVICE and device is not None
        torch_device = device.torch_device if whole else "cpu"
        place = device.place if whole else self.device.place_host  # offload and the CPU keep the weights in RAM
        self._import(family.libraries)
        started = self._clock()
        try:
            if spec.added_by:  # a repo the user added: its config must be the family's before any weights are read
                check_repo(self.catalog, spec)
            if offline():  # nothing can fetch a missing file: say which before reading any weights
                require_files(spec, family.files)
            place(tag, max(step.weights, step.load_peak))  # claim first: a simulated device says no here, as CUDA would
            if preparation is not None:
                self._prepare(spec, preparation, ctx, measured=not downloading)
            model = (self._loader or family.load)(spec, torch_device, step.dtype)
            require_files(spec, family.files)  # online, the load fetched them; if it could not, refuse the result
            weights = module_bytes(model.modules())
            place(tag, weights)  # the exact figure (non-persistent buffers included)
            if step.placement is Placement.OFFLOAD and device is not None:
                model.enable_offload(device.torch_device, self._offload_accountant(spec.repo_id, device))
        except BaseException as error:
            model = None
            if device is not None:
                device.remove(tag)
            self.device.remove_host(tag)
            with self._lock:
                entry.state = State.ON_DISK if downloaded(spec.repo_id) else State.NOT_DOWNLOADED
            (device or self.device).empty_cache()
            if is_out_of_memory(error):
                raise _LoadOutOfMemory(str(error)) from None
            if isinstance(error, (Cancelled, DoesNotFit, ModelUnavailable, InvalidInput)):
                raise
            raise ModelUnavailable(explain_load_failure(spec, family.files, error)) from error
        elapsed = self._clock() - started
        if device is not None:
            self._note_resident(device)
        kind = self._compute_kind(step.placement, device)
        self.calibration.record_weights(spec.repo_id, weights_label(step.dtype, kind), weights)
        if not downloading:
            self.calibration.record_load((device or self.device).kind, weights, elapsed,
                                         first_in_process=not self._loaded_once)
        with self._lock:
            entry.model, entry.placement, entry.dtype, entry.weights = model, step.placement, step.dtype, weights
            entry.device = device if step.placement is not Placement.CPU else None
            entry.state = State.ON_DEVICE if step.placement is Placement.DEVICE else State.IN_RAM
        self._loaded_once = True
        log.info("loaded %s (%s%s, %s, %s) in %.1f s", spec.repo_id, step.placement.value,
                 f" on {device.name}" if device is not None and step.placement is not Placement.CPU else "",
                 step.dtype, format_bytes(weights), elapsed)
        if kind == "cpu":
            self._schedule_probe(spec, model)
        self._schedule_compile(spec, model, kind, step.dtype)

    # ------------------------------------------------------------------ the precision probe
    def _schedule_probe(self, spec: ModelSpec, model: LoadedModel) -> None:
        """After a model's first load on the CPU: measure its precisions here in the background (once per model and
        machine), so that auto picks the fastest (studio.precision_probe)."""
        if self.speeds is None or spec.repo_id in self._probing or len(self.sizer.probe_candidates(spec)) < 2 \
                or self.speeds.measured(spec.repo_id) is not None:
            return
        shapes = layer_shapes(model.modules(), self.catalog.family(spec).int8_parts)
        if not shapes:
            return
        self._probing.add(spec.repo_id)
        threading.Thread(target=self._probe, args=(spec, shapes), name=f"precision-probe:{spec.repo_id}",
                         daemon=True).start()

    def _runs_going(self) -> bool:
        return bool(self._busy or self._waiting)

    def _wait_idle(self) -> bool:
        """Wait until no run goes or waits, and a moment more (the next run of a queue comes a moment after the
        last ends); whether it is still idle then."""
        with self._slots:
            while self._runs_going():
                self._slots.wait(timeout=0.5)
        time.sleep(PROBE_IDLE_S)
        return not self._runs_going()

    def _idle_soon(self) -> bool:
        """Wait for idle (_wait_idle) up to PROBE_ATTEMPTS times; whether the studio was idle before they ran out."""
        return any(self._wait_idle() for _ in range(PROBE_ATTEMPTS))

    # ------------------------------------------------------------------ the compiled decoder
    def _prepare_compiler(self, kind: str) -> None:
        """If a model on `kind` may compile its decoder and one has compiled on this machine before (its trace is in
        the compile cache): prepare torch's compiler (studio.compiling.prepare_compiler) in the background, once the
        studio is idle, at a lower priority, so that the next compile, the load of that trace, starts with it done.
        It waits while runs go and gives up after PROBE_ATTEMPTS tries: a compile prepares what is left itself."""
        policy = self.compile_policy
        if policy is None or not policy.may_apply(kind) or not policy.compiled_here():
            return

        def prepare_when_idle() -> None:
            try:
                if not self._idle_soon():
                    return
                with compiling.lowered_priority():
                    seconds = policy.prepare(kind)
                if seconds:
                    log.info("prepared torch's compiler for %s in %.1f s, while idle", kind, seconds)
            except Exception as error:  # an optimisation: it must never disturb the studio
                log.warning("preparing torch's compiler failed (%s); a compile prepares it itself", error)

        threading.Thread(target=prepare_when_idle, name=f"compiler-prep:{kind}", daemon=True).start()

    def _schedule_compile(self, spec: ModelSpec, model: LoadedModel, kind: str, dtype: str) -> None:
        """After a load: compile the model's decoder in the background (models.compiled), once the device is idle;
        runs go eager meanwhile, and take the compiled path once it is ready."""
        policy = self.compile_policy
        if policy is None or not hasattr(model, "compile_decoder") \
                or not policy.applies(getattr(model, "compile_name", spec.family), kind, dtype):
            return
        self._compiling.add(spec.repo_id)

        def compile_when_idle() -> None:
            try:
                self._idle_soon()
                # (A studio never idle that long compiles beside its runs all the same, at the compile's lower
                # priority: it is the busiest studio that gains most.)
                with self._lock:
                    current = self._entries.get(spec.repo_id)
                    if current is None or current.model is not model:  # unloaded or reloaded meanwhile
                        return
                    slot = current.device.key if current.device is not None else CPU_SLOT
                # A warm-up through the adapter's own generate() seeds and samples from torch's one global random
                # generator: a run beside it would not make what its seed makes. It holds the device as a run does
                # (runs wait for it, and the page says so); MusicGen's and Bark's warm-ups sample nothing.
                with self._holding(slot, spec.repo_id) if getattr(model, "compile_holds_device", False) \
                        else nullcontext():
                    model.compile_decoder(policy, kind,
                                          lambda text: self.catalog.make_request(spec.repo_id, text, seed=0))
            except Exception as error:  # an optimisation: it must never disturb the studio
                log.warning("compiling %s failed (%s); its runs stay eager", spec.repo_id, error)
            finally:
                self._compiling.discard(spec.repo_id)

        threading.Thread(target=compile_when_idle, name=f"compile:{spec.repo_id}", daemon=True).start()

    def compile_done(self, model: str, timeout: float = 300.0) -> bool:
        """Wait until `model`'s background compile is no longer scheduled or under way (tests, the bench)."""
        deadline = time.monotonic() + timeout
        while model in self._compiling and time.monotonic() < deadline:
            time.sleep(0.05)
        return model not in self._compiling

    def decode_path(self, model: str) -> str | None:
        """The path a loaded model's decoder takes now ("compiled decoder", "eager while the decoder compiles"...),
        for a family that compiles; None otherwise."""
        with self._lock:
            entry = self._entries.get(model)
            loaded = entry.model if entry is not None else None
        path = getattr(loaded, "decode_path", None)
        return path() if path is not None and self.compile_policy is not None else None

    def _probe(self, spec: ModelSpec, shapes: dict[tuple[int, int], int]) -> None:
        """Probe when no run goes (a run that starts stops it; it tries again once the runs are done)."""
        tag = f"probe:{spec.repo_id}"
        try:
            for _ in range(PROBE_ATTEMPTS):
                if not self._wait_idle():
                    continue
                rows = self.catalog.family(spec).probe_rows
                nbytes = probe_bytes(shapes, rows)
                if self.device.host_free() - self.reserve < nbytes:
                    log.info("precision probe of %s skipped: %s of RAM is not free", spec.repo_id,
                             format_bytes(nbytes))
                    return
                self.device.place_host(tag, nbytes)
                try:
                    seconds = probe(shapes, self.sizer.probe_candidates(spec), rows=rows, stop=self._runs_going)
                except Stopped:
                    continue
                finally:
                    self.device.remove_host(tag)
                self.speeds.record(spec.repo_id, seconds)
                choice = self.sizer.auto_choice(spec)
                log.info("precision probe of %s on this CPU: %s; auto is now %s", spec.repo_id,
                         ", ".join(f"{d} {s * 1000:.2f} ms" for d, s in seconds.items()),
                         choice.reason() if choice is not None else self.sizer.published_dtype(spec, "cpu"))
                return
        except Exception as error:  # a probe is an optimisation: it must never disturb the studio
            log.warning("precision probe of %s failed (%s); auto stays %s", spec.repo_id, error,
                        self.sizer.published_dtype(spec, "cpu"))
        finally:
            self._probing.discard(spec.repo_id)

    def probe_done(self, model: str, timeout: float = 30.0) -> bool:
        """Wait until `model`'s probe is no longer scheduled or under way (tests, the bench)."""
        deadline = time.monotonic() + timeout
        while model in self._probing and time.monotonic() < deadline:
            time.sleep(0.05)
        return model not in self._probing

    def _prepare(self, spec: ModelSpec, preparation, ctx: RunContext, *, measured: bool) -> None:
        """Run the family's one-time preparation (it sets its own stage and progress), then say the load goes on.
        Its time teaches the estimate, unless it began with a download (whose time says nothing of the disk)."""
        family = self.catalog.family(spec)
        started = self._clock()
        family.prepare(spec, ctx)
        if measured:
            self.timer.record_preparation(family.name, preparation.io_bytes, self._clock() - started)
        log.info("prepared %s (%s) in %.1f s", spec.repo_id, preparation.stage, self._clock() - started)
        ctx.stage("loading")

    def _offload_accountant(self, model_id: str, device: Device):
        """With offload, the device holds one component at a time: account exactly that one."""
        tag = f"offload:{model_id}"

        def on_component(nbytes: int) -> None:
            if nbytes:
                device.place(tag, nbytes)  # replaces the previous component; a simulated device may say OOM
                self._note_resident(device)
            else:
                device.remove(tag)

        return on_component

    def _move(self, entry: _Entry, placement: Placement, device: Device | None) -> None:
        """Whole onto `device` (from RAM or another device), or to RAM for the CPU (placement CPU, device None)."""
        if entry.model is None:
            raise RuntimeError(f"{entry.spec.repo_id} is not loaded")
        tag = self._tag(entry)
        source = entry.device if entry.placement is Placement.DEVICE else None
        if placement is Placement.DEVICE and device is not None:
            device.place(tag, entry.weights)
            try:
                entry.model.move(device.torch_device)
            except BaseException:
                device.remove(tag)
                entry.model.move(source.torch_device if source is not None else "cpu")
                device.empty_cache()
                raise
            if source is not None and source is not device:
                source.remove(tag)
                source.empty_cache()
            self.device.remove_host(tag)
            self._note_resident(device)
            with self._lock:
                entry.placement, entry.device, entry.state = Placement.DEVICE, device, State.ON_DEVICE
        else:
            entry.model.move("cpu")
            if source is not None:
                source.remove(tag)
            self.device.place_host(tag, entry.weights)
            if source is not None:
                source.empty_cache()
            with self._lock:
                entry.placement, entry.device, entry.state = Placement.CPU, None, State.IN_RAM

    def _movable(self, entry: _Entry) -> bool:
        """Quantized int8 modules (PyTorch's on the CPU, bitsandbytes' on CUDA) cannot change device."""
        return entry.dtype != "int8" or all(d.torch_device == "cpu" for d in self.devices)

    def _evict(self, step: Plan) -> int:
        """Take the plan's evictions off its device: to RAM, or out entirely where the plan drops them. Models no
        longer idle or no longer there are left alone (the plan was made a moment ago). Returns how many left."""
        device = self._device(step.device)
        done = 0
        for model_id in step.evicts:
            with self._lock:
                entry = self._entries.get(model_id)
                here = entry is not None and entry.model is not None and entry.idle and not entry.pinned \
                    and entry.device is device and entry.placement is Placement.DEVICE
            if not here:
                continue
            if model_id in step.drops:
                log.info("unloading %s to make room", model_id)
                self._drop(entry)
            else:
                log.info("moving %s from %s to RAM to make room", model_id, device.name if device else "the device")
                self._move(entry, Placement.CPU, None)
            done += 1
        return done

    def _make_host_room(self, nbytes: int, *, exclude: _Entry) -> None:
        """Drop idle models kept in RAM, least recently used first, until `nbytes` fit in RAM."""
        with self._lock:
            in_ram = sorted((e for e in self._entries.values()
                             if e is not exclude and e.model is not None and e.placement is Placement.CPU
                             and e.idle and not e.pinned), key=lambda e: e.last_used)
        for victim in in_ram:
            if self.device.host_free() - self.reserve >= nbytes:
                return
            log.info("unloading %s from RAM to make room", victim.spec.repo_id)
            self._drop(victim)

    def _drop(self, entry: _Entry) -> bool:
        """Unload completely; True when a weak reference shows the weights are really gone."""
        with self._lock:
            model, entry.model = entry.model, None
            device, entry.device = entry.device, None
            entry.placement = None
            entry.state = State.ON_DISK
        if model is None:
            return True
        refs = [weakref.ref(m) for m in model.modules()]
        refs.append(weakref.ref(model))
        del model
        tag = self._tag(entry)
        if device is not None:
            device.remove(tag)
            device.remove(f"offload:{entry.spec.repo_id}")
        self.device.remove_host(tag)
        gc.collect()
        (device or self.device).empty_cache()
        leaked = [r() for r in refs if r() is not None]
        if leaked:
            log.warning("unloading %s left %d objects alive (a reference leak): %s",
                        entry.spec.repo_id, len(leaked), ", ".join(type(o).__name__ for o in leaked[:5]))
            return False
        return True

    def _note_resident(self, device: Device) -> None:
        placed = device.placed_bytes()
        self.max_resident_by_device[device.key] = max(self.max_resident_by_device.get(device.key, 0), placed)
        self.max_resident_seen = max(self.max_resident_seen, placed)

    # ---------------------------------------------------------------- unload and pin (user actions)
    def unload(self, model_id: str) -> str:
        """Unload now if idle ('unloaded'); if it is loading or generating, once it is done ('deferred'); 'not
        loaded' when there is nothing to unload. An explicit unload also unpins: the user's action wins."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None:
                return "not loaded"
            entry.pinned = False
            if entry.model is None and entry.idle:
                return "not loaded"
            entry.unload_requested = True
        self._process_deferred_unloads()
        with self._lock:
            return "deferred" if entry.unload_requested else "unloaded"

    def unload_all(self) -> dict[str, str]:
        """Unload every model that is not pinned; a pinned model that is loaded stays ('pinned'), and stays pinned."""
        with self._lock:
            entries = list(self._entries.items())
        outcome = {}
        for model_id, entry in entries:
            with self._lock:
                pinned, loaded = entry.pinned, self._loaded(entry) or not entry.idle
            if pinned:
                outcome[model_id] = "pinned" if loaded else "not loaded"
            else:
                outcome[model_id] = self.unload(model_id)
        return outcome

    def pin(self, model_id: str, pinned: bool = True) -> str:
        """Pin (never unloaded to make room for another model) or unpin. A model that is not loaded may be pinned
        ahead: the pin takes effect once it loads. Returns 'pinned' (loaded or loading now), 'pinned once loaded'
        or 'unpinned'."""
        spec = self.catalog.get(model_id)
        with self._lock:
            entry = self._entries.setdefault(spec.repo_id, _Entry(spec=spec))
            entry.pinned = bool(pinned)
            if not pinned:
                return "unpinned"
            return "pinned" if self._loaded(entry) or not entry.idle else "pinned once loaded"

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
        """One generation: wait for its device, make the model ready, generate with the OOM ladder, learn."""
        ctx = ctx or RunContext()
        ctx.stage("queued")
        spec = self.catalog.get(request.model)
        slot = self._claim_slot(spec, request, ctx)
        try:
            ctx.check()
            started = self._clock()
            estimate = self.estimate_run(request, only=slot)
            with self._slots:  # what runs waiting for this slot are told to expect
                self._running[slot] = (started, estimate.seconds, ctx)
            ctx.planned(estimate)
            lease = self.acquire(request, ctx, only=slot)  # refuses with the numbers, before running, when it cannot fit
            try:
                load_s = self._clock() - started
                compiled = self.decode_path(spec.repo_id) == COMPILED_PATH
                audio, compute_s, peak, run_recoveries = self._generate_with_ladder(lease, request, ctx)
            except BaseException as error:
                # The traceback's frames hold the adapter's tensors; clear them so that an unload waiting for
                # this run (released just below) really frees the model instead of finding it still referenced.
                traceback.clear_frames(error.__traceback__)
                raise
            finally:
                with self._lock:
                    entry = lease._entry
                    placement, dtype, device = entry.placement or lease.placement, entry.dtype, entry.device
                lease.release()
        finally:
            self._free_slot(slot)
        if not run_recoveries:  # a retried run's time is no measure of the model's speed (a retried load's is apart)
            self.timer.record_run(spec, self.catalog.family(spec).work_units(spec, request), compute_s,
                                  compute_kind=self._compute_kind(placement, device), placement=placement.value,
                                  dtype=dtype, compiled=compiled)
        return RunResult(
            audio=audio, estimate=estimate, elapsed_s=self._clock() - started, load_s=load_s,
            compute_s=compute_s, peak_bytes=peak, placement=placement.value, dtype=dtype,
            device=device.name if device is not None and placement is not Placement.CPU else self._cpu_name(),
            recoveries=lease.recoveries + run_recoveries,
        )

    def _cpu_name(self) -> str:
        host = self.device
        return host.name if host.kind == "cpu" else "CPU"

    def _claim_slot(self, spec: ModelSpec, request: Request, ctx: RunContext) -> str:
        """Wait until the device the plan picks has no generation running, and take it. The plan is made anew
        each time a slot frees, so a request goes to whichever device suits it best once it can run. Runs waiting
        for the same slot take it in the order they came; meanwhile each is told, through `ctx.waiting`, how many
        runs are ahead of it and their estimated seconds left (see `queue_ahead`)."""
        waiter: _Waiter | None = None
        claimed = False
        with self._slots:
            try:
                while True:
                    ctx.check()
                    chosen = self._plan(spec, request)
                    slot = chosen.device or CPU_SLOT
                    if slot not in self._busy and not self._blocked(spec.repo_id) \
                            and not self._earlier_waiter(waiter, slot):
                        self._busy.add(slot)
                        self._running[slot] = (self._clock(), waiter.seconds if waiter is not None else 0.0, None)
                        self._running_models[slot] = spec.repo_id
                        claimed = True
                        return slot
                    if waiter is None:
                        waiter = _Waiter(slot, self.estimate_run(request, only=slot).seconds, spec.repo_id)
                        self._waiting.append(waiter)
                    waiter.slot = slot
                    ctx.waiting(*self.queue_ahead(waiter))
                    self._slots.wait(timeout=0.25)
            finally:
                if waiter is not None:
                    self._waiting.remove(waiter)
                    if not claimed:  # a cancelled waiter: the next one in line need not wait for a poll
                        self._slots.notify_all()

    def _blocked(self, model: str) -> bool:
        """A run may not start while its model runs on another slot (one pipeline object, one run at a time), nor
        while as many runs as there are devices are under way (a run on the CPU beside a busy accelerator counts:
        it shares the machine, and the web page lets one run per device)."""
        return model in self._running_models.values() or len(self._busy) >= len(self.devices.resolve())

    def _earlier_waiter(self, waiter: _Waiter | None, slot: str) -> bool:
        """Whether a run that came before `waiter` (before any new run, when None) waits for `slot`."""
        for other in self._waiting:
            if other is waiter:
                return False
            if other.slot == slot:
                return True
        return False

    def queue_ahead(self, waiter: _Waiter) -> tuple[int, float]:
        """(runs ahead of `waiter` for its slot, their estimated seconds left): the run on the slot (the time it
        has left by its own measure when its context says, else its estimate minus the time it has run, never below
        0) plus the runs that came earlier for the same slot (their estimates). Call with `_slots` held."""
        now = self._clock()

        def left(slot: str) -> float:
            started, estimated, running = self._running.get(slot, (now, 0.0, None))
            measured = running.remaining() if running is not None else None
            return max(0.0, measured if measured is not None else estimated - (now - started))

        ahead, seconds = 0, 0.0
        if waiter.slot in self._busy:
            ahead, seconds = 1, left(waiter.slot)
        elif self._blocked(waiter.model):  # its model runs elsewhere, or every run the devices allow is under way
            blockers = [slot for slot, model in self._running_models.items() if model == waiter.model] \
                or list(self._busy)
            ahead, seconds = 1, min(left(slot) for slot in blockers)
        for other in self._waiting:
            if other is waiter:
                break
            if other.slot == waiter.slot:
                ahead, seconds = ahead + 1, seconds + other.seconds
        return ahead, seconds

    @contextmanager
    def _holding(self, slot: str, model: str, seconds: float = 60.0):
        """Hold `slot` as a run of `model` would (for a compile's warm-up): taken once it is free and no run waits
        for it, freed after. Runs that come meanwhile wait, told `seconds` (a compile's usual length) at first."""
        with self._slots:
            while slot in self._busy or self._blocked(model) or self._earlier_waiter(None, slot):
                self._slots.wait(timeout=0.25)
            self._busy.add(slot)
            self._running[slot] = (self._clock(), seconds, None)
            self._running_models[slot] = model
        try:
            yield
        finally:
            self._free_slot(slot)

    def _free_slot(self, slot: str) -> None:
        with self._slots:
            self._busy.discard(slot)
            self._running.pop(slot, None)
            self._running_models.pop(slot, None)
            self._slots.notify_all()

    def _generate_with_ladder(self, lease: Lease, request: Request, ctx: RunContext):
        """Generate; on OOM walk the plan's fallbacks (evict every idle model and retry; offload; the CPU); then
        explain with the numbers."""
        recoveries: list[str] = []
        entry = lease._entry
        spec = entry.spec
        family = self.catalog.family(spec)
        # The model is in use (by this run) from here on: the planner's ladder for a model that stays where it is.
        fallbacks = list(self._plan(spec, request).fallbacks)
        while True:
            device = entry.device if entry.placement is not Placement.CPU else None
            working = family.working_bytes(spec, request, float_bytes(entry.dtype, self._compute_kind(
                entry.placement, device)))
            meter = device or self.device
            meter.reset_peak()
            started = self._clock()
            try:
                ctx.stage("generating")
                if device is not None:
                    try:
                        with device.working(f"run:{spec.repo_id}", working):
                            self._note_resident(device)
                            audio = lease.model.generate(request, ctx)
                    finally:
                        device.remove(f"offload:{spec.repo_id}")  # hooks put everything back in RAM
                else:
                    audio = lease.model.generate(request, ctx)
                meter.synchronize()
                return audio, self._clock() - started, meter.peak_bytes(), recoveries
            except BaseException as error:
                meter.peak_bytes()  # stops a CPU sampler
                if not is_out_of_memory(error):
                    if isinstance(error, Cancelled):
                        meter.empty_cache()
                    raise
                del error  # its traceback holds the intermediates
                meter.empty_cache()
                if not fallbacks:
                    raise DoesNotFit(self._ran_out_message(entry, working, meter)) from None
                step = fallbacks.pop(0)
                with self._load_lock:
                    recoveries.append(self._fall_back(entry, step, ctx))
                ctx.retrying()  # a listener does not hear the start again
                log.warning("OOM running %s: %s", spec.repo_id, recoveries[-1])

    def _fall_back(self, entry: _Entry, step: Plan, ctx: RunContext) -> str:
        """One step down the ladder for a model in use; returns it in words."""
        if step.placement == entry.placement and step.device == (entry.device.key if entry.device else None):
            return f"out of memory; unloaded {self._evict(step)} idle model(s) and retried"
        target = self._device(step.device)
        if step.placement is Placement.CPU and entry.dtype == step.dtype and self._movable(entry) \
                and entry.placement is Placement.DEVICE:
            self._move(entry, Placement.CPU, None)
        else:
            self._drop(entry)  # the lease's reference count stays; only the weights go
            self._load(entry, step, ctx)
        where = "with CPU offload" if step.placement is Placement.OFFLOAD else "on the CPU"
        log.info("%s now runs %s%s", entry.spec.repo_id, where, f" ({target.name})" if target else "")
        return f"out of memory again; retried {where}"

    def _ran_out_message(self, entry: _Entry, working: int, device: Device) -> str:
        # CPU and Apple MPS share the machine's RAM with everything else; a discrete GPU's memory is its own.
        others = "close other programs using memory" if device.kind in ("cpu", "mps") else "close other GPU programs"
        return (
            f"{entry.spec.repo_id} ran out of memory generating (estimated {format_bytes(entry.weights)} weights + "
            f"{format_bytes(working)} working; budget {format_bytes(self.budget(device))}, in use "
            f"{format_bytes(device.placed_bytes())}): shorten the request, {others}, or lower --memory-budget so the "
            f"estimate leaves more headroom"
        )
