"""The tiny diffusers repos (AudioLDM2, Stable Audio Open) load offline like the real ones and make sound.

Loading happens in a subprocess: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is
imported, so they must be set before that. The subprocess runs torch on one thread: on a busy
2-core machine, torch's default 2 OpenMP threads made single UNet steps 100x slower.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


import tests.tiny_diffusers as tiny_diffusers  # noqa: E402
from tests.tiny_diffusers import DIFFUSERS_BUILDERS  # noqa: E402
from tests.tiny_models import install_repo  # noqa: E402

AUDIOLDM2 = ["cvssp/audioldm2", "cvssp/audioldm2-music"]
STABLE_AUDIO = "stabilityai/stable-audio-open-1.0"

_ROBERTA_FILES = {"merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"}
_T5_FILES = {"special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"}
AUDIOLDM2_FILES = (
    {
        "model_index.json",
        "feature_extractor/preprocessor_config.json",
        "scheduler/scheduler_config.json",
    }
    | {f"{c}/{f}" for c in ("language_model", "text_encoder", "text_encoder_2", "vocoder")
       for f in ("config.json", "model.safetensors")}
    | {f"{c}/{f}" for c in ("projection_model", "unet", "vae")
       for f in ("config.json", "diffusion_pytorch_model.safetensors")}
    | {f"tokenizer/{f}" for f in _ROBERTA_FILES}
    | {f"tokenizer_2/{f}" for f in _T5_FILES}
)  # fmt: skip
STABLE_AUDIO_FILES = (
    {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors"}
    | {f"{c}/{f}" for c in ("projection_model", "transformer", "vae")
       for f in ("config.json", "diffusion_pytorch_model.safetensors")}
    | {f"tokenizer/{f}" for f in _T5_FILES}
)  # fmt: skip


def _snapshot(hf_home: Path, repo_id: str) -> Path:
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    return repo_dir / "snapshots" / (repo_dir / "refs" / "main").read_text()


def _files(snapshot: Path) -> set[str]:
    return {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}


def _json(snapshot: Path, name: str) -> dict:
    return json.loads((snapshot / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    for repo_id, build in DIFFUSERS_BUILDERS.items():
        start = time.monotonic()
        install_repo(home, repo_id, build)
        elapsed = time.monotonic() - start
        assert elapsed < 20, f"building {repo_id} took {elapsed:.1f} s"
    return home


# The script run in the subprocess: loads the repos like product code would and reports JSON.
_LOADER = textwrap.dedent(
    r"""
    import json, sys
    import numpy as np
    import torch
    from diffusers import (
        AudioLDM2Pipeline, DPMSolverMultistepScheduler, StableAudioPipeline,
    )
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(1)

    def stats(x):
        kind = type(x).__name__
        x = (x.detach() if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))).float()
        return {"type": kind, "shape": list(x.shape), "std": float(x.std()),
                "finite": bool(torch.isfinite(x).all()), "max_abs": float(x.abs().max())}

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    class Stop(Exception):
        pass

    out = {}
    for repo in ("cvssp/audioldm2", "cvssp/audioldm2-music"):
        r = out[repo] = {}
        # (a) the repo as published: a bare GPT2Model cannot drive generation (diffusers #12630).
        pipe = AudioLDM2Pipeline.from_pretrained(repo)
        pipe.set_progress_bar_config(disable=True)
        r["default_language_model"] = type(pipe.language_model).__name__
        try:
            pipe("glass breaking", num_inference_steps=1, audio_length_in_s=1.0)
            r["default_error"] = None
        except Exception as exc:
            r["default_error"] = f"{type(exc).__name__}: {exc}"
        # (b) the workaround.
        lm, info = GPT2LMHeadModel.from_pretrained(repo, subfolder="language_model", output_loading_info=True)
        r["lm_missing_keys"] = sorted(info["missing_keys"])
        r["lm_unexpected_keys"] = sorted(info["unexpected_keys"])
        pipe = AudioLDM2Pipeline.from_pretrained(repo, language_model=lm)
        pipe.set_progress_bar_config(disable=True)
        r["language_model"] = type(pipe.language_model).__name__
        r["tokenizers"] = [type(pipe.tokenizer).__name__, type(pipe.tokenizer_2).__name__]
        r["scheduler"] = type(pipe.scheduler).__name__
        r["vae_scale_factor"] = pipe.vae_scale_factor
        r["sampling_rate"] = pipe.vocoder.config.sampling_rate
        r["offload_seq"] = getattr(pipe, "model_cpu_offload_seq", None)
        r["has_interrupt"] = hasattr(pipe, "interrupt") or hasattr(pipe, "_interrupt")
        calls = []
        a = pipe("glass breaking", num_inference_steps=3, audio_length_in_s=1.0, generator=gen(0),
                 callback=lambda step, t, latents: calls.append([step, int(t), list(latents.shape)]),
                 callback_steps=1).audios
        b = pipe("glass breaking", num_inference_steps=3, audio_length_in_s=1.0, generator=gen(0)).audios
        c = pipe("glass breaking", num_inference_steps=3, audio_length_in_s=1.0, generator=gen(1)).audios
        r["audio"] = stats(a)
        r["deterministic"] = bool(np.array_equal(a, b))
        r["seed_matters"] = not bool(np.array_equal(a, c))
        r["callback_calls"] = calls
        if repo != "cvssp/audioldm2":
            continue
        r["lengths"] = {str(s): list(pipe("rain", num_inference_steps=1, audio_length_in_s=s, generator=gen(0)).audios.shape)
                        for s in (0.5, 1.3, 2.5)}
        r["two_waveforms"] = list(pipe("rain", num_inference_steps=1, audio_length_in_s=1.0,
                                       num_waveforms_per_prompt=2, generator=gen(0)).audios.shape)
        try:
            pipe("rain", num_inference_steps=1, callback_on_step_end=lambda *a: {})
            r["callback_on_step_end"] = None
        except TypeError as exc:
            r["callback_on_step_end"] = str(exc)
        def stop_at_1(step, t, latents):
            if step == 1:
                raise Stop()
        stopped = []
        try:
            pipe("rain", num_inference_steps=5, audio_length_in_s=1.0, callback=lambda *a: (stopped.append(a[0]), stop_at_1(*a)))
        except Stop:
            r["stopped_after"] = stopped
        r["after_stop"] = list(pipe("rain", num_inference_steps=1, audio_length_in_s=0.5).audios.shape)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        r["dpm_scheduler"] = type(pipe.scheduler).__name__
        r["dpm_audio"] = stats(pipe("glass breaking", num_inference_steps=3, audio_length_in_s=1.0, generator=gen(0)).audios)
        try:
            pipe.enable_model_cpu_offload()
            r["offload_enable"] = "ok"
            pipe("rain", num_inference_steps=1, audio_length_in_s=0.5)
            r["offload_generate"] = "ok"
        except Exception as exc:
            r["offload_generate"] = f"{type(exc).__name__}: {exc}"
        r["cuda"] = torch.cuda.is_available()

    r = out["stabilityai/stable-audio-open-1.0"] = {}
    pipe = StableAudioPipeline.from_pretrained("stabilityai/stable-audio-open-1.0")
    pipe.set_progress_bar_config(disable=True)
    r["scheduler"] = type(pipe.scheduler).__name__
    r["tokenizer"] = type(pipe.tokenizer).__name__
    r["sampling_rate"] = pipe.vae.config.sampling_rate
    r["hop_length"] = pipe.vae.hop_length
    r["sample_size"] = pipe.transformer.config.sample_size
    r["offload_seq"] = pipe.model_cpu_offload_seq
    r["has_interrupt"] = hasattr(pipe, "interrupt") or hasattr(pipe, "_interrupt")
    calls = []
    a = pipe("rain", num_inference_steps=3, audio_end_in_s=1.0, generator=gen(0),
             callback=lambda step, t, latents: calls.append([step, float(t), list(latents.shape)])).audios
    b = pipe("rain", num_inference_steps=3, audio_end_in_s=1.0, generator=gen(0)).audios
    c = pipe("rain", num_inference_steps=3, audio_end_in_s=1.0, generator=gen(1)).audios
    r["audio"] = stats(a)
    r["deterministic"] = bool(torch.equal(a, b))
    r["seed_matters"] = not bool(torch.equal(a, c))
    r["callback_calls"] = calls
    r["np_audio"] = stats(pipe("rain", num_inference_steps=2, audio_end_in_s=0.5, output_type="np", generator=gen(0)).audios)
    r["window"] = list(pipe("rain", num_inference_steps=2, audio_start_in_s=0.25, audio_end_in_s=1.25, generator=gen(0)).audios.shape)
    r["default"] = list(pipe("rain", num_inference_steps=2, generator=gen(0)).audios.shape)
    try:
        pipe("rain", num_inference_steps=2, audio_end_in_s=3.5)
        r["too_long"] = None
    except ValueError as exc:
        r["too_long"] = str(exc)
    try:
        pipe.enable_model_cpu_offload()
        r["offload_enable"] = "ok"
    except Exception as exc:
        r["offload_enable"] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def loaded(hf_home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _assert_sound(audio: dict) -> None:
    assert audio["finite"]
    assert audio["std"] > 1e-3
    assert audio["max_abs"] <= 1.0


# --------------------------------------------------------------------------------------------
# Layout and configs (no subprocess)
# --------------------------------------------------------------------------------------------


def test_catalog_names_the_real_repo_ids():
    assert set(DIFFUSERS_BUILDERS) == {*AUDIOLDM2, STABLE_AUDIO}


@pytest.mark.parametrize("repo_id", [*AUDIOLDM2, STABLE_AUDIO])
def test_layout_mirrors_the_real_repo(hf_home, repo_id):
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    sha = (repo_dir / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    snap = repo_dir / "snapshots" / sha
    assert _files(snap) == (STABLE_AUDIO_FILES if repo_id == STABLE_AUDIO else AUDIOLDM2_FILES)
    total = sum(p.stat().st_size for p in snap.rglob("*") if p.is_file())
    assert total < 20e6, f"{repo_id}: {total / 1e6:.1f} MB"


@pytest.mark.parametrize("repo_id", AUDIOLDM2)
def test_audioldm2_configs_keep_the_real_relationships(hf_home, repo_id):
    snap = _snapshot(hf_home, repo_id)
    index = _json(snap, "model_index.json")
    assert index["_class_name"] == "AudioLDM2Pipeline"
    assert index["language_model"] == ["transformers", "GPT2Model"]  # the real repos' (buggy) entry
    assert index["tokenizer"] == ["transformers", "RobertaTokenizerFast"]
    assert index["tokenizer_2"] == ["transformers", "T5TokenizerFast"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["unet"] == ["audioldm2", "AudioLDM2UNet2DConditionModel"]
    lm = _json(snap, "language_model/config.json")
    assert lm["architectures"] == ["GPT2Model"] and lm["max_new_tokens"] == 8
    vocoder = _json(snap, "vocoder/config.json")
    assert (vocoder["sampling_rate"], vocoder["model_in_dim"]) == (16000, 64)
    hop = 1
    for rate in vocoder["upsample_rates"]:
        hop *= rate
    assert hop == tiny_diffusers.AUDIOLDM2_HOP == 160
    vae = _json(snap, "vae/config.json")
    assert vae["latent_channels"] == 8 and len(vae["block_out_channels"]) == 3  # scale factor 4
    unet = _json(snap, "unet/config.json")
    assert unet["in_channels"] == unet["out_channels"] == 8
    # default length: sample_size * vae scale factor * hop / sampling rate = 10.24 s
    assert unet["sample_size"] * 4 * hop / vocoder["sampling_rate"] == pytest.approx(10.24)
    clap = _json(snap, "text_encoder/config.json")
    t5 = _json(snap, "text_encoder_2/config.json")
    proj = _json(snap, "projection_model/config.json")
    assert proj["text_encoder_dim"] == clap["projection_dim"]
    assert proj["text_encoder_1_dim"] == t5["d_model"]
    assert proj["langauge_model_dim"] == lm["n_embd"]
    assert unet["cross_attention_dim"] == [[None, lm["n_embd"], t5["d_model"]]] * 4
    assert len({clap["projection_dim"], t5["d_model"], lm["n_embd"]}) == 3  # distinct: mix-ups fail
    assert _json(snap, "tokenizer/tokenizer_config.json")["model_max_length"] == 512
    assert _json(snap, "tokenizer_2/tokenizer_config.json")["model_max_length"] == 128
    assert _json(snap, "feature_extractor/preprocessor_config.json")["sampling_rate"] == 48000


def test_stable_audio_configs_keep_the_real_relationships(hf_home):
    snap = _snapshot(hf_home, STABLE_AUDIO)
    index = _json(snap, "model_index.json")
    assert index["_class_name"] == "StableAudioPipeline"
    assert index["scheduler"] == ["diffusers", "CosineDPMSolverMultistepScheduler"]
    assert index["tokenizer"] == ["transformers", "T5TokenizerFast"]
    vae = _json(snap, "vae/config.json")
    assert (vae["sampling_rate"], vae["audio_channels"]) == (44100, 2)
    assert vae["downsampling_ratios"] == [2, 4, 4, 8, 8]
    dit = _json(snap, "transformer/config.json")
    proj = _json(snap, "projection_model/config.json")
    t5 = _json(snap, "text_encoder/config.json")
    latent_channels = tiny_diffusers.STABLE_AUDIO_LATENT_CHANNELS  # the real repo: 64
    assert dit["in_channels"] == dit["out_channels"] == vae["decoder_input_channels"] == latent_channels
    # The encoder gives a mean and a scale per latent channel (the real repo: 128 and 64): a clip it encodes fits
    # the DiT and the decoder.
    assert vae["encoder_hidden_size"] == 2 * latent_channels
    assert proj["text_encoder_dim"] == proj["conditioning_dim"] == t5["d_model"]
    assert dit["cross_attention_input_dim"] == proj["conditioning_dim"]
    assert dit["global_states_input_dim"] == 2 * proj["conditioning_dim"]
    assert (proj["min_value"], proj["max_value"]) == (0, 512)
    assert dit["sample_size"] == tiny_diffusers.STABLE_AUDIO_SAMPLE_SIZE
    assert tiny_diffusers.STABLE_AUDIO_MAX_SECONDS == pytest.approx(dit["sample_size"] * 2048 / 44100)
    sched = _json(snap, "scheduler/scheduler_config.json")
    assert (sched["sigma_min"], sched["sigma_max"], sched["prediction_type"]) == (0.3, 500, "v_prediction")
    assert _json(snap, "tokenizer/tokenizer_config.json")["model_max_length"] == 128


def test_builds_are_byte_identical(hf_home, tmp_path):
    for repo_id, build in DIFFUSERS_BUILDERS.items():
        if repo_id == "cvssp/audioldm2-music":
            continue
        a, b = _snapshot(hf_home, repo_id), install_repo(tmp_path, repo_id, build)
        assert _files(a) == _files(b)
        for name in _files(a):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (repo_id, name)


# --------------------------------------------------------------------------------------------
# Loading and generating offline (one subprocess)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repo_id", AUDIOLDM2)
def test_audioldm2_as_published_fails_with_the_gpt2model_bug(loaded, repo_id):
    r = loaded[repo_id]
    assert r["default_language_model"] == "GPT2Model"
    assert r["default_error"] is not None
    assert "_update_model_kwargs_for_generation" in r["default_error"]


@pytest.mark.parametrize("repo_id", AUDIOLDM2)
def test_audioldm2_generates_with_the_lm_head_workaround(loaded, repo_id):
    r = loaded[repo_id]
    assert r["language_model"] == "GPT2LMHeadModel"
    assert r["lm_missing_keys"] == [] and r["lm_unexpected_keys"] == []
    assert r["tokenizers"] == ["RobertaTokenizer", "T5Tokenizer"]  # transformers 5: *Fast are aliases
    assert r["scheduler"] == "DDIMScheduler"
    assert (r["vae_scale_factor"], r["sampling_rate"]) == (4, 16000)
    assert r["audio"]["type"] == "ndarray" and r["audio"]["shape"] == [1, 16000]  # output_type="np"
    _assert_sound(r["audio"])
    assert r["deterministic"] and r["seed_matters"]
    # legacy callback(step, timestep, latents), once per step; latents (batch, 8, frames / 4, 64 / 4)
    assert [c[0] for c in r["callback_calls"]] == [0, 1, 2]
    assert all(c[2] == [1, 8, 25, 16] for c in r["callback_calls"])
    assert r["offload_seq"] is None and r["has_interrupt"] is False


def test_audioldm2_lengths_callbacks_and_schedulers(loaded):
    r = loaded["cvssp/audioldm2"]
    assert r["lengths"] == {"0.5": [1, 8000], "1.3": [1, 20800], "2.5": [1, 40000]}
    assert r["two_waveforms"] == [2, 16000]
    assert "callback_on_step_end" in r["callback_on_step_end"]  # no such argument in 0.42.1
    assert r["stopped_after"] == [0, 1]  # raising from the callback interrupts the run
    assert r["after_stop"] == [1, 8000]  # and the pipeline is still usable
    assert r["dpm_scheduler"] == "DPMSolverMultistepScheduler"
    assert r["dpm_audio"]["shape"] == [1, 16000]
    _assert_sound(r["dpm_audio"])
    if not r["cuda"]:
        # AudioLDM2 overrides enable_model_cpu_offload(device="cuda"): enabling works, running fails.
        assert r["offload_enable"] == "ok"
        assert r["offload_generate"].startswith("AssertionError: Torch not compiled with CUDA")


def test_stable_audio_generates_offline(loaded):
    r = loaded[STABLE_AUDIO]
    assert r["scheduler"] == "CosineDPMSolverMultistepScheduler"
    assert r["tokenizer"] == "T5Tokenizer"
    assert (r["sampling_rate"], r["hop_length"], r["sample_size"]) == (44100, 2048, 64)
    assert r["offload_seq"] == "text_encoder->projection_model->transformer->vae"
    assert r["has_interrupt"] is False
    # output_type defaults to "pt": a torch tensor (batch, channels, samples), cropped to the request
    assert r["audio"]["type"] == "Tensor" and r["audio"]["shape"] == [1, 2, 44100]
    _assert_sound(r["audio"])
    assert r["deterministic"] and r["seed_matters"]
    assert [c[0] for c in r["callback_calls"]] == [0, 1, 2]
    # (batch, latent channels, the whole window) every time
    assert all(c[2] == [1, tiny_diffusers.STABLE_AUDIO_LATENT_CHANNELS, 64] for c in r["callback_calls"])
    assert r["np_audio"]["type"] == "ndarray" and r["np_audio"]["shape"] == [1, 2, 22050]
    assert r["window"] == [1, 2, 44100]  # audio_start_in_s=0.25 .. audio_end_in_s=1.25
    assert r["default"] == [1, 2, 64 * 2048]  # audio_end_in_s=None: the full window, 2.97 s
    assert "longer than the model maximum possible length" in r["too_long"]
    assert r["offload_enable"] == "RuntimeError: `enable_model_cpu_offload` requires accelerator, but not found"
