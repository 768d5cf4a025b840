"""Stable Audio 3: converted once from Stability's format on first use, then generate, vary and inpaint with one
loaded model.

On the tiny checkpoints of tests/tiny_stable_audio_3.py, stored in the original layout (model_config.json,
model.safetensors under stable-audio-tools' names, t5gemma-b-b-ul2/) under the real repo ids. The first run of
the module converts (its stages, progress and estimate are recorded by the `first` fixture); the rest use it.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import soundfile

from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.cli_process import run_studio
from tests.conftest import ROOT, cpu_studio
from tests.tiny_stable_audio_3 import LATENT_SAMPLES, SA3_BASE, SA3_MEDIUM, build_components

RATE = 44100
STAGE = "converting, once"


def _snapshot(hf_home, repo_id):
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    return repo, repo / "snapshots" / (repo / "refs" / "main").read_text()


def _request(studio, mode="generate", seed=7, prompt="rain on a tin roof", repo=SA3_MEDIUM, **params):
    # float32: the comparisons below are exact; auto picks bfloat16 on a CPU with native bfloat16 (tested below).
    settings = {"mode": mode, "steps": 3, "precision": "float32", **params}
    if mode == "generate":
        settings.setdefault("duration", 2.0)
    return studio.request("music", repo, prompt, seed=seed, params=settings)


def _run(studio, request, stages=None, progress=None, ctx=None):
    ctx = ctx or RunContext()
    if stages is not None:
        ctx.on_stage = stages.append
    if progress is not None:
        ctx.on_progress = lambda done, total: progress.append((stages[-1] if stages else None, done, total))
    return studio.manager.run(request, ctx)


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


@pytest.fixture(scope="module")
def first(studio):
    """The module's first run of medium, from a cache with no conversion: estimates before and after, its stages
    and progress, and how long the conversion took."""
    from models import sa3_convert

    shutil.rmtree(sa3_convert.converted_root(SA3_MEDIUM), ignore_errors=True)
    request = _request(studio)
    spec = studio.catalog.get(SA3_MEDIUM)
    before = studio.estimate(request), studio.manager.sizer.sizes(spec, request, "cpu")
    stages, progress = [], []
    result = _run(studio, request, stages, progress)
    folder = sa3_convert.converted(SA3_MEDIUM)
    after = studio.estimate(request), studio.manager.sizer.sizes(spec, request, "cpu")
    return {"request": request, "result": result, "stages": stages, "progress": progress, "folder": folder,
            "before": before, "after": after, "marker_mtime": (folder / sa3_convert.MARKER).stat().st_mtime}


# ------------------------------------------------------------------------------------------------ conversion
def test_the_first_load_converts_once_showing_the_stage_and_its_progress(studio, first):
    from models import sa3_convert

    stages = first["stages"]
    assert stages[:4] == ["queued", "loading", STAGE, "loading"] and "generating" in stages
    converting = [(done, total) for stage, done, total in first["progress"] if stage == STAGE]
    assert converting and converting[-1][0] == converting[-1][1]  # megabytes done of the total, to the end
    assert [d for d, _ in converting] == sorted(d for d, _ in converting)
    folder = first["folder"]
    assert folder.parent == sa3_convert.converted_root(SA3_MEDIUM)
    assert folder.name == sa3_convert.marker(folder)["commit"]
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableAudio3Pipeline"
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["stochastic_sampling"] is True
    # A second load (after an unload) reads the converted folder: no conversion stage, the folder untouched.
    studio.manager.unload(SA3_MEDIUM)
    stages = []
    _run(studio, first["request"], stages)
    assert STAGE not in stages and "loading" in stages
    assert (folder / sa3_convert.MARKER).stat().st_mtime == first["marker_mtime"]


def test_the_estimate_counts_the_conversion_before_it_happens_and_not_after(first):
    (estimate, sizes), (later, later_sizes) = first["before"], first["after"]
    assert estimate.prepares == "converts the checkpoint to diffusers' format once" and estimate.prepare_seconds > 0
    assert "converts the checkpoint to diffusers' format once (~" in estimate.summary()
    assert later.prepares == "" and later.prepare_seconds == 0
    # The plan holds the conversion's peak (a shard and the tokenizer) as the load's; once converted, nothing.
    assert sizes.load_peak > 0 and later_sizes.load_peak == 0


def test_the_conversion_gives_the_pipeline_built_from_the_same_weights(studio, first):
    import torch
    from diffusers import StableAudio3Pipeline

    direct = StableAudio3Pipeline(**build_components("rf_denoiser"))
    with studio.manager.acquire(first["request"]) as lease:
        converted = lease.model.pipe
        for name in ("transformer", "vae", "duration_embedder", "text_encoder"):
            ours, theirs = getattr(converted, name).state_dict(), getattr(direct, name).state_dict()
            assert ours.keys() == theirs.keys(), name
            assert all(torch.equal(ours[k], theirs[k]) for k in ours), name  # bit for bit
        assert type(converted.scheduler) is type(direct.scheduler)
        assert converted.scheduler.config.stochastic_sampling is direct.scheduler.config.stochastic_sampling is True
    with torch.inference_mode():
        expected = direct("rain on a tin roof", duration=2.0, num_inference_steps=3,
                          generator=torch.Generator().manual_seed(7)).audios[0].numpy()
    audio = first["result"].audio.samples
    assert audio.shape == expected.shape == (2, 2 * RATE)
    # The same weights, but the converted ones sit in memory-mapped safetensors (unaligned): float32 matrix
    # products round differently. Measured: 8e-7 at most (0.0 once the tensors are copied to aligned memory).
    np.testing.assert_allclose(audio, expected, atol=2e-5, rtol=0)


def test_a_new_upstream_commit_converts_again_and_a_damaged_conversion_too(studio, first, monkeypatch):
    from models import sa3_convert

    monkeypatch.setattr(sa3_convert, "MAX_SHARD_BYTES", 40_000)  # several shards per part, as the real 9.2 GB has

    hf_home = sa3_convert.studio_cache().parent
    repo, snapshot = _snapshot(hf_home, SA3_MEDIUM)
    old = snapshot.name
    new = "0" * 39 + "1"
    shutil.copytree(snapshot, repo / "snapshots" / new)
    try:
        (repo / "refs" / "main").write_text(new)
        assert sa3_convert.pending(SA3_MEDIUM) is not None
        studio.manager.unload(SA3_MEDIUM)
        ctx = RunContext()
        ctx.on_progress = lambda done, total: ctx.cancel.set()  # Cancel while converting: nothing is left behind
        with pytest.raises(Cancelled):
            studio.manager.run(first["request"], ctx)
        assert not any(sa3_convert.converted_root(SA3_MEDIUM).glob(f"*{new}*"))
        stages = []
        sharded = _run(studio, first["request"], stages).audio.samples
        assert STAGE in stages
        # Read back from shards: the same weights (at other memory offsets, so rounded apart as in the test above).
        np.testing.assert_allclose(sharded, first["result"].audio.samples, atol=2e-5, rtol=0)
        root = sa3_convert.converted_root(SA3_MEDIUM)
        assert sorted(p.name for p in root.iterdir()) == [new]  # the older commit's conversion is removed
        assert len(list((root / new / "transformer").glob("*.safetensors"))) > 2
        assert (root / new / "text_encoder" / "model.safetensors.index.json").is_file()
        # Damaged: a file cut short. Half-written: a folder without the marker (what a killed run leaves).
        weights = sorted((root / new / "transformer").glob("*.safetensors"))[0]
        weights.write_bytes(weights.read_bytes()[:-10])
        assert sa3_convert.converted(SA3_MEDIUM) is None and sa3_convert.pending(SA3_MEDIUM) is not None
        studio.manager.unload(SA3_MEDIUM)
        stages = []
        _run(studio, first["request"], stages)
        assert STAGE in stages and sa3_convert.converted(SA3_MEDIUM) == root / new
        (root / new / sa3_convert.MARKER).unlink()
        assert sa3_convert.converted(SA3_MEDIUM) is None
    finally:
        (repo / "refs" / "main").write_text(old)
        shutil.rmtree(repo / "snapshots" / new, ignore_errors=True)
    studio.manager.unload(SA3_MEDIUM)
    sa3_convert.convert(SA3_MEDIUM)  # back to the session's commit, for the tests after this one


def test_a_repo_already_in_diffusers_format_loads_directly(studio):
    from diffusers import StableAudio3Pipeline

    from models import sa3_convert, stable_audio_3

    hf_home = sa3_convert.studio_cache().parent
    repo, snapshot = _snapshot(hf_home, SA3_BASE)
    old, new = snapshot.name, "0" * 39 + "2"
    StableAudio3Pipeline(**build_components("rectified_flow", seed=3400)).save_pretrained(repo / "snapshots" / new)
    try:
        (repo / "refs" / "main").write_text(new)
        assert sa3_convert.layout(SA3_BASE) == "diffusers" and sa3_convert.pending(SA3_BASE) is None
        stages = []
        result = _run(studio, _request(studio, repo=SA3_BASE, guidance_scale=3.0), stages)
        assert STAGE not in stages and result.audio.samples.shape == (2, 2 * RATE)
        assert stable_audio_3.dit_depth(studio.catalog.get(SA3_BASE)) == 2  # read from transformer/config.json
        assert not (sa3_convert.converted_root(SA3_BASE) / new).exists()
    finally:
        studio.manager.unload(SA3_BASE)
        (repo / "refs" / "main").write_text(old)
        shutil.rmtree(repo / "snapshots" / new, ignore_errors=True)


def test_the_time_estimate_counts_the_layers_the_checkpoint_has(studio, first, monkeypatch):
    from models import stable_audio_3

    spec = studio.catalog.get(SA3_MEDIUM)
    assert stable_audio_3.dit_depth(spec) == 2  # the tiny original-format checkpoint's model_config.json
    request = _request(studio, steps=8, duration=10.0)
    decode = stable_audio_3.AUTOENCODER_UNITS * stable_audio_3._autoencoder_cost(stable_audio_3._latents(10.0))
    assert stable_audio_3.work_units(spec, request) - decode == pytest.approx(8 * 2 / 24)
    monkeypatch.setattr(stable_audio_3, "cached_json", lambda repo_id, filename: None)  # nothing cached yet
    assert stable_audio_3.dit_depth(spec) == 24
    assert stable_audio_3.work_units(spec, request) - decode == pytest.approx(8)  # 8 steps of the published DiT


# ------------------------------------------------------------------------------------------------ generating
def test_44_1_khz_stereo_of_the_exact_length_the_same_for_the_same_seed(studio, first):
    audio = first["result"].audio
    assert audio.sample_rate == RATE and audio.channels == 2 and audio.samples.shape[1] == 2 * RATE
    assert np.isfinite(audio.samples).all() and float(np.std(audio.samples)) > 1e-3
    odd = _run(studio, _request(studio, duration=1.37)).audio.samples
    assert odd.shape == (2, round(1.37 * RATE))
    again = _run(studio, first["request"]).audio.samples
    np.testing.assert_array_equal(_run(studio, first["request"]).audio.samples, again)  # the loaded model: bit for bit
    np.testing.assert_allclose(again, audio.samples, atol=2e-5, rtol=0)  # loaded anew since (see above)
    assert float(np.abs(_run(studio, _request(studio, seed=8)).audio.samples - again).max()) > 0.1


def test_progress_at_every_step_and_cancel_within_a_step(studio, first):
    seen = []
    _run(studio, _request(studio, steps=4), progress=seen)
    assert seen == [(None, done, 4) for done in range(1, 5)]
    ctx, steps = RunContext(), []

    def on_progress(done, total):
        steps.append(done)
        if done == 1:
            ctx.cancel.set()

    ctx.on_progress = on_progress
    with pytest.raises(Cancelled):
        studio.manager.run(_request(studio, steps=6), ctx)
    assert steps == [1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3 s of stereo chords at 44.1 kHz."""
    t = np.arange(3 * RATE) / RATE
    left = 0.3 * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 277 * t))
    right = 0.3 * (np.sin(2 * np.pi * 330 * t) + 0.5 * np.sin(2 * np.pi * 165 * t))
    path = tmp_path_factory.mktemp("clips") / "chords.wav"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), RATE)
    return path


