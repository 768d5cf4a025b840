"""VibeVoice (Microsoft): long multi-speaker speech (podcasts) from a script, voices cloned from sample clips, 24 kHz.

transformers 5.23 holds it as `VibeVoiceForConditionalGeneration` + `VibeVoiceProcessor`: a Qwen2 language model
reads the voice samples (latents of the acoustic tokenizer, a sigma-VAE), the whole script and the speech so far;
at each step it emits an audio placeholder, and a small diffusion head turns that step's hidden state into the next
acoustic latent frame (a DPM-Solver loop with classifier-free guidance against an unconditioned branch), which the
acoustic tokenizer's decoder turns into 3200 samples (7.5 frames a second) and the semantic tokenizer's encoder
reads back for the next step. The model stops itself with an EOS.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

from studio.catalog import MODE, Accepts, Family, ModelSpec, Param, Request, SpeedPrior, saved_voice_param
from studio.clips import Clip
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json, cached_snapshot

from models.common import (SAFE_LOAD, OneModuleModel, PartSwitcher, check_tokenizer, int8_linear, load_pretrained,
                           seed_everything, to_float32_numpy, token_progress)
from models.compiled import CompiledDecoding
from models.dialogue import DIALOGUE, LONG_FORM, SINGLE, Turn, check_one_voice, mode_param, paragraphs
from models.dialogue import parse_script as parse_script_for

log = logging.getLogger(__name__)

# The id transformers 5.23 names (`@auto_docstring(checkpoint="vibevoice/VibeVoice-1.5B-hf")` in
# configuration_vibevoice.py): a community namespace holding the library's conversion of Microsoft's
# microsoft/VibeVoice-1.5B (convert_vibevoice_to_hf.py); the library's docs of other versions name the porter's own
# bezzam/VibeVoice-1.5B-hf. `--add-model REPO=vibevoice` points the family at another copy.
REPO = "vibevoice/VibeVoice-1.5B-hf"
LICENSE = "MIT"  # Microsoft's card for VibeVoice-1.5B; the community copy's card could not be read here
SAMPLE_RATE = 24000  # VibeVoiceProcessor.audio_kwargs and the feature extractor's sampling_rate
HOP = 3200  # samples a frame: prod(downsampling_ratios) = 2*2*4*5*5*8 of the acoustic tokenizer (its hop_length)
FRAME_RATE = SAMPLE_RATE / HOP  # 7.5
# The library's docs: "Capable of synthesizing audio with a maximum of 4 speakers" (model_doc/vibevoice.md, Key
# Features); the chat template numbers them by role "0".."3" (Speaker 1 of a script is role "0").
SPEAKERS = 4
VOICE_PARAMS = ("audio", "audio_2", "audio_3", "audio_4")  # speaker k's sample, as every multi-speaker family names it
MIN_PROMPT_S = 1.0  # under a second there is hardly a voice to hear
# The processor encodes every voice sample in one padded batch, and the acoustic tokenizer's first stage runs at the
# full 24 kHz with num_filters (32) channels and a ConvNeXt FFN of 4x that: counted from the architecture (not
# measured: the bench's probe, bench/vibevoice_cpu.py, did not finish on the shared machine), its input, FFN and
# activation, 32 + 128 + 128 floats a sample, about 1.2 KB a sample or 28 MB a second of clip in float32. 30 s caps a
# clip's encoding at about 0.85 GB (3.5 GB for four), and VibeVoice's own demo voices are clips of that order.
MAX_PROMPT_S = 30.0
ENCODE_BYTES_PER_SAMPLE = 1200
CHARS_PER_SECOND = 14.0  # typical read English, for the estimate (Bark's and Dia's figure)
# A trained model ends with its EOS; random weights never do, and generate()'s own default (40,500 frames, 90 minutes)
# would run for days on a CPU. So every run is capped from its text: at 8 characters a second, 1.75x the expected
# length (a slow speaker, pauses between turns), and at least a second.
CAP_CHARS_PER_SECOND = 8.0
MIN_CAP_S = 1.0
# The model's window: text_config.max_position_embeddings of the cached config.json (65,536 in the library's
# conversion of the 1.5B, not verified here: its config could not be read).
POSITIONS = 65536
# Prompt tokens besides the script: the system line (~25 tokens), " Voice input:", " Text input:", " Speech
# output:" and the audio BOS; per turn " Speaker N: " and the line break; per voice its line and BOS/EOS.
PROMPT_TOKENS, TURN_TOKENS, VOICE_TOKENS = 40, 6, 6
CHARS_PER_TOKEN = 3.0  # Qwen2's BPE, English: about 4 characters a token; 3 leaves room for other scripts
# Published architecture (the library's default VibeVoiceConfig with the Qwen2.5-1.5B text config of
# microsoft/VibeVoice-1.5B: 1536 wide, 28 layers, 12 heads, 2 KV heads, FFN 8960, tied 151,936-token embeddings),
# counted on the meta device; the exact figures come from the files once cached.
LM_PARAMETERS = 1_543_714_304 + 123_279_360 + 2_462_208 + 2_560_512 + 2  # LM, diffusion head, connectors, factors
ACOUSTIC_PARAMETERS = 687_392_001  # audio_tower: the sigma-VAE's encoder (voices) and decoder (every frame)
SEMANTIC_PARAMETERS = 344_613_600  # semantic_tokenizer_encoder: reads every new frame back
LAYERS, KV_WIDTH, HIDDEN = 28, 2 * 128, 1536
DIFFUSION_STEPS = 10  # generate()'s default num_diffusion_steps (generation_vibevoice._prepare_generation_config)
# Speed, measured: `nice -n 10 python -m bench.vibevoice_cpu` on this 2-core AMD EPYC (avx2, avx512f/bw/vl/vnni,
# avx512_bf16), random weights of the published widths with 2 and 5 of the 28 LM layers, float32, 10 diffusion steps,
# denormals flushed (random tokenizers make them; trained ones do not), median of 8 frames, on a machine other jobs
# kept at a load average of 7-14. At 5 layers: 8.5 s a frame, of it the LM's two passes 1.33 s (0.27 s a layer), the
# diffusion head 4.8 s, the acoustic decoder 2.6 s, the semantic encoder 2.2 s; at 2 layers, under a heavier load,
# 25.5 s (every part 2-2.5x slower), so the two depths cannot be fitted: the 5-layer parts, the LM scaled to 28
# layers, give 17 s a frame, a real-time factor of about 128. An upper bound: the load inflated every part (a 5 GFLOP
# diffusion head should take well under a second on one free core); int8 and bfloat16 did not finish in the session.
DIFFUSION_SHARE = 0.28  # the diffusion head's share of a 28-layer frame at 10 steps: 4.8 s of 17 s
INT8_PARTS = ("model",)  # every Linear under model: the LM, the diffusion head, the connectors, the tokenizers' FFNs
# Then on a quieter machine (about one core's worth of other jobs), `python -m bench --quick --only vibevoice-1.5b`
# (docs/benchmarks.md): a build with 4 of the 28 LM layers, one line of 8 frames, the studio's run against transformers
# called directly: float32 1.7 s a frame (13.6 s; the reference 14.2 s), int8 4.03x faster (0.44 s), bfloat16 2.19x.
# With the LM's layers at the earlier probe's share (3 % of a 5-layer frame each), the 28 layers give about 3.0 s a
# frame in float32 and 0.8 s in int8: real-time factors of about 22 and 6.
CPU_S_PER_FRAME = 3.0  # float32
CPU_INT8_S_PER_FRAME = 0.8
CUDA_S_PER_FRAME = 0.05  # not measured (no GPU here): a guess for a 1.5B LM step, 10 head steps and the decoder
MPS_S_PER_FRAME = 0.2  # not measured


def voice_param(speaker: int) -> str:
    return VOICE_PARAMS[speaker - 1]


def parse_script(text: str, mode: str = DIALOGUE) -> list[Turn]:
    """The script's turns (models.dialogue: [SN] tags or 'Speaker N:' lines; plain text is Speaker 1's). Single voice
    and Long form refuse a second speaker; Long form makes each paragraph a turn of Speaker 1 (a line of the prompt,
    as the chat template writes a turn), so the segments follow the paragraphs."""
    if mode == DIALOGUE:
        return parse_script_for(text, speakers=SPEAKERS, model="VibeVoice")
    check_one_voice(text, mode, model="VibeVoice", dialogue=True)
    if mode == SINGLE:
        return parse_script_for(text, speakers=1, model="VibeVoice")
    return [turn for part in paragraphs(text) for turn in parse_script_for(part, speakers=1, model="VibeVoice")]


# Dialogue is the default: VibeVoice is made for scripts of several speakers, and every call before modes sent one.
# Its single pass over the whole text is long-form by nature (up to about 90 minutes in its window), so Long form is
# the same pass with one voice and a turn per paragraph.
MODES = (SINGLE, DIALOGUE, LONG_FORM)
MODE_NOTES = {
    DIALOGUE: "Up to four speakers; one without a voice speaks in a voice the model picks.",
    LONG_FORM: "VibeVoice reads the whole text in one pass (up to about 90 minutes), each paragraph a turn of "
               "Speaker 1.",
}


# ----------------------------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------------------------


def _params() -> tuple[Param, ...]:
    voices = []
    for speaker, name in enumerate(VOICE_PARAMS, start=1):
        modes = () if speaker == 1 else (DIALOGUE,)  # Speakers 2-4 speak in Dialogue only
        voices.append(saved_voice_param(speaker, modes=modes))
        voices.append(Param(
            name, Clip, None, f"Voice of Speaker {speaker}",
            f"A sample of Speaker {speaker}'s voice ({MIN_PROMPT_S:g}-{MAX_PROMPT_S:g} s of one speaker, WAV, FLAC, "
            "OGG or MP3, or a recording; no transcript needed); 10-30 s of clean speech work best. Without one, "
            f"Speaker {speaker} speaks in a voice the model picks.",
            minimum=MIN_PROMPT_S, maximum=MAX_PROMPT_S, advanced=speaker > 2, modes=modes))
    return (
        mode_param(MODES, DIALOGUE, MODE_NOTES),
        *voices,
        Param("guidance_scale", float, 1.3, "Guidance", "How strongly each frame follows the script and the voices "
              "(classifier-free guidance of the diffusion head; the released checkpoints use 1.3). Every value costs "
              "the same: the unconditioned branch always runs.", minimum=1.0, maximum=5.0, step=0.1),
        Param("num_diffusion_steps", int, DIFFUSION_STEPS, "Diffusion steps", "DPM-Solver steps of the diffusion "
              "head per frame: fewer is faster, more can be cleaner.", minimum=1, maximum=50, step=1),
    )


SPECS = (
    ModelSpec(
        repo_id=REPO, family="vibevoice", tasks=("speech",), label="VibeVoice 1.5B", license=LICENSE,
        prompt_hint="A script of up to four speakers, a line each: 'Speaker 1: Welcome to the show.' 'Speaker 2: "
                    "Glad to be here.' (or [S1] ... [S2] ...); plain text is Speaker 1's",
        parameters=LM_PARAMETERS + ACOUSTIC_PARAMETERS + SEMANTIC_PARAMETERS, sample_rate=SAMPLE_RATE, channels=1,
        max_duration=None, params=_params(),
        speed={"cpu": SpeedPrior(3.0, CPU_S_PER_FRAME), "cpu/int8": SpeedPrior(3.0, CPU_INT8_S_PER_FRAME),
               "cuda": SpeedPrior(2.0, CUDA_S_PER_FRAME), "mps": SpeedPrior(2.0, MPS_S_PER_FRAME)},
        unit="frame", max_prompt_chars=60_000,
        description="Microsoft's long-form multi-speaker speech: podcasts and dialogues of up to four speakers "
                    "('Speaker 1: ...' lines), each voice cloned from a sample clip; 24 kHz. The library's "
                    f"conversion in a community namespace ({REPO}); --add-model REPO=vibevoice points the family at "
                    "another copy.",
    ),
)


# ----------------------------------------------------------------------------------------------------------------
# The plan: the script, the voices, the cap
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    turns: tuple[Turn, ...]
    voices: dict[int, Clip]  # speaker -> sample clip, for the speakers of the script that have one
    unused: tuple[int, ...]  # speakers given a sample but without a turn in the script
    prompt_tokens: int  # about: the prompt with its voice frames
    frames: int  # new frames at most (the cap)
    expected_frames: int  # new frames a trained model makes, about

    @property
    def speakers(self) -> list[int]:
        return sorted({turn.speaker for turn in self.turns})


def positions(spec: ModelSpec) -> int:
    config = cached_json(spec.repo_id) or {}
    return int((config.get("text_config") or {}).get("max_position_embeddings", POSITIONS))


def plan(spec: ModelSpec, text: str, values) -> Plan:
    """The run a request makes, refusing one that does not fit the model (messages name the value and the fix)."""
    mode = values.get(MODE) or DIALOGUE
    turns = tuple(parse_script(text, mode))
    spoken = {turn.speaker for turn in turns}
    # Speakers 2-4's clips belong to Dialogue (Param.modes): another mode reads Speaker 1's alone.
    speakers = SPEAKERS if mode == DIALOGUE else 1
    given = {speaker: values.get(voice_param(speaker)) for speaker in range(1, speakers + 1)}
    voices = {speaker: clip for speaker, clip in given.items() if clip is not None and speaker in spoken}
    unused = tuple(speaker for speaker, clip in given.items() if clip is not None and speaker not in spoken)
    chars = sum(len(turn.text) for turn in turns)
    voice_frames = sum(math.ceil(clip.seconds * FRAME_RATE) for clip in voices.values())
    prompt_tokens = (PROMPT_TOKENS + TURN_TOKENS * len(turns) + math.ceil(chars / CHARS_PER_TOKEN)
                     + VOICE_TOKENS * len(voices) + voice_frames)
    expected = math.ceil(chars / CHARS_PER_SECOND * FRAME_RATE)
    window = positions(spec)
    room = window - prompt_tokens
    if expected > room:
        held = f" beside {len(voices)} voice sample(s)" if voices else ""
        raise InvalidInput(
            f"the script is about {expected / FRAME_RATE / 60:.1f} minutes of speech ({chars:,} characters at "
            f"{CHARS_PER_SECOND:g} a second); VibeVoice holds at most {max(room, 0) / FRAME_RATE / 60:.1f} minutes in "
            f"one run{held} (its language model reads {window:,} positions: text_config.max_position_embeddings in "
            "its config.json, 7.5 a second of speech): split the script into several runs")
    cap = math.ceil(max(MIN_CAP_S, chars / CAP_CHARS_PER_SECOND) * FRAME_RATE)
    return Plan(turns=turns, voices=voices, unused=unused, prompt_tokens=prompt_tokens, frames=max(1, min(cap, room)),
                expected_frames=max(1, expected))


def check_text(spec: ModelSpec, text: str, values) -> None:
    plan(spec, text, values)


def describe(spec: ModelSpec, request: Request) -> str:
    run = plan(spec, request.prompt, request.params)
    who = []
    for speaker in run.speakers:
        clip = run.voices.get(speaker)
        who.append(f"Speaker {speaker} in the voice of {clip.name!r}" if clip is not None
                   else f"Speaker {speaker} in a voice the model picks")
    turns = len(run.turns)
    unit = "paragraph" if request.params.get(MODE) == LONG_FORM else "turn"
    text = (f"{turns} {unit}{'s' if turns != 1 else ''}: {', '.join(who)}; "
            f"about {run.expected_frames / FRAME_RATE:.0f} s "
            f"of speech (at most {run.frames / FRAME_RATE:.1f} s)")
    if run.unused:
        names = ", ".join(f"Speaker {speaker}" for speaker in run.unused)
        text += f"; the voice of {names} is unused (no turn in the script)"
    return text


# ----------------------------------------------------------------------------------------------------------------
# Estimates
# ----------------------------------------------------------------------------------------------------------------


def frame_cost(steps: int) -> float:
    """A frame's work at `steps` diffusion steps, in frames at the default 10 (what the speed prior counts)."""
    return (1 - DIFFUSION_SHARE) + DIFFUSION_SHARE * steps / DIFFUSION_STEPS


