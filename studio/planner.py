"""Where a run goes: a pure function from frozen inputs (the need, what is resident, the devices) to a frozen plan.

No torch, no cache reads, no clock: the executor (studio.manager) gathers the inputs, and the sizer
(studio.sizer) says what a request costs. Everything here can be tested on literals.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    """Where a model is in its lifecycle, as the memory panel and /memory show it."""

    NOT_DOWNLOADED = "not downloaded"
    DOWNLOADING = "downloading"
    ON_DISK = "on disk"
    LOADING = "loading"
    IN_RAM = "in RAM"
    ON_DEVICE = "on device"
    IN_USE = "in use"


class Placement(StrEnum):
    """How a loaded model runs."""

    DEVICE = "device"  # whole on an accelerator (or, on a CPU-only machine, in the CPU's RAM budget)
    OFFLOAD = "offload"  # weights in RAM, one component at a time on the accelerator
    CPU = "cpu"  # weights in RAM, computed by the CPU


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """What running a request costs in one precision on one kind of hardware, in bytes."""

    dtype: str
    weights: int  # the loaded weights
    working: int  # activations and everything else the run holds while it runs
    load_peak: int = 0  # held while loading, when more than the weights (int8 on a CPU passes through float32)
    largest_part: int | None = None  # with offload, the biggest component; None when the family has no parts


@dataclass(frozen=True, kw_only=True)
class DeviceView:
    """One device as the planner sees it."""

    key: str  # "cuda:0", "sim:1", "cpu", ...
    budget: int  # bytes the studio may hold there
    used: int  # bytes placed there now: weights and the working memory of runs
    accelerator: bool = True  # False for the CPU itself: there is nothing to fall back to
    offload: bool = True  # CPU offload makes sense (an accelerator with host RAM beside it)
    separate_memory: bool = True  # moving a model to RAM frees this device's memory (discrete GPUs)
    busy: bool = False  # a generation is running there now


@dataclass(frozen=True, kw_only=True)
class Resident:
    """A loaded model."""

    model: str
    device: str | None  # DeviceView.key of the device holding (DEVICE) or running (OFFLOAD) it; None on the CPU
    placement: Placement
    dtype: str
    bytes: int  # its weights
    last_used: float  # any clock: only the order matters
    in_use: bool = False  # a run or a lease holds it: never evicted or moved
    pinned: bool = False  # the user asked to keep it: never evicted
    movable: bool = True  # can change device (quantized int8 modules cannot)


@dataclass(frozen=True, kw_only=True)
class Need:
    """What the planner is asked to place: one request's model, sized for an accelerator and for the CPU."""

    model: str
    on_device: Sizes
    on_cpu: Sizes
    host_room: int  # RAM free for weights (free minus the reserve), not counting this model's own weights


@dataclass(frozen=True, kw_only=True)
class Plan:
    model: str
    placement: Placement
    device: str | None  # the DeviceView.key the run uses; None on the CPU
    sizes: Sizes
    fits: bool
    budget: int  # of the device the run uses (on the CPU: of the largest device, for the message)
    evicts: tuple[str, ...] = ()  # idle models leaving the device first, in this order
    drops: tuple[str, ...] = ()  # of `evicts`, those unloaded entirely (RAM has no room, or they cannot move)
    blocked_by: tuple[str, ...] = ()  # models in use or pinned that hold room on the device
    fallbacks: tuple["Plan", ...] = ()  # what the out-of-memory ladder tries next, in order

    @property
    def dtype(self) -> str:
        return self.sizes.dtype

    @property
    def weights(self) -> int:
        return self.sizes.weights

    @property
    def working(self) -> int:
        return self.sizes.working

    @property
    def load_peak(self) -> int:
        return self.sizes.load_peak

    @property
    def need(self) -> int:
        """Bytes the run needs where it runs: on the device (whole, or its largest part with offload), or in RAM."""
        if self.placement is Placement.OFFLOAD:
            return (self.sizes.largest_part or self.sizes.weights) + self.sizes.working
        return self.sizes.weights + self.sizes.working


