"""CSM (Sesame's Conversational Speech Model): dialogue spoken turn by turn, each turn with the earlier ones as context.

transformers 5.23 reads it with `CsmForConditionalGeneration` + `CsmProcessor`: a Llama-style backbone (16 layers,
2048 wide) predicts each frame's first Mimi codebook, a small depth decoder (4 layers, 1024 wide) the other 31, and the
Mimi codec (inside the same repo: convert_csm.py saves it as `codec_model.*` beside the rest, config.json's
`codec_config`) turns 12.5 frames a second into 24 kHz audio. The prompt is a conversation (the processor's chat
template): each earlier turn is its text AND its audio, which the model re-encodes with Mimi; the last turn is text
only, and the model speaks it. The studio speaks a script's turns in order, each with the voice clips and the turns
already made as its context, so voices and prosody carry through the dialogue.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from studio.catalog import MODE, Accepts, Family, ModelSpec, Param, Request, SpeedPrior, echo, saved_voice_param
from studio.clips import Clip
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json, cached_snapshot, read_header

from models.common import (SAFE_LOAD, OneModuleModel, PartSwitcher, check_tokenizer, first_chunk_units,
                           load_pretrained, seed_everything, to_float32_numpy)
from models.compiled import CompiledDecoding
from models.dialogue import DIALOGUE, SINGLE, Turn, check_one_voice, mode_param
from models.dialogue import parse_script as parse_script_for

log = logging.getLogger(__name__)

REPO = "sesame/csm-1b"  # the checkpoint transformers' docs (model_doc/csm.md) and its config docstrings name
LICENSE = "Apache-2.0"  # as the model card states it; the repo is gated (accept the terms, then a token)
SAMPLE_RATE = 24000  # Mimi's sampling_rate (kyutai/mimi's config, copied into codec_config)
FRAME_RATE = 12.5  # Mimi frames a second: 24000 / (8 * 6 * 5 * 4 * 2) samples a frame
HOP = 1920
SPEAKERS = 2  # the studio's two voices; CSM itself takes any speaker id "[0]", "[1]", ... (Speaker k -> "[k-1]")
# The backbone's window, config.json's max_position_embeddings (CsmConfig's default, which the checkpoint keeps; Sesame's
# generator.py uses max_seq_len 2048 too): every text token and every audio frame of the conversation is a position.
POSITIONS = 2048
# CSM's audio vocabulary is 2051 a codebook (config vocab_size): Mimi's 2048 codes and three specials above them,
# 2050 being codebook_pad_token_id. Mimi's codebooks hold 2048 rows (`nn.functional.embedding(embed_ind, self.embed)`
# in modeling_mimi.py MimiEuclideanCodebook.decode), so a sampled 2048-2050 crashes the decode: a trained CSM does not
# sample them, a random one does. Both heads are kept off them through the generation config's `suppress_tokens`
# (SuppressTokensLogitsProcessor, built by GenerationMixin._get_logits_processor), for the depth decoder as
# `depth_decoder_suppress_tokens` (generation_csm.py _prepare_generation_config hands depth_decoder_* to its config).
SPECIAL_CODES = (2048, 2049, 2050)
CODEBOOK_SIZE = 2048
MIN_PROMPT_S = 1.0  # under a second there is hardly a voice to hear
# A voice clip takes at most a quarter of the backbone's window (2048 positions / 4 / 12.5 = 40.96 s): the two voices'
# clips then leave at least half of it for the turn being spoken and the turns before it.
MAX_PROMPT_S = math.floor(POSITIONS / 4 / FRAME_RATE * 10) / 10
CHARS_PER_SECOND = 14.0  # typical read English, for the estimates (Bark's and Dia's figure)
# A trained CSM ends a turn with an all-zero frame (codebook_eos_token_id); random weights never do, so each turn is
# capped from its text: a second at least, then 8 characters a second (slower than any reading, 1.75x the typical
# length), as for Dia. Sesame's generator caps a turn at 90 s (max_audio_length_ms); the window caps it too.
CAP_CHARS_PER_SECOND = 8.0
MIN_CAP_S = 1.0
# Turns are joined with 0.2 s of silence: the typical gap between turns in human conversation (about 200 ms, Stivers
# et al., PNAS 2009), as each turn is made on its own and ends where its speech ends.
TURN_GAP_S = 0.2
# Per conversation message, besides the text: <|begin_of_text|>, "[", the id, "]", <|end_of_text|> (the chat
# template), and after a message with audio, one <|audio_eos|> frame. Llama 3's byte-level BPE never makes more tokens
# than the text has UTF-8 bytes, which bounds a text's positions before the tokenizer is loaded.
MESSAGE_TOKENS = 5
# The published architecture, counted on the meta device from CsmConfig() and MimiConfig(num_quantizers=32) (the
# config convert_csm.py writes): 1,632,100,161 parameters, of which the backbone with the text table and the first
# codebook's head 1,374,429,184, the depth decoder 178,362,368 (its audio table is the backbone's, tied), the Mimi
# codec 79,308,609 plus 16,842,987 buffer values (its codebooks). Used until the repo's files are cached.
PARAMETERS = 1_632_100_161
PARTS = {"backbone": 1_374_429_184, "depth_decoder": 178_362_368, "codec": 79_308_609 + 16_842_987}
LAYERS, KV_WIDTH = 16, 8 * 64  # backbone layers; key/value heads x head_dim
DEPTH_LAYERS, DEPTH_KV_WIDTH = 4, 2 * 128
CODEC_FILTERS = 64  # Mimi's num_filters: its SEANet's first blocks run at the full 24 kHz this wide
INT8_PARTS = ("backbone_model", "depth_decoder")  # the transformers; the codec stays float32, the text table float
# A frame of context (a voice clip's or an earlier turn's) is encoded by Mimi and prefilled in one pass, not sampled:
# a fraction of a generated frame (not measured).
CONTEXT_FRAME_COST = 0.05
# Speed per generated frame on a CPU, measured: `python -m bench --quick --only csm-1b` (docs/benchmarks.md), a
# random-weight build of the published widths with 4 of the backbone's 16 layers, one turn of 13 frames, on a 2-core
# AMD EPYC (avx2, avx512f/bw/vl/vnni, avx512_bf16) with about one core's worth of other jobs: float32 1.28 s a frame
# (16.6 s; the transformers call alone 16.2 s), int8 3.33x faster (0.38 s), bfloat16 1.55x. A frame is one backbone
# step and 31 depth-decoder steps, and the depth decoder reads about 4x the bytes of the 4-layer backbone; scaled to
# the 16 layers (the backbone's share 4x): about 2.0 s a frame in float32 and 0.6 s in int8 (real-time factors of
# about 25 and 8: CSM is no CPU model).
CPU_S_PER_FRAME = 2.0
CPU_INT8_S_PER_FRAME = 0.6
CUDA_S_PER_FRAME = 0.08  # not measured (no GPU here): a 1B backbone step plus 31 depth-decoder steps, launch-bound
MPS_S_PER_FRAME = 0.25  # not measured


def voice_params(speaker: int) -> tuple[str, str]:
    """The names of speaker k's voice clip and its transcript (the multi-speaker convention: audio, audio_2, ...)."""
    return ("audio", "transcript") if speaker == 1 else (f"audio_{speaker}", f"transcript_{speaker}")


