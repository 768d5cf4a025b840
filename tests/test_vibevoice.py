"""VibeVoice speaks multi-speaker scripts at 24 kHz: lengths capped from the text, per-frame progress and cancel, seeds,
a voice sample per speaker reaching the model, per-turn segments inside the output, bad input refused, the CLI offline.

On the tiny checkpoint (tests/tiny_vibevoice.py: a one-layer VibeVoice under the real repo id, its processor and chat
template as the library's conversion writes them). Its weights always choose the audio placeholder, never the EOS,
so every run lasts exactly its cap: the frames the text allows (models/vibevoice.py plan()).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.speech_fixtures import (  # noqa: F401 (one_thread: autouse)
    cli_run_fixture, cli_samples, cpu_studio, one_thread, run_with_reports, two_voices, write_clips)

REPO = "vibevoice/VibeVoice-1.5B-hf"
RATE = 24000
HOP = 3200
SCRIPT = "Speaker 1: Hello. Speaker 2: Hi there."  # the issue's "Done means" script
DIALOGUE = "Speaker 1: Welcome.\nSpeaker 2: Thanks, hello!\nSpeaker 1: Let us go."
FAST = {"num_diffusion_steps": 2}


# The issue's command, started first so that its process runs beside the in-process tests.
cli_run = cli_run_fixture(REPO, SCRIPT, "v.wav")


@pytest.fixture(scope="module")
def studio(cli_run, tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


def _request(studio, text=DIALOGUE, seed=3, **params):
    return studio.request("speech", REPO, text, seed=seed, params={**FAST, **params})


def _plan(studio, request):
    from models.vibevoice import plan

    return plan(studio.catalog.get(REPO), request.prompt, request.params)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 2 s voice samples that differ: a 220 Hz tone and a noise burst."""
    return two_voices(tmp_path_factory.mktemp("clips"), 2.0, RATE)


@pytest.fixture(scope="module")
def first(studio):
    """The three-turn dialogue, with every progress report kept."""
    request = _request(studio)
    result, reports = run_with_reports(studio, request)
    return request, result, reports


def test_a_script_becomes_24k_mono_speech_as_long_as_its_cap_with_progress_per_frame(studio, first):
    request, result, reports = first
    plan = _plan(studio, request)
    audio = result.audio
    assert audio.sample_rate == RATE and audio.samples.ndim == 1
    # 32 spoken characters at 8 a second: 4 s, 30 frames of 3200 samples at 7.5 a second.
    assert plan.frames == 30
    assert audio.samples.shape == (plan.frames * HOP,)
    assert np.abs(audio.samples).max() > 1e-3
    # One report per generated frame (the LM's step, its diffusion steps and the decoder's 3200 samples).
    assert reports == [(frame, plan.frames) for frame in range(1, plan.frames + 1)]


def test_every_turn_is_a_segment_with_its_speaker_in_order_inside_the_output(first):
    _, result, _ = first
    segments = result.audio.info["segments"]
    duration = result.audio.samples.shape[0] / RATE
    assert [(s["speaker"], s["text"]) for s in segments] == [
        (1, "Welcome."), (2, "Thanks, hello!"), (1, "Let us go.")]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(duration)
    for before, after in zip(segments, segments[1:]):
        assert before["end"] == after["start"]  # contiguous
    assert all(0 <= s["start"] < s["end"] <= duration for s in segments)
    assert result.audio.info["segments_estimated"] is True


def test_segment_boundaries_move_to_the_pause_between_speakers():
    from models.dialogue import Turn
    from models.vibevoice import estimate_segments

    # Two equal turns over 20 frames, silence in frame 11: the cut moves from frame 10 to the pause (ms precision).
    samples = np.full(20 * HOP, 0.5, np.float32)
    samples[11 * HOP:12 * HOP] = 0.0
    segments = estimate_segments([Turn(1, "a" * 40), Turn(2, "b" * 40)], samples)
    assert segments[0]["end"] == segments[1]["start"] == pytest.approx(11 * HOP / RATE, abs=1e-3)
    # Without a pause the cut stays where the characters put it.
    segments = estimate_segments([Turn(1, "a" * 30), Turn(2, "b" * 10)], np.full(20 * HOP, 0.5, np.float32))
    assert segments[0]["end"] == pytest.approx(15 * HOP / RATE, abs=1e-3)


