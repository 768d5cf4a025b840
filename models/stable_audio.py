"""Stable Audio Open 1.0 (Stability AI): a diffusion transformer over Oobleck latents, 44.1 kHz stereo, gated."""

from __future__ import annotations

import logging
import math

import numpy as np

from studio.catalog import Accepts, Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.clips import Clip
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
# Varying a clip, read from diffusers 0.42.1 (pipelines/stable_audio/pipeline_stable_audio.py, "L" = its lines):
# `initial_audio_waveforms` is zero-padded to the whole window (L454-455), VAE-encoded (L457) and added to the
# starting noise (L459), which is `latents` times the scheduler's init_noise_sigma, sqrt(sigma_max^2 + 1) (L417).
# __call__ has no strength and no timesteps or sigmas argument; it calls scheduler.set_timesteps(steps) (L655).
# With the hub's sigma_max of 500 the clip's latents (std about 1) sit under noise of std 500: the clip is all but
# ignored. A real variation, as stable-audio-tools makes it (its init_noise_level becomes the sampler's
# sigma_max): a CosineDPMSolverMultistepScheduler built from the pipeline's config with a lower sigma_max (its
# schedule then runs from there down to sigma_min), and `latents` scaled by sigma_max / init_noise_sigma, so the
# clip's latents start under noise of std exactly sigma_max, as the schedule assumes.
VARY_MIN_S = 0.5  # the shortest clip to vary: one latent is 46 ms; half a second is what Duration allows too
# Starting noise 5.8 (see noise_level). Not tuned by ear (no real weights here): it is about where Stable
# Diffusion's image-to-image starts at its default strength 0.8 (sigma 4.7-5.1, its latents also of std about 1),
# a level known to keep a picture's layout and redo its detail.
VARY_STRENGTH = 0.4
# The Oobleck encoder costs what the decoder does: 5.04 GFLOP per latent each (torch.utils.flop_counter on the
# published config) and about 6 MB per latent of float32 activations (peak RSS, 8 s vs 16 s of audio on CPU:
# 130 MB/s encoding, 125 MB/s decoding). The pipeline always encodes the whole padded window.
ENCODE_STEPS = DECODE_STEPS

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
            Param("audio", Clip, None, "Audio to vary",
                  "A clip to make a variation of (WAV, FLAC, OGG or MP3, or a recording; mono or stereo, any rate: "
                  f"it is resampled to 44.1 kHz stereo), {VARY_MIN_S:g} to {WINDOW_S:g} s long. The model starts "
                  "from it under noise set by Variation strength instead of from pure noise, and follows the "
                  "prompt. The result is exactly as long as the clip: Duration is not used.",
                  minimum=VARY_MIN_S, maximum=WINDOW_S, advanced=False),
            Param("strength", float, VARY_STRENGTH, "Variation strength",
                  "Only with Audio to vary: how much of the clip the model may change. 0 gives the clip back almost "
                  "unchanged (through the model's autoencoder and one light denoising step), 1 ignores it (as good "
                  "as no clip). The starting noise rises geometrically from the schedule's lowest level (0.3) to "
                  "its highest (500): 0.4 starts at 5.8, 0.6 at 26. A variation runs Strength x Steps steps (at "
                  "least one).",
                  minimum=0.0, maximum=1.0, step=0.05, advanced=False),
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


def _noise_range(spec: ModelSpec) -> tuple[float, float]:
    """(sigma_min, sigma_max) of the cached checkpoint's scheduler; the published 0.3 and 500 until it is cached."""
    scheduler = cached_json(spec.repo_id, "scheduler/scheduler_config.json") or {}
    return float(scheduler.get("sigma_min", 0.3)), float(scheduler.get("sigma_max", 500.0))


