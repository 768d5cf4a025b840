"""MusicGen (Meta): text-to-music with a T5 encoder, an autoregressive decoder over EnCodec tokens, and the codec."""

from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from studio.catalog import Accepts, Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.clips import Clip
from studio.errors import Cancelled, InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json

from models.common import (OneModuleModel, SAFE_LOAD, check_tokenizer, load_pretrained, seed_everything,
                           to_float32_numpy, token_progress)
from models.compiled import CompiledDecoding

if TYPE_CHECKING:  # the annotations' numpy; the functions import it where they run
    import numpy as np

log = logging.getLogger(__name__)

LICENSE = "CC-BY-NC-4.0"
MAX_DURATION = 30.0  # the models were trained on 30 s clips: one generate() call, a "window", makes at most this
MAX_TOTAL = 300.0  # the longest result an extension makes: five minutes, ten windows and more
# Each extension window hears the last CONTEXT_S of the music so far and adds up to MAX_DURATION - CONTEXT_S
# (audiocraft extends with 12 s of context and 18 s new; 10 s holds a bar or four at any tempo and leaves 20 s new).
CONTEXT_S = 10.0
MIN_PROMPT_S = 0.5  # a shorter clip gives the decoder next to nothing to continue
# The original audio hands over to a window's decode of the same prompt over this much, just before the new
# music starts: the codec's rendering of the prompt differs slightly from the original, and a cut would click.
CROSSFADE_S = 0.1
MELODY_S = 30.0  # the melody model conditions on chroma_length = 235 frames of 4096 samples at 32 kHz: 30.1 s
MIN_MELODY_S = 1.0  # a chroma frame is 0.128 s; under a second there is hardly a tune to follow
# What a prompt frame costs, in sampled decoder steps: encoding it, the decoder's pass over it, decoding it with
# the new audio, and every new step attending to it (so it grows with the new length). Measured on musicgen-small
# int8, guidance 3 (docs/benchmarks.md, `python -m bench --quick --only musicgen-prompt-cost`): 0.49-0.50 of a
# step per frame with 253 new steps, 0.77-0.82 with 1003; fitted as 0.4 + 0.0004 per new step.
PROMPT_FRAME_COST = 0.4
PROMPT_FRAME_COST_PER_STEP = 4e-4
MUSICGEN, MUSICGEN_MELODY = "musicgen", "musicgen_melody"  # config.json's model_type of the two architectures
INT8_PARTS = ("decoder", "text_encoder")  # the language model and T5; the EnCodec codec stays float
INT8_CPU_SPEEDUP = 3.8  # int8 vs float32 per token on a CPU, measured on musicgen-small (docs/benchmarks.md)
GUIDED_COST = 1.6  # classifier-free guidance doubles the batch; measured 25.1 s vs 15.6 s per 100 tokens on CPU
# Streaming (issue 16): while a window generates, the codes made so far are decoded with EnCodec and the new audio
# handed on (RunContext.audio). The codec's decoder is not causal: its first convolution (kernel 7, padded 3 a side)
# and the transposed convolutions look ahead, and its LSTM remembers what came before. Decoding frames [a, b) to
# hand on [a + LEFT, b - RIGHT) matches the full decode there: measured on the realistic musicgen-small build
# (bench/checkpoints.py, random weights, 500 random frames, pieces of 2 s): RIGHT 4 frames is the look-ahead (with
# 2: max |diff| 0.02, SNR 43 dB; with 4 or more the seam error vanishes); LEFT 5 frames gives SNR 76 dB, 10 gives
# 93 dB, 25 gives 134 dB (max |diff| 1e-7: float rounding); the tiny test codec the same (142 dB at 25). 25 frames
# (0.5 s) leaves a trained LSTM, whose memory may be longer than a random one's, four times the measured need.
STREAM_LEFT_FRAMES = 25
STREAM_RIGHT_FRAMES = 4
# The first piece comes after 1 s of new music (time to first audio); the next after 2 s more, then every 4 s.
# Each decode costs its new frames plus LEFT + RIGHT again, and the final full decode is made as well (a 129-frame
# window decodes in 0.26-0.37 s on 2 cores, the full 10 s in 1.3-1.5 s). With a piece every 2 s, 10 s of
# musicgen-small int8 spent 5.8 % and 7.5 % of the rest of its run decoding them (bench streaming section, two
# runs, 2 cores beside about 5 cores' worth of other jobs); 1 + 2 + 4 s decodes 412 frames instead of 570.
STREAM_FIRST_S = 1.0
STREAM_EVERY_S = 2.0
STREAM_EVERY_MAX_S = 4.0