def test_a_seed_repeats_the_audio_and_another_seed_changes_it(studio):
    once, again, other = (studio.manager.run(_request(studio, SCRIPT, seed=seed)).audio.samples for seed in (3, 3, 4))
    assert np.array_equal(again, once)
    assert not np.array_equal(other, again)


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


def test_a_voice_sample_reaches_the_model_per_speaker(studio, clips):
    tone, noise = clips
    runs = {name: studio.manager.run(_request(studio, SCRIPT, **params)).audio for name, params in (
        ("tone", {"audio": tone}), ("noise", {"audio": noise}), ("second", {"audio": tone, "audio_2": noise}))}
    # Another sample for Speaker 1, the same seed and script: other speech; a sample for Speaker 2 as well: other again.
    assert not np.allclose(runs["tone"].samples, runs["noise"].samples)
    assert not np.allclose(runs["tone"].samples, runs["second"].samples)
    assert runs["second"].info["cloned"] == [1, 2]
    described = studio.manager.estimate_run(_request(studio, SCRIPT, audio=tone)).work
    assert "Speaker 1 in the voice of 'tone.wav'" in described and "Speaker 2 in a voice the model picks" in described


@pytest.mark.parametrize("text, params, words", [
    ("Speaker 1: Hi.\nSpeaker 5: Hello.", {}, ["'Speaker 5:'", "four voices", "Speaker 1, Speaker 2, Speaker 3 and "
                                                                             "Speaker 4"]),
    ("[S1]\n[S2] Hello.", {}, ["turn 1 ([S1]) is empty", "write what Speaker 1 says"]),
    (SCRIPT, {"audio": "short"}, ["'short.wav' is 0.5 s long", "at least 1 s"]),
    (SCRIPT, {"audio_2": "long"}, ["'long.wav' is 31.0 s long", "30 s"]),
    ("Speaker 1: " + "Words and words. " * 4000, {}, ["characters", "takes at most 60,000"]),
    (SCRIPT, {"num_diffusion_steps": 0}, ["num_diffusion_steps", "between 1 and 50"]),
])
def test_bad_input_is_refused_naming_the_value_and_the_fix(studio, tmp_path, text, params, words):
    params = write_clips(tmp_path, params, {"short": 0.5, "long": 31.0}, RATE)
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", REPO, text, seed=1, params=params)
    message = str(error.value)
    for word in words:
        assert word in message, message


def test_estimates_count_frames_diffusion_steps_voices_and_the_tokenizers(studio, catalog, clips):
    from models.vibevoice import FAMILY, components, work_units, working_bytes
    from studio.weights import cached_weight_bytes

    spec = catalog.get(REPO)
    plain, slow = _request(studio, num_diffusion_steps=2), _request(studio, num_diffusion_steps=20)
    voiced = _request(studio, audio=clips[0], audio_2=clips[1])
    assert work_units(spec, slow) > work_units(spec, plain) > 0
    assert working_bytes(spec, voiced, 4) > working_bytes(spec, plain, 4)
    parts = components(spec, 4)
    assert set(parts) == {"model", "acoustic_tokenizer", "semantic_tokenizer"} and min(parts.values()) > 0
    assert sum(parts.values()) == cached_weight_bytes(REPO, 4)
    assert FAMILY.speed_param == "num_diffusion_steps"
    assert "3 turns" in studio.manager.estimate_run(plain).work


def test_int8_speaks_the_same_script(studio):
    """int8 quantizes every Linear of the model and gives the tied LM head its own int8 matrix (load)."""
    result = studio.manager.run(_request(studio, SCRIPT, precision="int8"))
    assert result.audio.samples.shape == (15 * HOP,)  # 15 characters: 1.9 s, 15 frames
    assert np.isfinite(result.audio.samples).all() and np.abs(result.audio.samples).max() > 1e-3


def test_the_cli_speaks_the_issue_script_offline(cli_run):
    samples = cli_samples(cli_run, REPO, RATE)
    assert samples.shape == (15 * HOP,)
