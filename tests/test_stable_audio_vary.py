"""Stable Audio Open varies a clip: strength from "the clip back" to "ignore it", seed, cancel, any input, limits.

On the tiny checkpoint (tests/tiny_diffusers.py: a 2.97 s window, an Oobleck VAE whose latents and output follow
its input). "Close to the clip" means close to the clip's VAE round trip (encode, decode): a random VAE does not
reconstruct the clip itself, and a variation at strength 0 can at best give back what the VAE makes of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.conftest import cpu_studio

SA = "stabilityai/stable-audio-open-1.0"
RATE = 44100


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """1.5 s of stereo chords at 44.1 kHz, pulsing twice a second: structure the VAE's latents carry."""
    t = np.arange(int(1.5 * RATE)) / RATE
    pulse = 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)
    left = 0.3 * pulse * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 277 * t))
    right = 0.3 * pulse * (np.sin(2 * np.pi * 330 * t) + 0.5 * np.sin(2 * np.pi * 165 * t))
    path = tmp_path_factory.mktemp("clips") / "loop.wav"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), RATE)
    return path


def _vary(studio, clip, seed=5, **params):
    settings = {"steps": 4, "guidance_scale": 1.0, "audio": str(clip), **params}
    return studio.request("music", SA, "a drum loop", seed=seed, params=settings)


def _round_trip(studio, request):
    """The clip through the checkpoint's VAE alone: encoded (the posterior's mean), decoded, cropped."""
    import torch

    with studio.manager.acquire(request) as lease:
        pipe = lease.model.pipe
        window = pipe.transformer.config.sample_size * pipe.vae.hop_length
        clip = request.get("audio").conformed(RATE, 2)
        padded = np.zeros((2, window), np.float32)
        padded[:, : clip.shape[1]] = clip
        with torch.inference_mode():
            latents = pipe.vae.encode(torch.from_numpy(padded)[None]).latent_dist.mean
            return pipe.vae.decode(latents).sample[0, :, : clip.shape[1]].numpy()


def _correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_strength_goes_from_the_clip_back_to_ignoring_it(studio, loop):
    reference = _round_trip(studio, _vary(studio, loop))
    runs = {k: studio.manager.run(_vary(studio, loop, strength=k)).audio.samples for k in (0.0, 0.1, 0.2, 1.0)}
    text_only = studio.manager.run(studio.request("music", SA, "a drum loop", seed=5, params={
        "steps": 4, "guidance_scale": 1.0, "duration": 1.5})).audio.samples
    closeness = {k: _correlation(audio, reference) for k, audio in runs.items()}
    assert runs[0.0].shape == reference.shape == (2, round(1.5 * RATE))
    # Strength 0 starts under noise 0.3 (the schedule's floor) and takes one step, in which the tiny random DiT's
    # guess enters with weight 0.29 (the v-prediction's c_out at sigma 0.3) beside the clip's latents at 0.92
    # (c_skip): the result is the round trip, blurred. Measured: correlation 0.83 with the round trip.
    assert closeness[0.0] > 0.75
    # The more noise covers the clip, the less of it is left. Measured: 0.55 at 0.1 (noise 0.63), 0.24 at 0.2
    # (noise 1.3); from 0.3 (noise 2.8) on, 0.12-0.18, what any output of this random decoder shares with another.
    assert closeness[0.0] > closeness[0.1] + 0.1 > closeness[0.2] + 0.2
    # Strength 1 starts under noise 500, where the clip's latents (std about 1) vanish: the result is the
    # text-only run of the same seed (the variation draws its starting noise first, from the same generator).
    # Measured: correlation 0.99999999 with it, 0.18 with the round trip.
    assert closeness[1.0] < 0.5
    assert _correlation(runs[1.0], text_only) > 0.999


def test_a_variation_repeats_with_its_seed_and_changes_with_another(studio, loop):
    first = studio.manager.run(_vary(studio, loop, strength=0.5)).audio.samples
    again = studio.manager.run(_vary(studio, loop, strength=0.5)).audio.samples
    other = studio.manager.run(_vary(studio, loop, seed=6, strength=0.5)).audio.samples
    np.testing.assert_array_equal(again, first)
    assert not np.array_equal(other, first)


