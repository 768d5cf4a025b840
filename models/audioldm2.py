"""AudioLDM2 (CVSSP): latent diffusion over mel spectrograms for sound effects and music, 16 kHz."""

from __future__ import annotations

import logging
import math

import numpy as np

from studio.catalog import Accepts, Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.run import Audio, RunContext
from studio.weights import cached_json, component_bytes

from models.common import SAFE_LOAD, DiffusersPipelineModel, check_tokenizer, rank_by_clap, seed_everything, \
    step_callback, torch_dtype

log = logging.getLogger(__name__)

LICENSE = "CC-BY-NC-SA-4.0"
SAMPLE_RATE = 16000
HOP_S = 0.01  # the vocoder makes 160 samples per mel frame at 16 kHz
TRAINED_S = 10.24  # the models were trained on 10.24 s clips; longer ones work, with less coherence
MAX_S = 30.0
DECODE_STEPS = 8.5  # VAE + vocoder cost, in unguided full-length UNet steps (7.2 s + 11.5 s vs 2.2 s a step on CPU)
SCHEDULERS = ("DPM-Solver++", "DDIM")


def _params() -> tuple[Param, ...]:
    return (
        duration_param(MAX_S, 5.0, minimum=0.5, step=0.04),
        Param("steps", int, 25, "Steps", "Denoising steps: more is slower and a little cleaner. DPM-Solver++ is "
              "good at 20-50, DDIM wants 100-200.", minimum=1, maximum=500, step=1),
        Param("guidance_scale", float, 3.5, "Guidance", "How closely to follow the prompt; 1 turns guidance off "
              "and halves the work.", minimum=1.0, maximum=15.0, step=0.5),
        Param("negative_prompt", str, "Low quality.", "Negative prompt", "What to steer away from."),
        Param("waveforms", int, 1, "Candidates", "Generate this many and keep the one CLAP rates closest to the "
              "prompt.", minimum=1, maximum=4, step=1),
        Param("scheduler", str, SCHEDULERS[0], "Scheduler", "DPM-Solver++ needs far fewer steps than DDIM.",
              choices=SCHEDULERS),
    )


def _spec(repo: str, tasks: tuple[str, ...], label: str, description: str) -> ModelSpec:
    return ModelSpec(
        repo_id=repo, family="audioldm2", tasks=tasks, label=label, license=LICENSE, parameters=1_080_000_000,
        sample_rate=SAMPLE_RATE, channels=1, max_duration=MAX_S, params=_params(),
        # Units: one unguided denoising step over 10.24 s (see work_units). CPU measured; CUDA from a T4.
        speed={"cpu": SpeedPrior(2.0, 2.2), "cuda": SpeedPrior(0.5, 0.03), "mps": SpeedPrior(1.0, 0.15)},
        unit="step", description=description, featured_in=("sfx",) if "sfx" in tasks else (),
    )


SPECS = (
    _spec("cvssp/audioldm2", ("sfx",), "AudioLDM 2", "General sounds and effects from text; 16 kHz mono."),
    _spec("cvssp/audioldm2-music", ("music",), "AudioLDM 2 music", "AudioLDM 2 fine-tuned on music; 16 kHz mono."),
)


def work_units(spec: ModelSpec, request: Request) -> float:
    """Denoising steps scaled by length and guidance, plus the decoders, in full-length unguided steps."""
    length = request.get("duration") / TRAINED_S * request.get("waveforms")
    guided = 2 if request.get("guidance_scale") > 1 else 1
    return request.get("steps") * length * guided + DECODE_STEPS * length


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """UNet activations for the (guided) batch of latents, then the VAE decoding the mel and the vocoder."""
    unet = cached_json(spec.repo_id, "unet/config.json") or {}
    vae_config = cached_json(spec.repo_id, "vae/config.json") or {}
    vocoder = cached_json(spec.repo_id, "vocoder/config.json") or {}
    duration = request.get("duration")
    batch = request.get("waveforms") * (2 if request.get("guidance_scale") > 1 else 1)
    frames = math.ceil(duration / HOP_S)
    widest = max(unet.get("block_out_channels", [128, 256, 384, 640]))
    unet_act = 12 * batch * widest * (frames / 4) * 16 * dtype_bytes
    vae_width = max(vae_config.get("block_out_channels", [128, 256, 512]))
    vae = 6 * vae_width * frames * 64 * dtype_bytes  # the decoder's widest blocks at the mel's full resolution
    voc = 4 * vocoder.get("upsample_initial_channel", 1024) * frames * 8 * dtype_bytes
    return int(unet_act + vae + voc + 64 * 1024**2)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    """Bytes per part, from the cached files; the published parameter count of each part until they are cached."""
    sizes = component_bytes(spec.repo_id, dtype_bytes)
    if sizes:
        return sizes
    published = {"text_encoder": 154e6, "text_encoder_2": 341e6, "language_model": 124e6, "unet": 347e6,
                 "vae": 55e6, "vocoder": 55e6}
    return {name: int(count * dtype_bytes) for name, count in published.items()}