def test_vary_and_inpaint_run_on_the_one_loaded_model(studio, first, clip):
    from studio.weights import module_bytes

    vary = _run(studio, _request(studio, "vary", audio=str(clip), strength=0.5)).audio.samples
    repaint = _request(studio, "inpaint", audio=str(clip), inpaint_start=1.0, inpaint_end=2.0)
    inpainted = _run(studio, repaint).audio.samples
    assert vary.shape == inpainted.shape == (2, 3 * RATE)
    assert studio.estimate(repaint).work == "repaints 1.0-2.0 s of the 3.0 s clip 'chords.wav'"
    with studio.manager.acquire(repaint) as lease:
        model = lease.model
        generate, varies, repaints = (model.pipeline(m) for m in ("generate", "vary", "inpaint"))
        for name in ("transformer", "vae", "text_encoder", "duration_embedder"):
            assert getattr(generate, name) is getattr(varies, name) is getattr(repaints, name)
        weights = module_bytes(model.modules())
    rows = [row for row in studio.manager.memory().models if row.id.startswith("stabilityai/stable-audio-3")]
    assert [(row.id, row.bytes) for row in rows] == [(SA3_MEDIUM, weights)]  # one model, its weights once


def test_inpaint_keeps_the_clip_outside_the_range_which_the_pipeline_alone_does_not(studio, first, clip):
    import torch

    source = soundfile.read(clip, dtype="float32")[0].T
    request = _request(studio, "inpaint", audio=str(clip), inpaint_start=1.0, inpaint_end=2.0)
    result = _run(studio, request).audio.samples
    np.testing.assert_array_equal(result[:, :RATE], source[:, :RATE])
    np.testing.assert_array_equal(result[:, 2 * RATE:], source[:, 2 * RATE:])
    assert float(np.abs(result[:, RATE + 2205: 2 * RATE - 2205] - source[:, RATE + 2205: 2 * RATE - 2205]).max()) > 0.05
    with studio.manager.acquire(request) as lease:  # the pipeline's own output: the rest only as the model follows it
        with torch.inference_mode():
            raw = lease.model.pipeline("inpaint")(
                "rain on a tin roof", duration=3.0, audio=torch.from_numpy(source)[None], mask_start_seconds=1.0,
                mask_end_seconds=2.0, num_inference_steps=3, generator=torch.Generator().manual_seed(7)).audios[0]
    # Measured on the tiny random model: the first and the last second differ from the clip by up to 1.45, as much
    # as the repainted range does (a trained model follows its inpainting condition; nothing guarantees it).
    assert float(np.abs(raw.numpy()[:, :RATE] - source[:, :RATE]).max()) > 0.05


