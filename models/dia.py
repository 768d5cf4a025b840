"""Dia (Nari Labs): two-speaker dialogue scripts ([S1]/[S2], cues like (laughs)) to 44.1 kHz speech through DAC codes.

transformers 5.23 reads it with `DiaForConditionalGeneration` (a byte-level text encoder and an autoregressive
decoder over 9 DAC codebooks in a delay pattern) and `DiaProcessor` (the byte tokenizer, a feature extractor and
the DAC codec, which its processor_config.json names as the separate repo descript/dac_44khz). One decoder step
makes one frame of all 9 codebooks: 512 samples, 1/86.1 s of audio.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from studio.catalog import MODE, Accepts, Companion, Family, ModelSpec, Param, Request, SpeedPrior, echo, saved_voice_param
from studio.clips import Clip
from studio.errors import InvalidInput, ModelUnavailable
from studio.run import Audio, RunContext
from studio.weights import cached_json

from models.common import OneModuleModel, SAFE_LOAD, load_pretrained, seed_everything, to_float32_numpy, token_progress
from models.compiled import CompiledDecoding
from models.dialogue import DIALOGUE, SINGLE, Turn, check_one_voice, mode_param, tagged_text
from models.dialogue import parse_script as parse_script_for

log = logging.getLogger(__name__)

REPO = "nari-labs/Dia-1.6B-0626"  # the checkpoint transformers' docs (model_doc/dia.md) load
DAC_REPO = "descript/dac_44khz"  # convert_dia_to_hf.py builds the processor with DacModel.from_pretrained(this)
DAC_PARAMETERS = 76_000_000  # DAC 44 kHz as published (descript-audio-codec); exact from its files once cached
LICENSE = "Apache-2.0"
SAMPLE_RATE = 44100
HOP = 512  # samples per DAC frame: prod(downsampling_ratios) = 2 * 4 * 8 * 8 in descript/dac_44khz's config
FRAME_RATE = SAMPLE_RATE / HOP  # 86.13 decoder steps per second of audio
# The published config's limits (DiaDecoderConfig / DiaEncoderConfig defaults, which the checkpoint keeps, and the
# generation_config's max_length 3072 that convert_dia_to_hf.get_generation_config writes): read from the cached
# config.json when there is one.
DECODER_POSITIONS = 3072  # decoder_config.max_position_embeddings: prompt frames + new frames + the delay tail
TEXT_POSITIONS = 1024  # encoder_config.max_position_embeddings: bytes of transcript + script (DiaTokenizer)
DELAY = (0, 8, 9, 10, 11, 12, 13, 14, 15)  # config.delay_pattern
# One generate() call also spends 1 + max(delay) steps that make no frame (Limits.tail): the forced EOS and the
# max(delay) steps in which the later codebooks finish (DiaEOSDelayPatternLogitsProcessor). Measured on the tiny
# checkpoint: max_new_tokens = N decodes to N - 16 frames.
CHARS_PER_SECOND = 14.0  # typical read English, for the estimate and the length check (Bark's figure)
# Random weights never sample the EOS that ends a real run, so every run is capped from its text: at this slower
# pace (pauses, cues, a slow speaker), 1.75x the expected length; a trained Dia stops on its own well before.
CAP_CHARS_PER_SECOND = 8.0
MIN_CAP_S = 1.0
MIN_PROMPT_S = 1.0  # under a second of voice gives the decoder too little to continue
SPEAKERS = ("S1", "S2")  # Dia's tokenizer has exactly these two speaker tokens (tokenization_dia.py ids 1 and 2)
INT8_PARTS = ("model", "logits_dense")  # encoder, decoder and the output head; the DAC codec stays float32
# Guidance doubles the decoder batch: measured 1.46x per step in int8 on this CPU (bench/dia_cpu.py); the float32
# run gave 5.0x under a heavier load and is not trusted; MusicGen measured 1.6x.
GUIDED_COST = 1.5
PROMPT_FRAME_COST = 0.02  # a prompt frame is prefilled in one pass and DAC-encoded, not sampled (not measured)


@dataclass(frozen=True)
class Limits:
    """The model's window, from its config.json when cached (the published values otherwise)."""

    positions: int
    text_positions: int
    tail: int  # steps that make no frame: the forced EOS + max(delay)

    @property
    def max_frames(self) -> int:
        """Audio frames one run can hold, prompt included (the first position is the BOS frame)."""
        return self.positions - self.tail - 1

    @property
    def max_seconds(self) -> float:
        return self.max_frames / FRAME_RATE


