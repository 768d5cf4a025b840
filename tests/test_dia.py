"""Dia speaks [S1]/[S2] scripts at 44.1 kHz: lengths capped from the text, seeds, per-frame progress, cancel, voice
continuation from a clip and its transcript, the Speaker N: form, every bad input refused, the CLI offline.

On the tiny checkpoint (tests/tiny_dia.py: one-layer Dia and a tiny DAC under the real repo ids). Random weights
never sample the EOS, so every run lasts exactly its cap: the frames the text allows (models/dia.py plan()).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.speech_fixtures import (  # noqa: F401 (one_thread: autouse)
    cli_run_fixture, cli_samples, cpu_studio, one_thread, run_with_reports, two_voices, write_clips)

DIA = "nari-labs/Dia-1.6B-0626"
DAC = "descript/dac_44khz"
RATE = 44100
HOP = 512
SCRIPT = "[S1] Hi! [S2] Hello there. (laughs)"
FAST = {"guidance_scale": 1.0}  # guidance doubles the batch; the runs that test something else do without it


# The issue's command, started first so that its process runs beside the in-process tests.
cli_run = cli_run_fixture(DIA, SCRIPT, "dia.wav")


@pytest.fixture(scope="module")
def studio(cli_run, tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


def _request(studio, text=SCRIPT, seed=3, **params):
    return studio.request("speech", DIA, text, seed=seed, params={**FAST, **params})


def _plan(studio, request):
    from models.dia import plan

    return plan(studio.catalog.get(DIA), request.prompt, request.params)


@pytest.fixture(scope="module")
def first(studio):
    """One script, with every progress report kept."""
    request = _request(studio)
    result, reports = run_with_reports(studio, request)
    return request, result, reports


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 2 s voice clips that differ: a 220 Hz tone and a noise burst."""
    return two_voices(tmp_path_factory.mktemp("clips"), 2.0, RATE)


def test_a_script_becomes_44k_mono_speech_as_long_as_its_cap_with_progress_per_frame(studio, first):
    request, result, reports = first
    plan = _plan(studio, request)
    audio = result.audio
    assert audio.sample_rate == RATE and audio.samples.ndim == 1
    # Random weights never sample the EOS: the run ends at the cap, 1.75x the text's expected length (8 characters a
    # second: 24 spoken characters -> 3 s -> 259 frames), decoded to 512 samples a frame.
    assert plan.frames == 259
    assert audio.samples.shape[0] == plan.frames * HOP
    assert np.abs(audio.samples).max() > 0
    # One report per decoder step (a frame of 9 codes), the last one the total: the frames and the 16-step delay tail.
    assert reports == [(step, plan.steps) for step in range(1, plan.steps + 1)]


def test_the_speaker_lines_form_is_the_tagged_script_and_a_seed_repeats_it(studio, first):
    from models.dia import parse_script, script_text

    lines = "Speaker 1: Hi!\nSpeaker 2: Hello there. (laughs)"
    assert script_text(parse_script(lines)) == SCRIPT
    again = studio.manager.run(_request(studio, lines)).audio.samples
    other_seed = studio.manager.run(_request(studio, seed=4)).audio.samples
    assert np.array_equal(again, first[1].audio.samples)  # same seed, same script (in the other form): same audio
    assert not np.array_equal(other_seed, again)


def test_cancel_stops_within_one_frame(studio):
    cancel = threading.Event()
    reports = []

    def on_progress(done, total):
        reports.append(done)
        if done == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        studio.manager.run(_request(studio), RunContext(cancel=cancel, on_progress=on_progress))
    assert reports == [1, 2, 3]


def test_the_voice_clip_reaches_the_model_and_the_result_holds_only_the_new_speech(studio, clips):
    script = "[S1] Hi! [S2] Hello there."
    runs = [studio.manager.run(_request(studio, script, audio=clip, transcript="[S1] A long tone.")) for clip in clips]
    plan = _plan(studio, _request(studio, script, audio=clips[0], transcript="[S1] A long tone."))
    assert plan.prompt_frames == 173  # 2 s at 86.13 frames a second, rounded up
    tone, noise = (run.audio.samples for run in runs)
    # The new speech alone: its cap comes from the script (15 characters -> 1.9 s -> 162 frames), not the clip's 2 s.
    assert tone.shape == noise.shape == (plan.frames * HOP,) and plan.frames == 162
    assert runs[0].audio.info["prompt_s"] == 2.0
    # The clip's DAC codes are the decoder's prefix: another clip, the same seed and text, other speech.
    assert not np.allclose(tone, noise)


