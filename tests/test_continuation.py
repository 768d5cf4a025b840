"""MusicGen carries on from a clip: continuation in one window, extension window by window, cancel, the estimate.

The tiny checkpoint's codec turns codes into noise-like audio, so what is checked is the arithmetic a user relies
on: lengths, the clip kept as it was at the start, seams without a step, one progress count, a cancel that keeps
what is done only when asked, and an estimate that grows with the input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from models import musicgen
from models.musicgen import CONTEXT_S, MAX_DURATION, Window, crossfade_join, plan_windows
from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext

RATE = 32000
HOP = 640  # one codec frame at 32 kHz / 50 Hz
MODEL = "facebook/musicgen-small"


def _tone(path, seconds: float, rate: int = 44100, channels: int = 1, freq: float = 220.0):
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    settings = Settings(output_dir=tmp_path_factory.mktemp("out"), memory_reserve=0)
    return Studio(settings, catalog=catalog, device=CpuDevice())


@pytest.fixture(scope="module")
def clip5(tmp_path_factory):
    return _tone(tmp_path_factory.mktemp("clips") / "riff.wav", 5.0)


# ------------------------------------------------------------------ the window plan (pure)

@pytest.mark.parametrize("have,total,windows", [
    (0, 8, [Window(0, 8)]),  # text only: one window
    (5, 10, [Window(5, 5)]),  # a continuation that fits hears the whole clip
    (0, 70, [Window(0, 30), Window(10, 20), Window(10, 20)]),  # three windows to 70 s
    (8, 60, [Window(8, 22), Window(10, 20), Window(20, 10)]),  # an 8 s result to 60 s
    (60, 70, [Window(20, 10)]),  # a long clip is heard by its end
    (0, 300, [Window(0, 30)] + [Window(10, 20)] * 13 + [Window(20, 10)]),
])
def test_windows_take_the_music_to_the_total(have, total, windows):
    planned = plan_windows(have, total)
    assert planned == windows
    assert all(w.prompt_s + w.new_s <= MAX_DURATION for w in planned)
    assert all(w.prompt_s >= min(have, CONTEXT_S) for w in planned)


def test_crossfade_hands_over_before_the_join():
    music = np.ones((1, 1000), np.float32)
    window = np.concatenate([np.full((1, 400), 0.5, np.float32), np.full((1, 300), 2.0, np.float32)], axis=1)
    joined = crossfade_join(music, window, prompt_samples=400, fade=100)
    assert joined.shape == (1, 1300)
    np.testing.assert_array_equal(joined[:, :900], 1.0)  # the original, untouched before the fade
    assert joined[0, 900] == pytest.approx(1.0) and joined[0, 999] == pytest.approx(0.5)  # hands over
    np.testing.assert_array_equal(joined[:, 1000:], 2.0)  # then what the window adds


# ------------------------------------------------------------------ a continuation

def test_continuation_is_the_clip_then_the_new_music(studio, clip5):
    request = studio.request("music", MODEL, "same groove, add strings", seed=3,
                             params={"audio": str(clip5), "duration": 0.5})
    seen = []
    result = studio.manager.run(request, RunContext(on_progress=lambda d, t: seen.append((d, t))))
    audio = result.audio
    clip = request.get("audio").conformed(RATE, 1)[0]
    assert abs(audio.samples.shape[-1] - (clip.size + 0.5 * RATE)) <= HOP  # prompt + continuation, one frame
    # The result starts with the clip itself (resampled to the model's rate) up to the short crossfade.
    fade = round(musicgen.CROSSFADE_S * RATE)
    np.testing.assert_allclose(audio.samples[:clip.size - fade - HOP], clip[:clip.size - fade - HOP], atol=1e-6)
    assert np.std(audio.samples[clip.size:]) > 1e-5  # then new audio
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert audio.info["prompt_s"] == pytest.approx(5.0) and audio.info["windows"] == 1


def test_stereo_model_continues_a_mono_clip_in_stereo(studio, clip5):
    request = studio.request("music", "facebook/musicgen-stereo-small", "pads", seed=1,
                             params={"audio": str(clip5), "duration": 0.5})
    audio = studio.manager.run(request, RunContext()).audio
    assert audio.channels == 2 and abs(audio.samples.shape[-1] - 5.5 * RATE) <= HOP


def test_the_estimate_counts_the_audio_prompt(studio, clip5):
    plain = studio.estimate(studio.request("music", MODEL, "x", seed=0, params={"duration": 5.0}))
    prompted = studio.estimate(studio.request("music", MODEL, "x", seed=0,
                                              params={"duration": 5.0, "audio": str(clip5)}))
    assert prompted.compute_seconds > plain.compute_seconds and prompted.working_bytes > plain.working_bytes
    assert "continues the 5.0 s clip by 5.0 s: 10.0 s in all" in prompted.summary()


def test_generate_keeps_the_clip_once_and_names_it(studio, clip5, tmp_path):
    first = studio.generate(studio.request("music", MODEL, "a", seed=1, params={"audio": str(clip5), "duration": 0.5}))
    again = studio.generate(studio.request("music", MODEL, "b", seed=2, params={"audio": str(clip5), "duration": 0.5}))
    stored = first.metadata["settings"]["audio"]
    assert stored.startswith("inputs/") and stored == again.metadata["settings"]["audio"]
    kept = studio.settings.output_dir / stored
    assert kept.read_bytes() == clip5.read_bytes() and len(list(kept.parent.iterdir())) == 1
    assert first.metadata["inputs"]["audio"] == {"file": stored, "name": "riff.wav", "duration": 5.0,
                                                 "sample_rate": 44100, "channels": 1}
    sidecar = json.loads(first.path.with_name(first.path.name + ".json").read_text())
    assert sidecar["settings"]["audio"] == stored
    # The stored copy is an input like any other: a run from it names the same copy.
    reused = studio.request("music", MODEL, "c", seed=1, params={"audio": str(kept), "duration": 0.5})
    assert studio.keep_inputs(reused).settings()["audio"] == stored


# ------------------------------------------------------------------ an extension

@pytest.fixture(scope="module")
def tiny_window(monkeypatch_module):
    """Windows of 1.5 s with 0.5 s of context, so 'extend to 3.5 s in three windows' runs in seconds on the tiny
    model: the same arithmetic as 30 s windows with 10 s of context extending to 70 s. (3 s windows to 7 s took
    twice the decoder steps, 359 vs 184, for the same checks; 0.5 s of context still holds the 0.1 s crossfade.)"""
    monkeypatch_module.setattr(musicgen, "MAX_DURATION", 1.5)
    monkeypatch_module.setattr(musicgen, "CONTEXT_S", 0.5)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_extension_runs_three_windows_to_the_total_with_smooth_joins(studio, tiny_window):
    seen = []
    request = studio.request("music", MODEL, "drums", seed=5, params={"extend_to": 3.5, "guidance_scale": 1.0})
    assert [(w.prompt_s, w.new_s) for w in musicgen._run_plan(studio.catalog.get(MODEL), request)[1]] == \
        [(0, 1.5), (0.5, 1), (0.5, 1)]
    audio = studio.manager.run(request, RunContext(on_progress=lambda d, t: seen.append((d, t)))).audio
    assert abs(audio.samples.shape[-1] - 3.5 * RATE) <= HOP
    assert audio.info["windows"] == 3
    totals = {t for _, t in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1]  # one progress bar over the whole
    # At each join (1.5 s and 2.5 s) the sample-to-sample step is no larger than the audio's own steps elsewhere.
    steps = np.abs(np.diff(audio.samples))
    typical = np.percentile(steps, 99.9)
    for join in (round(1.5 * RATE), round(2.5 * RATE)):
        assert steps[join - 50:join + 50].max() <= typical * 1.5


def test_a_join_hands_over_under_a_crossfade_not_a_cut():
    """The tiny model's noise-like output hides a hard cut (the test above passes with one); constant signals do not:
    the music so far at 1, the next window at -1 must meet by a ramp over the fade, never by a step of 2."""
    music, window = np.ones((1, 1000), np.float32), -np.ones((1, 800), np.float32)
    joined = musicgen.crossfade_join(music, window, prompt_samples=300, fade=200)
    assert joined.shape == (1, 1000 + 800 - 300)
    assert np.abs(np.diff(joined[0])).max() <= 2 / 199 + 1e-6
    assert joined[0, 799] == 1 and joined[0, 1000] == -1  # the original up to the fade, the window after the join


def test_cancel_in_window_two_keeps_nothing_unless_asked(studio, tiny_window):
    def cancel_in_second_window(params):
        ctx = RunContext()
        first_total = musicgen._tokens(studio.catalog.get(MODEL), 1.5)[1]
        ctx.on_progress = lambda done, total: ctx.cancel.set() if done > first_total + 3 else None
        # Unguided (a batch of one): the cancel is what is checked, not the sampling.
        request = studio.request("music", MODEL, "drums", seed=5,
                                 params={"extend_to": 3.5, "guidance_scale": 1.0, **params})
        return studio.manager.run(request, ctx)

    with pytest.raises(Cancelled):
        cancel_in_second_window({})
    partial = cancel_in_second_window({"keep_partial": True}).audio
    assert partial.info["partial"] is True and partial.info["windows_done"] == 1
    assert abs(partial.samples.shape[-1] - 1.5 * RATE) <= HOP
    assert studio.manager.snapshot()["models"][0]["state"] != "in use"  # the device is free again


# ------------------------------------------------------------------ what is refused

def test_extension_must_be_longer_than_the_clip(studio, clip5):
    with pytest.raises(InvalidInput, match=r"extend_to \(--extend\) is 4 s, but the clip 'riff.wav' is already 5.0 s long"):
        studio.request("music", MODEL, "x", params={"audio": str(clip5), "extend_to": 4})


def test_a_clip_over_the_limit_is_refused_with_the_limit(studio, tmp_path):
    long = _tone(tmp_path / "long.wav", 301, rate=8000)
    with pytest.raises(InvalidInput, match=r"'long.wav' is 301.0 s long; it takes at most 300 s: trim it"):
        studio.request("music", MODEL, "x", params={"audio": str(long)})


# ------------------------------------------------------------------ MusicGen melody follows a melody

MELODY = "facebook/musicgen-melody"


def test_melody_model_follows_the_melody_it_is_given(studio, tmp_path):
    import torch

    spec = studio.catalog.get(MELODY)
    assert spec.label == "MusicGen melody" and spec.param("audio").label == "Melody"
    a4 = _tone(tmp_path / "a4.wav", 2.0, freq=440.0)
    c5 = _tone(tmp_path / "c5.wav", 2.0, freq=523.25)

    def run(params):
        # Greedy (top-k 1): the tiny random decoder's logits are nearly flat, and sampling hides what shifts them.
        # float32 chosen, so that no precision probe reloads the model (and its scaled projection) between runs.
        request = studio.request("music", MELODY, "folk guitar", seed=4,
                                 params={"duration": 0.5, "top_k": 1, "precision": "float32", **params})
        return request, studio.manager.run(request, RunContext()).audio

    _, text_only = run({})
    # The tiny checkpoint's random projection of the chroma into the decoder moved its first logits by 4e-4 (0.1595
    # against 0.1591) where the two best tokens lay 1e-3 apart: whether a greedy token changed was the luck of the
    # CPU's rounding (on an AMX Xeon none did in 0.5 s). Scaled up, the chroma decides tokens as a trained one does.
    with torch.no_grad():
        studio.manager._entries[MELODY].model.model.audio_enc_to_dec_proj.weight.mul_(1000.0)
    request, on_a4 = run({"audio": str(a4)})
    _, on_c5 = run({"audio": str(c5)})
    assert abs(on_a4.samples.shape[-1] - 0.5 * RATE) <= HOP  # a melody does not change the length asked for
    # Same seed: only the chroma differs, and the music with it.
    assert not np.array_equal(on_a4.samples, text_only.samples)
    assert not np.array_equal(on_a4.samples, on_c5.samples)
    assert on_a4.info["melody_s"] == pytest.approx(2.0)
    assert "follows the melody of 'a4.wav' (2.0 s)" in studio.estimate(request).summary()


def test_silence_is_no_melody(studio, tmp_path):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(32000, np.float32), 32000)
    with pytest.raises(InvalidInput, match=r"the melody clip 'silence.wav' is silent .*a melody needs audible notes"):
        studio.request("music", MELODY, "x", params={"audio": str(silent)})