def limits(spec: ModelSpec) -> Limits:
    config = cached_json(spec.repo_id) or {}
    decoder = config.get("decoder_config") or {}
    encoder = config.get("encoder_config") or {}
    delay = config.get("delay_pattern") or DELAY
    return Limits(positions=int(decoder.get("max_position_embeddings", DECODER_POSITIONS)),
                  text_positions=int(encoder.get("max_position_embeddings", TEXT_POSITIONS)),
                  tail=1 + max(delay))


# ----------------------------------------------------------------------------------------------------------------
# The script: [S1]/[S2] turns, or lines "Speaker 1: ..." (the studio's Dialogue form), with (cues)
# ----------------------------------------------------------------------------------------------------------------

def parse_script(text: str, *, what: str = "text") -> list[Turn]:
    """The script's turns (models.dialogue), for Dia's two voices."""
    return parse_script_for(text, speakers=len(SPEAKERS), model="Dia", what=what)


def script_text(turns: list[Turn]) -> str:
    """The one-line form the model reads: "[S1] Hi! [S2] Hello there. (laughs)"."""
    return tagged_text(turns)


def text_tokens(text: str) -> int:
    """DiaTokenizer's count: one token per UTF-8 byte, one per [S1]/[S2] tag."""
    tags = len(re.findall(r"\[S[12]\]", text))
    return len(text.encode("utf-8")) - 3 * tags


def spoken_chars(turns: list[Turn]) -> int:
    return sum(len(turn.text) for turn in turns)


# ----------------------------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------------------------


# Dia is a dialogue model (its tokenizer has [S1] and [S2]), so Dialogue is its default: every script sent before
# modes keeps working. Single voice is the same model on [S1] alone. No Long form: one run holds about 35 s.
MODES = (SINGLE, DIALOGUE)
MODE_NOTES = {
    DIALOGUE: "Dia continues its voice prompt: Speaker 1's clip (which may hold both speakers, its Transcript tagged "
              "[S1] / [S2]) then Speaker 2's; a speaker without a voice gets one Dia picks. At most about 35 s a "
              "run, clips included.",
    SINGLE: "Speaker 1's voice continues the clip in 'Voice to continue', or one Dia picks.",
}
# Speaker 2's clip follows speaker 1's in the one voice prompt Dia continues, after a 0.2 s pause: the typical gap
# between turns in conversation (about 200 ms, Stivers et al., PNAS 2009), as CSM joins its turns.
PROMPT_GAP_S = 0.2