def plan(need: Need, residents: tuple[Resident, ...], devices: tuple[DeviceView, ...]) -> Plan:
    """Where `need` runs and what must leave a device first.

    A model in use stays where it is. Otherwise: whole on the device where it fits with the least disruption
    (no eviction first, then the fewest bytes evicted; a device without a run beats a busy one; where it is
    loaded already beats elsewhere; then the most room), else with CPU offload on an accelerator, else on
    the CPU from RAM. A CPU-only machine has no fallback: the plan says it does not fit.
    """
    mine = next((r for r in residents if r.model == need.model), None)
    others = tuple(r for r in residents if r.model != need.model)
    if mine is not None and mine.in_use:
        return _stay(need, mine, others, devices)
    whole = [option for d in devices if (option := _whole(need, mine, others, d)) is not None]
    if whole:
        return min(whole, key=lambda o: o[0])[1]
    offload = [option for d in devices if (option := _offloaded(need, mine, others, d)) is not None]
    if offload:
        return min(offload, key=lambda o: o[0])[1]
    accelerators = [d for d in devices if d.accelerator]
    if accelerators or not devices:
        return _on_cpu(need, mine, devices, others)
    # A CPU-only machine: nothing else to try. Say what holds the room.
    device = devices[0]
    return Plan(model=need.model, placement=Placement.DEVICE, device=device.key, sizes=need.on_device, fits=False,
                budget=device.budget, blocked_by=_blocked(others, device))


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


# ------------------------------------------------------------------------------------------------ options
def _on(device: DeviceView, residents: tuple[Resident, ...]) -> list[Resident]:
    """Residents whose weights take room on `device` (offloaded ones hold room only while they run)."""
    return [r for r in residents if r.device == device.key and r.placement is Placement.DEVICE]


def _blocked(others: tuple[Resident, ...], device: DeviceView) -> tuple[str, ...]:
    return tuple(r.model for r in _on(device, others) if r.in_use or r.pinned)


def _evictable(others: tuple[Resident, ...], device: DeviceView) -> list[Resident]:
    return [r for r in _on(device, others) if not r.in_use and not r.pinned]


def _evictions(others: tuple[Resident, ...], device: DeviceView, deficit: int) -> tuple[str, ...] | None:
    if deficit <= 0:
        return ()
    chosen = choose_evictions([(r.model, r.bytes, r.last_used) for r in _evictable(others, device)], deficit)
    return None if chosen is None else tuple(chosen)


def _drops(evicts: tuple[str, ...], others: tuple[Resident, ...], device: DeviceView, host_room: int) -> tuple[str, ...]:
    """Which evicted models leave memory entirely: all of them where the device's memory is the host's,
    else those that cannot move or no longer fit in RAM (filled in eviction order)."""
    by_id = {r.model: r for r in others}
    dropped = []
    for model in evicts:
        resident = by_id[model]
        if device.separate_memory and resident.movable and resident.bytes <= host_room:
            host_room -= resident.bytes
        else:
            dropped.append(model)
    return tuple(dropped)


def _whole(need: Need, mine: Resident | None, others: tuple[Resident, ...],
           device: DeviceView) -> tuple[tuple, Plan] | None:
    sizes = need.on_device
    here = mine is not None and mine.device == device.key and mine.placement is Placement.DEVICE
    if here and mine.dtype == sizes.dtype:
        sizes = replace(sizes, weights=mine.bytes)
        needed = sizes.working
    else:  # a load (a copy in another precision is dropped first); int8 passes through float32 on the way
        needed = max(sizes.weights + sizes.working, sizes.load_peak) - (mine.bytes if here else 0)
    evicts = _evictions(others, device, device.used + needed - device.budget)
    if evicts is None:
        return None
    by_id = {r.model: r.bytes for r in others}
    evicted_bytes = sum(by_id[m] for m in evicts)
    option = Plan(model=need.model, placement=Placement.DEVICE, device=device.key, sizes=sizes, fits=True,
                  budget=device.budget, evicts=evicts, drops=_drops(evicts, others, device, need.host_room),
                  blocked_by=_blocked(others, device))
    option = replace(option, fallbacks=_fallbacks(need, option, others, device))
    return (evicted_bytes, device.busy, not here, -(device.budget - device.used)), option


