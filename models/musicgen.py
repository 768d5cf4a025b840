"""MusicGen (Meta): text-to-music with a T5 encoder, an autoregressive decoder over EnCodec tokens, and the codec."""

from __future__ import annotations

import logging
import math

from studio.catalog import Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.run import Audio, RunContext
from studio.weights import cached_json

from models.common import (OneModuleModel, SAFE_LOAD, check_tokenizer, load_pretrained, seed_everything,
                           to_float32_numpy, token_progress)

log = logging.getLogger(__name__)

LICENSE = "CC-BY-NC-4.0"
MAX_DURATION = 30.0  # the models were trained on 30 s clips
INT8_PARTS = ("decoder", "text_encoder")  # the language model and T5; the EnCodec codec stays float
INT8_CPU_SPEEDUP = 3.8  # int8 vs float32 per token on a CPU, measured on musicgen-small (docs/benchmarks.md)
GUIDED_COST = 1.6  # classifier-free guidance doubles the batch; measured 25.1 s vs 15.6 s per 100 tokens on CPU

# Published architecture, used for estimates until the repo's config.json is cached.
_PUBLISHED = {
    "small": dict(layers=24, hidden=1024),
    "medium": dict(layers=48, hidden=1536),
    "large": dict(layers=48, hidden=2048),
    "melody": dict(layers=48, hidden=1536),
}


def _params() -> tuple[Param, ...]:
    return (
        duration_param(MAX_DURATION, 8.0),
        Param("guidance_scale", float, 3.0, "Guidance", "How closely to follow the prompt (classifier-free "
              "guidance); 1 turns it off and halves the work.", minimum=1.0, maximum=10.0, step=0.5),
        Param("temperature", float, 1.0, "Temperature", "Higher is more varied, lower more repetitive.",
              minimum=0.05, maximum=2.0, step=0.05),
        Param("top_k", int, 250, "Top-k", "Sample among the k likeliest tokens (0 = no limit).",
              minimum=0, maximum=2048, step=1),
        Param("top_p", float, 0.0, "Top-p", "Sample from the smallest set of tokens whose probability reaches p "
              "(0 = off).", minimum=0.0, maximum=1.0, step=0.05),
    )


def _spec(repo: str, label: str, parameters: int, size: str, cpu_per_token: float, cuda_per_token: float,
          *, channels: int = 1, description: str = "", featured: bool = False) -> ModelSpec:
    return ModelSpec(
        repo_id=repo, family="musicgen", tasks=("music",), label=label, license=LICENSE, parameters=parameters,
        sample_rate=32000, channels=channels, max_duration=MAX_DURATION, params=_params(),
        speed={"cpu": SpeedPrior(1.0, cpu_per_token), "cpu/int8": SpeedPrior(1.0, cpu_per_token / INT8_CPU_SPEEDUP),
               "cuda": SpeedPrior(0.5, cuda_per_token),
               "mps": SpeedPrior(1.0, cuda_per_token * 4)},
        unit="token", description=description or f"MusicGen {size}: text to music, 32 kHz.",
        featured_in=("music",) if featured else (),
    )


SPECS = (
    _spec("facebook/musicgen-small", "MusicGen small", 587_000_000, "small", 0.156, 0.012,
          description="Fast, good for sketches and loops. 32 kHz mono.", featured=True),
    _spec("facebook/musicgen-medium", "MusicGen medium", 2_010_000_000, "medium", 0.53, 0.025),
    _spec("facebook/musicgen-large", "MusicGen large", 3_420_000_000, "large", 0.9, 0.04,
          description="Best quality of the mono models; needs about 7 GB in fp16."),
    _spec("facebook/musicgen-melody", "MusicGen melody (text only)", 1_550_000_000, "melody", 0.42, 0.0375,
          description="Melody-conditioned model, used here from text alone. 32 kHz mono."),
    _spec("facebook/musicgen-stereo-small", "MusicGen stereo small", 604_000_000, "stereo small", 0.19, 0.014,
          channels=2, description="Small model with two-channel output. 32 kHz stereo."),
)


def _arch(spec: ModelSpec) -> dict:
    """Decoder depth/width, codebooks and frame rate: from the cached config.json, else the published figures."""
    config = cached_json(spec.repo_id)
    size = next((k for k in _PUBLISHED if k in spec.repo_id.split("-", 1)[-1]), "small")
    arch = dict(_PUBLISHED[size], codebooks=4 * spec.channels, frame_rate=50.0, sampling_rate=spec.sample_rate,
                filters=64)
    if config:
        decoder = config.get("decoder", {})
        codec = config.get("audio_encoder", {})
        arch["layers"] = decoder.get("num_hidden_layers", arch["layers"])
        arch["hidden"] = decoder.get("hidden_size", arch["hidden"])
        arch["codebooks"] = decoder.get("num_codebooks", arch["codebooks"])
        ratios = codec.get("upsampling_ratios")
        if ratios:
            arch["sampling_rate"] = codec.get("sampling_rate", spec.sample_rate)
            arch["frame_rate"] = arch["sampling_rate"] / math.prod(ratios)
        arch["filters"] = codec.get("num_filters", arch["filters"])
    return arch