# Published architecture, used for estimates until the repo's config.json is cached.
_PUBLISHED = {
    "small": dict(layers=24, hidden=1024),
    "medium": dict(layers=48, hidden=1536),
    "large": dict(layers=48, hidden=2048),
    "melody": dict(layers=48, hidden=1536),
}


def _continuation_params() -> tuple[Param, ...]:
    return (
        Param("audio", Clip, None, "Audio to continue",
              "A clip the music carries on from (WAV, FLAC, OGG or MP3, or a recording): the result starts with "
              f"it and adds Duration seconds of new music. The model hears at most its last {MAX_DURATION:g} s "
              "minus Duration.",
              minimum=MIN_PROMPT_S, maximum=MAX_TOTAL, advanced=False),
        Param("extend_to", float, 0.0, "Extend to (s)",
              f"Keep going past the {MAX_DURATION:g} s window until the whole result (your clip included) is this "
              f"long: window after window, each hearing the last {CONTEXT_S:g} s of the one before. 0 = off; "
              "Duration is then not used.", minimum=0.0, maximum=MAX_TOTAL, step=1.0),
        Param("keep_partial", bool, False, "Keep a cancelled extension",
              "When you cancel an extension, save the windows already finished as a partial result instead of "
              "nothing."),
    )


def _melody_param() -> Param:
    return Param("audio", Clip, None, "Melody",
                 "A tune to follow (hummed, whistled, played; WAV, FLAC, OGG or MP3, or a recording): the music "
                 f"takes its pitch line, by its 12-note chroma, from the first {MELODY_S:g} s. Without one, text "
                 "alone.", minimum=MIN_MELODY_S, maximum=MELODY_S, advanced=False)


