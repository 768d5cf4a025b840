"""Several devices under one planner: simulated GPUs of different sizes, tiny checkpoints loaded for real."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from studio.device import SimulatedDevice
from studio.manager import PipelineManager
from studio.planner import State
from studio.service import Studio
from studio.settings import Settings
from tests.serving import serving

MB = 1024**2
MUSIC, SPEECH = "facebook/musicgen-small", "facebook/mms-tts-eng"
SAME_SIZE = ("facebook/musicgen-small", "facebook/musicgen-medium", "facebook/musicgen-large")


def _request(studio, model):
    if model.startswith("facebook/musicgen"):
        return studio.request(None, model, "beat", seed=1,
                              params={"duration": 0.5, "guidance_scale": 1.0, "precision": "float32"})
    if model.startswith("suno/bark"):
        return studio.request(None, model, "Hi.", seed=1, params={"max_chunk_seconds": 0.5, "precision": "float32"})
    return studio.request(None, model, "hi", seed=1)


def _studio(tmp_path, catalog, capacities, *, loader=None, host_capacity=10_000 * MB, budget=None):
    devices = [SimulatedDevice(c, index=i, host_capacity=host_capacity) for i, c in enumerate(capacities)]
    settings = Settings(output_dir=tmp_path / "out", memory_reserve=0, memory_budget=budget,
                        simulated_memory=tuple(capacities))
    manager = PipelineManager(catalog, devices, reserve=0, budget_cap=budget, loader=loader)
    return Studio(settings, catalog=catalog, manager=manager), devices


def _need(probe, model) -> int:
    estimate = probe.estimate(_request(probe, model))
    return estimate.weights_bytes + estimate.working_bytes


class MeetingLoader:
    """Loads for real; each generate() waits at a barrier until `parties` generations run at once (or times out)."""

    def __init__(self, catalog, parties: int) -> None:
        self.catalog = catalog
        self.barrier = threading.Barrier(parties, timeout=30)
        self.met = []

    def __call__(self, spec, torch_device, dtype):
        model = self.catalog.family(spec).load(spec, torch_device, dtype)
        inner = model.generate

        def generate(request, ctx):
            self.barrier.wait()  # raises BrokenBarrierError when the other run never starts meanwhile
            self.met.append(spec.repo_id)
            return inner(request, ctx)

        model.generate = generate
        return model


def test_two_devices_run_two_generations_at_the_same_time(tmp_path, catalog, tiny_cache):
    meeting = MeetingLoader(catalog, 2)
    studio, devices = _studio(tmp_path, catalog, [1024 * MB, 512 * MB], loader=meeting)
    results = {}

    def work(model):
        results[model] = studio.generate(_request(studio, model))

    threads = [threading.Thread(target=work, args=(m,)) for m in (MUSIC, SPEECH)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(meeting.met) == sorted([MUSIC, SPEECH])  # both passed the barrier: they overlapped
    used = {results[m].metadata["device"] for m in (MUSIC, SPEECH)}
    assert used == {d.name for d in devices}  # one on each device
    memory = studio.manager.snapshot()
    assert [d["name"] for d in memory["devices"]] == [d.name for d in devices]
    assert sorted(row["id"] for d in memory["devices"] for row in d["models"]) == sorted([MUSIC, SPEECH])
    assert memory["total_bytes"] == sum(d.capacity for d in devices)


def test_a_model_too_big_for_the_smaller_device_goes_to_the_bigger_one(tmp_path, catalog, tiny_cache):
    probe, _ = _studio(tmp_path, catalog, [1024 * MB])
    need = _need(probe, MUSIC)
    studio, (small, big) = _studio(tmp_path, catalog, [need // 2, need * 2])
    estimate = studio.estimate(_request(studio, MUSIC))
    assert estimate.placement == "device" and estimate.device == big.name
    assert f"on {big.name}" in estimate.summary()  # the estimate line names the device when there are several
    result = studio.generate(_request(studio, MUSIC))
    assert result.metadata["device"] == big.name and result.metadata["placement"] == "device"
    assert small.placed_bytes() == 0 and small.ooms == 0


def test_one_device_running_out_of_memory_falls_back_without_touching_the_other(tmp_path, catalog, tiny_cache):
    probe, _ = _studio(tmp_path, catalog, [1024 * MB])
    need = _need(probe, SAME_SIZE[0])
    studio, (first, second) = _studio(tmp_path, catalog, [need + MB, need + MB])
    a, b = SAME_SIZE[:2]
    assert studio.generate(_request(studio, a)).metadata["device"] == first.name
    second.fail_next = 2  # b goes to the free device, and runs out of memory there twice
    result = studio.generate(_request(studio, b))
    assert result.metadata["recoveries"] == ["out of memory; unloaded 0 idle model(s) and retried",
                                             "out of memory again; retried on the CPU"]
    assert result.metadata["placement"] == "cpu"
    assert studio.manager.state_of(a) == State.ON_DEVICE and first.placed_bytes() > 0  # untouched
    assert first.ooms == 0 and second.placed_bytes() == 0


def test_pin_and_unload_act_on_the_device_holding_the_model(tmp_path, catalog, tiny_cache):
    probe, _ = _studio(tmp_path, catalog, [1024 * MB])
    need = _need(probe, SAME_SIZE[0])
    studio, (first, second) = _studio(tmp_path, catalog, [need + MB, need + MB])
    a, b, c = SAME_SIZE
    studio.manager.pin(a)
    studio.generate(_request(studio, a))
    studio.generate(_request(studio, b))
    by_device = {d["name"]: [m["id"] for m in d["models"]] for d in studio.manager.snapshot()["devices"]}
    assert by_device == {first.name: [a], second.name: [b]}
    # c fits only where an idle, unpinned model can leave: b's device, never the pinned a's.
    estimate = studio.estimate(_request(studio, c))
    assert estimate.evicts == (b,) and estimate.device == second.name
    studio.generate(_request(studio, c))
    assert studio.manager.state_of(a) == State.ON_DEVICE and studio.manager.state_of(b) == State.IN_RAM
    assert studio.manager.unload(c) == "unloaded"
    assert second.placed_bytes() == 0 and first.placed_bytes() > 0  # only c's device was freed
    rows = {m["id"]: m for m in studio.manager.snapshot()["models"]}
    assert rows[a]["device"] == first.name and rows[a]["pinned"] and c not in rows  # unloaded: no row
    assert studio.manager.state_of(c) == State.ON_DISK


MODELS = list(SAME_SIZE) + ["facebook/musicgen-stereo-small", SPEECH, "suno/bark-small"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Found by hypothesis: musicgen-large's first load planned by its files' bytes, 0.26 MB short of what it took (its
# position table is made at load), and went 73 KB over a budget the others had nearly filled.
@example(sequence=["facebook/musicgen-small", "facebook/musicgen-medium", SPEECH, "facebook/musicgen-large"],
         resident=[1], pin_first=False)
@given(
    sequence=st.lists(st.sampled_from(MODELS), min_size=2, max_size=5),
    resident=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=3),
    pin_first=st.booleans(),
)
def test_resident_bytes_never_exceed_any_devices_budget(tmp_path_factory, catalog, tiny_cache, sequence, resident,
                                                        pin_first):
    """One to three devices, each capped by --memory-budget at room for 1-3 models; random runs, maybe a pin."""
    from studio.errors import DoesNotFit

    tmp = tmp_path_factory.mktemp("devices")
    probe, _ = _studio(tmp, catalog, [4096 * MB])
    unit = probe.estimate(_request(probe, "suno/bark-small"))
    budgets = tuple(n * unit.weights_bytes + unit.working_bytes + MB for n in resident)
    studio, devices = _studio(tmp, catalog, [4096 * MB] * len(budgets), host_capacity=60 * MB,
                              budget=budgets if len(budgets) > 1 else budgets[0])
    if pin_first:
        studio.manager.pin(sequence[0])
    for model in sequence:
        try:
            studio.manager.run(_request(studio, model))
        except DoesNotFit:
            pass  # refused before running is allowed; going over is not
        for device, budget in zip(devices, budgets):
            assert device.placed_bytes() <= budget
    for device, budget in zip(devices, budgets):
        assert device.peak <= budget and device.ooms == 0
        assert studio.manager.max_resident_by_device.get(device.key, 0) <= budget


def test_simulated_memory_list_through_the_api_runs_music_and_speech_at_once(tmp_path, catalog, tiny_cache):
    """STUDIO_SIMULATED_MEMORY=4GB,2GB: a music and a speech request sent together each run on their own device."""
    from studio.device import pick_devices

    settings = Settings(output_dir=tmp_path / "out", simulated_memory=(4 * 10**9, 2 * 10**9))
    meeting = MeetingLoader(catalog, 2)
    manager = PipelineManager(catalog, pick_devices(settings), reserve=settings.memory_reserve, loader=meeting)
    studio = Studio(settings, catalog=catalog, manager=manager)
    assert studio.run_slots() == 2
    with serving(studio) as client:
        music = client.submit(model=MUSIC, prompt="beat", duration=0.5, seed=1, guidance_scale=1.0,
                              precision="float32", api_name="/music")
        speech = client.submit(model=SPEECH, text="hello", seed=1, api_name="/speech")
        (_, music_meta), (_, speech_meta) = music.result(timeout=120), speech.result(timeout=120)
        memory = client.predict(api_name="/memory")
    assert sorted(meeting.met) == sorted([MUSIC, SPEECH])
    assert {music_meta["device"], speech_meta["device"]} == {"Simulated GPU 0 (4.0 GB)", "Simulated GPU 1 (2.0 GB)"}
    assert [d["name"] for d in memory["devices"]] == ["Simulated GPU 0 (4.0 GB)", "Simulated GPU 1 (2.0 GB)"]
    assert memory["total_bytes"] == 6 * 10**9 and {"device", "budget_bytes", "used_bytes", "models"} <= set(memory)


def test_a_budget_list_is_checked_against_the_devices_auto_finds_before_the_page_is_served(tmp_path, catalog):
    from studio.errors import InvalidInput

    settings = Settings(output_dir=tmp_path / "out", device="cpu", memory_budget=(10**9, 2 * 10**9))
    with pytest.raises(InvalidInput, match=r"gives 2 sizes but the studio has 1 device \(--device cpu\)"):
        Studio(settings, catalog=catalog)


def test_the_manager_refuses_a_budget_list_that_does_not_match_its_devices(catalog):
    from studio.errors import InvalidInput

    devices = [SimulatedDevice(10**9, index=0), SimulatedDevice(10**9, index=1)]
    manager = PipelineManager(catalog, devices, reserve=0, budget_cap=(10**9, 10**9, 10**9))
    with pytest.raises(InvalidInput, match=r"gives 3 sizes but the studio has 2 devices: give one size for all"):
        manager.budget()


def test_a_second_run_of_a_model_in_use_waits_for_its_device_and_can_be_cancelled_there(tmp_path, catalog, tiny_cache):
    from studio.errors import Cancelled
    from studio.run import RunContext

    release, started, generated = threading.Event(), threading.Event(), []

    def holding_loader(spec, torch_device, dtype):
        model = catalog.family(spec).load(spec, torch_device, dtype)
        inner = model.generate

        def generate(request, ctx):
            generated.append(request.seed)
            started.set()
            release.wait(60)
            return inner(request, ctx)

        model.generate = generate
        return model

    studio, devices = _studio(tmp_path, catalog, [1024 * MB, 1024 * MB], loader=holding_loader)
    first = threading.Thread(target=lambda: studio.manager.run(_request(studio, MUSIC)))
    first.start()
    assert started.wait(60)
    stages, ctx = [], RunContext(on_stage=lambda s: stages.append(s))
    outcome = []

    def second():
        try:
            studio.manager.run(_request(studio, MUSIC), ctx)  # the model is in use: it may not run elsewhere
        except Cancelled as error:
            outcome.append(error)

    waiting = threading.Thread(target=second)
    waiting.start()
    waiting.join(timeout=1.5)
    assert waiting.is_alive() and stages == ["queued"] and generated == [1]  # it waits for the busy device
    ctx.cancel.set()
    waiting.join(timeout=5)
    assert not waiting.is_alive() and outcome and generated == [1]  # left the queue without running
    release.set()
    first.join(timeout=60)
    assert studio.generate(_request(studio, MUSIC)).metadata["device"] == devices[0].name  # the device is free again


def test_a_run_that_fits_nowhere_names_the_precision_that_would(tmp_path, catalog, tiny_cache):
    """MusicGen in float32 fits neither the GPU nor the RAM left; in float16 it fits the GPU: the refusal says so."""
    def request(studio, precision):
        return studio.request(None, MUSIC, "beat", seed=1,
                              params={"duration": 0.5, "guidance_scale": 1.0, "precision": precision})

    probe, _ = _studio(tmp_path / "probe", catalog, [4096 * MB])
    need = {p: probe.estimate(request(probe, p)).bytes for p in ("float16", "float32")}
    assert need["float16"] < need["float32"]
    room = (need["float16"] + need["float32"]) // 2
    studio, _ = _studio(tmp_path, catalog, [room], host_capacity=need["float16"] // 4)
    refused = studio.estimate(request(studio, "float32"))
    assert not refused.fits and refused.fits_in == "float16"
    assert refused.summary().endswith("choose Precision float16, which fits")
    assert studio.estimate(request(studio, "float16")).fits
