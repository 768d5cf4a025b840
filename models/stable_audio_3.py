"""Stable Audio 3 (Stability AI): text to 44.1 kHz stereo music and sound effects up to 380 s, variations of a
clip, and inpainting a time range of one; converted once from Stability's own checkpoint format on first use."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from studio.catalog import CPU_NATIVE_BF16, MODE, Accepts, Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.clips import Clip
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json, component_bytes, folder_component_bytes

from models import sa3_convert
from models.common import (SAFE_LOAD, DiffusersPipelineModel, check_tokenizer, keep_outside, seed_everything,
                           step_end_callback, torch_dtype)

log = logging.getLogger(__name__)

MEDIUM = "stabilityai/stable-audio-3-medium"
BASE = "stabilityai/stable-audio-3-medium-base"
SAMPLE_RATE = 44100
LATENT_SAMPLES = 4096  # SAME-L: patches of 256 samples, 16 patches per latent: 10.8 latents per second
# Stability's published maximum for medium: its model_config.json's sample_size is 16,777,216 samples (380.4 s) and
# the duration embedder clamps at 384 s (diffusers' StableAudio3DurationEmbedder.max_val; the converted config's).
MAX_S = 380.0
MIN_CLIP_S = 0.5  # a clip to vary or repaint: five latents
# The pipeline denoises the latents of the requested length only (pipeline_stable_audio_3.py: latent_length =
# ceil(duration * 44100 / 4096), then crops to int(duration * 44100) after decoding), unlike Stable Audio Open's
# fixed 47.55 s window: there is no padding to skip. What it does not bound is the autoencoder: diffusers' SAME
# runs its band-limited attention as dense attention over the whole clip under a band mask (autoencoder_same.py
# _band_mask: a (17 x latents)^2 float mask per layer, 19 GB at 380 s, and attention work growing the same way).
# Each output latent depends on `depth x sliding_window` latents either side (each layer sees one segment on each
# side), so past WHOLE_LATENTS the studio decodes, and encodes a clip, in chunks of CHUNK_LATENTS with that margin
# decoded and dropped: the kept samples are a whole decode's (tests: 1e-6 apart). Measured on the realistic-size
# SAME-L decoder (CPU float32, 2 cores shared with other jobs): 10 s whole 52.5 s and 4.14 GB peak RSS, in
# chunks of 64 56.9 s and 4.01 GB; 40 s whole 441 s and 5.03 GB, in chunks of 96 283 s and 4.19 GB. The work per
# latent is about (1 + n / 339) for n latents decoded at once (attention's share over the linear layers'), so
# chunks of 96 (near that cost's minimum) win from about 250 latents (23 s) on.
CHUNK_LATENTS = 96
WHOLE_LATENTS = 256
MODES = ("generate", "vary", "inpaint")
# Vary: the clip's latents mixed with noise at `init_noise_level` (x = (1 - level) * clip + level * noise) and
# the full step count run over a schedule compressed to start there (pipeline_stable_audio_3_audio2audio.py).
# 0.1 keeps the clip close, 0.5 is halfway, 1 ignores it (the reference's docs/workflows/inference.md); 0.4-0.8
# is the reference TensorRT port's "typical for variations", and it refuses below 0.01 ("rf_denoiser undefined at
# t ~ 0"). 0.6 sits in that range; not tuned by ear (no real weights here).
VARY_STRENGTH = 0.6
CROSSFADE_S = 0.05  # inpainting: where the repainted range meets the kept audio, raised-cosine over this (or less)

SPEED = {
    # Units: unguided DiT steps over 10 s of audio, the autoencoder's work counted in the same units (work_units).
    # CPU: 19.3 s a unit measured on 2 cores shared with other jobs (load 5), taken as 15 s; the fixed part is the
    # text encoder (0.3B parameters over 256 tokens). CUDA and MPS: not measured here; from a C++ port's published
    # 3.5 s for 12 s of audio in float16 on an 8 GB laptop GPU (about 12 units), with room for diffusers' overheads.
    "cpu": SpeedPrior(4.0, 15.0),
    "cuda": SpeedPrior(1.0, 0.3),
    "mps": SpeedPrior(2.0, 1.5),
}


def _mode_param() -> Param:
    return Param(
        MODE, str, "generate", "Mode", "What the model does: make new audio from the prompt, vary a clip, or "
        "repaint a time range of a clip.", choices=MODES, advanced=False, choice_help=(
            ("generate", "Makes new audio from the prompt, Duration seconds long (up to 380 s)."),
            ("vary", "Makes a variation of the clip in Audio that follows the prompt; Variation strength sets how far "
                     "it may stray. The result is as long as the clip."),
            ("inpaint", "Regenerates Inpaint start to Inpaint end (seconds) of the clip in Audio to follow the prompt "
                        "and keeps the rest of the clip as it is. The result is as long as the clip."),
        ))


def _params(steps: int, max_steps: int, base: bool) -> tuple[Param, ...]:
    steps_help = ("Denoising steps. The model was distilled for 8; fewer is faster and rougher, more adds little."
                  if not base else "Denoising steps of the undistilled model: about 50-100 (the library's default "
                  "is 100); fewer is faster and rougher.")
    params = [
        _mode_param(),
        replace(duration_param(MAX_S, 30.0, minimum=1.0, step=0.5,
                               help="Length of the new audio in seconds (mode generate; vary and inpaint keep the "
                                    "clip's length)."), modes=("generate",)),
        Param("steps", int, steps, "Steps", steps_help, minimum=1, maximum=max_steps, step=1),
    ]
    if base:  # the distilled medium has guidance baked into its weights: diffusers' docs say leave it at 1
        params += [
            Param("guidance_scale", float, 1.0, "Guidance", "How closely to follow the prompt (classifier-free "
                  "guidance). 1 turns it off (the library's and Stability's default); Stability suggests trying 7 "
                  "for stronger adherence. Above 1 every step runs twice.", minimum=1.0, maximum=15.0, step=0.5,
                  modes=("generate",)),
            Param("negative_prompt", str, "", "Negative prompt", "What to steer away from; used only when Guidance "
                  "is above 1.", modes=("generate",)),
        ]
    params += [
        Param("audio", Clip, None, "Audio", "The clip to vary or to repaint a range of (WAV, FLAC, OGG or MP3, or a "
              f"recording; mono or stereo, any rate: it is resampled to 44.1 kHz stereo), {MIN_CLIP_S:g} to "
              f"{MAX_S:g} s long. The result is as long as the clip.", minimum=MIN_CLIP_S, maximum=MAX_S,
              advanced=False, modes=("vary", "inpaint")),
        Param("strength", float, VARY_STRENGTH, "Variation strength", "How much of the clip the variation may "
              "change: the noise level the clip starts under (the model's init_noise_level). 0.1 stays close to "
              "the clip, 0.5 is halfway, 1 ignores it. Every strength runs all the steps.", minimum=0.01,
              maximum=1.0, step=0.01, advanced=False, modes=("vary",)),
        Param("inpaint_start", float, 0.0, "Inpaint start (s)", "Where the range to regenerate starts, in seconds "
              "from the start of the clip.", minimum=0.0, maximum=MAX_S, step=0.1, advanced=False,
              modes=("inpaint",)),
        Param("inpaint_end", float, 5.0, "Inpaint end (s)", "Where the range to regenerate ends, in seconds from "
              "the start of the clip; at most the clip's length.", minimum=0.0, maximum=MAX_S, step=0.1,
              advanced=False, modes=("inpaint",)),
    ]
    return tuple(params)


_DESCRIPTION = ("44.1 kHz stereo music and sound effects up to 380 s; varies a clip or repaints a range of one. "
                "Converted once from Stability's format on first use. Gated: accept the licence on Hugging Face first.")
_LICENSE = "Stability AI Community + Gemma terms"
# 1.45B DiT (1536 wide, 24 layers, differential attention) + 852M SAME-L autoencoder: the reference's shapes as a
# public port counts them (997 tensors, 9,222,116,660 bytes of float32 = 2.306B); + the T5Gemma encoder, about
# 0.296B if its 1,183,022,944-byte file is float32 (not verified: the hub is out of reach here).
_PARAMETERS = 2_600_000_000

SPECS = (
    ModelSpec(
        repo_id=MEDIUM, family="stable_audio_3", tasks=("music", "sfx"), label="Stable Audio 3 Medium",
        license=_LICENSE, parameters=_PARAMETERS, sample_rate=SAMPLE_RATE, channels=2, max_duration=MAX_S, gated=True,
        params=_params(8, 50, base=False), speed=SPEED, unit="step", description=_DESCRIPTION,
    ),
    ModelSpec(
        repo_id=BASE, family="stable_audio_3", tasks=("music", "sfx"), label="Stable Audio 3 Medium Base",
        license=_LICENSE, parameters=_PARAMETERS, sample_rate=SAMPLE_RATE, channels=2, max_duration=MAX_S,
        # Ungated on the hub by two public sources (a port's licence notes, a mirror's README); diffusers' docs
        # say gated. The gate message would send users to a licence page they do not need.
        gated=False, params=_params(100, 200, base=True), speed=SPEED, unit="step",
        description="The undistilled Stable Audio 3 Medium (100 steps, guidance), for fine-tuning and comparison. "
                    + _DESCRIPTION.split(". ", 1)[1],
    ),
)


# ------------------------------------------------------------------------------------------------ inputs
def _clip(values: Mapping[str, Any]) -> Clip | None:
    return values.get("audio") if values.get(MODE, "generate") != "generate" else None


def _latent_frame(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE / LATENT_SAMPLES)  # the pipeline's own rounding of mask_*_seconds


def check(spec: ModelSpec, values: Mapping[str, Any]) -> None:
    mode = values.get(MODE, "generate")
    clip = values.get("audio")
    if mode == "generate":
        return
    if clip is None:
        raise InvalidInput(f"mode {mode!r} of {spec.repo_id} needs a clip in Audio: upload or record one, or choose "
                           f"mode 'generate' to make new audio from the prompt")
    if mode != "inpaint":
        return
    start, end, length = values["inpaint_start"], values["inpaint_end"], clip.seconds
    if end <= start:
        raise InvalidInput(f"inpaint_end ({end:g} s) must be after inpaint_start ({start:g} s): the range to "
                           f"regenerate is empty; set the end after the start")
    if start >= length or end > length + 1e-6:
        raise InvalidInput(f"the inpaint range {start:g}-{end:g} s is not inside the {length:.2f} s clip "
                           f"{clip.name!r}: pick a range within 0-{length:.2f} s")
    if _latent_frame(end) <= _latent_frame(start):
        raise InvalidInput(f"the inpaint range {start:g}-{end:g} s covers no whole step of the model's time grid "
                           f"({LATENT_SAMPLES / SAMPLE_RATE * 1000:.0f} ms): widen it to at least "
                           f"{LATENT_SAMPLES / SAMPLE_RATE:.2f} s")


def length(request: Request) -> float:
    """Seconds of audio a run makes: the clip's length when it varies or repaints one, else Duration."""
    clip = _clip(request.params)
    return clip.seconds if clip is not None else request.get("duration")