def test_a_variation_runs_strength_times_steps_and_says_so(studio, loop):
    seen = []
    request = _vary(studio, loop, steps=8, strength=0.5)
    result = studio.manager.run(request, RunContext(on_progress=lambda done, total: seen.append((done, total))))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the lower half of an 8-step schedule
    assert result.audio.info["metadata"] == {"noise_level": pytest.approx(0.3 * (500 / 0.3) ** 0.5, rel=1e-3),
                                             "denoising_steps": 4}
    estimate = studio.estimate(request)
    assert estimate.work == "varies the 1.5 s clip 'loop.wav' at strength 0.5 (4 steps from noise level 12.2)"


def test_cancel_stops_a_variation_and_the_next_run_gets_the_full_schedule(studio, loop):
    seen = []
    ctx = RunContext()

    def on_progress(done, total):
        seen.append(done)
        if done == 1:
            ctx.cancel.set()

    ctx.on_progress = on_progress
    with pytest.raises(Cancelled):
        studio.manager.run(_vary(studio, loop, steps=10, strength=0.5), ctx)
    assert seen == [1]
    text_only = studio.request("music", SA, "a drum loop", seed=5, params={"duration": 1.0, "steps": 2})
    with studio.manager.acquire(text_only) as lease:
        assert lease.model.pipe.scheduler.config.sigma_max == 500  # the loaded scheduler is back
    assert studio.manager.run(text_only).audio.samples.shape == (2, RATE)


def test_a_mono_8_khz_clip_is_accepted_and_the_result_is_44_1_khz_stereo_of_its_length(studio, tmp_path):
    t = np.arange(int(1.25 * 8000)) / 8000
    path = tmp_path / "voice memo.wav"
    soundfile.write(path, (0.4 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 8000)
    request = _vary(studio, path, strength=0.3, duration=2.0)  # Duration is not used when a clip is varied
    result = studio.manager.run(request)
    audio = result.audio
    assert audio.sample_rate == RATE and audio.channels == 2
    assert audio.samples.shape[1] == round(1.25 * RATE)
    assert np.isfinite(audio.samples).all() and float(np.std(audio.samples)) > 1e-3


def test_a_clip_longer_than_the_window_is_refused_with_the_limit(studio, tmp_path):
    long = tmp_path / "long.wav"
    soundfile.write(long, np.zeros(48 * 8000, np.float32), 8000)
    with pytest.raises(InvalidInput, match=r"'long\.wav' is 48\.0 s long; it takes at most 47\.55 s"):
        _vary(studio, long)
    # The tiny checkpoint's window is 2.97 s: its own limit is named when the run starts.
    over = tmp_path / "over.wav"
    soundfile.write(over, np.zeros(int(3.5 * 8000), np.float32), 8000)
    with pytest.raises(InvalidInput, match=r"'over\.wav' is 3\.50 s long; stabilityai/stable-audio-open-1\.0 "
                                           r"varies at most 2\.97 s"):
        studio.manager.run(_vary(studio, over))


def test_the_estimate_counts_the_encoder_and_the_shorter_schedule(studio, loop):
    plain = studio.estimate(studio.request("music", SA, "a drum loop", seed=5, params={
        "steps": 40, "guidance_scale": 1.0, "duration": 1.5}))
    full = studio.estimate(_vary(studio, loop, steps=40, strength=1.0))
    half = studio.estimate(_vary(studio, loop, steps=40, strength=0.5))
    # Same 40 steps and the same decode: the variation adds the encoder over the whole window...
    assert full.compute_seconds > plain.compute_seconds
    assert full.working_bytes > plain.working_bytes  # the whole window encoded vs 1.5 s (+ margin) decoded
    # ...and half the strength is half the steps.
    assert half.compute_seconds < full.compute_seconds
    assert plain.work == ""


def test_cli_varies_a_file_and_keeps_what_the_strength_meant(tiny_cache, loop, tmp_path):
    import json

    from tests.cli_process import run_studio
    from tests.conftest import ROOT

    out = tmp_path / "varied.wav"
    proc = run_studio(
        ["generate", "--model", SA, "--prompt", "a drum loop", "--audio", str(loop), "--set", "strength=0.3",
         "--set", "steps=4", "--seed", "3", "--out", str(out), "--output-dir", str(tmp_path)], cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    data, rate = soundfile.read(out)
    assert rate == RATE and data.shape == (round(1.5 * RATE), 2)  # the clip's length, not Duration's 10 s
    assert meta["settings"]["strength"] == 0.3 and meta["settings"]["audio"].startswith("inputs/")
    assert meta["inputs"]["audio"]["name"] == "loop.wav"
    assert meta["noise_level"] == pytest.approx(0.3 * (500 / 0.3) ** 0.3, rel=1e-3) and meta["denoising_steps"] == 1
