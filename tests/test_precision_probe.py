"""auto's precision on a CPU, measured (issue 17, part 1): the probe times a model's Linear shapes in each precision,
gives way to a run, is kept per machine, and decides auto (runs in two precisions decide over it); an explicit
Precision always wins; the manager probes after a model's first CPU load, never while a run goes."""

from __future__ import annotations

import json
import threading

import pytest

from studio.precision_probe import Choice, PrecisionSpeeds, Stopped, choose, layer_shapes, probe

MUSIC = "facebook/musicgen-small"


def test_the_probe_times_every_candidate_and_gives_way_at_once():
    shapes = {(64, 256): 4, (256, 64): 4}
    seconds = probe(shapes, ("float32", "bfloat16", "int8"), stream_bytes=1 << 20)
    assert set(seconds) == {"float32", "bfloat16", "int8"} and all(s > 0 for s in seconds.values())
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Stopped):
        probe(shapes, ("float32", "int8"), stop=stop, stream_bytes=1 << 20)
    assert probe({}, ("float32",)) == {}


def test_the_probe_runs_the_layers_at_the_rows_it_is_given(monkeypatch):
    import torch

    rows = []
    real = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: (rows.append(x.shape[0]), real(self, x))[1])
    probe({(16, 32): 2}, ("float32", "bfloat16"), rows=300, stream_bytes=1 << 10)
    assert rows and set(rows) == {300}


def test_a_precision_far_slower_than_the_fastest_is_not_timed_to_the_end(monkeypatch):
    """As bfloat16 at a diffusion transformer's rows on a CPU without native bfloat16: the probe stops timing it once
    a pass has taken GIVE_UP times the fastest one's whole pass (and LONG_PASS_S), and still ranks it slower."""
    import time

    import torch

    from studio import precision_probe

    monkeypatch.setattr(precision_probe, "LONG_PASS_S", 0.02)
    calls = {"float32": 0, "bfloat16": 0}
    real = torch.nn.Linear.forward

    def forward(self, x):
        calls[str(x.dtype).removeprefix("torch.")] += 1
        if x.dtype == torch.bfloat16:
            time.sleep(0.01)  # emulated: far slower than float32's microseconds
        return real(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", forward)
    shapes = {(16, 32): 1, (32, 16): 1, (16, 16): 1, (16, 8): 1}
    seconds = probe(shapes, ("float32", "bfloat16"), stream_bytes=1 << 10)
    copies = precision_probe._copies(shapes, 1 << 10)
    full = (precision_probe.PASSES + 1) * copies * len(shapes)
    assert calls["float32"] == full  # the first, fastest, is timed whole
    assert 0 < calls["bfloat16"] <= 4 < full  # cut within its first pass (0.02 s: 2-3 layers of 0.01 s)
    assert seconds["bfloat16"] > seconds["float32"] * precision_probe.GIVE_UP


def test_the_layer_shapes_come_from_the_parts_int8_quantizes_in_any_precision():
    import torch

    from models.common import quantize_int8

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                                               torch.nn.Linear(8, 16))
            self.codec = torch.nn.Linear(4, 4)

    model = Model()
    assert layer_shapes([model], ("decoder",)) == {(8, 16): 2, (16, 8): 1}
    quantize_int8(model, ("decoder",))
    assert layer_shapes([model], ("decoder",)) == {(8, 16): 2, (16, 8): 1}  # packed int8 keeps its features
    assert layer_shapes([model], ("absent",)) == {(8, 16): 2, (16, 8): 1, (4, 4): 1}  # no such part: all of them