def _params(*, continuation: bool = True, melody: bool = False) -> tuple[Param, ...]:
    length = "Seconds of new music, after your clip when you give one." if continuation else \
        "Length of the clip in seconds."
    return (
        duration_param(MAX_DURATION, 8.0, help=length),
        *(_continuation_params() if continuation else ()),
        *((_melody_param(),) if melody else ()),
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
          *, channels: int = 1, description: str = "", featured: bool = False,
          params: tuple[Param, ...] | None = None) -> ModelSpec:
    return ModelSpec(
        repo_id=repo, family="musicgen", tasks=("music",), label=label, license=LICENSE, parameters=parameters,
        sample_rate=32000, channels=channels, max_duration=MAX_DURATION, params=params or _params(),
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
    _spec("facebook/musicgen-melody", "MusicGen melody", 1_550_000_000, "melody", 0.42, 0.0375,
          description="Follows a melody you hum, whistle or play, as well as the text. 32 kHz mono.",
          params=_params(continuation=False, melody=True)),
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


def unsaved_bytes(spec: ModelSpec, dtype_bytes: int) -> int:
    """What a loaded MusicGen holds beyond its safetensors: the decoder's sinusoidal position table (positions x
    width, in the load's floating dtype: 8 MB of the real small model in float32) and three int64 scalars in each
    of EnCodec's convolutions (stride, kernel size, padding), all made at load as non-persistent buffers."""
    config = cached_json(spec.repo_id) or {}
    decoder, codec = config.get("decoder", {}), config.get("audio_encoder", {})
    arch = _arch(spec)
    table = decoder.get("max_position_embeddings", 2048) * arch["hidden"] * dtype_bytes
    # EncodecEncoder: a first and a last conv, and per ratio a downsampling conv and its residual blocks' (two
    # each, a third with a conv shortcut); EncodecDecoder the same less the upsampling (a transposed conv).
    ratios = len(codec.get("upsampling_ratios", (8, 5, 4, 4)))
    block = codec.get("num_residual_layers", 1) * (2 + bool(codec.get("use_conv_shortcut", True)))
    convs = (2 + ratios * (block + 1)) + (2 + ratios * block)
    return table + convs * 3 * 8


def _tokens(spec: ModelSpec, duration: float) -> tuple[int, int]:
    """(frames of audio wanted, decoder steps): the delay pattern costs one extra step per extra codebook."""
    arch = _arch(spec)
    frames = max(1, math.ceil(duration * arch["frame_rate"]))
    delay = arch["codebooks"] // spec.channels - 1
    return frames, frames + delay


@dataclass(frozen=True)
class Window:
    """One generate() call: it hears `prompt_s` of the music so far and adds `new_s` seconds."""

    prompt_s: float
    new_s: float


def plan_windows(have_s: float, total_s: float) -> list[Window]:
    """The windows that take `have_s` seconds of music (0: none, start from the text) to `total_s`.

    Each window is at most MAX_DURATION long, prompt included. It hears as much of the music so far as it has
    room for beside its new part, at least CONTEXT_S when that much exists: a continuation that fits in one
    window hears the whole clip; an extension adds MAX_DURATION - CONTEXT_S per window.
    """
    windows: list[Window] = []
    have = have_s
    while total_s - have > 1e-6:
        new = min(total_s - have, MAX_DURATION - min(have, CONTEXT_S))
        windows.append(Window(prompt_s=min(have, MAX_DURATION - new), new_s=new))
        have += new
    return windows


def _run_plan(spec: ModelSpec, request: Request) -> tuple[Clip | None, list[Window]]:
    """The clip to continue (or None) and the windows the request takes."""
    clip = request.params.get("audio") if continues(spec) else None
    have = clip.seconds if clip is not None else 0.0
    extend_to = request.params.get("extend_to") or 0.0
    total = extend_to if extend_to > 0 else have + request.get("duration")
    return clip, plan_windows(have, total)


def _melody(spec: ModelSpec, request: Request) -> Clip | None:
    return request.params.get("audio") if not continues(spec) else None


def _melody_frames(spec: ModelSpec, request: Request) -> int:
    """The chroma frames the melody model puts before the text as a decoder prefix (tiled to chroma_length)."""
    if _melody(spec, request) is None:
        return 0
    config = cached_json(spec.repo_id) or {}
    return int(config.get("chroma_length", 235))


def continues(spec: ModelSpec) -> bool:
    """Whether the model continues and extends audio (the melody model's audio is a melody to follow)."""
    return spec.param("extend_to") is not None


def _window_steps(spec: ModelSpec, window: Window) -> tuple[int, int]:
    """(prompt frames, decoder steps) of a window."""
    arch = _arch(spec)
    return math.floor(window.prompt_s * arch["frame_rate"]), _tokens(spec, window.new_s)[1]


def check(spec: ModelSpec, values) -> None:
    """An extension must make the result longer than the clip; nothing longer than MAX_TOTAL is made; a melody
    must be audible."""
    if not continues(spec):
        melody = values.get("audio")
        if melody is not None:
            from models.chroma import check_audible

            check_audible(melody.samples[:, : round(MELODY_S * melody.sample_rate)], melody.name)
        return
    clip, extend_to = values.get("audio"), values.get("extend_to") or 0.0
    have = clip.seconds if clip is not None else 0.0
    if extend_to > 0:
        if clip is not None and extend_to <= have:
            raise InvalidInput(f"extend_to (--extend) is {extend_to:g} s, but the clip {clip.name!r} is already "
                               f"{have:.1f} s long: choose a length over {have:.1f} s (at most {MAX_TOTAL:g} s), "
                               "or 0 to continue it by Duration")
        return
    if have + values["duration"] > MAX_TOTAL + 1e-6:
        raise InvalidInput(f"the clip {clip.name!r} ({have:.1f} s) and {values['duration']:g} s of new music come "
                           f"to {have + values['duration']:.1f} s; the studio makes at most {MAX_TOTAL:g} s: "
                           "trim the clip or make less")


def describe(spec: ModelSpec, request: Request) -> str:
    melody = _melody(spec, request)
    if melody is not None:
        return f"follows the melody of {melody.name!r} ({min(melody.seconds, MELODY_S):.1f} s)"
    clip, windows = _run_plan(spec, request)
    total = (clip.seconds if clip is not None else 0.0) + sum(w.new_s for w in windows)
    count = f"{len(windows)} windows" if len(windows) > 1 else "one window"
    if clip is None:
        return f"{total:g} s in {count}" if len(windows) > 1 else ""
    new = sum(w.new_s for w in windows)
    return (f"continues the {clip.seconds:.1f} s clip by {new:.1f} s: {total:.1f} s in all"
            + (f", in {count}" if len(windows) > 1 else ""))


def work_units(spec: ModelSpec, request: Request) -> float:
    guided = GUIDED_COST if request.get("guidance_scale") > 1 else 1.0
    units = 0.0
    for window in _run_plan(spec, request)[1]:
        prompt_frames, steps = _window_steps(spec, window)
        units += steps + prompt_cost(prompt_frames, steps)
    return (units + prompt_cost(_melody_frames(spec, request), _tokens(spec, request.get("duration"))[1])) * guided


def first_audio_units(spec: ModelSpec, request: Request) -> float:
    """Work units (as work_units counts them) done when the first piece is handed on: the first window's prompt,
    then STREAM_FIRST_S of new frames, the look-ahead and the delay pattern's extra steps. A window shorter than
    that hands on its audio when it ends."""
    arch = _arch(spec)
    guided = GUIDED_COST if request.get("guidance_scale") > 1 else 1.0
    window = _run_plan(spec, request)[1][0]
    prompt_frames, steps = _window_steps(spec, window)
    delay = arch["codebooks"] // spec.channels - 1
    needed = min(steps, round(STREAM_FIRST_S * arch["frame_rate"]) + STREAM_RIGHT_FRAMES + delay)
    return (needed + prompt_cost(prompt_frames, needed) + prompt_cost(_melody_frames(spec, request), needed)) * guided


def prompt_cost(frames: int, steps: int) -> float:
    """Decoder steps' worth of work that `frames` of prompt add to a generate() call of `steps` new tokens."""
    return frames * (PROMPT_FRAME_COST + PROMPT_FRAME_COST_PER_STEP * steps)


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """For the longest window: self- and cross-attention KV cache for the (guided) batch, the codec decoder's
    activations; plus the whole result, held in float32 as it grows window by window."""
    arch = _arch(spec)
    batch = 2 if request.get("guidance_scale") > 1 else 1
    clip, windows = _run_plan(spec, request)
    longest = max((w.prompt_s + w.new_s for w in windows), default=request.get("duration"))
    _, steps = _tokens(spec, longest)
    text_tokens = 64 + _melody_frames(spec, request)
    kv = 2 * arch["layers"] * batch * (steps + text_tokens) * arch["hidden"] * dtype_bytes
    samples = longest * arch["sampling_rate"] * spec.channels
    # EnCodec's last decoder block keeps a few (filters x samples) tensors alive at once.
    decode = 4 * arch["filters"] * samples * dtype_bytes
    logits = batch * arch["codebooks"] * 2048 * 4 * 4
    total = (clip.seconds if clip is not None else 0.0) + sum(w.new_s for w in windows)
    result = 2 * total * arch["sampling_rate"] * spec.channels * 4 if len(windows) > 1 or clip is not None else 0
    return int(kv + decode + logits + result + 32 * 1024**2)


def crossfade_join(music: np.ndarray, window: np.ndarray, prompt_samples: int, fade: int) -> np.ndarray:
    """`music` (channels, n) followed by what `window` adds after its first `prompt_samples` (its rendering of
    music's last `prompt_samples`): over the `fade` samples before the join the original hands over to the
    window's rendering of the same audio, so the seam is inside one continuous decode and does not click."""
    import numpy as np

    fade = min(fade, prompt_samples, music.shape[1])
    if fade <= 0:
        return np.concatenate([music, window[:, prompt_samples:]], axis=1)
    blended = crossfade(music[:, -fade:], window[:, prompt_samples - fade:prompt_samples])
    return np.concatenate([music[:, :-fade], blended, window[:, prompt_samples:]], axis=1)


def crossfade(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """`old` handing over to `new` (the same span of audio, two renderings) linearly over their length."""
    import numpy as np

    ramp = np.linspace(0.0, 1.0, old.shape[1], dtype=np.float32)
    return old * (1.0 - ramp) + new * ramp


class AudioStream:
    """The new music handed on so far, in samples from where it starts (the end of the user's clip, if any).

    Pieces come from the windowed decodes during a window and from its final decode when it ends; each `hand`
    passes on only what lies past what was already handed on and before `limit` (the requested length), so the
    pieces joined follow the result without a gap or a repeat."""

    def __init__(self, ctx: RunContext, rate: int, channels: int, limit: int) -> None:
        self.ctx, self.rate, self.channels, self.limit = ctx, rate, channels, limit
        self.sent = 0
        self.decode_s = 0.0  # the windowed decodes' time: what listening adds to the run (Audio.info, the bench)

    def hand(self, start: int, samples) -> None:
        """Hand on `samples` ((channels, n) float32) that sit at `start` in the new music."""
        if start > self.sent:
            raise RuntimeError(f"streamed audio would skip samples {self.sent}-{start}: a window decoded past the "
                               "frames handed on (a bug in models/musicgen.py's streaming)")
        end = min(start + samples.shape[1], self.limit)
        if end <= self.sent:
            return
        piece = samples[:, self.sent - start:end - start]
        self.ctx.audio(piece[0] if self.channels == 1 else piece, self.rate)
        self.sent = end


_PREFILL = threading.local()  # per thread: whether a generate() of ours runs, and the prefill it made


@contextmanager
def prefill_once(model):
    """generate() of MusicGen prefills twice: its own generate() calls `_prefill` and passes the result on as
    `prefill_outputs`, which the shared `_sample` loop ignores, prefilling again (transformers 5.23,
    models/musicgen/modeling_musicgen.py step 10b; generation/utils.py `_sample`). The second is a wasted forward
    over the whole prompt (a continuation's prompt is up to 1500 frames), and with a static cache (the compiled
    path, models.compiled) it writes the prompt twice, shifting every position after it. Within this context the
    second call returns the first's outputs: the same numbers, computed once."""
    if not getattr(model, "_studio_prefill_once", False):
        original = model._prefill

        def prefill(input_ids, *args, **kwargs):
            if not getattr(_PREFILL, "active", False):
                return original(input_ids, *args, **kwargs)
            kept = getattr(_PREFILL, "kept", None)
            if kept is not None and kept[0] is input_ids:
                _PREFILL.kept = None
                return kept[1]
            outputs = original(input_ids, *args, **kwargs)
            _PREFILL.kept = (input_ids, outputs)
            return outputs

        model._prefill = prefill
        model._studio_prefill_once = True
    _PREFILL.active, _PREFILL.kept = True, None
    try:
        yield
    finally:
        _PREFILL.active, _PREFILL.kept = False, None


@contextmanager
def delay_mask_kept(decoder, kept: dict):
    """Keep the delay pattern mask generate() builds, while it runs: the sequence the sampler grows holds raw
    predictions where the mask fixes a value (the prompt's last frames of the later codebooks, in the positions
    where their delay puts them), and generate() applies the mask only at the end (transformers
    models/musicgen/modeling_musicgen.py generate(): build_delay_pattern_mask, then apply_delay_pattern_mask on
    the output ids). A window decode mid-run applies it the same way. Only this thread's generate() is kept: the
    background compile (models.compiled) may run a short generate() of its own beside a run."""
    original = decoder.build_delay_pattern_mask
    owner = threading.get_ident()

    def build(*args, **kwargs):
        ids, mask = original(*args, **kwargs)
        if threading.get_ident() == owner:
            kept["mask"] = mask
        return ids, mask

    decoder.build_delay_pattern_mask = build
    try:
        yield kept
    finally:
        del decoder.build_delay_pattern_mask  # the class's method again


class WindowedDecode:
    """A transformers StoppingCriteria that, as a window generates, decodes the complete frames made so far and
    hands on their new audio; it never stops generation.

    After n sampled steps the sequence holds 1 + prompt_frames + n positions per codebook, and frame j of codebook
    row r sits at position j + delay(r) + 1 (delay = r for mono, r // 2 for stereo's interleaved rows: the mask's
    layout in build_delay_pattern_mask), so the first frames_complete = positions - codebooks_per_channel frames
    have every codebook. A decode covers STREAM_LEFT_FRAMES before what it hands on and STREAM_RIGHT_FRAMES after.
    """

    def __init__(self, model, stream: AudioStream, kept: dict, *, prompt_frames: int, frames: int, hop: int,
                 frame_rate: float, base: int, held=None) -> None:
        self.model, self.stream, self.kept = model, stream, kept
        # An extension window's join: the music's last samples before `base`, held back when the window before
        # ended, which the result crossfades into this window's rendering of them (crossfade_join).
        self.held = held
        self.prompt_frames, self.frames, self.hop, self.base = prompt_frames, frames, hop, base
        self.channels = model.decoder.config.audio_channels
        self.per_channel = model.decoder.num_codebooks // self.channels
        self.every = max(1, round(STREAM_EVERY_S * frame_rate))  # doubles after each piece, to the cap
        self.every_max = max(1, round(STREAM_EVERY_MAX_S * frame_rate))
        self.handed = prompt_frames  # frames handed on through (window frames; the prompt is not handed on)
        self.next_at = prompt_frames + max(1, round(STREAM_FIRST_S * frame_rate))

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        complete = input_ids.shape[-1] - self.per_channel
        stable = complete - STREAM_RIGHT_FRAMES
        # No piece in the last quarter of the interval it would end: the window's final decode is that close.
        if stable >= self.next_at and stable < self.frames - (self.next_at - self.handed) // 4:
            self._decode(input_ids, stable, complete)
            self.next_at = stable + self.every
            self.every = min(2 * self.every, self.every_max)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def _decode(self, input_ids, stable: int, complete: int) -> None:
        import time

        import torch

        started = time.perf_counter()
        mask = self.kept["mask"][..., :input_ids.shape[-1]]
        ids = torch.where(mask == -1, input_ids, mask)
        start = max(0, self.handed - STREAM_LEFT_FRAMES)
        rows = ids.shape[0]  # batch 1: one row per codebook
        delays = [r // self.channels for r in range(rows)]
        codes = torch.stack([ids[r, start + d + 1:complete + d + 1] for r, d in enumerate(delays)])[None, None]
        codec = self.model.audio_encoder
        with torch.inference_mode():
            if self.channels == 1:
                values = codec.decode(codes, audio_scales=[None]).audio_values
            else:  # as generate() decodes stereo: even rows left, odd rows right
                left = codec.decode(codes[:, :, ::2], audio_scales=[None]).audio_values
                right = codec.decode(codes[:, :, 1::2], audio_scales=[None]).audio_values
                values = torch.cat([left, right], dim=1)
        audio = to_float32_numpy(values[0])
        if self.held is not None:  # the join first, as the result will have it (start <= prompt - LEFT)
            end = (self.prompt_frames - start) * self.hop
            count = self.held.shape[1]
            self.stream.hand(self.base - count, crossfade(self.held, audio[:, end - count:end]))
            self.held = None
        self.stream.hand(self.base + (self.handed - self.prompt_frames) * self.hop,
                         audio[:, (self.handed - start) * self.hop:(stable - start) * self.hop])
        self.handed = stable
        self.stream.decode_s += time.perf_counter() - started


class MusicgenModel(CompiledDecoding, OneModuleModel):
    compile_holds_device = False  # its warm-up decodes greedily: it draws nothing from the generator a run samples from

    @property
    def compile_name(self) -> str:
        """The name studio.compiling.PAYS knows the model by: MusicGen melody (twice musicgen-small's layers, a
        prefix in place of cross-attention) is measured apart from the other sizes. The loaded model's config says
        which it is (load() picked the class by it), with no file to read."""
        return self.model.config.model_type

    def compile_decoder(self, policy, device_kind: str, make_request=None) -> bool:
        """Compile the decoder's per-token step now (the manager calls this in the background after a load, when
        the device is idle): two short runs on the compiled path (one on a trace an earlier process saved). Returns
        whether later runs take it."""
        from models.compiled import DecodeCompiler, no_layer_drop_draws

        no_layer_drop_draws(self.model.decoder.model.decoder)
        compiler = DecodeCompiler(policy, device_kind, precompile=True)
        self.compiler = compiler

        def run(steps: int, text: str) -> None:
            import torch

            inputs = self.preprocess([text], padding=True, return_tensors="pt").to(self.torch_device)
            with torch.inference_mode(), prefill_once(self.model):
                compiled = self._compiled_kwargs(compiler, inputs, 0, steps)  # finds a saved trace, if there is one
                self.model.generate(**inputs, **compiled, do_sample=False,
                                    max_new_tokens=compiler.warm_up_steps(steps), guidance_scale=3.0)

        return compiler.warm_up(run)

    def _hop(self) -> int:
        arch = _arch(self.spec)
        return round(int(arch["sampling_rate"]) / arch["frame_rate"])

    def _compiled_kwargs(self, compiler, inputs, prompt_frames: int, steps: int) -> dict:
        """What generate() needs to decode through the compiled step: a static cache of the run's length (and the
        text's, for cross-attention) and the compile config. MusicGen melody has no cross-attention: its decoder's
        own cache holds the chroma and the text as a prefix (chroma_length frames, then the text's), ahead of the
        start token."""
        import torch
        from transformers.cache_utils import EncoderDecoderCache, StaticCache

        from models.compiled import branch_free_positions, windowed, windowed_length

        decoder = self.model.decoder
        # The start token, the prompt, the new tokens (and room: windowed_length).
        text_len = int(inputs["input_ids"].shape[1])
        prefix = self.model.config.chroma_length + text_len if self.compile_name == MUSICGEN_MELODY else 0
        cache_len = windowed_length(prefix + 1 + prompt_frames + steps + decoder.num_codebooks)
        branch_free_positions(decoder.model.decoder.embed_positions, cache_len)
        config = compiler.compile_config(self.model,
                                         lambda inputs: _compiled_step_inputs(inputs, mark=compiler.marks_dims))
        # Made under inference_mode whoever calls: the cache's position counter is a graph input, and one made
        # outside it carries another dispatch key, which fails the compiled graph's guards (a recompile mid-run).
        with torch.inference_mode():
            cache = EncoderDecoderCache(windowed(StaticCache(config=decoder.config, max_cache_len=cache_len)),
                                        StaticCache(config=decoder.config, max_cache_len=text_len))
        return {"past_key_values": cache, "compile_config": config}

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import numpy as np

        # 1. The plan: the clip to continue (if any), then windows of at most MAX_DURATION, each prompted by
        #    the end of the music so far; one progress count over all of them.
        arch = _arch(self.spec)
        rate, channels = int(arch["sampling_rate"]), self.spec.channels
        hop = round(rate / arch["frame_rate"])
        clip, windows = _run_plan(self.spec, request)
        music = clip.conformed(rate, channels) if clip is not None else np.zeros((channels, 0), np.float32)
        wanted = music.shape[1] + round(sum(w.new_s for w in windows) * rate)
        total_steps = sum(_window_steps(self.spec, w)[1] for w in windows)
        # 2. Text -> tokens on the model's device, once; the melody model's chroma beside them.
        inputs = self.preprocess([request.prompt], padding=True, return_tensors="pt").to(self.torch_device)
        melody = _melody(self.spec, request)
        if melody is not None:
            from models.chroma import melody_chroma

            config = cached_json(self.spec.repo_id, "preprocessor_config.json") or {}
            features = melody_chroma(melody.samples, melody.sample_rate, config)
            # generate() builds the unconditional half for guidance itself: pass one row, in the model's dtype
            inputs["input_features"] = features.to(self.torch_device, dtype=self.model.dtype)
        seed_everything(request.seed)
        # Streaming: the new music only (a clip to continue is the user's own), up to the requested length. The
        # codec's scale is None here: MusicGen's EnCodec does not normalize (a codec that did would need the
        # prompt's scale, which generate() keeps to itself).
        origin = music.shape[1]
        stream = AudioStream(ctx, rate, channels, wanted - origin) \
            if ctx.listening and not self.model.audio_encoder.config.normalize else None
        fade = round(CROSSFADE_S * rate)
        done, finished = 0, 0
        try:
            for index, window in enumerate(windows):
                ctx.check()
                prompt_frames, steps = _window_steps(self.spec, window)
                # 3. The prompt ends exactly at the end of the music (whole codec frames), so the new frames
                #    follow it with no gap.
                prompt = music[:, music.shape[1] - prompt_frames * hop:] if prompt_frames else None
                last = index == len(windows) - 1
                base = music.shape[1] - origin  # where this window's new music starts in the stream
                decode = None
                if stream is not None:
                    held = music[:, origin + stream.sent:] if stream.sent < base else None
                    decode = WindowedDecode(self.model, stream, {}, prompt_frames=prompt_frames,
                                            frames=prompt_frames + _tokens(self.spec, window.new_s)[0], hop=hop,
                                            frame_rate=arch["frame_rate"], base=base, held=held)
                values = self._sample(request, inputs, prompt, steps, ctx, done, total_steps, last, decode)
                done += steps
                # 4. Keep the new part, joined to the music so far under a short crossfade.
                rendered = to_float32_numpy(values[0])
                music = crossfade_join(music, rendered, prompt_frames * hop, fade) if prompt is not None else rendered
                if stream is not None:
                    # The rest of the window from its ordinary full decode, but for the span the next window's
                    # join will crossfade: that goes with the next window's first piece.
                    upto = music.shape[1] - origin
                    if not last:
                        upto -= min(fade, _window_steps(self.spec, windows[index + 1])[0] * hop, music.shape[1])
                    stream.hand(stream.sent, music[:, origin + stream.sent:origin + upto])
                finished += 1
        except Cancelled:
            if not (request.params.get("keep_partial") and finished and len(windows) > 1):
                raise
            log.info("extension cancelled after %d of %d windows: keeping %.1f s", finished, len(windows),
                     music.shape[1] / rate)
            info = {"partial": True, "windows_done": finished, "windows": len(windows)}
            return Audio(music[0] if channels == 1 else music, rate, info={**info, "metadata": info})
        ctx.check()
        # 5. Exactly the requested length (the last frame may overshoot it).
        music = music[:, :wanted]
        info = {"tokens": total_steps, "windows": len(windows)}
        if melody is not None:
            info["melody_s"] = round(min(melody.seconds, MELODY_S), 4)
        if clip is not None:
            info.update(prompt_s=round(clip.seconds, 4), continuation_s=round(music.shape[1] / rate - clip.seconds, 4))
        # Not in the metadata: the file is the same whether anyone listened or not.
        streamed = {"stream_decode_s": round(stream.decode_s, 4)} if stream is not None else {}
        return Audio(music[0] if channels == 1 else music, rate, info={**info, **streamed, "metadata": dict(info)})

    def _sample(self, request: Request, inputs, prompt, steps: int, ctx: RunContext, offset: int, total: int,
                last: bool, decode: WindowedDecode | None = None):
        """One generate() call: `steps` new tokens after the (channels, samples) `prompt`, decoded with it; with
        `decode`, its new audio is handed on as it is made as well."""
        import torch

        top_p = request.get("top_p")
        extra = {}
        if prompt is not None:
            codec_dtype = next(self.model.audio_encoder.parameters()).dtype
            extra["input_values"] = torch.from_numpy(prompt[None]).to(self.torch_device, dtype=codec_dtype)
        on_last = (lambda: ctx.stage("decoding")) if last else None
        # Progress first: it raises Cancelled before a windowed decode is spent on a run that is stopping.
        criteria = token_progress(ctx, steps, offset=offset, grand_total=total, on_last=on_last)
        if decode is not None:
            criteria.append(decode)
        compiler = self.ready_compiler()
        # The compiled graph's shapes are guidance's: it doubles the rows.
        if compiler is not None and (request.get("guidance_scale") or 0) > 1:
            extra.update(self._compiled_kwargs(compiler, inputs, -(-prompt.shape[-1] // self._hop())
                                               if prompt is not None else 0, steps))
        kept = delay_mask_kept(self.model.decoder, decode.kept) if decode is not None else nullcontext()
        with torch.inference_mode(), kept, prefill_once(self.model):
            return self.model.generate(
                **inputs, **extra,
                do_sample=True,
                max_new_tokens=steps,
                guidance_scale=request.get("guidance_scale"),
                temperature=request.get("temperature"),
                top_k=request.get("top_k") or None,
                top_p=top_p if 0 < top_p < 1 else None,
                stopping_criteria=criteria,
            )


def _compiled_step_inputs(inputs: dict, mark: bool = True) -> dict | None:
    """One decode step's inputs in the compiled graph's layout: generate() slices the growing sequence (a stride that
    changes every step) and grows the decoder's all-ones mask, so the step gets a contiguous copy and no mask (the
    static cache's own positions make the causal mask). A mask with padding in it: None, the eager model's step.
    `mark`: the varying lengths are marked symbolic (DecodeCompiler.marks_dims). MusicGen melody's generate() passes
    no decoder mask: the cache's own count of positions (the chroma and text prefix among them) places the step."""
    from models.compiled import set_window, symbolic_lengths

    ids, mask = inputs.get("decoder_input_ids"), inputs.get("decoder_attention_mask")
    if mask is not None and not bool(mask.all()):
        return None
    inputs["decoder_input_ids"] = ids.contiguous() if ids is not None else ids
    inputs["decoder_attention_mask"] = None
    cache = inputs.get("past_key_values")
    if cache is not None:  # the mask is as long as the sequence so far: a host-side size, no device sync
        last = mask.shape[-1] - 1 if mask is not None else int(cache.self_attention_cache.layers[0].cumulative_length)
        set_window(cache.self_attention_cache, last, mark)
        layers = [*cache.self_attention_cache.layers, *cache.cross_attention_cache.layers]
        if mark:  # the run's cache length, the text's length: symbolic from the first trace
            symbolic_lengths(*((getattr(layer, part, None), 2) for layer in layers for part in ("keys", "values")))
    encoder = inputs.get("encoder_outputs")
    if mark:
        symbolic_lengths((getattr(encoder, "last_hidden_state", None), 1), (inputs.get("attention_mask"), 1))
    return inputs


def _is_melody(spec: ModelSpec) -> bool:
    """Whether the repo holds MusicGen melody: its config.json says so (a fine-tune added under any name,
    studio.user_models, has it cached once checked); before a download, the repo id does (facebook/musicgen-melody)."""
    config = cached_json(spec.repo_id) or {}
    if config.get("model_type") in (MUSICGEN, MUSICGEN_MELODY):
        return config["model_type"] == MUSICGEN_MELODY
    return "melody" in spec.repo_id


def load(spec: ModelSpec, torch_device: str, dtype: str) -> MusicgenModel:
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    # Melody's AutoProcessor needs torchaudio for its chroma features: the tokenizer alone reads the text, and
    # models.chroma computes the chroma the same way without torchaudio.
    model_class = MusicgenMelodyForConditionalGeneration if _is_melody(spec) else MusicgenForConditionalGeneration
    model = load_pretrained(model_class, spec, torch_device, dtype, int8_parts=INT8_PARTS, keep_float=("audio_encoder",))
    tokenizer = AutoTokenizer.from_pretrained(spec.repo_id, **SAFE_LOAD)
    check_tokenizer(spec, tokenizer, "tokenizer.json", model.config.text_encoder.vocab_size)
    return MusicgenModel(spec, model, tokenizer, torch_device)


FAMILY = Family(
    name="musicgen", load=load, work_units=work_units, working_bytes=working_bytes, check=check, describe=describe,
    first_audio_units=first_audio_units, unsaved_bytes=unsaved_bytes,
    # int8 on a CPU: 3.8x faster than float32 on musicgen-small (docs/benchmarks.md); EnCodec stays float.
    preferred_dtypes={"cuda": "float16", "mps": "float16", "cpu": "int8"},
    precisions=("float32", "float16", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    # The T5 tokenizer: transformers 5 reads tokenizer.json (spiece.model alone needs a converter it may lack).
    files=(("tokenizer.json",),),
    # MusicgenConfig.model_type and MusicgenMelodyConfig's: load() picks the class by what the config says.
    accepts=(Accepts("config.json", "model_type", (MUSICGEN, MUSICGEN_MELODY)),),
)