# CSM is conversational: Dialogue is its default (every script sent before modes keeps working, Speaker 2's clip
# included). Single voice is one speaker's text with Speaker 1's voice alone. No Long form: the turns share the
# backbone's 2048-position window (a turn at most about 2 minutes), and max_prompt_chars is 4,000.
MODES = (SINGLE, DIALOGUE)
MODE_NOTES = {
    DIALOGUE: "Each turn is spoken after the earlier ones; a speaker without a voice gets one the model picks.",
    SINGLE: "Speaker 1's voice: a saved voice, or a clip with its transcript; none: a voice the model picks.",
}


def _params() -> tuple[Param, ...]:
    voices: list[Param] = []
    for speaker in range(1, SPEAKERS + 1):
        audio, transcript = voice_params(speaker)
        modes = () if speaker == 1 else (DIALOGUE,)  # Speaker 2 speaks in Dialogue only
        voices += [
            saved_voice_param(speaker, modes=modes),
            Param(audio, Clip, None, f"Voice of Speaker {speaker}",
                  f"A clip of Speaker {speaker}'s voice ({MIN_PROMPT_S:g} to {MAX_PROMPT_S:g} s of one speaker, WAV, "
                  "FLAC, OGG or MP3, or a recording); 5-10 s of clean speech work best. It is the first turn of the "
                  "conversation the model continues. Needs its transcript.",
                  minimum=MIN_PROMPT_S, maximum=MAX_PROMPT_S, advanced=False, modes=modes),
            Param(transcript, str, "", f"Transcript of Speaker {speaker}'s clip",
                  f"The words said in Speaker {speaker}'s clip, as plain text.", advanced=False, lines=2, modes=modes),
        ]
    return (
        mode_param(MODES, DIALOGUE, MODE_NOTES),
        *voices,
        Param("temperature", float, 0.9, "Temperature", "Higher is more varied, lower steadier; the same for the "
              "first codebook and the depth decoder's (as Sesame's generator samples them).",
              minimum=0.05, maximum=2.0, step=0.05),
        Param("top_k", int, 50, "Top-k", "Sample each code among the k likeliest.", minimum=1,
              maximum=CODEBOOK_SIZE, step=1),
    )