def _params() -> tuple[Param, ...]:
    return (
        mode_param(MODES, DIALOGUE, MODE_NOTES),
        Param("audio", Clip, None, "Voice to continue",
              "A clip of the voice(s) to speak with (WAV, FLAC, OGG or MP3, or a recording; about 5-10 s is best): "
              "the new speech continues it, and the result holds only the new speech. Needs its Transcript.",
              minimum=MIN_PROMPT_S, maximum=round(DECODER_POSITIONS / FRAME_RATE - 1.0, 1), advanced=False),
        Param("transcript", str, "", "Transcript of the voice clip",
              "What is said in the clip, with its speaker tags: '[S1] ... [S2] ...' (or lines 'Speaker 1: ...'). "
              "The speakers of the clip keep their tags in your script.", advanced=False, lines=2),
        saved_voice_param(2, modes=(DIALOGUE,)),
        Param("audio_2", Clip, None, "Voice of Speaker 2",
              "A clip of Speaker 2's voice alone (WAV, FLAC, OGG or MP3, or a recording; about 5-10 s is best): Dia's "
              "voice prompt is Speaker 1's clip, then this one. Needs its transcript.",
              minimum=MIN_PROMPT_S, maximum=round(DECODER_POSITIONS / FRAME_RATE - 1.0, 1), advanced=False,
              modes=(DIALOGUE,)),
        Param("transcript_2", str, "", "Transcript of Speaker 2's clip",
              "The words said in Speaker 2's clip, as plain text (they are tagged [S2]).", advanced=False, lines=2,
              modes=(DIALOGUE,)),
        Param("guidance_scale", float, 3.0, "Guidance", "How closely to follow the script (classifier-free "
              "guidance); 1 turns it off and roughly halves the work.", minimum=1.0, maximum=10.0, step=0.5),
        Param("temperature", float, 1.2, "Temperature", "Higher is more varied. Dia does not go below 1.0 "
              "(its generation code clamps it).", minimum=1.0, maximum=2.0, step=0.05),
        Param("top_p", float, 0.95, "Top-p", "Sample from the smallest set of codes whose probability reaches p "
              "(1 = off).", minimum=0.05, maximum=1.0, step=0.05),
        Param("top_k", int, 45, "Top-k", "Sample among the k likeliest codes; guidance filters with the same k.",
              minimum=1, maximum=1024, step=1),
    )


SPECS = (
    ModelSpec(
        repo_id=REPO, family="dia", tasks=("speech",), label="Dia 1.6B", license=LICENSE,
        prompt_hint="A dialogue: [S1] Did you hear that? [S2] Hear what? (laughs)  (or lines 'Speaker 1: ...'; "
                    "cues in parentheses)",
        parameters=1_610_000_000, sample_rate=SAMPLE_RATE, channels=1, max_duration=None, params=_params(),
        # Per decoder step (one frame, 1/86 s of audio) without guidance, the DAC's decode of the frame included.
        # CPU: `nice -n 10 python -m bench.dia_cpu` on this 2-core AMD EPYC (AVX-512, avx512_bf16, VNNI), a
        # random-weight Dia of the published widths built with 3 and 6 of its 18 decoder layers, the median step
        # fitted as fixed + per layer and extrapolated to 18, on a machine shared with other jobs (load average 4.6-8):
        # float32 0.64 s, int8 0.33 s, bfloat16 1.32 s; the DAC 44 kHz decode 0.034 s a frame. CUDA: Nari Labs'
        # README reports 86 frames a second on an RTX 4090 in bfloat16 without torch.compile (not verified here).
        speed={"cpu": SpeedPrior(2.0, 0.67), "cpu/int8": SpeedPrior(2.0, 0.37),
               "cuda": SpeedPrior(1.0, 1 / 86), "mps": SpeedPrior(2.0, 4 / 86)},
        unit="frame", max_prompt_chars=4000,
        description="Two-speaker dialogue from a [S1]/[S2] script with (laughs), (sighs) and other cues; continues "
                    "a voice from a clip and its transcript; about 35 s per run; 44.1 kHz.",
    ),
)


# ----------------------------------------------------------------------------------------------------------------
# Checks, plan and estimates
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    text: str  # what the encoder reads: the transcripts' turns, then the script's
    turns: int
    prompt_frames: int  # DAC frames of the voice prompt (0: none)
    frames: int  # new frames at most (the cap)
    expected_frames: int  # new frames a trained model makes, about
    tail: int  # steps that make no frame: the forced EOS + max(delay)
    clips: tuple[tuple[int, Clip], ...] = ()  # (speaker, clip) of the voice prompt, in the order Dia hears them

    @property
    def prompt_seconds(self) -> float:
        gaps = PROMPT_GAP_S * max(0, len(self.clips) - 1)
        return sum(clip.seconds for _, clip in self.clips) + gaps

    @property
    def steps(self) -> int:
        """Decoder steps of the generate() call: max_new_tokens = N decodes to N - tail frames (measured)."""
        return self.frames + self.tail