def noise_level(strength: float, sigma_min: float, sigma_max: float) -> float:
    """The noise a variation starts from: geometric between the schedule's ends, as its exponential sigmas are.

    Strength s starts where a full run's schedule is a fraction s of the way up from sigma_min, and a variation
    runs s x Steps steps: about the last s x Steps steps of a full run (image-to-image's `strength` in diffusers).
    """
    return sigma_min * (sigma_max / sigma_min) ** strength


def denoising_steps(request: Request) -> int:
    """Steps a run takes: Steps; for a variation the part of the schedule below its starting noise (at least 1)."""
    steps = request.get("steps")
    if request.params.get("audio") is None:
        return steps
    return max(1, round(request.get("strength") * steps))


def length(request: Request) -> float:
    """Seconds of audio a run makes: the clip's length when it varies one, else Duration."""
    clip = request.params.get("audio")
    return clip.seconds if clip is not None else request.get("duration")


def decoded_latents(duration: float, latents: int, hop: int) -> int:
    """How many latents the VAE decodes for a clip of `duration` seconds: those covering it, plus the margin."""
    return min(latents, math.ceil(duration * SAMPLE_RATE / hop) + DECODE_MARGIN)


def describe(spec: ModelSpec, request: Request) -> str:
    clip = request.params.get("audio")
    if clip is None:
        return ""
    strength = request.get("strength")
    sigma = noise_level(strength, *_noise_range(spec))
    return (f"varies the {clip.seconds:.1f} s clip {clip.name!r} at strength {strength:g} "
            f"({denoising_steps(request)} steps from noise level {sigma:.3g})")


def work_units(spec: ModelSpec, request: Request) -> float:
    """Denoising always covers the whole window; decoding only the latents the clip needs; a variation first
    encodes the whole (padded) window."""
    guided = 2 if request.get("guidance_scale") > 1 else 1
    latents, hop = _window(spec)
    encode = ENCODE_STEPS if request.params.get("audio") is not None else 0.0
    return (encode + denoising_steps(request) * guided
            + DECODE_STEPS * decoded_latents(length(request), latents, hop) / latents)


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """DiT activations over the full latent window for the guided batch, then Oobleck decoding the clip's part;
    a variation's encoder runs over the whole window before the DiT, the decoder after it, so the larger counts."""
    latents, hop = _window(spec)
    vae = cached_json(spec.repo_id, "vae/config.json") or {}
    batch = 2 if request.get("guidance_scale") > 1 else 1
    dit = 24 * batch * latents * 1536 * dtype_bytes
    decoded = decoded_latents(length(request), latents, hop)
    decode = 3 * vae.get("decoder_channels", 128) * decoded * hop * 2 * dtype_bytes
    varies = request.params.get("audio") is not None
    encode = 3 * vae.get("encoder_hidden_size", 128) * latents * hop * 2 * dtype_bytes if varies else 0
    return int(dit + max(decode, encode) + 64 * 1024**2)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    sizes = component_bytes(spec.repo_id, dtype_bytes)
    if sizes:
        return sizes
    published = {"text_encoder": 110e6, "projection_model": 2e6, "transformer": 1.06e9, "vae": 156e6}
    return {name: int(count * dtype_bytes) for name, count in published.items()}