def work_units(spec: ModelSpec, request: Request) -> float:
    """Frames a trained model makes (it stops at its EOS), weighted by the diffusion steps, plus the prefill of the
    prompt and the voice samples (a position costs about a twentieth of a frame: one batched pass; not measured)."""
    run = plan(spec, request.prompt, request.params)
    return min(run.expected_frames, run.frames) * frame_cost(request.get("num_diffusion_steps")) \
        + run.prompt_tokens / 20


def first_audio_units(spec: ModelSpec, request: Request) -> float | None:
    """The prefill and one frame: VibeVoice's acoustic decoder turns each frame into its 3200 samples as it is made
    (streaming convolutions, a padding cache), and each is heard at once (VibeVoiceAdapter._hand_on_frames)."""
    run = plan(spec, request.prompt, request.params)
    if min(run.expected_frames, run.frames) < 2:
        return None
    return frame_cost(request.get("num_diffusion_steps")) + run.prompt_tokens / 20


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The KV caches of the guided and the unconditioned branch over the whole window the run may use, the prefill's
    activations, and the voice samples' encoding (the acoustic encoder at its peak on the padded batch, float32)."""
    run = plan(spec, request.prompt, request.params)
    text = (cached_json(spec.repo_id) or {}).get("text_config") or {}
    layers = text.get("num_hidden_layers", LAYERS)
    hidden = text.get("hidden_size", HIDDEN)
    heads = text.get("num_attention_heads", 12)
    kv_width = text.get("num_key_value_heads", 2) * hidden // heads
    ffn = text.get("intermediate_size", 8960)
    used = run.prompt_tokens + run.frames
    kv = 2 * layers * (used + run.frames) * kv_width * dtype_bytes  # positive branch + the negative's (frames only)
    prefill = run.prompt_tokens * (4 * hidden + 3 * ffn) * 4 + heads * run.prompt_tokens ** 2 * 4
    longest = max((clip.seconds for clip in run.voices.values()), default=0.0)
    encode = len(run.voices) * math.ceil(longest * SAMPLE_RATE) * ENCODE_BYTES_PER_SAMPLE
    return int(kv + max(prefill, encode) + 64 * 1024**2)