def plan(spec: ModelSpec, prompt: str, values) -> Plan:
    """The run a request makes, refusing one that does not fit the model (messages name the value and the fix)."""
    window = limits(spec)
    turns = parse_script(prompt)
    clip: Clip | None = values.get("audio")
    transcript = (values.get("transcript") or "").strip()
    prompt_turns: list[Turn] = []
    clips: list[tuple[int, Clip]] = []
    if clip is not None:
        if not transcript:
            raise InvalidInput(f"the voice clip {clip.name!r} has no transcript: Dia needs the words said in it, "
                               "with their tags ('[S1] ...'), in Transcript; type them, or remove the clip")
        prompt_turns += parse_script(transcript, what="transcript")
        clips.append((1, clip))
    elif transcript:
        raise InvalidInput(f"the transcript {echo(transcript)} is given without its voice clip: upload or record "
                           "the clip in 'Voice to continue', or clear Transcript")
    if (values.get(MODE) or DIALOGUE) == DIALOGUE:  # Speaker 2's settings belong to Dialogue (Param.modes)
        clip_2: Clip | None = values.get("audio_2")
        transcript_2 = (values.get("transcript_2") or "").strip()
        if clip_2 is not None and not transcript_2:
            raise InvalidInput(f"Speaker 2's voice clip {clip_2.name!r} (audio_2) has no transcript: Dia needs the "
                               "words said in it; type them in transcript_2, or remove the clip")
        if clip_2 is None and transcript_2:
            raise InvalidInput(f"transcript_2 {echo(transcript_2)} is given without Speaker 2's voice clip: upload "
                               "or record the clip in audio_2, or clear transcript_2")
        if clip_2 is not None:  # its words are Speaker 2's, whatever tags they carry
            prompt_turns += [Turn(2, turn.text) for turn in parse_script(transcript_2, what="transcript_2")]
            clips.append((2, clip_2))
    clip = clips[0][1] if clips else None
    text = script_text([*prompt_turns, *turns])
    seconds = sum(c.seconds for _, c in clips) + PROMPT_GAP_S * max(0, len(clips) - 1)
    prompt_frames = math.ceil(seconds * FRAME_RATE)
    tokens = text_tokens(text)
    if tokens > window.text_positions:
        raise InvalidInput(
            f"the text{' with the transcript' if clip is not None else ''} is {tokens:,} tokens (a token a UTF-8 "
            f"byte); Dia's text encoder reads at most {window.text_positions:,} (encoder max_position_embeddings in "
            "its config.json): shorten it or split the script into several runs")
    chars = spoken_chars(turns)
    expected_s = chars / CHARS_PER_SECOND
    room = window.max_frames - prompt_frames
    prompt_s = prompt_frames / FRAME_RATE
    if expected_s * FRAME_RATE > room:
        held = f" after the {prompt_s:.1f} s voice clip{'s' if len(clips) > 1 else ''}" if clip is not None else ""
        raise InvalidInput(
            f"the script is about {expected_s:.0f} s of speech ({chars} characters at {CHARS_PER_SECOND:g} a "
            f"second); Dia makes at most {room / FRAME_RATE:.1f} s in one run{held} (its decoder holds "
            f"{window.positions} frames of {HOP} samples at 44.1 kHz: decoder max_position_embeddings in its "
            "config.json): shorten the script, split it into several runs"
            + (", or use a shorter clip" if clip is not None else ""))
    cap = math.ceil(max(MIN_CAP_S, chars / CAP_CHARS_PER_SECOND) * FRAME_RATE)
    return Plan(text=text, turns=len(turns), prompt_frames=prompt_frames, frames=max(1, min(cap, room)),
                expected_frames=max(1, math.ceil(expected_s * FRAME_RATE)), tail=window.tail, clips=tuple(clips))


def check_text(spec: ModelSpec, text: str, values) -> None:
    if (values.get(MODE) or DIALOGUE) == SINGLE:
        check_one_voice(text, SINGLE, model="Dia", dialogue=True)
    plan(spec, text, values)