def _tokens(spec: ModelSpec, duration: float) -> tuple[int, int]:
    """(frames of audio wanted, decoder steps): the delay pattern costs one extra step per extra codebook."""
    arch = _arch(spec)
    frames = max(1, math.ceil(duration * arch["frame_rate"]))
    delay = arch["codebooks"] // spec.channels - 1
    return frames, frames + delay


def work_units(spec: ModelSpec, request: Request) -> float:
    _, steps = _tokens(spec, request.get("duration"))
    return steps * (GUIDED_COST if request.get("guidance_scale") > 1 else 1.0)


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """Self- and cross-attention KV cache for the (guided) batch, plus the codec decoder's activations."""
    arch = _arch(spec)
    duration = request.get("duration")
    batch = 2 if request.get("guidance_scale") > 1 else 1
    _, steps = _tokens(spec, duration)
    text_tokens = 64
    kv = 2 * arch["layers"] * batch * (steps + text_tokens) * arch["hidden"] * dtype_bytes
    samples = duration * arch["sampling_rate"] * spec.channels
    # EnCodec's last decoder block keeps a few (filters x samples) tensors alive at once.
    decode = 4 * arch["filters"] * samples * dtype_bytes
    logits = batch * arch["codebooks"] * 2048 * 4 * 4
    return int(kv + decode + logits + 32 * 1024**2)


class MusicgenModel(OneModuleModel):
    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. Lengths: the decoder emits frame_rate tokens per second, plus the delay pattern's extra steps.
        arch = _arch(self.spec)
        frames, steps = _tokens(self.spec, request.get("duration"))
        # 2. Text -> tokens on the model's device.
        inputs = self.preprocess([request.prompt], padding=True, return_tensors="pt").to(self.torch_device)
        top_p = request.get("top_p")
        # 3. Sample, reporting each decoder step; the codec decodes inside generate() after the last one.
        seed_everything(request.seed)
        ctx.check()
        with torch.inference_mode():
            values = self.model.generate(
                **inputs,
                do_sample=True,
                max_new_tokens=steps,
                guidance_scale=request.get("guidance_scale"),
                temperature=request.get("temperature"),
                top_k=request.get("top_k") or None,
                top_p=top_p if 0 < top_p < 1 else None,
                stopping_criteria=token_progress(ctx, steps, on_last=lambda: ctx.stage("decoding")),
            )
        ctx.check()
        # 4. (batch, channels, samples) -> exactly the requested length.
        samples = to_float32_numpy(values[0])
        wanted = round(request.get("duration") * arch["sampling_rate"])
        samples = samples[:, :wanted] if samples.shape[-1] >= wanted else samples
        audio = samples[0] if samples.shape[0] == 1 else samples
        return Audio(audio, int(arch["sampling_rate"]), info={"tokens": steps, "frames": frames})


def load(spec: ModelSpec, torch_device: str, dtype: str) -> MusicgenModel:
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    # Melody's AutoProcessor needs torchaudio for chroma features; text-only generation needs the tokenizer alone.
    model_class = MusicgenMelodyForConditionalGeneration if "melody" in spec.repo_id else MusicgenForConditionalGeneration
    model = load_pretrained(model_class, spec, torch_device, dtype, int8_parts=INT8_PARTS, keep_float=("audio_encoder",))
    tokenizer = AutoTokenizer.from_pretrained(spec.repo_id, **SAFE_LOAD)
    check_tokenizer(spec, tokenizer, "tokenizer.json", model.config.text_encoder.vocab_size)
    return MusicgenModel(spec, model, tokenizer, torch_device)


FAMILY = Family(
    name="musicgen", load=load, work_units=work_units, working_bytes=working_bytes,
    # int8 on a CPU: 3.8x faster than float32 on musicgen-small (docs/benchmarks.md); EnCodec stays float.
    preferred_dtypes={"cuda": "float16", "mps": "float16", "cpu": "int8"},
    precisions=("float32", "float16", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    # The T5 tokenizer: transformers 5 reads tokenizer.json (spiece.model alone needs a converter it may lack).
    files=(("tokenizer.json",),),
)
