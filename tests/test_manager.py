"""PipelineManager on a simulated accelerator with a byte budget, loading the tiny checkpoints for real."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from studio.device import CpuDevice
from studio.errors import DoesNotFit
from studio.planner import State

IN_RAM, IN_USE, ON_DEVICE = State.IN_RAM, State.IN_USE, State.ON_DEVICE
from studio.run import RunContext
from tests.oom import loader_out_of_memory

MB = 1024**2
# Three repos with identical tiny weights (the builder copies one model), so sizes never decide the order.
SAME_SIZE = ("facebook/musicgen-small", "facebook/musicgen-medium", "facebook/musicgen-large")
SHORT = {"duration": 0.5, "guidance_scale": 1.0}
# The budget arithmetic here is about placement, so float32 everywhere; int8 has its own tests (test_precision.py).
FLOAT32 = {"precision": "float32"}


def _request(studio, model, **params):
    if model.startswith("facebook/musicgen"):
        params = {**SHORT, **FLOAT32, **params}
        return studio.request(None, model, "beat", seed=1, params=params)
    if model.startswith("suno/bark"):
        return studio.request(None, model, "Hi.", seed=1, params={"max_chunk_seconds": 0.5, **FLOAT32, **params})
    return studio.request(None, model, "hi", seed=1, params=params)


def _need(studio, model) -> tuple[int, int]:
    """(weights, working) bytes the manager plans for a short request of `model`."""
    estimate = studio.estimate(_request(studio, model))
    return estimate.weights_bytes, estimate.working_bytes


def _budget_for(studio, models_resident: int, model=SAME_SIZE[0]) -> int:
    weights, working = _need(studio, model)
    return models_resident * weights + working + 1 * MB


def _states(studio) -> dict[str, str]:
    return {row["id"]: row["state"] for row in studio.manager.snapshot()["models"]}


def test_lru_idle_model_is_evicted_first(make_studio):
    probe = make_studio(1024 * MB)
    studio = make_studio(_budget_for(probe, 2), host_capacity=10_000 * MB)
    a, b, c = SAME_SIZE
    studio.manager.run(_request(studio, a))
    studio.manager.run(_request(studio, b))
    studio.manager.run(_request(studio, a))  # a is now the most recently used
    estimate = studio.estimate(_request(studio, c))
    assert estimate.fits and estimate.evicts == (b,)
    studio.manager.run(_request(studio, c))
    states = _states(studio)
    assert states[a] == ON_DEVICE and states[c] == ON_DEVICE
    assert states[b] == IN_RAM  # device -> RAM first, since RAM has room


def test_eviction_drops_from_ram_under_ram_pressure(make_studio):
    probe = make_studio(1024 * MB)
    weights, _ = _need(probe, SAME_SIZE[0])
    studio = make_studio(_budget_for(probe, 1), host_capacity=weights // 2)
    a, b = SAME_SIZE[:2]
    studio.manager.run(_request(studio, a))
    studio.manager.run(_request(studio, b))
    # An unloaded model leaves no row (/memory and the panel list what holds memory, or is pinned).
    assert _states(studio) == {b: ON_DEVICE} and studio.manager.state_of(a) == "on disk"


def test_a_model_in_use_is_never_evicted(make_studio):
    probe = make_studio(1024 * MB)
    studio = make_studio(_budget_for(probe, 1), host_capacity=10_000 * MB)
    a, b = SAME_SIZE[:2]
    lease = studio.manager.acquire(_request(studio, a))
    try:
        assert _states(studio)[a] == IN_USE
        assert studio.manager.unload(a) == "deferred"
        # b cannot take a's place while a is held: it runs from RAM on the CPU instead.
        result = studio.manager.run(_request(studio, b))
        assert result.placement == "cpu"
        assert _states(studio)[a] == IN_USE
    finally:
        lease.release()
    assert a not in _states(studio)  # the deferred unload happened at release: no row left
    assert studio.manager.state_of(a) == "on disk"


def test_on_a_cpu_only_machine_a_model_that_cannot_fit_is_refused_before_running(make_studio, catalog):
    from studio.device import CpuDevice
    from studio.manager import PipelineManager

    studio = make_studio()
    manager = PipelineManager(catalog, CpuDevice(), budget_cap=1 * MB, reserve=0)
    request = _request(studio, "suno/bark-small")
    estimate = manager.estimate_run(request)
    assert not estimate.fits and "does not fit" in estimate.summary()
    with pytest.raises(DoesNotFit, match=r"suno/bark-small needs .* budget is 1\.0 MB"):
        manager.run(request)
    assert manager.snapshot()["models"] == [] or all(m["bytes"] == 0 for m in manager.snapshot()["models"])


def test_oom_while_generating_is_recovered_by_evicting_idle_models(make_studio):
    studio = make_studio(1024 * MB, host_capacity=10_000 * MB)
    a, b = SAME_SIZE[:2]
    studio.manager.run(_request(studio, a))
    studio.device.fail_next = 1
    result = studio.manager.run(_request(studio, b))
    assert result.recoveries and "unloaded 1 idle model" in result.recoveries[0]
    assert result.placement == "device"
    assert _states(studio)[a] == IN_RAM


def test_repeated_oom_falls_back_to_the_cpu(make_studio):
    studio = make_studio(1024 * MB, host_capacity=10_000 * MB)
    studio.device.fail_next = 2
    result = studio.manager.run(_request(studio, SAME_SIZE[0]))
    assert result.placement == "cpu" and len(result.recoveries) == 2
    assert result.audio.samples.size > 0
    assert studio.device.ooms == 2
    assert studio.manager.used_bytes() == 0  # nothing left claimed on the device


class _AlwaysOutOfMemory(CpuDevice):
    """A CPU whose every run runs out of memory: there is nowhere left to fall back to."""

    def working(self, tag, nbytes):
        import torch

        raise torch.OutOfMemoryError("simulated: no memory")


def test_oom_with_nowhere_to_go_is_explained_with_numbers(make_studio, catalog):
    from studio.manager import PipelineManager

    studio = make_studio()
    manager = PipelineManager(catalog, _AlwaysOutOfMemory(), reserve=0)
    with pytest.raises(DoesNotFit, match=r"ran out of memory generating \(estimated .* budget .*\): shorten") as raised:
        manager.run(_request(studio, "facebook/mms-tts-eng"))
    # A CPU-only machine has no GPU programs to close: the advice names what frees RAM.
    assert "close other programs using memory" in str(raised.value) and "GPU" not in str(raised.value)
    assert manager.snapshot()["models"][0]["state"] == ON_DEVICE  # loaded, idle, usable again


def test_oom_while_loading_evicts_idle_models_and_retries(make_studio, catalog):
    from studio.manager import PipelineManager

    probe = make_studio(1024 * MB, host_capacity=10_000 * MB)
    device = probe.device
    calls = []

    def loader_racing_another_program(spec, torch_device, dtype):
        calls.append(spec.repo_id)
        if len(calls) == 2:  # while our second model loads, another program briefly takes all that is free
            device.occupy(device.capacity - device.placed_bytes() + 1)
        else:
            device.occupy(0)
        return catalog.family(spec).load(spec, torch_device, dtype)

    manager = PipelineManager(catalog, device, reserve=0, loader=loader_racing_another_program)
    manager.run(_request(probe, SAME_SIZE[1]))  # an idle model, to be evicted by the ladder
    result = manager.run(_request(probe, SAME_SIZE[0]))
    assert calls == [SAME_SIZE[1], SAME_SIZE[0], SAME_SIZE[0]]  # failed once, retried once
    assert device.ooms == 1
    states = {row["id"]: row["state"] for row in manager.snapshot()["models"]}
    assert states == {SAME_SIZE[1]: IN_RAM, SAME_SIZE[0]: ON_DEVICE}
    assert result.placement == "device" and result.audio.samples.size > 0
    assert result.recoveries == ["out of memory loading; unloaded 1 idle model(s) and loaded again"]
    assert device.peak <= device.capacity


def test_a_load_that_ends_on_the_cpu_after_oom_says_so_in_the_result(make_studio, catalog):
    from studio.manager import PipelineManager

    probe = make_studio(1024 * MB, host_capacity=10_000 * MB)
    manager = PipelineManager(catalog, probe.device, reserve=0, loader=loader_out_of_memory(catalog, 2))
    result = manager.run(_request(probe, SAME_SIZE[0], precision="auto"))
    assert result.placement == "cpu" and result.dtype == "int8"  # auto re-decided for the CPU
    assert result.recoveries == ["out of memory loading; unloaded 0 idle model(s) and loaded again",
                                 "out of memory loading again; loaded on the CPU instead (int8)"]
    again = manager.run(_request(probe, SAME_SIZE[0], precision="auto"))  # loaded: nothing to recover from now
    assert again.recoveries == []


def test_memory_taken_by_another_program_is_seen_before_loading(make_studio):
    studio = make_studio(1024 * MB, host_capacity=10_000 * MB)
    weights, _ = _need(studio, SAME_SIZE[0])
    studio.device.occupy(1024 * MB - weights // 2)
    # The plan sees the smaller free memory and goes to the CPU; the device is never over-committed.
    estimate = studio.estimate(_request(studio, SAME_SIZE[0]))
    assert estimate.placement == "cpu" and "runs on the CPU" in estimate.summary()
    result = studio.manager.run(_request(studio, SAME_SIZE[0]))
    assert result.placement == "cpu"
    assert studio.device.ooms == 0


def test_unload_really_frees(make_studio):
    studio = make_studio(1024 * MB)
    model = SAME_SIZE[0]
    with studio.manager.acquire(_request(studio, model)) as lease:
        ref = weakref.ref(lease.model.model)
    assert ref() is not None
    assert studio.manager.unload(model) == "unloaded"
    gc.collect()
    assert ref() is None
    assert studio.manager.used_bytes() == 0
    assert studio.manager.snapshot()["models"] == []  # unloaded: no row left


def test_pinned_models_are_kept(make_studio):
    probe = make_studio(1024 * MB)
    studio = make_studio(_budget_for(probe, 1), host_capacity=10_000 * MB)
    a, b = SAME_SIZE[:2]
    studio.manager.pin(a)
    studio.manager.run(_request(studio, a))
    assert studio.manager.run(_request(studio, b)).placement == "cpu"
    assert _states(studio)[a] == ON_DEVICE


def test_one_generation_at_a_time(make_studio):
    studio = make_studio(1024 * MB)
    running = []
    overlaps = []
    lock = threading.Lock()

    def observe(stage):
        with lock:
            if stage == "generating":
                running.append(1)
                if len(running) > 1:
                    overlaps.append(stage)
            elif stage == "saving":
                running.clear()

    def work(model):
        ctx = RunContext(on_stage=observe)
        studio.generate(_request(studio, model), ctx=ctx)

    threads = [threading.Thread(target=work, args=(m,)) for m in ("facebook/mms-tts-eng", SAME_SIZE[0])] * 1
    threads.append(threading.Thread(target=work, args=("facebook/mms-tts-deu",)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps


def test_unload_deferred_by_a_run_frees_the_model_even_when_the_run_is_cancelled(make_studio, caplog):
    from studio.errors import Cancelled

    studio = make_studio(1024 * MB)
    model = SAME_SIZE[0]
    refs = []
    ctx = RunContext()

    def on_progress(done, total):
        if done == 2:
            with studio.manager._lock:
                refs.append(weakref.ref(studio.manager._entries[model].model.model))
            assert studio.manager.unload(model) == "deferred"
            ctx.cancel.set()

    ctx.on_progress = on_progress
    with caplog.at_level("WARNING", logger="studio.manager"):
        with pytest.raises(Cancelled):
            studio.manager.run(_request(studio, model, duration=1.0), ctx)
    assert model not in _states(studio) and studio.manager.state_of(model) == "on disk"
    assert "reference leak" not in caplog.text
    gc.collect()
    assert refs and refs[0]() is None


# ---------------------------------------------------------------- what the memory panel and /memory list (rules)


def _rows(studio) -> dict[str, dict]:
    return {row["id"]: row for row in studio.manager.snapshot()["models"]}


def test_a_failed_download_leaves_no_row(make_studio, tiny_cache, tmp_path):
    """A model whose files are missing (offline: the download cannot happen) is not listed afterwards."""
    import shutil

    from studio.errors import ModelUnavailable

    studio = make_studio(1024 * MB)
    model = "suno/bark-small"
    (snapshot,) = (tiny_cache / "hub" / "models--suno--bark-small" / "snapshots").iterdir()
    backup = tmp_path / "weights"
    shutil.move(snapshot / "model.safetensors", backup)
    try:
        with pytest.raises(ModelUnavailable):
            studio.manager.run(_request(studio, model))
        assert studio.manager.state_of(model) == "not downloaded"
        assert model not in _rows(studio)
    finally:
        shutil.move(backup, snapshot / "model.safetensors")


def test_pin_takes_effect_once_loaded_and_unload_all_keeps_pinned_models(make_studio):
    studio = make_studio(1024 * MB)
    a, b = SAME_SIZE[:2]
    assert studio.manager.pin(a) == "pinned once loaded"  # not loaded: listed as pinned, pinned once it loads
    assert _rows(studio)[a]["pinned"] and _rows(studio)[a]["state"] == "on disk"
    studio.manager.run(_request(studio, a))
    studio.manager.run(_request(studio, b))
    assert studio.manager.pin(a) == "pinned"
    outcome = studio.manager.unload_all()
    assert outcome == {a: "pinned", b: "unloaded"}
    rows = _rows(studio)
    assert set(rows) == {a} and rows[a]["pinned"] and rows[a]["state"] == ON_DEVICE and rows[a]["bytes"] > 0
    assert studio.manager.unload_all() == {a: "pinned", b: "not loaded"}  # again: still kept
    assert studio.manager.pin(a, False) == "unpinned"
    assert studio.manager.unload_all() == {a: "unloaded", b: "not loaded"} and _rows(studio) == {}


def test_an_explicit_unload_of_a_pinned_model_unloads_and_unpins_it(make_studio):
    studio = make_studio(1024 * MB)
    a = SAME_SIZE[0]
    studio.manager.run(_request(studio, a))
    studio.manager.pin(a)
    assert studio.manager.unload(a) == "unloaded"
    assert _rows(studio) == {} and studio.manager.state_of(a) == "on disk"  # no "Pinned · on disk" left
    with studio.manager._lock:
        assert not studio.manager._entries[a].pinned
    # A pin made ahead (not loaded) is cancelled by Unload too.
    assert studio.manager.pin(a) == "pinned once loaded" and set(_rows(studio)) == {a}
    assert studio.manager.unload(a) == "not loaded" and _rows(studio) == {}