def test_the_autoencoder_in_chunks_gives_what_it_gives_whole(studio, first):
    import torch

    from models.stable_audio_3 import _margin, decode_chunked, encode_chunked

    with studio.manager.acquire(first["request"]) as lease:
        vae = lease.model.pipe.vae
    latents = torch.randn(1, vae.config.latent_dim, 100, generator=torch.Generator().manual_seed(1))
    audio = torch.randn(1, 2, 100 * LATENT_SAMPLES - 1000, generator=torch.Generator().manual_seed(2)) * 0.3
    with torch.inference_mode():
        whole, chunked = vae.decode(latents).sample, decode_chunked(vae, latents, chunk=24, whole=0)
        encoded, encoded_chunked = vae.encode(audio).latents, encode_chunked(vae, audio, chunk=24, whole=0)
    assert _margin(vae) == 2 and chunked.shape == whole.shape and encoded_chunked.shape == encoded.shape
    # Measured: decoding 9.4e-7 apart (of a peak of 1.8), encoding 6e-8 (of 0.74): the same arithmetic in another
    # order. A margin one latent short: 1.4e-3 and 2.4e-5.
    assert float((chunked - whole).abs().max()) < 1e-5 and float((encoded_chunked - encoded).abs().max()) < 1e-6


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("params, message", [
    ({"mode": "vary"}, r"mode 'vary' of stabilityai/stable-audio-3-medium needs a clip in Audio: upload or record"),
    ({"mode": "inpaint", "inpaint_start": 2.0, "inpaint_end": 1.0},
     r"inpaint_end \(1 s\) must be after inpaint_start \(2 s\).*set the end after the start"),
    ({"mode": "inpaint", "inpaint_start": 1.0, "inpaint_end": 1.0}, r"inpaint_end \(1 s\) must be after"),
    ({"mode": "inpaint", "inpaint_start": 2.0, "inpaint_end": 4.5},
     r"the inpaint range 2-4\.5 s is not inside the 3\.00 s clip 'chords\.wav': pick a range within 0-3\.00 s"),
    ({"mode": "inpaint", "inpaint_start": 1.0, "inpaint_end": 1.01},
     r"the inpaint range 1-1\.01 s covers no whole step of the model's time grid \(93 ms\): widen it to at least"),
    ({"mode": "vary", "strength": 0}, r"strength must be between 0\.01 and 1"),
    ({"mode": "remix"}, r"mode 'remix' is not available.*choose one of: generate, vary, inpaint"),
    ({"duration": 400}, r"duration must be between 1 and 380"),
])
def test_bad_input_is_refused_with_the_value_and_the_fix(studio, clip, params, message):
    if params.get("mode") in ("inpaint",) or "strength" in params:
        params = {"audio": str(clip), **params}
    with pytest.raises(InvalidInput, match=message):
        studio.request("music", SA3_MEDIUM, "rain", seed=1, params=params)