def test_int8_runs_the_same_script(studio):
    result = studio.manager.run(_request(studio, "[S1] Hi.", precision="int8"))
    assert result.audio.samples.shape == (round(1.0 * RATE / HOP + 0.5) * HOP,)  # the 1 s floor of the cap


def test_estimates_count_frames_guidance_the_kv_cache_and_the_dac(studio, catalog):
    from models.dia import FAMILY, work_units, working_bytes
    from studio.estimate import Calibration
    from studio.sizer import Sizer
    from studio.weights import cached_weight_bytes

    spec = catalog.get(DIA)
    plain, guided = _request(studio), _request(studio, guidance_scale=3.0)
    assert work_units(spec, guided) > work_units(spec, plain) > 0
    assert working_bytes(spec, guided, 4) > working_bytes(spec, plain, 4)
    # The DAC lives in its own repo; the weights before a load count it beside Dia's.
    assert FAMILY.companion_repos[0].repo_id == DAC
    weights = Sizer(catalog, Calibration(None)).weights(spec, "float32", "cpu")
    assert weights == cached_weight_bytes(DIA, 4) + cached_weight_bytes(DAC, 4)
    assert "2 turns" in studio.manager.estimate_run(plain).work


@pytest.mark.parametrize("text, params, words", [
    ("(laughs) (sighs)", {}, ["only non-verbal cues", "add words"]),
    ("[S1] (coughs) [S2] (laughs)", {}, ["only non-verbal cues"]),
    ("[S1]\n[S2]\n", {}, ["turn 1 ([S1]) is empty", "write what Speaker 1 says"]),
    ("[S1] Hi. [S3] Hello.", {}, ["[S3]", "two voices", "[S1] and [S2]"]),
    ("Speaker 1: Hi.\nSpeaker 3: Hello.", {}, ["'Speaker 3:'", "Speaker 1 and Speaker 2"]),
    ("[S1] " + "Words and words. " * 40, {}, ["about 48 s of speech", "at most 35.5 s", "max_position_embeddings",
                                              "split it"]),
    ("[S1] " + "語" * 400, {}, ["1,202 tokens", "at most 1,024", "encoder max_position_embeddings"]),
    (SCRIPT, {"transcript": "[S1] Hello."}, ["without its voice clip", "clear Transcript"]),
    (SCRIPT, {"audio": "clip"}, ["has no transcript", "Transcript"]),
    (SCRIPT, {"audio": "short", "transcript": "[S1] Hi."}, ["0.5 s long", "at least 1 s"]),
    (SCRIPT, {"audio": "long", "transcript": "[S1] Hi."}, ["'long.wav' is 40.0 s long", "trim it to 34.7 s"]),
    ("[S1] " + "Words and words. " * 20, {"audio": "thirty", "transcript": "[S1] Hi."},
     ["after the 30.0 s voice clip", "use a shorter clip"]),
    (SCRIPT, {"audio": "clip", "transcript": "[S2] (laughs)"}, ["transcript", "only non-verbal cues"]),
    (SCRIPT, {"temperature": 0.7}, ["temperature", "between 1 and 2"]),
])
def test_bad_input_is_refused_naming_the_value_and_the_fix(studio, tmp_path, text, params, words):
    params = write_clips(tmp_path, params, {"clip": 2.0, "short": 0.5, "long": 40.0, "thirty": 30.0}, RATE)
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", DIA, text, seed=1, params=params)
    message = str(error.value)
    for word in words:
        assert word in message, message


def test_the_cli_speaks_the_issue_script_offline(cli_run):
    samples = cli_samples(cli_run, DIA, RATE)
    assert samples.shape == (259 * HOP,)
