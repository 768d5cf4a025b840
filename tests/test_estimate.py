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


@pytest.mark.parametrize("model", [MODEL, "facebook/musicgen-melody", "facebook/musicgen-stereo-small"])
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_weight_bytes_come_from_the_files_before_and_the_tensors_after_a_load(make_studio, precision, model):
    from studio.weights import module_bytes

    studio = make_studio()
    before = studio.estimate(_request(studio, model=model, precision=precision))
    with studio.manager.acquire(_request(studio, model=model, precision=precision)) as lease:
        loaded = module_bytes(lease.model.modules())
        assert studio.estimate(_request(studio, model=model, precision=precision)).weights_bytes == loaded
    # The safetensors headers count every stored tensor, and the family what the load makes besides (MusicGen's
    # sinusoidal positions, 0.26 MB here: 5 % of the tiny float32 model, 7 % of its int8 one, 0.35 % of the real
    # one; and EnCodec's conv scalars): a first load takes what was planned, not a byte more.
    assert before.weights_bytes == loaded
    studio.manager.unload(model)
    assert studio.estimate(_request(studio, model=model, precision=precision)).weights_bytes == loaded  # remembered


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


# ---------------------------------------------------------------------------------------- a calibration file of the wrong shape
SPEECH = "facebook/mms-tts-eng"
_RUN_KEY = f"{SPEECH}|cpu|float32"
# Valid JSON (Python's reading of it: NaN and Infinity included) that is not a calibration: each once crashed the
# app and the CLI at start-up, broke /estimate for the model, or made the estimate negative or NaN.
BAD_CALIBRATIONS = {
    "a list": "[]",
    "null": "null",
    "runs a number": '{"runs": 5}',
    "points that are strings": '{"runs": {"%s": ["ab", "cd"], "load|cpu|first": "fast"}}' % _RUN_KEY,
    "points too short": '{"runs": {"%s": [[1], [2]], "load|cpu|first": [[3]]}}' % _RUN_KEY,
    "negative times": '{"runs": {"%s": [[10, -5], [20, -9]], "load|cpu|first": [[1, -1], [2, -3]]}, '
                      '"import_seconds": -3}' % _RUN_KEY,
    "NaN and infinite times": '{"runs": {"%s": [[10, NaN], [20, Infinity]], "load|cpu|first": [[1, NaN], [5, 1]]}, '
                              '"import_seconds": NaN}' % _RUN_KEY,
    "a weight of 10^30 bytes": '{"weights": {"%s|float32": 1e30, "%s|float32": 1e30}}' % (SPEECH, MODEL),
}


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON (Python writes and reads them by default)."""
    import json

    def refuse(constant):
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def _finite_numbers(value) -> bool:
    import math

    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_numbers(v) for v in value)
    return True


@pytest.mark.parametrize("shape", [
    pytest.param(shape, marks=pytest.mark.reliability(
        "Faults", f"calibration.json: {shape}", "Calibration(path) read at start-up; every figure it returns after"))
    for shape in BAD_CALIBRATIONS
])
def test_a_calibration_file_of_the_wrong_shape_is_dropped_with_one_warning(shape, tmp_path, caplog, reliability):
    import logging
    import math

    path = tmp_path / "calibration.json"
    path.write_text(BAD_CALIBRATIONS[shape])
    with caplog.at_level(logging.WARNING, logger="studio.estimate"):
        calibration = Calibration(path)
    warnings = [r.getMessage() for r in caplog.records if r.name == "studio.estimate"]
    assert len(warnings) == 1 and str(path) in warnings[0], warnings
    prior = SpeedPrior(1.0, 0.1)
    # What was dropped estimates from the priors; everything returned is a finite, non-negative number.
    assert calibration.compute_seconds(_RUN_KEY, 100, prior) == pytest.approx(11.0)
    for first in (True, False):
        seconds = calibration.load_seconds("cpu", 50 * 10**6, first_in_process=first)
        assert math.isfinite(seconds) and seconds >= 0
    assert math.isfinite(calibration.import_seconds()) and calibration.import_seconds() >= 0
    assert calibration.known_weights(SPEECH, "float32") is None
    # New measurements are kept and saved as strict JSON.
    calibration.record_run(_RUN_KEY, 100, 5.5)
    assert calibration.compute_seconds(_RUN_KEY, 200, prior) == pytest.approx(10.5)
    assert _strict_json(path.read_text())["runs"][_RUN_KEY] == [[100.0, 5.5]]
    reliability.note(f"one warning: {warnings[0][:200]}")


def test_recording_never_writes_nan_or_infinity(tmp_path):
    import math

    path = tmp_path / "calibration.json"
    calibration = Calibration(path)
    calibration.record_run(_RUN_KEY, 100, 5.0)
    for units, seconds in ((100, math.nan), (math.inf, 3.0), (100, -1.0), (100, math.inf)):
        calibration.record_run(_RUN_KEY, units, seconds)
    calibration.record_import(math.nan)
    calibration.record_import(math.inf)
    calibration.record_weights(SPEECH, "float32", 10**30)
    calibration.record_run(_RUN_KEY, 200, 9.0)  # a good measurement after the bad ones is kept and saved
    data = _strict_json(path.read_text())
    assert data["runs"] == {_RUN_KEY: [[100.0, 5.0], [200.0, 9.0]]}, data
    assert data["import_seconds"] == 4.0 and data["weights"] == {}
    assert calibration.compute_seconds(_RUN_KEY, 300, SpeedPrior(1.0, 0.1)) == pytest.approx(13.0)
    assert Calibration(path).compute_seconds(_RUN_KEY, 300, SpeedPrior(1.0, 0.1)) == pytest.approx(13.0)


@pytest.mark.reliability("Faults", "calibration.json of the wrong shape, /estimate",
                         "each bad shape in OUTPUT_DIR/calibration.json before the studio starts; API /estimate for "
                         "the model it names, with a 60 s timeout")
def test_estimate_answers_through_the_api_with_any_calibration_shape(make_studio, tmp_path, reliability):
    import concurrent.futures
    import math

    from tests.serving import serving

    studio = make_studio()
    path = studio.settings.calibration_file
    path.parent.mkdir(parents=True, exist_ok=True)
    answers = {}
    with serving(studio) as client:
        for shape, text in BAD_CALIBRATIONS.items():
            path.write_text(text)
            studio.manager.calibration = Calibration(path)  # as a start-up reads it
            for model, kwargs in ((SPEECH, {"text": "hello there"}), (MODEL, {"duration": 2.0})):
                job = client.submit(model=model, api_name="/estimate", **kwargs)
                try:
                    estimate = job.result(timeout=60)
                except concurrent.futures.TimeoutError:
                    raise AssertionError(f"{shape}: /estimate for {model} did not answer in 60 s") from None
                assert math.isfinite(estimate["seconds"]) and estimate["seconds"] >= 0, (shape, estimate)
                assert _finite_numbers(estimate) and estimate["fits"], (shape, estimate)
                answers[(shape, model)] = estimate["summary"]
    reliability.note(f"{len(answers)} of {2 * len(BAD_CALIBRATIONS)} estimates answered, finite; e.g. "
                     f"{answers[('a weight of 10^30 bytes', SPEECH)]!r}")


def _cli_with_calibration(shape: str, workdir):
    """The CLI's run with `shape` as its calibration.json: a subprocess.CompletedProcess."""
    from tests.cli_process import run_studio
    from tests.conftest import ROOT

    outputs = workdir / shape.replace(" ", "-").replace("^", "") / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "calibration.json").write_text(BAD_CALIBRATIONS[shape])
    return run_studio(["generate", "--model", SPEECH, "--prompt", "hello there", "--seed", "1",
                       "--out", str(outputs.parent / "clip.wav"), "--output-dir", str(outputs)], cwd=ROOT, timeout=240)