SPECS = (
    ModelSpec(
        repo_id=REPO, family="csm", tasks=("speech",), label="CSM 1B", license=LICENSE, parameters=PARAMETERS,
        prompt_hint="One speaker's text, or a conversation: [S1] How was the trip? [S2] Long, but worth it. (or lines "
                    "'Speaker 1: ...')",
        sample_rate=SAMPLE_RATE, channels=1, max_duration=None, params=_params(), gated=True,
        # Per generated frame (1/12.5 s of audio: a backbone step and 31 depth-decoder steps), Mimi's decode included.
        speed={"cpu": SpeedPrior(2.0, CPU_S_PER_FRAME), "cpu/int8": SpeedPrior(2.0, CPU_INT8_S_PER_FRAME),
               "cuda": SpeedPrior(1.0, CUDA_S_PER_FRAME), "mps": SpeedPrior(2.0, MPS_S_PER_FRAME)},
        unit="frame", max_prompt_chars=4000,
        description="Sesame's conversational speech model: a two-speaker script spoken turn by turn, each turn "
                    "with the earlier ones as context; a voice per speaker from a clip and its transcript; 24 kHz. "
                    "Gated: accept its terms on the hub.",
    ),
)


# ----------------------------------------------------------------------------------------------------------------
# The plan: turns, voices, caps, the window
# ----------------------------------------------------------------------------------------------------------------


def parse_script(text: str, *, what: str = "text") -> list[Turn]:
    """The script's turns (models.dialogue); a plain text is one turn of Speaker 1."""
    return parse_script_for(text, speakers=SPEAKERS, model="CSM", what=what)


@dataclass(frozen=True)
class Voice:
    speaker: int
    clip: Clip
    transcript: str

    @property
    def frames(self) -> int:
        return math.ceil(self.clip.seconds * FRAME_RATE)


@dataclass(frozen=True)
class Plan:
    turns: tuple[Turn, ...]
    caps: tuple[int, ...]  # frames each turn may take at most
    voices: tuple[Voice, ...]
    positions: int  # the backbone's window

    @property
    def frames(self) -> int:
        return sum(self.caps)

    def expected(self, index: int) -> int:
        """Frames a trained model makes for turn `index`, about (it stops at its EOS frame)."""
        return min(self.caps[index], max(1, math.ceil(len(self.turns[index].text) / CHARS_PER_SECOND * FRAME_RATE)))