class AudioLdm2Model(DiffusersPipelineModel):
    def __init__(self, spec: ModelSpec, pipe, torch_device: str) -> None:
        super().__init__(spec, pipe, torch_device)
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        config = pipe.scheduler.config
        self.schedulers = {
            "DPM-Solver++": DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++"),
            "DDIM": DDIMScheduler.from_config(config),
        }

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. Settings: the scheduler for this request; lengths in multiples of the VAE's 4 frames (40 ms).
        steps = request.get("steps")
        self.pipe.scheduler = self.schedulers[request.get("scheduler")]
        duration = request.get("duration")
        wanted = round(duration * SAMPLE_RATE)
        padded = math.ceil(round(duration / HOP_S, 6) / 4) * 4 * HOP_S  # diffusers floors, and can come up short
        # 2. Denoise with progress and cancel at every step, then the VAE and vocoder decode.
        generator = seed_everything(request.seed)
        ctx.check()
        with torch.inference_mode():
            result = self.pipe(
                request.prompt,
                negative_prompt=request.get("negative_prompt") or None,
                audio_length_in_s=padded,
                num_inference_steps=steps,
                guidance_scale=request.get("guidance_scale"),
                num_waveforms_per_prompt=request.get("waveforms"),
                generator=generator,
                callback=step_callback(ctx, steps),
                callback_steps=1,
                output_type="np",
            )
        audios = [np.asarray(a, dtype=np.float32)[:wanted] for a in result.audios]
        # 3. Several candidates: keep the one CLAP scores closest to the prompt.
        info = {"steps": steps, "scheduler": request.get("scheduler")}
        if len(audios) > 1:
            audios, scores = rank_by_clap(self.pipe, request.prompt, audios, SAMPLE_RATE)
            info["clap_scores"] = [round(float(s), 3) for s in scores]
        return Audio(audios[0], SAMPLE_RATE, info=info)


CHANNELS_LAST_PARTS = ("unet", "vae")


def load(spec: ModelSpec, torch_device: str, dtype: str) -> AudioLdm2Model:
    import torch
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    # The repos store the language model as a bare GPT2Model, which diffusers 0.42 + transformers 5 cannot
    # generate with (diffusers issue #12630); the same weights load into GPT2LMHeadModel, which can.
    language_model = GPT2LMHeadModel.from_pretrained(spec.repo_id, subfolder="language_model",
                                                     dtype=torch_dtype(dtype), **SAFE_LOAD)
    pipe = AudioLDM2Pipeline.from_pretrained(spec.repo_id, language_model=language_model,
                                             dtype=torch_dtype(dtype), **SAFE_LOAD)
    check_tokenizer(spec, pipe.tokenizer, "tokenizer/", pipe.text_encoder.config.text_config.vocab_size)
    check_tokenizer(spec, pipe.tokenizer_2, "tokenizer_2/", pipe.text_encoder_2.config.vocab_size)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    # The UNet's and VAE's convolutions run faster on channels-last tensors (1.07x on this CPU, the same
    # arithmetic: docs/benchmarks.md; diffusers recommends it on CUDA too).
    for name in CHANNELS_LAST_PARTS:
        getattr(pipe, name).to(memory_format=torch.channels_last)
    return AudioLdm2Model(spec, pipe, torch_device)


FAMILY = Family(name="audioldm2", load=load, work_units=work_units, working_bytes=working_bytes,
                components=components, libraries=("torch", "transformers", "diffusers"),
                # CLAP's RoBERTa tokenizer (either form) and the T5 tokenizer of the second text encoder.
                files=(("tokenizer/tokenizer.json", "tokenizer/vocab.json + tokenizer/merges.txt"),
                       ("tokenizer_2/tokenizer.json",)),
                accepts=(Accepts("model_index.json", "_class_name", ("AudioLDM2Pipeline",)),))