class StableAudioModel(DiffusersPipelineModel):
    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. The checkpoint's window bounds the length (47.55 s for the real one); a clip to vary sets the length.
        latents, hop = _window(self.spec)
        window_s = latents * hop / SAMPLE_RATE
        clip = request.params.get("audio")
        duration = length(request)
        if clip is not None and duration > window_s + 1e-6:
            raise InvalidInput(f"the clip to vary {clip.name!r} is {duration:.2f} s long; {self.spec.repo_id} "
                               f"varies at most {window_s:.2f} s (its window): trim it to {window_s:.2f} s or less")
        if duration > window_s:
            raise InvalidInput(f"duration must be at most {window_s:.2f} s for {self.spec.repo_id}, but is {duration:g}")
        steps = denoising_steps(request)
        generator = seed_everything(request.seed)
        # 2. A variation starts from the clip under noise of the strength's level (see the note at the top).
        scheduler, extra, wanted = self.pipe.scheduler, {}, round(duration * SAMPLE_RATE)
        if clip is not None:
            scheduler, extra, wanted = self._variation(clip, request.get("strength"), latents * hop, generator)
        # 3. Denoise the whole window with progress and cancel at every step.
        ctx.check()
        loaded, self.pipe.scheduler = self.pipe.scheduler, scheduler
        try:
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
                    **extra,
                ).audios
                # 4. Decode the latents the clip needs (not the whole window), then crop to the exact length.
                ctx.stage("decoding")
                kept = decoded_latents(duration, latents, hop)
                audio = self.pipe.vae.decode(window[..., :kept]).sample
                self.pipe.maybe_free_model_hooks()  # with CPU offload: the VAE goes back to RAM
        finally:
            self.pipe.scheduler = loaded  # the next run (and a text-only one) gets the full schedule again
        samples = audio[0].float().cpu().numpy().astype(np.float32)
        info = {"steps": steps, "decoded_latents": kept}
        if clip is not None:  # kept in the result's metadata: what the strength meant for this checkpoint
            info["metadata"] = {"noise_level": round(scheduler.config.sigma_max, 4), "denoising_steps": steps}
        return Audio(samples[:, :wanted], SAMPLE_RATE, info=info)

    def _variation(self, clip: Clip, strength: float, window_samples: int, generator):
        """(scheduler, pipeline arguments, the clip's length in samples) that start the run from `clip` under noise
        of the strength's level.

        The clip goes in at the VAE's rate and channels, padded with silence to the window as the pipeline would
        pad it (it logs a warning for every clip it pads). The scheduler is the pipeline's, built from its config
        with sigma_max lowered, diffusers' documented way to change a scheduler's settings. `latents` is the
        starting noise: the pipeline multiplies it by init_noise_sigma = sqrt(sigma_max^2 + 1) (L417), so it is
        drawn scaled by sigma_max / init_noise_sigma; at sigma 0.3 the pipeline's own scaling would start under
        3.5x the noise the schedule assumes.
        """
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        vae = self.pipe.vae
        audio = clip.conformed(vae.config.sampling_rate, vae.config.audio_channels)[:, :window_samples]
        padded = np.zeros((audio.shape[0], window_samples), np.float32)
        padded[:, : audio.shape[1]] = audio
        base = self.pipe.scheduler.config
        sigma = noise_level(strength, base.sigma_min, base.sigma_max)
        scheduler = type(self.pipe.scheduler).from_config(base, sigma_max=sigma)
        shape = (1, self.pipe.transformer.config.in_channels, self.pipe.transformer.config.sample_size)
        noise = randn_tensor(shape, generator=generator) * (sigma / scheduler.init_noise_sigma)
        waveforms = torch.from_numpy(padded)[None].to(self.execution_device, dtype=vae.dtype)
        arguments = {"latents": noise.to(self.pipe.transformer.dtype), "initial_audio_waveforms": waveforms,
                     "initial_audio_sampling_rate": vae.config.sampling_rate}
        return scheduler, arguments, audio.shape[1]


def load(spec: ModelSpec, torch_device: str, dtype: str) -> StableAudioModel:
    from diffusers import StableAudioPipeline

    pipe = StableAudioPipeline.from_pretrained(spec.repo_id, dtype=torch_dtype(dtype), **SAFE_LOAD)
    check_tokenizer(spec, pipe.tokenizer, "tokenizer/", pipe.text_encoder.config.vocab_size)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    return StableAudioModel(spec, pipe, torch_device)


FAMILY = Family(name="stable_audio", load=load, work_units=work_units, working_bytes=working_bytes,
                components=components, describe=describe, libraries=("torch", "transformers", "diffusers"),
                files=(("tokenizer/tokenizer.json",),),  # the T5 tokenizer
                accepts=(Accepts("model_index.json", "_class_name", ("StableAudioPipeline",)),))
