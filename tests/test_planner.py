"""The placement policy as a table: literal residents and devices in, a plan out; no checkpoint, no torch.

A policy change should be a new row here, not a new fixture.
"""

from __future__ import annotations

import pytest

from studio.planner import DeviceView, Need, Placement, Plan, Resident, Sizes, choose_evictions, plan

GB = 10**9
DEVICE, OFFLOAD, CPU = Placement.DEVICE, Placement.OFFLOAD, Placement.CPU


def need(*, weights=2 * GB, working=1 * GB, dtype="float32", peak=0, part=None, cpu_weights=None, cpu_dtype=None,
         cpu_peak=0, host=100 * GB, model="new") -> Need:
    return Need(
        model=model,
        on_device=Sizes(dtype=dtype, weights=weights, working=working, load_peak=peak, largest_part=part),
        on_cpu=Sizes(dtype=cpu_dtype or dtype, weights=cpu_weights if cpu_weights is not None else weights,
                     working=working, load_peak=cpu_peak, largest_part=part),
        host_room=host,
    )


def gpu(key="gpu0", budget=10 * GB, used=0, **kwargs) -> DeviceView:
    return DeviceView(key=key, budget=budget, used=used, **kwargs)


def cpu_only(budget=10 * GB, used=0) -> DeviceView:
    return DeviceView(key="cpu", budget=budget, used=used, accelerator=False, offload=False, separate_memory=False)


def res(model, nbytes, device="gpu0", last=0.0, placement=DEVICE, **kwargs) -> Resident:
    return Resident(model=model, device=device, placement=placement, dtype=kwargs.pop("dtype", "float32"),
                    bytes=nbytes, last_used=last, **kwargs)