def describe(spec: ModelSpec, request: Request) -> str:
    run = plan(spec, request.prompt, request.params)
    named = " then ".join(f"{clip.name!r} ({clip.seconds:.1f} s, Speaker {speaker})" for speaker, clip in run.clips)
    voices = f"continues the voice{'s' if len(run.clips) > 1 else ''} of {named}: " if run.clips else ""
    return (f"{voices}{run.turns} turn{'s' if run.turns != 1 else ''}, about {run.expected_frames / FRAME_RATE:.0f} "
            f"s of speech (at most {run.frames / FRAME_RATE:.1f} s)")


def work_units(spec: ModelSpec, request: Request) -> float:
    """Decoder steps a trained model takes (it stops at its EOS), guidance's doubled batch and the prompt's prefill."""
    run = plan(spec, request.prompt, request.params)
    guided = GUIDED_COST if request.get("guidance_scale") > 1 else 1.0
    return (min(run.expected_frames, run.frames) + run.tail) * guided + run.prompt_frames * PROMPT_FRAME_COST


def _arch(spec: ModelSpec) -> dict:
    config = cached_json(spec.repo_id) or {}
    decoder = config.get("decoder_config") or {}
    codec = cached_json(DAC_REPO) or {}
    return dict(layers=decoder.get("num_hidden_layers", 18), kv=decoder.get("num_key_value_heads", 4)
                * decoder.get("head_dim", 128), cross=decoder.get("cross_num_key_value_heads", 16)
                * decoder.get("cross_head_dim", 128), vocab=decoder.get("vocab_size", 1028),
                channels=decoder.get("num_channels", 9), dac_hidden=codec.get("decoder_hidden_size", 1536),
                dac_encoder=codec.get("encoder_hidden_size", 64), ratios=codec.get("downsampling_ratios", [2, 4, 8, 8]))


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The decoder's self- and cross-attention KV caches for the (guided) batch over the whole window it may use,
    the logits of a step, and the DAC at its peak: decoding the new frames or encoding the voice clip (float32)."""
    run = plan(spec, request.prompt, request.params)
    arch = _arch(spec)
    batch = 2 if request.get("guidance_scale") > 1 else 1
    positions = run.prompt_frames + run.steps + 1
    kv = 2 * arch["layers"] * batch * positions * arch["kv"] * dtype_bytes
    cross = 2 * arch["layers"] * batch * text_tokens(run.text) * arch["cross"] * dtype_bytes
    logits = 4 * batch * arch["channels"] * arch["vocab"] * 4  # scores and the processors' copies, float32
    # DAC's decoder halves its channels at each upsampling block; three such tensors live at its widest.
    widest, upsampled = 0, run.frames
    for index, ratio in enumerate(reversed(arch["ratios"])):
        upsampled *= ratio
        widest = max(widest, arch["dac_hidden"] // 2 ** (index + 1) * upsampled)
    decode = 3 * widest * 4
    encode = 3 * 2 * arch["dac_encoder"] * run.prompt_frames * HOP * 4  # its first blocks at the full rate
    return int(kv + cross + logits + max(decode, encode) + 32 * 1024**2)


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------


class DiaModel(CompiledDecoding, OneModuleModel):
    """The Dia model beside its processor, whose DAC codec (a second module) encodes clips and decodes codes."""

    def modules(self) -> list:
        return [self.model, self.preprocess.audio_tokenizer]

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. The plan: the script (Speaker N: lines as [SN] tags) after the clip's transcript, and the cap.
        import numpy as np

        run = plan(self.spec, request.prompt, request.params)
        clip = bool(run.clips)
        # 2. Text -> bytes; the voice prompt (Speaker 1's clip, a pause, Speaker 2's) -> 44.1 kHz mono -> DAC codes in
        #    the delay pattern (DiaProcessor).
        audio = None
        if run.clips:
            gap = np.zeros(round(PROMPT_GAP_S * SAMPLE_RATE), dtype=np.float32)
            pieces = [piece for i, (_, c) in enumerate(run.clips)
                      for piece in ([gap] if i else []) + [c.conformed(SAMPLE_RATE, 1)[0].astype(np.float32)]]
            audio = [np.concatenate(pieces)]
        with torch.inference_mode():
            inputs = self.preprocess(text=[run.text], audio=audio, padding=True, return_tensors="pt")
        inputs = inputs.to(self.torch_device)
        prompt_len = self.preprocess.get_audio_prompt_len(inputs["decoder_attention_mask"]) if clip else None
        ctx.check()
        seed_everything(request.seed)
        # 3. One frame of 9 codes per step; progress and cancel each step; the library forces the EOS (and the
        #    delay tail) when the cap is reached: generate(max_new_tokens=frames + 16) decodes to `frames`.
        with torch.inference_mode():
            codes = self.model.generate(
                **inputs, max_new_tokens=run.steps, do_sample=True,
                guidance_scale=request.get("guidance_scale"), temperature=request.get("temperature"),
                top_p=request.get("top_p"), top_k=request.get("top_k"),
                stopping_criteria=token_progress(ctx, run.steps, on_last=lambda: ctx.stage("decoding")),
                **self.compiled_kwargs(self.model),
            )
        ctx.check()
        ctx.stage("decoding")
        # 4. Codes -> waveform; with a clip, only what follows the prompt (processor.batch_decode's
        #    audio_prompt_len cuts the prompt's frames before the DAC decodes).
        with torch.inference_mode():
            wave = self.preprocess.batch_decode(codes, audio_prompt_len=prompt_len)[0]
        samples = to_float32_numpy(wave.reshape(-1))
        info = {"turns": run.turns, "frames": int(samples.shape[0] // HOP), "max_frames": run.frames}
        if clip:
            info["prompt_s"] = round(run.prompt_seconds, 4)
        return Audio(samples, SAMPLE_RATE, info={**info, "metadata": dict(info)})


def load(spec: ModelSpec, torch_device: str, dtype: str) -> DiaModel:
    from transformers import DiaForConditionalGeneration, DiaProcessor

    from studio.weights import downloaded, offline, repair_hint

    model = load_pretrained(DiaForConditionalGeneration, spec, torch_device, dtype, int8_parts=INT8_PARTS)
    try:
        processor = DiaProcessor.from_pretrained(spec.repo_id, **SAFE_LOAD)
    except (OSError, ValueError) as error:
        if not downloaded(DAC_REPO):
            how = ("HF_HUB_OFFLINE=1 is set: run once online or copy it into the cache" if offline()
                   else f"check your internet connection, or run `hf download {DAC_REPO}`")
            raise ModelUnavailable(f"{spec.repo_id} speaks through the DAC codec {DAC_REPO}, which is not in the "
                                   f"Hugging Face cache and could not be downloaded ({how})") from error
        raise ModelUnavailable(f"{spec.repo_id}'s processor could not be loaded ({error}): "
                               f"{repair_hint(spec.repo_id)}") from error
    processor.audio_tokenizer.eval().to(torch_device)  # DAC stays float32: small, and codes are exact
    return DiaModel(spec, model, processor, torch_device)


FAMILY = Family(
    name="dia", load=load, work_units=work_units, working_bytes=working_bytes, check_text=check_text,
    describe=describe,
    # auto is int8 on a CPU, as for Bark and MusicGen: `python -m bench --quick --only dia-1.6b` (a build with 6 of
    # the 18 decoder layers, guidance 3, 146 steps) ran it 4.24x faster than the float32 transformers call, which the
    # studio's float32 matches (1.02x, the same audio), with 2.9x less weight memory (the DAC stays float32);
    # float16 on GPUs.
    preferred_dtypes={"cuda": "float16", "mps": "float16", "cpu": "int8"},
    precisions=("float32", "float16", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    companion_repos=(Companion(DAC_REPO, DAC_PARAMETERS),),  # Dia's own 1.61B leave the DAC out
    accepts=(Accepts("config.json", "model_type", ("dia",)),),  # DiaConfig.model_type
    speed_param=None,
)