def text_positions(text: str) -> int:
    """Positions a message's text takes at most (see MESSAGE_TOKENS)."""
    return len(text.encode("utf-8")) + MESSAGE_TOKENS


def turn_cap(text: str) -> int:
    return math.ceil(max(MIN_CAP_S, len(text) / CAP_CHARS_PER_SECOND) * FRAME_RATE)


def window(spec: ModelSpec) -> int:
    config = cached_json(spec.repo_id) or {}
    return int(config.get("max_position_embeddings", POSITIONS))


def voices_of(values) -> tuple[Voice, ...]:
    """Each speaker's voice clip with its transcript, refusing one without the other."""
    voices = []
    # Single voice reads Speaker 1's voice alone: Speaker 2's settings belong to Dialogue (Param.modes).
    speakers = 1 if values.get(MODE) == SINGLE else SPEAKERS
    for speaker in range(1, speakers + 1):
        audio_name, transcript_name = voice_params(speaker)
        clip: Clip | None = values.get(audio_name)
        transcript = " ".join((values.get(transcript_name) or "").split())
        if clip is not None and not transcript:
            raise InvalidInput(
                f"Speaker {speaker}'s voice clip {clip.name!r} ({audio_name}) has no transcript: CSM needs the words "
                f"said in it; type them in {transcript_name}, or remove the clip")
        if clip is None and transcript:
            raise InvalidInput(
                f"{transcript_name} {echo(transcript)} is given without Speaker {speaker}'s voice clip: upload or "
                f"record the clip in {audio_name}, or clear {transcript_name}")
        if clip is not None:
            voices.append(Voice(speaker, clip, transcript))
    return tuple(voices)


def plan(spec: ModelSpec, prompt: str, values) -> Plan:
    """The run a request makes, refusing one that does not fit the model (messages name the value and the fix)."""
    turns = tuple(parse_script(prompt))
    voices = voices_of(values)
    positions = window(spec)
    held = sum(voice.frames + 1 + text_positions(voice.transcript) for voice in voices)
    caps = tuple(turn_cap(turn.text) for turn in turns)
    for index, (turn, cap) in enumerate(zip(turns, caps)):
        needed = held + text_positions(turn.text) + cap
        if needed > positions:
            clips = (f" after the voice clips' {held} positions" if voices else "")
            raise InvalidInput(
                f"turn {index + 1} (Speaker {turn.speaker}, {len(turn.text)} characters: {echo(turn.text, 60)}) "
                f"needs up to {text_positions(turn.text) + cap} positions of text and audio{clips}; CSM's backbone "
                f"holds {positions} (max_position_embeddings in its config.json, 12.5 audio frames a second): split "
                "the turn into shorter turns" + (" or use shorter voice clips" if voices else ""))
    return Plan(turns=turns, caps=caps, voices=voices, positions=positions)


def check_text(spec: ModelSpec, text: str, values) -> None:
    if values.get(MODE) == SINGLE:
        check_one_voice(text, SINGLE, model="CSM", dialogue=True)
    plan(spec, text, values)


def describe(spec: ModelSpec, request: Request) -> str:
    run = plan(spec, request.prompt, request.params)
    speakers = sorted({turn.speaker for turn in run.turns})
    expected_s = sum(run.expected(i) for i in range(len(run.turns))) / FRAME_RATE
    who = " and ".join(f"Speaker {k}" for k in speakers)
    voices = "; ".join(f"Speaker {v.speaker}'s voice from {v.clip.name!r} ({v.clip.seconds:.1f} s)" for v in run.voices)
    return (f"{len(run.turns)} turn{'s' if len(run.turns) != 1 else ''} of {who}, each after the earlier ones, about "
            f"{expected_s:.0f} s of speech (at most {run.frames / FRAME_RATE:.1f} s)" + (f"; {voices}" if voices else ""))


