"""AudioLDM2 and Stable Audio Open through the product's manager: length, determinism, steps, cancel, offload."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from studio.errors import Cancelled
from studio.run import RunContext
from tests.conftest import ROOT

MB = 1024**2
SA = "stabilityai/stable-audio-open-1.0"
CASES = [
    # (repo id, task, params, sample rate, channels)
    ("cvssp/audioldm2", "sfx", {"duration": 1.0, "steps": 3}, 16000, 1),
    ("cvssp/audioldm2-music", "music", {"duration": 0.57, "steps": 2, "scheduler": "DDIM"}, 16000, 1),
    (SA, "music", {"duration": 1.0, "steps": 3}, 44100, 2),
    (SA, "sfx", {"duration": 2.0, "steps": 2, "guidance_scale": 1.0}, 44100, 2),
]


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    return Studio(Settings(output_dir=tmp_path_factory.mktemp("out"), memory_reserve=0), catalog=catalog,
                  device=CpuDevice())


def _request(studio, model, task, params, seed=5, prompt="glass breaking"):
    return studio.request(task, model, prompt, seed=seed, params=params)


@pytest.mark.parametrize("model,task,params,rate,channels", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_generates_the_requested_clip_and_repeats_with_the_seed(studio, model, task, params, rate, channels):
    steps = []
    request = _request(studio, model, task, params)
    result = studio.manager.run(request, RunContext(on_progress=lambda d, t: steps.append((d, t))))
    audio = result.audio
    assert audio.sample_rate == rate and audio.channels == channels
    assert audio.samples.shape[-1] == round(params["duration"] * rate)
    assert float(np.std(audio.samples)) > 1e-5 and np.isfinite(audio.samples).all()
    assert steps == [(k, params["steps"]) for k in range(1, params["steps"] + 1)]  # every step, in order

    again = studio.manager.run(_request(studio, model, task, params))
    np.testing.assert_array_equal(again.audio.samples, audio.samples)
    other = studio.manager.run(_request(studio, model, task, params, seed=6))
    assert not np.array_equal(other.audio.samples, audio.samples)


def test_stable_audio_is_loaded_once_for_both_tabs(studio):
    studio.manager.run(_request(studio, SA, "music", {"duration": 0.5, "steps": 1}))
    studio.manager.run(_request(studio, SA, "sfx", {"duration": 0.5, "steps": 1}))
    rows = [m for m in studio.manager.snapshot()["models"] if m["id"] == SA]
    assert len(rows) == 1


@pytest.mark.parametrize("model,task,cancel_at", [("cvssp/audioldm2", "sfx", 2), (SA, "music", 1)])
def test_cancel_at_step_k_stops_before_step_k_plus_one(studio, model, task, cancel_at):
    seen = []
    ctx = RunContext()

    def on_progress(done, total):
        seen.append(done)
        if done == cancel_at:
            ctx.cancel.set()

    ctx.on_progress = on_progress
    with pytest.raises(Cancelled):
        studio.manager.run(_request(studio, model, task, {"duration": 1.0, "steps": 5}), ctx)
    assert seen == list(range(1, cancel_at + 1))
    # The pipeline is usable straight away.
    assert studio.manager.run(_request(studio, model, task, {"duration": 0.5, "steps": 1})).audio.samples.size


def test_candidates_are_ranked_by_clap(studio):
    result = studio.manager.run(_request(studio, "cvssp/audioldm2", "sfx", {"duration": 0.5, "steps": 2,
                                                                             "waveforms": 3}))
    scores = result.audio.info["clap_scores"]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert result.audio.samples.shape == (8000,)


def test_stable_audio_estimate_knows_the_whole_window_is_denoised(studio):
    estimate = lambda duration, steps: studio.estimate(_request(studio, SA, "music",  # noqa: E731
                                                                {"duration": duration, "steps": steps}))
    # Each step denoises the whole window: its cost does not depend on the length asked for...
    short_steps = estimate(1.0, 50).compute_seconds - estimate(1.0, 10).compute_seconds
    long_steps = estimate(2.5, 50).compute_seconds - estimate(2.5, 10).compute_seconds
    assert short_steps == pytest.approx(long_steps) and short_steps > 0
    # ...while only the clip's part of the window is decoded.
    assert estimate(1.0, 50).compute_seconds < estimate(2.5, 50).compute_seconds
    assert estimate(1.0, 50).working_bytes < estimate(2.5, 50).working_bytes


def test_stable_audio_decodes_only_what_the_clip_needs_and_matches_a_whole_window_decode(studio):
    import numpy as np
    import torch

    from models.stable_audio import decoded_latents

    request = _request(studio, SA, "music", {"duration": 0.5, "steps": 2})
    result = studio.manager.run(request)
    assert result.audio.info["decoded_latents"] < 64  # the tiny checkpoint's window is 64 latents
    with studio.manager.acquire(request) as lease:
        generator = torch.Generator().manual_seed(request.seed)
        torch.manual_seed(request.seed)
        with torch.inference_mode():
            whole = lease.model.pipe(request.prompt, negative_prompt=request.get("negative_prompt"),
                                     audio_end_in_s=0.5, num_inference_steps=2, guidance_scale=request.get("guidance_scale"),
                                     generator=generator, output_type="np").audios[0]
    ours = result.audio.samples
    assert ours.shape == whole.shape == (2, 22050)
    assert np.abs(ours - whole).max() <= 1e-3 * max(1e-6, np.abs(whole).max())
    assert decoded_latents(47.55, 1024, 2048) == 1024 and decoded_latents(5.0, 1024, 2048) == 140


def test_audioldm2_estimate_grows_with_steps_length_and_guidance(studio):
    base = {"duration": 2.0, "steps": 20}
    estimate = lambda **p: studio.estimate(_request(studio, "cvssp/audioldm2", "sfx", {**base, **p}))  # noqa: E731
    assert estimate(steps=40).compute_seconds > estimate().compute_seconds
    assert estimate(duration=4.0).working_bytes > estimate().working_bytes
    assert estimate(guidance_scale=1.0).working_bytes < estimate().working_bytes


def test_longer_than_the_checkpoint_window_is_refused_with_the_limit(studio):
    from studio.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"duration must be at most 2\.97 s for stabilityai"):
        studio.manager.run(_request(studio, SA, "music", {"duration": 5.0, "steps": 1}))


@pytest.mark.parametrize("model,task", [("cvssp/audioldm2", "sfx"), (SA, "music")])
def test_over_budget_runs_with_offload_and_stays_within_the_budget(make_studio, model, task):
    from studio.catalog import DTYPE_BYTES

    probe = make_studio(4096 * MB)
    params = {"duration": 1.0, "steps": 2}
    estimate = probe.estimate(_request(probe, model, task, params))
    family = probe.catalog.family(probe.catalog.get(model))
    parts = family.components(probe.catalog.get(model), DTYPE_BYTES[estimate.dtype])
    whole = estimate.weights_bytes + estimate.working_bytes
    smallest_that_fits = max(parts.values()) + estimate.working_bytes
    budget = (smallest_that_fits + whole) // 2  # fits the largest part, not the whole
    assert smallest_that_fits < budget < whole

    studio = make_studio(4096 * MB, budget=budget, host_capacity=10_000 * MB)
    planned = studio.estimate(_request(studio, model, task, params))
    assert planned.placement == "offload" and planned.fits
    assert "runs with CPU offload" in planned.summary()
    result = studio.manager.run(_request(studio, model, task, params))
    assert result.placement == "offload"
    assert result.audio.samples.shape[-1] == round(1.0 * result.audio.sample_rate)
    assert studio.device.peak <= budget
    assert studio.manager.max_resident_seen <= budget
    assert studio.device.peak >= max(parts.values())  # the parts really did visit the device
    assert studio.manager.used_bytes() == 0  # nothing of it stays on the device between runs


def test_offload_is_not_used_on_a_cpu_only_machine(make_studio, catalog):
    from studio.device import CpuDevice
    from studio.manager import PipelineManager

    studio = make_studio()
    manager = PipelineManager(catalog, CpuDevice(), budget_cap=2 * MB, reserve=0)
    estimate = manager.estimate_run(_request(studio, "cvssp/audioldm2", "sfx", {"duration": 1.0, "steps": 2}))
    assert estimate.placement == "device" and not estimate.fits


def test_missing_gated_repo_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "empty-cache"), HF_HUB_OFFLINE="1", STUDIO_OUTPUT_DIR=str(tmp_path / "out"))
    proc = subprocess.run(
        [sys.executable, "-m", "studio", "generate", "--model", SA, "--prompt", "rain", "--duration", "1",
         "--device", "cpu", "--out", str(tmp_path / "a.wav")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "gated" in lines[0] and "accept its licence" in lines[0] and "HF_TOKEN" in lines[0]
    assert f"https://huggingface.co/{SA}" in lines[0]
    assert not (tmp_path / "a.wav").exists()


@pytest.mark.parametrize("model", ["cvssp/audioldm2", SA])
def test_cli_done_means(tiny_cache, tmp_path, capsys, model):
    """The issue's command, through the CLI's main() in this process: the CLI's start-up, exit codes and its
    stdout JSON line are checked in real subprocesses by tests/test_cli.py; a process of its own here cost a
    torch, transformers and diffusers import (seconds each run) and checked nothing more."""
    import json

    import soundfile

    from studio.__main__ import main

    out = tmp_path / "a.wav"
    code = main(["generate", "--model", model, "--prompt", "glass breaking", "--duration", "2", "--set", "steps=2",
                 "--out", str(out), "--output-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 1, captured.out
    meta = json.loads(lines[0])
    data, rate = soundfile.read(out)
    assert rate == meta["sample_rate"] and abs(len(data) / rate - 2.0) < 1e-3