# Each row: name, need, residents, devices, what the plan must say (attribute -> value).
ROWS = [
    ("an empty device takes the model whole",
     need(), (), (gpu(),),
     dict(placement=DEVICE, device="gpu0", evicts=(), fits=True)),
    ("a resident model in the same precision needs only working memory",
     need(weights=4 * GB, working=1 * GB, model="a"), (res("a", 4 * GB),), (gpu(budget=5 * GB, used=4 * GB),),
     dict(placement=DEVICE, device="gpu0", evicts=(), fits=True, weights=4 * GB)),
    ("a resident model in another precision is reloaded in place, its old bytes counted as freed",
     need(weights=2 * GB, working=1 * GB, dtype="float16", model="a"), (res("a", 4 * GB),),
     (gpu(budget=5 * GB, used=4 * GB),),
     dict(placement=DEVICE, evicts=(), fits=True, weights=2 * GB)),
    ("the least recently used idle model leaves first",
     need(), (res("old", 4 * GB, last=1), res("new1", 4 * GB, last=5)), (gpu(budget=10 * GB, used=8 * GB),),
     dict(placement=DEVICE, evicts=("old",), fits=True)),
    ("one bigger model beats two smaller ones",
     need(weights=3 * GB), (res("s1", 2 * GB, last=1), res("s2", 2 * GB, last=2), res("big", 4 * GB, last=3)),
     (gpu(budget=8 * GB, used=8 * GB),),
     dict(evicts=("big",))),
    ("two models leave when one is not enough, oldest first in the combination",
     need(weights=3 * GB), (res("s1", 2 * GB, last=1), res("s2", 2 * GB, last=2), res("s3", 2 * GB, last=3)),
     (gpu(budget=6 * GB, used=6 * GB),),
     dict(evicts=("s1", "s2"))),
    ("a pinned model never leaves: the run goes to the CPU",
     need(), (res("p", 9 * GB, pinned=True),), (gpu(used=9 * GB),),
     dict(placement=CPU, device=None, fits=True, evicts=())),
    ("a model in use never leaves: the run goes to the CPU",
     need(), (res("u", 9 * GB, in_use=True),), (gpu(used=9 * GB),),
     dict(placement=CPU, fits=True)),
    ("what holds the room is named",
     need(), (res("p", 4 * GB, pinned=True), res("u", 4 * GB, in_use=True), res("i", 1 * GB)),
     (gpu(used=9 * GB),),
     dict(placement=CPU, blocked_by=("p", "u"))),
    ("an evicted model moves to RAM when RAM has room",
     need(host=50 * GB), (res("old", 8 * GB),), (gpu(used=8 * GB),),
     dict(evicts=("old",), drops=())),
    ("under RAM pressure an evicted model is unloaded entirely",
     need(host=1 * GB), (res("old", 8 * GB),), (gpu(used=8 * GB),),
     dict(evicts=("old",), drops=("old",))),
    ("RAM fills in eviction order: the first evicted moves, the next is unloaded",
     need(weights=8 * GB, host=5 * GB), (res("a", 4 * GB, last=1), res("b", 4 * GB, last=2)),
     (gpu(used=8 * GB),),
     dict(evicts=("a", "b"), drops=("b",))),
    ("a model that cannot change device (int8) is unloaded, not moved",
     need(), (res("q", 8 * GB, movable=False),), (gpu(used=8 * GB),),
     dict(evicts=("q",), drops=("q",))),
    ("unified memory (Apple): evicting to RAM frees nothing, so evicted models are unloaded",
     need(), (res("m", 8 * GB, device="mps"),), (gpu("mps", used=8 * GB, separate_memory=False, offload=False),),
     dict(device="mps", evicts=("m",), drops=("m",))),
    ("too big whole: CPU offload with the largest part on the device",
     need(weights=12 * GB, working=1 * GB, part=5 * GB), (), (gpu(),),
     dict(placement=OFFLOAD, device="gpu0", fits=True, need=6 * GB)),
    ("offload needs the weights to fit in RAM; else the CPU, which does not fit either",
     need(weights=12 * GB, part=5 * GB, host=8 * GB), (), (gpu(),),
     dict(placement=CPU, fits=False)),
    ("a family without parts goes to the CPU when the device is too small",
     need(weights=12 * GB), (), (gpu(),),
     dict(placement=CPU, fits=True, device=None)),
    ("the CPU plan uses the CPU's precision and sizes (auto re-decided: int8)",
     need(weights=12 * GB, cpu_weights=4 * GB, cpu_dtype="int8", cpu_peak=12 * GB), (), (gpu(),),
     dict(placement=CPU, dtype="int8", weights=4 * GB, fits=True, load_peak=12 * GB)),
    ("the int8 load peak counts on the CPU: a float32 pass that RAM cannot hold does not fit",
     need(weights=12 * GB, cpu_weights=4 * GB, cpu_dtype="int8", cpu_peak=12 * GB, host=10 * GB), (), (gpu(),),
     dict(placement=CPU, fits=False)),
    ("the int8 load peak counts on the device too",
     need(weights=2 * GB, working=1 * GB, peak=9 * GB), (res("old", 4 * GB),), (gpu(used=4 * GB),),
     dict(placement=DEVICE, evicts=("old",))),
    ("a CPU-only machine has nothing to fall back to: it says the run does not fit",
     need(weights=12 * GB), (), (cpu_only(),),
     dict(placement=DEVICE, device="cpu", fits=False, fallbacks=())),
    ("with no device to use (the CPU slot) the run is planned on the CPU",
     need(), (), (),
     dict(placement=CPU, device=None, fits=True)),
    ("two devices: a model too big for the small one goes to the big one",
     need(weights=5 * GB), (), (gpu("small", budget=4 * GB), gpu("big", budget=12 * GB)),
     dict(device="big", evicts=())),
    ("two devices: no eviction beats an eviction",
     need(), (res("x", 9 * GB, device="a"),), (gpu("a", used=9 * GB), gpu("b", budget=4 * GB)),
     dict(device="b", evicts=())),
    ("two devices: the fewest bytes evicted wins",
     need(weights=3 * GB), (res("huge", 8 * GB, device="a"), res("small", 2 * GB, device="b")),
     (gpu("a", budget=8 * GB, used=8 * GB), gpu("b", budget=4 * GB, used=2 * GB)),
     dict(device="b", evicts=("small",))),
    ("two devices: an idle device beats one running a generation",
     need(), (), (gpu("a", busy=True, budget=20 * GB), gpu("b")),
     dict(device="b")),
    ("two devices: a model stays where it is loaded when it fits there",
     need(model="m"), (res("m", 2 * GB, device="b"),), (gpu("a", budget=20 * GB), gpu("b", used=2 * GB)),
     dict(device="b", evicts=(), weights=2 * GB)),
    ("two devices: a model in use stays on its device even while that device is busy",
     need(model="m"), (res("m", 2 * GB, device="a", in_use=True),), (gpu("a", busy=True, used=2 * GB), gpu("b")),
     dict(device="a", placement=DEVICE, fits=True)),
    ("an offloaded model holds no device room between runs",
     need(), (res("off", 20 * GB, device="gpu0", placement=OFFLOAD),), (gpu(),),
     dict(placement=DEVICE, evicts=())),
]