# ----------------------------------------------------------------------------------------------------------------
# Estimates
# ----------------------------------------------------------------------------------------------------------------


def _context_frames(run: Plan, frames_of) -> list[int]:
    """Audio frames of context each turn reads: the voice clips and every earlier turn (within the window)."""
    held = sum(voice.frames + 1 for voice in run.voices)
    out, earlier = [], 0
    for index in range(len(run.turns)):
        out.append(min(held + earlier, run.positions - run.caps[index]))
        earlier += frames_of(index) + 1
    return out


def _turn_units(spec: ModelSpec, request: Request) -> list[float]:
    """Each turn's work: the frames a trained model makes for it, plus the context frames it re-reads (Mimi encodes
    the voices' and the earlier turns' audio again and the backbone prefills it: CONTEXT_FRAME_COST a frame)."""
    run = plan(spec, request.prompt, request.params)
    return [run.expected(i) + CONTEXT_FRAME_COST * context
            for i, context in enumerate(_context_frames(run, run.expected))]


def work_units(spec: ModelSpec, request: Request) -> float:
    return sum(_turn_units(spec, request))


def first_audio_units(spec: ModelSpec, request: Request) -> float | None:
    """The first turn's units: each turn is heard as soon as Mimi has decoded it (the next is made after it)."""
    return first_chunk_units(_turn_units(spec, request))


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The backbone's KV cache over the window a turn may fill, the prefill's widest activations, the depth decoder's
    cache, and Mimi (float32) encoding the longest clip or turn of context or decoding a turn: its SEANet's first
    blocks hold about 4 tensors of num_filters channels at the full rate (as for Pocket TTS's Mimi-style codec)."""
    run = plan(spec, request.prompt, request.params)
    config = cached_json(spec.repo_id) or {}
    layers = config.get("num_hidden_layers", LAYERS)
    kv_width = config.get("num_key_value_heads", 8) * config.get("head_dim", None or 64)
    hidden, inner = config.get("hidden_size", 2048), config.get("intermediate_size", 8192)
    codec = config.get("codec_config") or {}
    positions = max(context + run.caps[i] for i, context in enumerate(_context_frames(run, lambda i: run.caps[i])))
    positions = min(run.positions, positions + max(text_positions(t.text) for t in run.turns) * 2)
    kv = 2 * layers * positions * kv_width * dtype_bytes
    prefill = positions * (hidden * 4 + inner * 3) * dtype_bytes
    depth = 2 * DEPTH_LAYERS * 33 * DEPTH_KV_WIDTH * dtype_bytes
    longest = max([cap for cap in run.caps] + [voice.frames for voice in run.voices]) * HOP
    mimi = 4 * codec.get("num_filters", CODEC_FILTERS) * longest * 4
    return int(kv + prefill + depth + mimi + 64 * 1024**2)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    """Bytes of the backbone (with the text table and the first codebook's head), the depth decoder and the codec
    (float32 in every precision: the loader keeps it so), from the cached safetensors or the published counts."""
    counts = _cached_counts(spec) or PARTS
    return {"backbone": counts["backbone"] * dtype_bytes, "depth_decoder": counts["depth_decoder"] * dtype_bytes,
            "codec": counts["codec"] * 4}


def _part(name: str) -> str:
    if name.startswith("codec_model."):
        return "codec"
    if name.startswith("depth_decoder."):
        return "depth_decoder"
    return "backbone"


def _cached_counts(spec: ModelSpec) -> dict[str, int] | None:
    snapshot = cached_snapshot(spec.repo_id)
    files = sorted(snapshot.glob("*.safetensors")) if snapshot is not None else []
    if not files:
        return None
    counts = {"backbone": 0, "depth_decoder": 0, "codec": 0}
    try:
        for path in files:
            for name, entry in read_header(path).items():
                if name != "__metadata__":
                    counts[_part(name)] += math.prod(int(d) for d in entry["shape"])
    except (OSError, ValueError, KeyError):
        return None
    return counts


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------


class CsmAdapter(CompiledDecoding, OneModuleModel):
    """The model (backbone, depth decoder and the Mimi codec inside it) beside its processor."""

    def parts(self) -> dict:
        backbone = [self.model.backbone_model, self.model.embed_text_tokens, self.model.lm_head]
        return {"backbone": backbone, "depth_decoder": [self.model.depth_decoder], "codec": [self.model.codec_model]}

    def enable_offload(self, accelerator: str, on_component) -> None:
        """Weights stay in RAM; the backbone, the depth decoder or the codec visits the accelerator while it runs.

        The backbone and the depth decoder take turns every frame, so on a real accelerator this moves weights each
        frame: slow, but it runs where the whole model does not fit."""
        switcher = PartSwitcher(self.parts(), accelerator, on_component)
        for name, modules in switcher.parts.items():
            if name == "codec":  # the model calls the codec's encode and decode, not its forward
                for module in modules:
                    switcher.hook_methods(name, module)
            else:
                switcher.hook_forward(name)
        self.torch_device = accelerator

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import numpy as np
        import torch
        from transformers import LogitsProcessorList

        run = plan(self.spec, request.prompt, request.params)
        # 1. The voices: each a context message of its transcript and its clip, in speaker order.
        voice_messages = [self._message(voice.speaker, voice.transcript, voice.clip.conformed(SAMPLE_RATE, 1)[0])
                          for voice in run.voices]
        seed_everything(request.seed)
        temperature, top_k = request.get("temperature"), request.get("top_k")
        earlier: list[dict] = []  # the turns made so far, as context messages (their text and their audio)
        parts, segments, done, start = [], [], 0, 0.0
        gap = np.zeros(round(TURN_GAP_S * SAMPLE_RATE), dtype=np.float32)
        for index, (turn, cap) in enumerate(zip(run.turns, run.caps)):
            ctx.check()
            # 2. The conversation: the voices, the earlier turns that fit the window (the oldest go first), then this
            #    turn's text, as the processor's chat template writes it.
            inputs, kept = self._inputs(voice_messages, earlier, turn, cap, run.positions)
            # 3. One frame per backbone step; the progress processor reports the running count over the whole
            #    script and raises Cancelled within the step (CSM's generate keeps only its max-length criterion,
            #    generation_csm.py _get_stopping_criteria, but runs the logits processors every step).
            progress = _FrameProgress(ctx, done, run.frames, cap)
            with torch.inference_mode():
                codes = self.model.generate(
                    **inputs, max_new_tokens=cap, do_sample=True, temperature=temperature, top_k=top_k,
                    suppress_tokens=list(SPECIAL_CODES), depth_decoder_do_sample=True,
                    depth_decoder_temperature=temperature, depth_decoder_top_k=top_k,
                    depth_decoder_suppress_tokens=list(SPECIAL_CODES),
                    logits_processor=LogitsProcessorList([progress]), **self.compiled_kwargs(self.model),
                )
            done += cap
            if progress.frames < cap:  # a turn that ended at its EOS hands the rest of its share on
                ctx.progress(done, run.frames)
            ctx.check()
            # 4. Mimi decodes the turn up to its EOS frame (as generate(output_audio=True) cuts it).
            samples = self._decode(codes[0])
            ctx.check()
            parts.append(samples)
            # Heard at once by whoever listens: the gap before a turn is part of it, as the turns are joined below.
            ctx.audio(np.concatenate([gap, samples]) if index else samples, SAMPLE_RATE)
            end = start + samples.shape[0] / SAMPLE_RATE
            segments.append({"speaker": turn.speaker, "text": turn.text, "start": round(start, 4),
                             "end": round(end, 4), "context_turns": kept})
            start = end + TURN_GAP_S
            earlier.append(self._message(turn.speaker, turn.text, samples))
        joined: list = []
        for i, part in enumerate(parts):
            joined += [gap, part] if i else [part]
        audio = np.concatenate(joined).astype(np.float32)
        info = {"turns": len(run.turns), "frames": [round(p.shape[0] / HOP) for p in parts],
                "voices": [v.speaker for v in run.voices]}
        return Audio(audio, SAMPLE_RATE, info={**info, "segments": segments,
                                               "metadata": {**info, "segments": segments}})

    @staticmethod
    def _message(speaker: int, text: str, samples=None) -> dict:
        content = [{"type": "text", "text": text}]
        if samples is not None:
            content.append({"type": "audio", "path": samples})
        return {"role": str(speaker - 1), "content": content}

    def _inputs(self, voices: list[dict], earlier: list[dict], turn: Turn, cap: int, positions: int):
        """The processor's inputs for this turn, with as many of the latest earlier turns as the window holds."""
        current = self._message(turn.speaker, turn.text)
        for first in range(len(earlier) + 1):
            conversation = [*voices, *earlier[first:], current]
            inputs = self.processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
            if inputs["input_ids"].shape[1] + cap <= positions:
                break
        # plan() checked that the voices and this turn fit; the loop above always ends within the window.
        return inputs.to(self.torch_device), len(earlier) - first

    def _decode(self, codes):
        """(frames, codebooks) codes -> float32 samples, cut at the first all-EOS frame."""
        import torch

        eos = self.model.config.codebook_eos_token_id
        ends = (codes == eos).all(dim=-1).nonzero()
        codes = codes[: int(ends.min())] if ends.numel() else codes
        if codes.shape[0] == 0:
            import numpy as np

            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            wave = self.model.codec_model.decode(codes.transpose(0, 1).unsqueeze(0)).audio_values
        return to_float32_numpy(wave.reshape(-1))


class _FrameProgress:
    """A logits processor of the backbone: called once per frame; reports the script's running count and cancels."""

    def __init__(self, ctx: RunContext, offset: int, total: int, cap: int) -> None:
        self.ctx, self.offset, self.total, self.cap = ctx, offset, total, cap
        self.frames = 0

    def __call__(self, input_ids, scores):
        self.frames += 1
        self.ctx.progress(self.offset + min(self.frames, self.cap), self.total)
        self.ctx.check()
        return scores


def load(spec: ModelSpec, torch_device: str, dtype: str) -> CsmAdapter:
    from transformers import CsmForConditionalGeneration, CsmProcessor

    model = load_pretrained(CsmForConditionalGeneration, spec, torch_device, dtype, int8_parts=INT8_PARTS)
    # Mimi stays float32 in every precision: the processor hands it float32 waveforms (the library does not cast
    # them before codec_model.encode), and the audio's quality is in the codec.
    model.codec_model.float()
    processor = CsmProcessor.from_pretrained(spec.repo_id, **SAFE_LOAD)
    check_tokenizer(spec, processor.tokenizer, "tokenizer.json", model.config.text_vocab_size)
    return CsmAdapter(spec, model, processor, torch_device)


FAMILY = Family(
    name="csm", load=load, work_units=work_units, working_bytes=working_bytes, check_text=check_text,
    describe=describe, first_audio_units=first_audio_units, components=components, speed_param=None,
    # auto is int8 on a CPU, as for Bark and MusicGen: 3.33x the float32 transformers call (CPU_S_PER_FRAME's note;
    # bfloat16 1.55x); bfloat16 on GPUs, as Sesame runs it.
    preferred_dtypes={"cuda": "bfloat16", "mps": "float32", "cpu": "int8"},
    precisions=("float32", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    files=(("tokenizer.json",),),
    accepts=(Accepts("config.json", "model_type", ("csm",)),),  # CsmConfig.model_type
)