@pytest.mark.reliability("Faults", "calibration.json of the wrong shape, CLI",
                         "a bad shape of each kind the CLI met differently (a crash at start, NaN and negative figures "
                         "printed, a refusal) in --output-dir's calibration.json; `python -m studio generate` with the "
                         "tiny MMS model, two processes at a time (every shape is read by Calibration itself above)")
def test_the_cli_starts_and_prints_strict_json_with_any_calibration_shape(tiny_cache, tmp_path, reliability):
    from concurrent.futures import ThreadPoolExecutor

    shapes = ("a list", "negative times", "NaN and infinite times", "a weight of 10^30 bytes")
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(shapes, pool.map(lambda s: _cli_with_calibration(s, tmp_path), shapes)))
    for shape, run in runs.items():
        assert run.returncode == 0, f"{shape}: exit {run.returncode}\n{run.stderr[-2000:]}"
        metadata = _strict_json(run.stdout)  # NaN or Infinity would not parse
        assert _finite_numbers(metadata) and metadata["estimated_s"] >= 0, (shape, metadata)
        assert "Traceback" not in run.stderr, run.stderr
        assert run.stderr.count("calibration.json") == 1, (shape, run.stderr)  # one warning, naming the file
    reliability.note(f"{len(runs)} of {len(runs)} CLI runs exit 0 with strict JSON on stdout and one warning on "
                     "stderr naming the file")