def test_the_distilled_model_offers_no_guidance_and_the_base_model_does(catalog):
    medium, base = catalog.get(SA3_MEDIUM), catalog.get(SA3_BASE)
    assert medium.param("guidance_scale") is None and medium.param("steps").default == 8
    assert base.param("guidance_scale").modes == ("generate",) and base.param("steps").default == 100
    assert medium.gated and medium.max_duration == 380 and medium.channels == 2 and medium.sample_rate == RATE
    assert [p.name for p in medium.params if p.modes == ("inpaint",)] == ["inpaint_start", "inpaint_end"]


def test_the_page_shows_a_conversion_as_its_stage_with_its_share(first):
    from studio.ui.runs import ProgressBridge

    shown, clock = [], [0.0]
    bridge = ProgressBridge(threading_event(), lambda value, desc: shown.append((value, desc)),
                            clock=lambda: clock[0], tick_s=60)
    bridge.context.planned(first["before"][0])
    bridge.context.stage("loading")
    bridge.context.stage(STAGE)
    for done in (10, 40):
        clock[0] += 1
        bridge.context.progress(done, 100)
    assert shown[-1][1].startswith("Converting, once · 40% · about")
    bridge.context.stage("loading")
    bridge.context.stage("generating")
    bridge.context.progress(1, 3)
    assert shown[-1][1].startswith("Generating · 1/3 steps")  # the conversion's figures are no steps
    assert all(later[0] >= earlier[0] for earlier, later in zip(shown, shown[1:]))