def test_choose_takes_the_fastest_unless_the_default_is_within_five_percent():
    seconds = {"float32": 4.0, "bfloat16": 3.0, "int8": 2.0}
    choice = choose(seconds, ("float32", "bfloat16", "int8"), "int8")
    assert choice == Choice("int8", 2.0, "probe")
    assert choice.reason() == "int8: fastest on this CPU, 2.0x float32 (measured on its layers here)"
    assert choose(seconds, ("float32", "bfloat16"), "float32").dtype == "bfloat16"
    # Barely faster is not worth leaving the published default (noise, and its audio was measured by the bench).
    assert choose({"float32": 1.0, "int8": 0.97}, ("float32", "int8"), "float32").dtype == "float32"
    assert choose({"float32": 1.0, "int8": 2.0}, ("float32", "int8"), "int8", source="runs").reason() == \
        "float32: fastest on this CPU (in its runs here)"
    assert choose(None, ("float32",), "float32") is None and choose({"int8": 1.0}, ("float32", "int8"), "int8") is None


def test_measurements_are_kept_per_machine(tmp_path):
    path = tmp_path / "precision_probe.json"
    PrecisionSpeeds(path, "cpu A").record(MUSIC, {"float32": 2.0, "int8": 1.0})
    assert PrecisionSpeeds(path, "cpu A").measured(MUSIC) == {"float32": 2.0, "int8": 1.0}
    assert PrecisionSpeeds(path, "cpu B").measured(MUSIC) is None  # copied to another machine: measured again
    path.write_text("{not json", encoding="utf-8")
    assert PrecisionSpeeds(path, "cpu A").measured(MUSIC) is None  # damaged: measured again, no error
    path.write_text(json.dumps({"method": 2, "machine": "cpu A", "models": {MUSIC: {"float32": "x"}}}),
                    encoding="utf-8")
    assert PrecisionSpeeds(path, "cpu A").measured(MUSIC) is None
    # An older probe's file (its diffusion transformers timed at a decoder's rows): measured again.
    path.write_text(json.dumps({"machine": "cpu A", "models": {MUSIC: {"float32": 2.0, "int8": 1.0}}}),
                    encoding="utf-8")
    assert PrecisionSpeeds(path, "cpu A").measured(MUSIC) is None


def test_auto_follows_the_measurement_and_runs_decide_over_the_probe(catalog):
    from studio.estimate import Calibration
    from studio.sizer import Sizer

    speeds = PrecisionSpeeds(None, "this cpu")
    calibration = Calibration(None)
    sizer = Sizer(catalog, calibration, speeds)
    spec = catalog.get(MUSIC)
    published = sizer.published_dtype(spec, "cpu")
    assert sizer.dtype(spec, "cpu") == published and sizer.auto_choice(spec) is None  # not measured yet
    speeds.record(MUSIC, {"float32": 1.0, "bfloat16": 0.6, "int8": 0.8})
    assert sizer.dtype(spec, "cpu") == "bfloat16"
    assert sizer.dtype(spec, "cpu", "float32") == "float32"  # a user's choice always wins
    assert sizer.dtype(spec, "cuda") == sizer.published_dtype(spec, "cuda")  # the probe is the CPU's
    # The model's own runs in two precisions: they decide.
    for dtype, per_unit in (("float32", 0.02), ("int8", 0.005)):
        for units in (100, 200):
            calibration.record_run(Calibration.key(MUSIC, "cpu", dtype), units, per_unit * units)
    choice = sizer.auto_choice(spec)
    assert choice.dtype == "int8" and choice.source == "runs" and 3.5 < choice.speedup < 4.5