def describe(spec: ModelSpec, request: Request) -> str:
    mode, clip = request.params.get(MODE, "generate"), _clip(request.params)
    if clip is None:
        return ""
    if mode == "vary":
        return (f"varies the {clip.seconds:.1f} s clip {clip.name!r} at strength {request.get('strength'):g} "
                f"({request.get('steps')} steps)")
    return (f"repaints {request.get('inpaint_start'):.1f}-{request.get('inpaint_end'):.1f} s of the "
            f"{clip.seconds:.1f} s clip {clip.name!r}")


# ------------------------------------------------------------------------------------------------ estimates
# The DiT's work per step, counted from its layers (1536 wide, 24 layers; per audio token 21 x 1536^2
# multiply-adds in the linear layers, 4 x tokens x 1536 in differential self-attention): the tokens (latents + 64
# memory tokens), plus the cross-attention's keys and values over the 257 text tokens (as much as 37 audio tokens),
# plus attention's share, tokens^2 / 8064. Measured on the realistic-size DiT (random weights, CPU float32, 2 cores
# shared with other jobs, load 5): a step over 10 s took 19.3 s, over 40 s 40.6 s (the count says 2.6x, the
# contended clock 2.1x); calibration takes over from the first run.
MEMORY_TOKENS = 64
CONTEXT_TOKENS = 37
ATTENTION_TOKENS = 8064
# SAME-L, decoding n latents at once: 0.369 s x n x (1 + n / 339) measured (CPU float32; see CHUNK_LATENTS), i.e.
# 0.019 of a 10 s DiT step (19.3 s) per unit of that; encoding a clip is the same network run the other way.
AUTOENCODER_UNITS = 0.019
AUTOENCODER_ATTENTION = 339
AUTOENCODER_MARGIN = 12  # SAME-L: 12 layers, one latent either side each (estimates run before any load)