def threading_event():
    import threading

    return threading.Event()


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_generates_20_s_offline_converting_on_first_use(tiny_cache, first, tmp_path):
    from models import sa3_convert

    root = sa3_convert.converted_root(SA3_MEDIUM)
    shutil.rmtree(root, ignore_errors=True)
    out = tmp_path / "rain.wav"
    started = time.monotonic()
    proc = run_studio(["generate", "--model", SA3_MEDIUM, "--prompt", "rain on a tin roof", "--duration", "20",
                       "--out", str(out), "--output-dir", str(tmp_path / "outputs")], cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(proc.stdout)
    data, rate = soundfile.read(out)
    assert rate == RATE and data.shape == (20 * RATE, 2) and meta["duration"] == 20.0
    assert meta["model"] == SA3_MEDIUM and meta["settings"]["steps"] == 8 and meta["settings"]["mode"] == "generate"
    assert sa3_convert.converted(SA3_MEDIUM) is not None  # converted by this run, on first use
    assert time.monotonic() - started < 120


def test_auto_picks_bfloat16_on_a_cpu_that_computes_it_natively_and_float32_elsewhere(studio, monkeypatch):
    from studio import device

    spec = studio.catalog.get(SA3_MEDIUM)
    sizer = studio.manager.sizer
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert sizer.dtype(spec, "cpu") == "bfloat16"
    assert sizer.dtype(spec, "cuda") == "float16"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert sizer.dtype(spec, "cpu") == "float32"
    assert sizer.dtype(spec, "cpu", "bfloat16") == "bfloat16"  # a user's choice always wins


def test_a_bfloat16_run_on_the_cpu_gives_finite_audio_of_the_length(studio, first):
    request = _request(studio, precision="bfloat16", duration=1.0)
    result = _run(studio, request)
    assert result.dtype == "bfloat16"
    samples = np.asarray(result.audio.samples)
    assert samples.dtype == np.float32 and samples.shape == (2, RATE)
    assert np.isfinite(samples).all() and float(np.abs(samples).max()) > 0