def test_the_manager_probes_after_a_cpu_load_never_during_a_run_and_the_estimate_says_why(make_studio, monkeypatch):
    from studio import manager as manager_module
    from studio import precision_probe

    monkeypatch.setattr(manager_module, "PROBE_IDLE_S", 0.05)
    studio = make_studio()
    speeds = PrecisionSpeeds(None, "this cpu")
    studio.manager.speeds = speeds
    studio.manager.calibration = studio.manager.calibration  # rebuild the sizer with the speeds
    seen_running = []
    real_probe = precision_probe.probe

    def watched(shapes, candidates, **kwargs):
        seen_running.append(studio.manager._runs_going())
        return real_probe(shapes, candidates, **{**kwargs, "stream_bytes": 1 << 20})

    monkeypatch.setattr(manager_module, "probe", watched)
    request = studio.request("music", MUSIC, "a probe", seed=1, params={"duration": 0.5})
    studio.manager.run(request)
    assert studio.manager.probe_done(MUSIC)
    assert seen_running == [False]
    measured = speeds.measured(MUSIC)
    assert set(measured) == set(studio.manager.sizer.probe_candidates(studio.catalog.get(MUSIC)))
    estimate = studio.manager.estimate_run(request)
    choice = studio.manager.sizer.auto_choice(studio.catalog.get(MUSIC))
    assert estimate.dtype == choice.dtype and estimate.dtype_reason == choice.reason()
    assert "fastest on this CPU" in estimate.summary()
    # An explicit precision: no reason given, the user's choice.
    chosen = studio.manager.estimate_run(studio.request("music", MUSIC, "x", seed=1,
                                                        params={"duration": 0.5, "precision": "float32"}))
    assert chosen.dtype == "float32" and chosen.dtype_reason == ""


def test_a_run_that_starts_stops_the_probe_which_tries_again_after(make_studio, monkeypatch):
    from studio import manager as manager_module

    monkeypatch.setattr(manager_module, "PROBE_IDLE_S", 0.05)
    studio = make_studio()
    manager = studio.manager
    manager.speeds = PrecisionSpeeds(None, "this cpu")
    manager.calibration = manager.calibration
    attempts = []
    release = threading.Event()

    def fake_probe(shapes, candidates, stop, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            manager._busy.add("cpu-run")  # a run starts while it measures
            if stop():
                raise Stopped
        return {d: 1.0 for d in candidates}

    monkeypatch.setattr(manager_module, "probe", fake_probe)
    spec = studio.catalog.get(MUSIC)
    manager._schedule_probe(spec, _Loaded())
    threading.Timer(0.3, lambda: (manager._busy.discard("cpu-run"), release.set())).start()
    assert manager.probe_done(MUSIC, timeout=10) and release.is_set()
    assert len(attempts) == 2 and manager.speeds.measured(MUSIC) is not None


def test_each_family_is_probed_at_the_rows_its_step_runs(make_studio, monkeypatch):
    """A decoder's token (twice with guidance), and a diffusion transformer's latent tokens over 10 s: at a decoder's
    rows bfloat16 looks faster on an AVX2 CPU, where a DiT's real step runs it several times slower."""
    from studio import manager as manager_module

    monkeypatch.setattr(manager_module, "PROBE_IDLE_S", 0.0)
    studio = make_studio()
    manager = studio.manager
    manager.speeds = PrecisionSpeeds(None, "this cpu")
    manager.calibration = manager.calibration
    asked = {}

    def fake_probe(shapes, candidates, rows, stop, **kwargs):
        asked[repo] = rows
        return {d: 1.0 for d in candidates}

    monkeypatch.setattr(manager_module, "probe", fake_probe)
    for repo in (MUSIC, "stabilityai/stable-audio-3-medium", "ACE-Step/acestep-v15-xl-turbo-diffusers"):
        manager._schedule_probe(studio.catalog.get(repo), _Loaded())
        assert manager.probe_done(repo, timeout=10)
    assert asked == {MUSIC: 2, "stabilityai/stable-audio-3-medium": 2 * (108 + 64),
                     "ACE-Step/acestep-v15-xl-turbo-diffusers": 250}


class _Loaded:
    def modules(self):
        import torch

        return [torch.nn.Sequential(torch.nn.Linear(8, 8))]


def test_probing_is_off_in_the_tests_unless_asked():
    import os

    from studio.settings import Settings

    assert os.environ.get("STUDIO_PRECISION_PROBE") == "0" and Settings().precision_probe is False
    assert Settings(precision_probe=True).precision_probe is True