def _part(name: str) -> str:
    if name.startswith("model.audio_tower."):
        return "acoustic_tokenizer"
    if name.startswith("model.semantic_tokenizer_encoder."):
        return "semantic_tokenizer"
    return "model"


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    """The language model with its diffusion head and connectors, and the two tokenizers: from the cached
    safetensors headers, else the published counts."""
    from studio.weights import _FLOAT_DTYPES, _DTYPE_SIZES, _weight_files, read_header

    snapshot = cached_snapshot(spec.repo_id)
    files = _weight_files(snapshot) if snapshot is not None else []
    if not files:
        return {"model": LM_PARAMETERS * dtype_bytes, "acoustic_tokenizer": ACOUSTIC_PARAMETERS * dtype_bytes,
                "semantic_tokenizer": SEMANTIC_PARAMETERS * dtype_bytes}
    sizes = {"model": 0, "acoustic_tokenizer": 0, "semantic_tokenizer": 0}
    for path in files:
        for name, entry in read_header(path).items():
            numel = math.prod(int(dim) for dim in entry["shape"])
            size = dtype_bytes if entry["dtype"] in _FLOAT_DTYPES else _DTYPE_SIZES.get(entry["dtype"], 4)
            sizes[_part(name)] += numel * size
    return sizes


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------