def _offloaded(need: Need, mine: Resident | None, others: tuple[Resident, ...],
               device: DeviceView) -> tuple[tuple, Plan] | None:
    sizes = need.on_device
    if sizes.largest_part is None or not (device.accelerator and device.offload):
        return None
    in_ram = mine is not None and mine.placement is not Placement.DEVICE and mine.dtype == sizes.dtype
    if sizes.weights > need.host_room + (mine.bytes if in_ram else 0):
        return None
    here = mine is not None and mine.device == device.key and mine.placement is Placement.DEVICE
    evicts = _evictions(others, device, device.used - (mine.bytes if here else 0) + sizes.largest_part
                        + sizes.working - device.budget)
    if evicts is None:
        return None
    by_id = {r.model: r.bytes for r in others}
    option = Plan(model=need.model, placement=Placement.OFFLOAD, device=device.key, sizes=sizes, fits=True,
                  budget=device.budget, evicts=evicts, drops=_drops(evicts, others, device, need.host_room - sizes.weights),
                  blocked_by=_blocked(others, device))
    option = replace(option, fallbacks=_fallbacks(need, option, others, device))
    return (sum(by_id[m] for m in evicts), device.busy, -(device.budget - device.used)), option


def _on_cpu(need: Need, mine: Resident | None, devices: tuple[DeviceView, ...], others: tuple[Resident, ...]) -> Plan:
    sizes = need.on_cpu
    in_ram = mine is not None and mine.placement is not Placement.DEVICE
    if in_ram and mine.dtype == sizes.dtype:
        sizes = replace(sizes, weights=mine.bytes)
    room = need.host_room + (mine.bytes if in_ram else 0)
    fits = max(sizes.weights + sizes.working, sizes.load_peak) <= room
    budget = max((d.budget for d in devices), default=room)
    blocked = tuple(model for d in devices for model in _blocked(others, d))
    return Plan(model=need.model, placement=Placement.CPU, device=None, sizes=sizes, fits=fits, budget=budget,
                blocked_by=blocked)


def _stay(need: Need, mine: Resident, others: tuple[Resident, ...], devices: tuple[DeviceView, ...]) -> Plan:
    """A model in use cannot move: the run shares it where it is."""
    base = need.on_cpu if mine.placement is Placement.CPU else need.on_device
    sizes = replace(base, dtype=mine.dtype, weights=mine.bytes, load_peak=0)
    device = next((d for d in devices if d.key == mine.device), None)
    budget = device.budget if device is not None else max((d.budget for d in devices), default=need.host_room)
    stay = Plan(model=need.model, placement=mine.placement, device=mine.device, sizes=sizes, fits=True, budget=budget,
                blocked_by=_blocked(others, device) if device is not None else ())
    if device is None:
        return stay
    return replace(stay, fallbacks=_fallbacks(need, stay, others, device))


def _fallbacks(need: Need, chosen: Plan, others: tuple[Resident, ...], device: DeviceView) -> tuple[Plan, ...]:
    """The out-of-memory ladder from `chosen`: unload every idle model from its device and retry; then run with
    CPU offload (a family of parts on an accelerator); then on the CPU. Each step keeps the other devices as
    they are."""
    steps: list[Plan] = []
    rest = tuple(r.model for r in _evictable(others, device) if r.model not in chosen.evicts)
    steps.append(replace(chosen, evicts=rest, drops=_drops(rest, others, device, need.host_room), fallbacks=()))
    if chosen.placement is Placement.DEVICE and device.accelerator and device.offload \
            and need.on_device.largest_part is not None:
        steps.append(Plan(model=need.model, placement=Placement.OFFLOAD, device=device.key, sizes=need.on_device,
                          fits=need.on_device.weights <= need.host_room, budget=device.budget))
    if device.accelerator:
        steps.append(_on_cpu(need, None, (device,), others))
    return tuple(steps)