PUBLISHED_DEPTH = 24  # medium's and medium-base's DiT layers, until a config is cached


def _step_cost(latents: int) -> float:
    tokens = latents + MEMORY_TOKENS
    return tokens + CONTEXT_TOKENS + tokens * tokens / ATTENTION_TOKENS


def _field(data: Any, *keys: str) -> Any:
    """data[keys[0]][keys[1]]... of a JSON document, or None where a level is missing or not an object."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def dit_depth(spec: ModelSpec) -> int:
    """The DiT's layers, from the cached config (a diffusers-format repo's transformer/config.json, or the original
    model_config.json's diffusion section), else the published 24: a step's work is that many layers', so a
    checkpoint of another depth (a fine-tune, the bench's build of 8) is timed by what it runs."""
    depth = _field(cached_json(spec.repo_id, "transformer/config.json"), "depth")
    if depth is None:
        depth = _field(cached_json(spec.repo_id, "model_config.json"), "model", "diffusion", "config", "depth")
    valid = isinstance(depth, int) and not isinstance(depth, bool) and depth > 0
    return depth if valid else PUBLISHED_DEPTH


def _latents(seconds: float) -> int:
    return max(1, math.ceil(seconds * SAMPLE_RATE / LATENT_SAMPLES))


def chunks(total: int, margin: int, chunk: int = CHUNK_LATENTS, whole: int = WHOLE_LATENTS) -> list[tuple[int, int]]:
    """The (low, high) latent ranges the autoencoder runs on for `total` latents: one, or chunks with margins."""
    if total <= max(whole, chunk + 2 * margin):
        return [(0, total)]
    return [(max(0, start - margin), min(total, start + chunk + margin)) for start in range(0, total, chunk)]


def _autoencoder_cost(latents: int) -> float:
    return sum((high - low) * (1 + (high - low) / AUTOENCODER_ATTENTION)
               for low, high in chunks(latents, AUTOENCODER_MARGIN))


def _guided(request: Request) -> bool:
    return request.get(MODE) == "generate" and request.params.get("guidance_scale", 1.0) > 1


def work_units(spec: ModelSpec, request: Request) -> float:
    """Unguided steps of the 24-layer DiT over 10 s of audio: each step costs _step_cost of the run's latents over
    10 s' (guidance doubles the steps; a DiT of another depth scales them); the decoder, and for a clip the
    encoder, add their share in the same units."""
    latents = _latents(length(request))
    steps = request.get("steps") * (2 if _guided(request) else 1) * _step_cost(latents) / _step_cost(_latents(10.0))
    steps *= dit_depth(spec) / PUBLISHED_DEPTH
    coders = 2 if _clip(request.params) is not None else 1
    return steps + coders * AUTOENCODER_UNITS * _autoencoder_cost(latents)


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The larger of the DiT's activations over the run's latents (doubled with guidance) and the autoencoder's
    over its largest call, plus the output waveform's copies.

    The autoencoder's, measured as peak RSS over the weights on the realistic-size SAME-L (float32): 0.73 GB
    decoding 108 latents whole, 0.78 GB in chunks of 96, 1.6 GB decoding 431 whole; that is 0.52 GB plus 121 kB per
    token of its largest call (17 tokens per latent) plus the band mask, tokens^2 values. The DiT's grew by 0.07 GB
    from 10 s to 40 s (peak RSS): 25,000 values per token is what its widest activations (the SwiGLU's 2 x 6144 and
    the fused 5 x 1536 projection) hold, with room.
    """
    latents = _latents(length(request))
    tokens = (2 if _guided(request) else 1) * (latents + MEMORY_TOKENS)
    dit = tokens * 25_000 * dtype_bytes
    widest = max(high - low for low, high in chunks(latents, AUTOENCODER_MARGIN)) * 17
    autoencoder = (0.52e9 + 121e3 * widest) * dtype_bytes / 4 + widest * widest * dtype_bytes
    waveform = latents * LATENT_SAMPLES * 2 * 4 * 3  # decoded, cropped and converted copies
    return int(max(dit, autoencoder) + waveform + 64 * 1024**2)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    """Bytes per part, so CPU offload can be planned: from the converted folder, the hub's diffusers folders, or
    the original checkpoint's header split by key prefix; the published sizes before anything is cached."""
    folder = sa3_convert.converted(spec.repo_id)
    if folder is not None:
        sizes = folder_component_bytes(folder, dtype_bytes, name=spec.repo_id)
    elif sa3_convert.layout(spec.repo_id) == "diffusers":
        sizes = component_bytes(spec.repo_id, dtype_bytes)
    else:
        sizes = sa3_convert.original_components(spec.repo_id, dtype_bytes)
    if sizes:
        return sizes
    published = {"transformer": 1.45e9, "vae": 0.852e9, "text_encoder": 0.296e9, "duration_embedder": 0.2e6}
    return {name: int(count * dtype_bytes) for name, count in published.items()}


def preparation(spec: ModelSpec):
    return sa3_convert.pending(spec.repo_id)


def prepare(spec: ModelSpec, ctx: RunContext) -> None:
    sa3_convert.convert(spec.repo_id, ctx)


# ------------------------------------------------------------------------------------------------ the model
class StableAudio3Model(DiffusersPipelineModel):
    """One loaded pipeline; the audio-to-audio and inpainting pipelines are made from its modules (never a second
    copy of the weights) the first time a run needs them."""

    def __init__(self, spec: ModelSpec, pipe, torch_device: str, max_seconds: float) -> None:
        super().__init__(spec, pipe, torch_device)
        self.max_seconds = max_seconds
        self._pipelines: dict[str, Any] = {"generate": pipe}

    def enable_offload(self, accelerator: str, on_component) -> None:
        """diffusers' model offload, plus the autoencoder sent back to RAM before the DiT runs: a variation or an
        inpainting encodes the clip first, and accelerate's hooks (each offloading only the part before it in
        text_encoder->duration_embedder->transformer->vae) would keep the VAE on the device beside the DiT."""
        super().enable_offload(accelerator, on_component)
        hooks = [h for h in getattr(self.pipe, "_all_hooks", ()) if getattr(h, "model", None) is self.pipe.vae]
        if not hooks:
            return  # a simulated accelerator (torch device "cpu"): nothing moves, only the accounting runs

        def vae_to_ram(_module, _args) -> None:
            if next(self.pipe.vae.parameters()).device.type != "cpu":
                hooks[0].offload()

        self.pipe.transformer.register_forward_pre_hook(vae_to_ram)

    def pipeline(self, mode: str):
        if mode not in self._pipelines:
            built = _pipeline_classes()[mode](**self.pipe.components)
            built.set_progress_bar_config(disable=True)
            self._pipelines[mode] = built
        return self._pipelines[mode]

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        mode = request.get(MODE)
        clip = _clip(request.params)
        source = clip.conformed(SAMPLE_RATE, 2) if clip is not None else None
        wanted = source.shape[1] if source is not None else round(request.get("duration") * SAMPLE_RATE)
        seconds = wanted / SAMPLE_RATE
        if seconds > self.max_seconds + 1e-6:
            raise InvalidInput(f"{'the clip' if clip else 'duration'} is {seconds:.2f} s; {self.spec.repo_id} makes "
                               f"at most {self.max_seconds:g} s: shorten it")
        steps = request.get("steps")
        generator = seed_everything(request.seed)
        arguments: dict[str, Any] = {"prompt": request.prompt, "duration": seconds, "num_inference_steps": steps,
                                     "generator": generator, "output_type": "latent",
                                     "callback_on_step_end": step_end_callback(ctx, steps)}
        if mode == "generate":
            arguments["guidance_scale"] = request.params.get("guidance_scale", 1.0)
            if arguments["guidance_scale"] > 1 and request.params.get("negative_prompt"):
                arguments["negative_prompt"] = request.get("negative_prompt")
        else:
            arguments["audio"] = torch.from_numpy(source)[None].to(self.execution_device, dtype=self.pipe.vae.dtype)
            if mode == "vary":
                arguments["init_noise_level"] = request.get("strength")
            else:
                arguments["mask_start_seconds"] = request.get("inpaint_start")
                arguments["mask_end_seconds"] = request.get("inpaint_end")
        ctx.check()
        with torch.inference_mode():
            latents = self.pipeline(mode)(**arguments).audios  # the last step's callback said "decoding"
            audio = decode_chunked(self.pipe.vae, latents, ctx)
            self.pipe.maybe_free_model_hooks()  # with CPU offload: the VAE goes back to RAM
        samples = audio[0, :, :wanted].clamp(-1.0, 1.0).float().cpu().numpy().astype(np.float32)
        info: dict[str, Any] = {"steps": steps, "latents": int(latents.shape[-1])}
        if mode == "inpaint":
            samples = splice(source, samples, request.get("inpaint_start"), request.get("inpaint_end"))
        return Audio(samples, SAMPLE_RATE, info=info)


def splice(original: np.ndarray, repainted: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """The clip outside start-end exactly, the repainted audio inside (models.common.keep_outside). The pipeline keeps
    the rest only as well as the model follows its inpainting condition (it starts from noise everywhere and
    decodes every latent; pipeline_stable_audio_3_inpaint.py step 7): the studio keeps it."""
    first, last = round(start_s * SAMPLE_RATE), min(round(end_s * SAMPLE_RATE), original.shape[1])
    return keep_outside(original, repainted, first, last, round(CROSSFADE_S * SAMPLE_RATE))


# ------------------------------------------------------------------------------------------------ the autoencoder
def _margin(vae) -> int:
    """Latents either side that an output latent depends on: each transformer layer of a resampling block sees
    `sliding_window` segments (latents) on each side (autoencoder_same.py _band_mask over segments of stride + 1)."""
    return sum(int(d) for d in vae.config.encoder_transformer_depths) * int(vae.config.sliding_window)


def decode_chunked(vae, latents, ctx: RunContext | None = None, chunk: int = CHUNK_LATENTS,
                   whole: int = WHOLE_LATENTS):
    """vae.decode of `latents` (batch, channels, latents): whole up to `whole` latents, else `chunk` latents at a
    time with the margin each side decoded and dropped; the same samples as one decode (see _margin)."""
    import torch

    total, ratio = latents.shape[-1], vae.downsampling_ratio
    ranges = chunks(total, _margin(vae), chunk, whole)
    pieces = []
    for number, (low, high) in enumerate(ranges):
        if ctx is not None and number:
            ctx.check()
        start = number * chunk if len(ranges) > 1 else 0
        decoded = vae.decode(latents[..., low:high]).sample
        keep = (start - low) * ratio
        pieces.append(decoded[..., keep: keep + (min(chunk, total - start) if len(ranges) > 1 else total) * ratio])
    return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]


def encode_chunked(vae, audio, chunk: int = CHUNK_LATENTS, whole: int = WHOLE_LATENTS):
    """vae.encode of `audio` (batch, channels, samples): whole up to `whole` latents' samples, else in chunks of
    `chunk` latents' samples with the margin each side, the margins' latents dropped; the same latents as one
    encode."""
    import torch

    ratio = vae.downsampling_ratio
    total = math.ceil(audio.shape[-1] / ratio)
    ranges = chunks(total, _margin(vae), chunk, whole)
    if len(ranges) == 1:
        return vae.encode(audio).latents
    pieces = []
    for number, (low, high) in enumerate(ranges):
        start = number * chunk
        latents = vae.encode(audio[..., low * ratio: high * ratio]).latents
        pieces.append(latents[..., start - low: start - low + min(chunk, total - start)])
    return torch.cat(pieces, dim=-1)


@functools.cache
def _pipeline_classes() -> dict[str, type]:
    """The audio-to-audio and inpainting pipelines, their reference clip encoded in chunks (encode_chunked)."""
    import torch
    from diffusers import StableAudio3AudioToAudioPipeline, StableAudio3InpaintPipeline

    class VaryPipeline(StableAudio3AudioToAudioPipeline):
        def _encode_reference_audio(self, audio, device, target_length):
            latents = encode_chunked(self.vae, audio.to(device=device, dtype=next(self.vae.parameters()).dtype))
            if latents.shape[-1] < target_length:  # as the parent pads or crops to the run's latent length
                pad = latents.new_zeros(*latents.shape[:2], target_length - latents.shape[-1])
                latents = torch.cat([latents, pad], dim=-1)
            return latents[..., :target_length]

    class InpaintPipeline(StableAudio3InpaintPipeline):
        def _encode_reference_audio(self, audio, device):
            return encode_chunked(self.vae, audio.to(device=device, dtype=next(self.vae.parameters()).dtype))

    return {"vary": VaryPipeline, "inpaint": InpaintPipeline}


# ------------------------------------------------------------------------------------------------ loading
def load(spec: ModelSpec, torch_device: str, dtype: str) -> StableAudio3Model:
    from diffusers import StableAudio3Pipeline

    folder = sa3_convert.converted(spec.repo_id)
    if folder is None and sa3_convert.layout(spec.repo_id) != "diffusers":
        folder = sa3_convert.convert(spec.repo_id)  # loaded without the manager (which converts first)
    source = str(folder) if folder is not None else spec.repo_id
    pipe = StableAudio3Pipeline.from_pretrained(source, dtype=torch_dtype(dtype), **SAFE_LOAD)
    encoder = pipe.text_encoder.config
    check_tokenizer(spec, pipe.tokenizer, "t5gemma-b-b-ul2/tokenizer.json",
                    getattr(getattr(encoder, "encoder", encoder), "vocab_size", None))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    limit = min(MAX_S, float(pipe.duration_embedder.config.max_val))
    sample_size = sa3_convert.marker(folder).get("sample_size") if folder is not None else None
    if isinstance(sample_size, int) and sample_size > 0:
        limit = min(limit, sample_size / SAMPLE_RATE)
    return StableAudio3Model(spec, pipe, torch_device, limit)


FAMILY = Family(
    name="stable_audio_3", load=load, work_units=work_units, working_bytes=working_bytes, components=components,
    check=check, describe=describe, libraries=("torch", "transformers", "diffusers"),
    # diffusers' docs: "Use torch.float32 on CPU or MPS: torch.float16 on MPS produces noise." On a CPU with native
    # bfloat16 (AVX-512 BF16, AMX) a step of the realistic-size DiT ran 2.2-2.9x faster in bfloat16 than in float32
    # at 1.2 % one-step error and latents at 44.5 dB after a whole run (int8 was faster still but 3.3 % and 35 dB);
    # elsewhere torch emulates bfloat16 and float32 is the faster (docs/benchmarks.md, music-dit).
    preferred_dtypes={"cuda": "float16", "mps": "float32", "cpu": "float32", CPU_NATIVE_BF16: "bfloat16"},
    precisions=("float32", "float16", "bfloat16"),
    # The DiT's tokens over 10 s, guided (a doubled batch): the probe times its matrices at these rows. At 2 rows
    # (a decoder's) bfloat16 read half the bytes and looked 3.2x faster on an AVX2 CPU, where a real step ran 3.6x
    # slower (precision_probe).
    probe_rows=2 * (_latents(10.0) + MEMORY_TOKENS),
    files=(("t5gemma-b-b-ul2/tokenizer.json", "tokenizer/tokenizer.json", "t5gemma-b-b-ul2/tokenizer.model",
            "tokenizer/tokenizer.model"),),
    preparation=preparation, prepare=prepare,
    # A diffusers folder (a community conversion), else Stability's original layout (sa3_convert.layout()), whose
    # model_config.json names its autoencoder: SAME is Stable Audio 3's; Stable Audio Open's original
    # model_config.json has the same model_type ("diffusion_cond") but an "oobleck" one.
    accepts=(Accepts("model_index.json", "_class_name", ("StableAudio3Pipeline",)),
             Accepts("model_config.json", "model.pretransform.config.encoder.type", ("same",))),
)