def estimate_segments(turns, samples, sample_rate: int = SAMPLE_RATE, hop: int = HOP) -> list[dict]:
    """Where each turn is in the output, estimated (the generation does not mark turns; see VibeVoiceAdapter).

    Each turn gets a share of the frames proportional to its characters; each boundary then moves to the quietest
    frame within a quarter of the shorter neighbouring turn when that frame is under half the level where the
    characters put the boundary (speakers change in a pause). Contiguous from 0 to the
    end; every turn keeps at least one frame when there are frames enough.
    """
    import numpy as np

    frames = max(1, math.ceil(len(samples) / hop))
    padded = np.zeros(frames * hop, dtype=np.float32)
    padded[: len(samples)] = samples
    energy = np.sqrt(np.mean(padded.reshape(frames, hop) ** 2, axis=1))
    weights = np.array([max(1, len(turn.text)) for turn in turns], dtype=np.float64)
    ideal = np.cumsum(weights)[:-1] / weights.sum() * frames
    cuts: list[int] = []
    for index, point in enumerate(ideal):
        low_share = min(weights[index], weights[index + 1]) / weights.sum() * frames
        reach = int(low_share // 4)
        floor = (cuts[-1] if cuts else 0) + 1
        ceiling = frames - (len(ideal) - index)
        centre = int(round(point))
        lo, hi = max(floor, centre - reach), min(ceiling, centre + reach)
        if lo > hi:  # too few frames for every turn to move: keep order
            cut = min(max(centre, floor), max(ceiling, floor))
        else:
            cut = min(max(centre, lo), hi)
            quietest = lo + int(np.argmin(energy[lo:hi + 1]))
            if energy[quietest] < 0.5 * energy[cut]:  # a pause, not a dip in level: move there
                cut = quietest
        cuts.append(cut)
    edges = [0, *cuts, frames]
    end = len(samples) / sample_rate
    segments = []
    for turn, start, stop in zip(turns, edges, edges[1:]):
        segments.append({"speaker": turn.speaker, "text": turn.text, "start": round(min(start * hop / sample_rate, end), 3),
                         "end": round(min(stop * hop / sample_rate, end), 3)})
    return segments


class VibeVoiceAdapter(CompiledDecoding, OneModuleModel):
    """The model and its processor (the tokenizer, the chat template, the feature extractor of voice samples)."""

    def enable_offload(self, accelerator: str, on_component) -> None:
        """Weights stay in RAM; the language model (with its head), the acoustic or the semantic tokenizer visits the
        accelerator while it runs. Each frame runs all three in turn, so on a real GPU this trades much time for
        memory: the plan offers it only when the model does not fit whole."""
        inner = self.model.model
        tokenizers = {"acoustic_tokenizer": inner.audio_tower, "semantic_tokenizer": inner.semantic_tokenizer_encoder}
        rest = [module for name, module in inner.named_children()
                if name not in ("audio_tower", "semantic_tokenizer_encoder")] + [self.model.lm_head]
        parts = {"model": rest, **{name: [module] for name, module in tokenizers.items()}}

        def move_factors(device: str) -> None:  # buffers of the outer model that every part's output is scaled by
            for factor in (inner.latent_scaling_factor, inner.latent_bias_factor):
                factor.data = factor.data.to(device)

        switcher = PartSwitcher(parts, accelerator, on_component, on_move=move_factors)
        switcher.hook_forward("model")
        for name, tower in tokenizers.items():  # the acoustic tokenizer is called through encode()/decode()
            switcher.hook_forward(name, list(tower.children()))
        self.torch_device = accelerator

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. The plan: the script's turns, the voices of its speakers, the cap on frames.
        run = plan(self.spec, request.prompt, request.params)
        # 2. The prompt as the processor's chat template writes it: one message a turn, role "0" for Speaker 1, the
        #    sample on the speaker's first turn (the template lists each speaker's voice once, in that order).
        conversation, samples, placed = [], [], set()
        for turn in run.turns:
            content = [{"type": "text", "text": turn.text}]
            if turn.speaker in run.voices and turn.speaker not in placed:
                content.append({"type": "audio"})
                samples.append(run.voices[turn.speaker].conformed(SAMPLE_RATE, 1)[0])
                placed.add(turn.speaker)
            conversation.append({"role": str(turn.speaker - 1), "content": content})
        prompt = self.processor.apply_chat_template(conversation, tokenize=False)
        inputs = self.processor(text=prompt, audio=samples or None, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = inputs.to(self.torch_device)
        if "input_values" in inputs:
            inputs["input_values"] = inputs["input_values"].to(self.model.dtype)
        ctx.check()
        seed_everything(request.seed)
        # 3. One frame per step: the LM's step, the diffusion head's steps, the decoder's 3200 samples. generate() keeps
        #    the stopping criteria it is given (VibeVoice's _sample calls them after each frame), so progress and
        #    cancel run per frame and raising there stops within the frame. The DPM-Solver scheduler is the one the
        #    generation config names (noise_scheduler_class), built by the library.
        with torch.inference_mode(), self._hand_on_frames(ctx):
            out = self.model.generate(
                **inputs, max_new_tokens=run.frames, guidance_scale=request.get("guidance_scale"),
                num_diffusion_steps=request.get("num_diffusion_steps"), return_dict_in_generate=True,
                stopping_criteria=token_progress(ctx, run.frames), **self.compiled_kwargs(self.model),
            )
        ctx.check()
        audio = out.audio[0]
        samples_out = to_float32_numpy(audio.reshape(-1)) if audio is not None else None
        if samples_out is None or samples_out.size == 0:
            raise InvalidInput(f"{self.spec.repo_id} ended the script before speaking a frame (it chose its end "
                               "token at once): try another seed, or write the script as full sentences")
        # 4. Where each turn is: the tokens carry no speaker, so the segments are estimated (estimate_segments).
        segments = estimate_segments(run.turns, samples_out)
        info = {"turns": len(run.turns), "frames": int(math.ceil(samples_out.size / HOP)), "max_frames": run.frames,
                "segments": segments, "segments_estimated": True,
                "cloned": sorted(run.voices)}
        return Audio(samples_out, SAMPLE_RATE, info={**info, "metadata": {k: v for k, v in info.items()
                                                                            if k != "segments"}})

    @contextlib.contextmanager
    def _hand_on_frames(self, ctx: RunContext):
        """While generate runs, hand each frame's audio on (ctx.audio) as the acoustic decoder makes it. The library
        decodes every new latent frame at once through `_decode_audio_latent` (generation_vibevoice.py, _sample: the
        decoder's padding cache makes its convolutions causal), keeps `audio_output.audio[i]` for each sequence and
        returns their torch.cat: the frames handed on, joined, are the returned audio. One sequence here (batch 1)."""
        model = self.model
        original = model._decode_audio_latent

        def decode(*args, **kwargs):
            output = original(*args, **kwargs)
            ctx.audio(to_float32_numpy(output.audio[0].reshape(-1)), SAMPLE_RATE)
            return output

        model._decode_audio_latent = decode  # an instance attribute, over the class's method
        try:
            yield
        finally:
            del model._decode_audio_latent


def load(spec: ModelSpec, torch_device: str, dtype: str) -> VibeVoiceAdapter:
    from transformers import VibeVoiceForConditionalGeneration, VibeVoiceProcessor

    model = load_pretrained(VibeVoiceForConditionalGeneration, spec, torch_device, dtype, int8_parts=INT8_PARTS)
    if dtype == "int8" and torch_device == "cpu":
        # The LM head shares the token table's weights (tie_word_embeddings); quantize_int8 turned the table into
        # int8 rows, so the head gets its own int8 matrix and the float one is freed.
        _quantize_head(model)
    processor = VibeVoiceProcessor.from_pretrained(spec.repo_id, **SAFE_LOAD)
    check_tokenizer(spec, processor.tokenizer, "tokenizer.json", model.config.text_config.vocab_size)
    return VibeVoiceAdapter(spec, model, processor, torch_device)


def _quantize_head(model) -> None:
    # The studio's int8 Linear (models.common), as every other int8 layer: one opaque op under compile, not a graph
    # break at every step (models.compiled).
    model.lm_head = int8_linear(model.lm_head)


FAMILY = Family(
    name="vibevoice", load=load, work_units=work_units, working_bytes=working_bytes, components=components,
    check_text=check_text, describe=describe, first_audio_units=first_audio_units,
    libraries=("torch", "transformers", "diffusers"),
    # auto is int8 on a CPU: 4.03x the float32 transformers call, bfloat16 2.19x (CPU_S_PER_FRAME's note); bfloat16
    # on GPUs, the conversion script's default dtype.
    preferred_dtypes={"cuda": "bfloat16", "mps": "float32", "cpu": "int8"},
    precisions=("float32", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    files=(("tokenizer.json",), ("processor_config.json",)),
    accepts=(Accepts("config.json", "model_type", ("vibevoice",)),),  # VibeVoiceConfig.model_type
    speed_param="num_diffusion_steps",
)
