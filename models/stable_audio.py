"""Stable Audio Open 1.0 (Stability AI): a diffusion transformer over Oobleck latents, 44.1 kHz stereo, gated."""

from __future__ import annotations

import logging
import math

import numpy as np

from studio.catalog import Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json, component_bytes

from models.common import SAFE_LOAD, DiffusersPipelineModel, check_tokenizer, seed_everything, step_callback, torch_dtype

log = logging.getLogger(__name__)

REPO = "stabilityai/stable-audio-open-1.0"
SAMPLE_RATE = 44100
WINDOW_S = 47.55  # 1024 latents x 2048 samples: the model always denoises this whole window, then crops
DECODE_STEPS = 5.8  # Oobleck decode of the whole window, in unguided steps (128 s vs 22 s a step on CPU)
# The VAE decodes only the latents that cover the clip plus this many more (its receptive field): the kept
# samples match a whole-window decode (max diff 9e-5 of a peak of 10 measured at 32; 0.027 at 8), and a 5 s
# clip decodes 2.8x faster (docs/benchmarks.md) with a fraction of the decode memory.
DECODE_MARGIN = 32

SPECS = (
    ModelSpec(
        repo_id=REPO, family="stable_audio", tasks=("music", "sfx"), label="Stable Audio Open 1.0",
        license="Stability AI Community", parameters=1_320_000_000, sample_rate=SAMPLE_RATE, channels=2,
        max_duration=WINDOW_S, gated=True,
        params=(
            duration_param(WINDOW_S, 10.0, minimum=0.5, step=0.5),
            Param("steps", int, 100, "Steps", "Denoising steps; 50-100 is the usual range.",
                  minimum=1, maximum=500, step=1),
            Param("guidance_scale", float, 7.0, "Guidance", "How closely to follow the prompt; 1 turns guidance "
                  "off and halves the work.", minimum=1.0, maximum=15.0, step=0.5),
            Param("negative_prompt", str, "Low quality.", "Negative prompt", "What to steer away from."),
        ),
        # Units: one unguided step over the full window (every clip is denoised whole). CPU measured.
        speed={"cpu": SpeedPrior(3.0, 22.0), "cuda": SpeedPrior(1.0, 0.05), "mps": SpeedPrior(2.0, 0.4)},
        unit="step", description="Music loops and sound effects up to 47 s, 44.1 kHz stereo. Gated: accept the "
        "licence on Hugging Face first.",
    ),
)


def _window(spec: ModelSpec) -> tuple[int, int]:
    """(latent length, samples per latent) of the cached checkpoint; the published ones until it is cached."""
    transformer = cached_json(spec.repo_id, "transformer/config.json") or {}
    vae = cached_json(spec.repo_id, "vae/config.json") or {}
    ratios = vae.get("downsampling_ratios", [2, 4, 4, 8, 8])
    return transformer.get("sample_size", 1024), math.prod(ratios)


def decoded_latents(duration: float, latents: int, hop: int) -> int:
    """How many latents the VAE decodes for a clip of `duration` seconds: those covering it, plus the margin."""
    return min(latents, math.ceil(duration * SAMPLE_RATE / hop) + DECODE_MARGIN)


def work_units(spec: ModelSpec, request: Request) -> float:
    """Denoising always covers the whole window; decoding only the latents the clip needs."""
    guided = 2 if request.get("guidance_scale") > 1 else 1
    latents, hop = _window(spec)
    return request.get("steps") * guided + DECODE_STEPS * decoded_latents(request.get("duration"), latents, hop) / latents


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """DiT activations over the full latent window for the guided batch, then Oobleck decoding the clip's part."""
    latents, hop = _window(spec)
    vae = cached_json(spec.repo_id, "vae/config.json") or {}
    batch = 2 if request.get("guidance_scale") > 1 else 1
    duration = request.get("duration")
    dit = 24 * batch * latents * 1536 * dtype_bytes
    decode = 3 * vae.get("decoder_channels", 128) * decoded_latents(duration, latents, hop) * hop * 2 * dtype_bytes
    return int(dit + decode + 64 * 1024**2)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    sizes = component_bytes(spec.repo_id, dtype_bytes)
    if sizes:
        return sizes
    published = {"text_encoder": 110e6, "projection_model": 2e6, "transformer": 1.06e9, "vae": 156e6}
    return {name: int(count * dtype_bytes) for name, count in published.items()}


class StableAudioModel(DiffusersPipelineModel):
    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. The checkpoint's window bounds the length (47.55 s for the real one).
        latents, hop = _window(self.spec)
        window_s = latents * hop / SAMPLE_RATE
        duration = request.get("duration")
        if duration > window_s:
            raise InvalidInput(f"duration must be at most {window_s:.2f} s for {self.spec.repo_id}, but is {duration:g}")
        steps = request.get("steps")
        # 2. Denoise the whole window with progress and cancel at every step.
        generator = seed_everything(request.seed)
        ctx.check()
        with torch.inference_mode():
            window = self.pipe(
                request.prompt,
                negative_prompt=request.get("negative_prompt") or None,
                audio_end_in_s=duration,
                num_inference_steps=steps,
                guidance_scale=request.get("guidance_scale"),
                generator=generator,
                callback=step_callback(ctx, steps),
                callback_steps=1,
                output_type="latent",
            ).audios
            # 3. Decode the latents the clip needs (not the whole window), then crop to the exact length.
            ctx.stage("decoding")
            kept = decoded_latents(duration, latents, hop)
            audio = self.pipe.vae.decode(window[..., :kept]).sample
            self.pipe.maybe_free_model_hooks()  # with CPU offload: the VAE goes back to RAM
        samples = audio[0].float().cpu().numpy().astype(np.float32)
        return Audio(samples[:, : round(duration * SAMPLE_RATE)], SAMPLE_RATE,
                     info={"steps": steps, "decoded_latents": kept})


def load(spec: ModelSpec, torch_device: str, dtype: str) -> StableAudioModel:
    from diffusers import StableAudioPipeline

    pipe = StableAudioPipeline.from_pretrained(spec.repo_id, dtype=torch_dtype(dtype), **SAFE_LOAD)
    check_tokenizer(spec, pipe.tokenizer, "tokenizer/", pipe.text_encoder.config.vocab_size)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    return StableAudioModel(spec, pipe, torch_device)


FAMILY = Family(name="stable_audio", load=load, work_units=work_units, working_bytes=working_bytes,
                components=components, libraries=("torch", "transformers", "diffusers"),
                files=(("tokenizer/tokenizer.json",),))  # the T5 tokenizer
