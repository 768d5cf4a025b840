"""Estimates: exact weight bytes, working memory that follows the request, time calibrated from past runs."""

from __future__ import annotations

import pytest

from studio.catalog import SpeedPrior
from studio.estimate import Calibration, fit_line, format_seconds

MODEL = "facebook/musicgen-small"


def _request(studio, duration=1.0, guidance=3.0, model=MODEL, precision="float32"):
    return studio.request(None, model, "lofi", seed=3,
                          params={"duration": duration, "guidance_scale": guidance, "precision": precision})


def test_fit_line_recovers_a_line_and_refuses_nonsense():
    a, b = fit_line([(10, 3.0), (20, 5.0), (40, 9.0)])
    assert a == pytest.approx(1.0) and b == pytest.approx(0.2)
    assert fit_line([(10, 3.0)]) is None
    assert fit_line([(10, 3.0), (10, 4.0)]) is None  # units never vary: no slope to learn
    assert fit_line([(10, 5.0), (20, 3.0)]) is None  # faster for more work: noise, not a line
    a, b = fit_line([(10, 1.0), (20, 4.0)])  # would need a negative fixed cost: through the origin instead
    assert a == 0.0 and b > 0


def test_calibration_starts_from_the_prior_scales_from_one_run_and_persists(tmp_path):
    prior = SpeedPrior(1.0, 0.1)
    path = tmp_path / "calibration.json"
    calibration = Calibration(path)
    key = Calibration.key(MODEL, "cpu", "float32")
    assert calibration.compute_seconds(key, 100, prior) == pytest.approx(11.0)
    calibration.record_run(key, 100, 5.5)  # this machine is twice as fast as the prior says
    assert calibration.compute_seconds(key, 200, prior) == pytest.approx(10.5)
    calibration.record_run(key, 200, 9.0)
    assert calibration.compute_seconds(key, 300, prior) == pytest.approx(12.5)
    # A restart reads the same fit back.
    assert Calibration(path).compute_seconds(key, 300, prior) == pytest.approx(12.5)


def test_unreadable_calibration_file_falls_back_to_the_prior(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    assert Calibration(path).compute_seconds("k", 10, SpeedPrior(1.0, 1.0)) == pytest.approx(11.0)


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_weight_bytes_come_from_the_files_before_and_the_tensors_after_a_load(make_studio, precision):
    from studio.weights import module_bytes

    studio = make_studio()
    before = studio.estimate(_request(studio, precision=precision))
    with studio.manager.acquire(_request(studio, precision=precision)) as lease:
        loaded = module_bytes(lease.model.modules())
        assert studio.estimate(_request(studio, precision=precision)).weights_bytes == loaded
    # The safetensors headers count every stored tensor; only non-persistent buffers (MusicGen's sinusoidal
    # positions, 0.26 MB here: 5 % of the tiny float32 model, 7 % of its int8 one, 0.35 % of the real one) are extra.
    assert (0.95 if precision == "float32" else 0.9) * loaded <= before.weights_bytes <= loaded * 1.01
    studio.manager.unload(MODEL)
    assert studio.estimate(_request(studio, precision=precision)).weights_bytes == loaded  # remembered exactly


def test_working_memory_follows_the_request(make_studio):
    studio = make_studio()
    short = studio.estimate(_request(studio, duration=1.0)).working_bytes
    longer = studio.estimate(_request(studio, duration=10.0)).working_bytes
    unguided = studio.estimate(_request(studio, duration=10.0, guidance=1.0)).working_bytes
    assert short < unguided < longer


def test_time_estimate_after_two_runs_is_within_half_on_tiny_models(make_studio):
    studio = make_studio()
    manager = studio.manager
    manager.run(_request(studio, duration=0.5))  # warm-up: first-call overheads are not the model's speed
    errors = []
    # Wall time on a shared 2-core machine can jump between runs when other jobs start; a systematically
    # wrong estimate misses every attempt, a busy neighbour only some.
    for _ in range(3):
        manager.calibration.forget_runs(Calibration.key(MODEL, "cpu", "float32"))
        for duration in (1.0, 4.0):
            manager.run(_request(studio, duration=duration))
        predicted = studio.estimate(_request(studio, duration=2.5)).seconds
        actual = manager.run(_request(studio, duration=2.5)).compute_s
        errors.append(abs(predicted - actual) / actual)
        if errors[-1] <= 0.5:
            break
    assert min(errors) <= 0.5, errors


def test_estimate_knows_load_and_resident_state(make_studio):
    studio = make_studio()
    cold = studio.estimate(_request(studio))
    assert not cold.resident and cold.load_seconds > 0 and cold.cached
    studio.manager.run(_request(studio))
    warm = studio.estimate(_request(studio))
    assert warm.resident and warm.load_seconds == 0
    assert "loads in" not in warm.summary() and "needs" in warm.summary()
    assert warm.to_dict()["evicts"] == [] and set(warm.to_dict()) >= {"seconds", "bytes", "fits", "evicts"}


def test_estimate_for_an_uncached_model_says_it_downloads(make_studio):
    studio = make_studio()
    estimate = studio.estimate(studio.request(None, "facebook/mms-tts-kor", "annyeong", seed=1))
    assert not estimate.cached and "downloads" in estimate.summary()


@pytest.mark.parametrize("seconds,text", [(3.21, "3.2 s"), (42, "42 s"), (185, "3 min 05 s"), (1500, "25 min"),
                                          (7200, "2.0 h")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