@pytest.mark.parametrize("name, wanted, residents, devices, expected", ROWS, ids=[r[0] for r in ROWS])
def test_plan_table(name, wanted, residents, devices, expected):
    result = plan(wanted, residents, devices)
    assert isinstance(result, Plan)
    for attribute, value in expected.items():
        assert getattr(result, attribute) == value, f"{name}: {attribute}"


def test_the_fallbacks_of_a_whole_run_are_evict_all_then_offload_then_the_cpu():
    wanted = need(part=1 * GB)
    residents = (res("planned", 5 * GB, last=1), res("other", 1 * GB, last=9), res("pinned", 1 * GB, pinned=True),
                 res("elsewhere", 1 * GB, device="gpu1"))
    result = plan(wanted, residents, (gpu(budget=9 * GB, used=7 * GB), gpu("gpu1", budget=1 * GB, used=1 * GB)))
    assert (result.device, result.evicts) == ("gpu0", ("planned",))
    ladder = [(step.placement, step.device, step.evicts) for step in result.fallbacks]
    # Only this device's idle models, those not already evicted; the other device is never touched.
    assert ladder == [(DEVICE, "gpu0", ("other",)), (OFFLOAD, "gpu0", ()), (CPU, None, ())]
    assert all(step.fallbacks == () for step in result.fallbacks)


def test_a_family_without_parts_falls_back_from_the_device_straight_to_the_cpu():
    result = plan(need(), (), (gpu(),))
    assert [s.placement for s in result.fallbacks] == [DEVICE, CPU]


def test_a_cpu_only_machine_retries_once_after_unloading_idle_models_then_stops():
    result = plan(need(weights=1 * GB), (res("idle", 1 * GB, device="cpu"),), (cpu_only(),))
    assert [(s.placement, s.evicts) for s in result.fallbacks] == [(DEVICE, ("idle",))]


def test_a_model_in_use_keeps_its_ladder_where_it_runs():
    result = plan(need(model="m", part=1 * GB), (res("m", 2 * GB, in_use=True), res("idle", 1 * GB)), (gpu(),))
    assert [(s.placement, s.evicts) for s in result.fallbacks] == [(DEVICE, ("idle",)), (OFFLOAD, ()), (CPU, ())]


def test_a_cpu_run_has_no_fallbacks():
    assert plan(need(weights=20 * GB), (), (gpu(),)).fallbacks == ()


def test_choose_evictions_prefers_fewest_then_least_recent():
    models = [("a", 10, 1.0), ("b", 10, 2.0), ("c", 30, 3.0)]
    assert choose_evictions(models, 5) == ["a"]
    assert choose_evictions(models, 15) == ["c"]  # one bigger model beats two smaller ones
    assert choose_evictions(models, 35) == ["a", "c"]
    assert choose_evictions(models, 51) is None


def test_plans_are_frozen_and_the_planner_imports_no_torch():
    result = plan(need(), (), (gpu(),))
    with pytest.raises(AttributeError):
        result.device = "elsewhere"  # type: ignore[misc]
    import studio.planner as planner

    imported = {name.split(".")[0] for name in _imports(open(planner.__file__, encoding="utf-8").read())}
    # Pure: no torch, no clock, no cache or file reads, nothing of the studio but itself.
    assert imported <= {"__future__", "itertools", "dataclasses", "enum"}, imported


def _imports(source: str) -> list[str]:
    import ast

    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names

