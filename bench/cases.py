"""What each benchmarked model runs: prompt, the compared settings, warm-up and the estimate lengths, per mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.checkpoints import CSM_BENCH_LAYERS, VIBEVOICE_BENCH_LAYERS

SEED = 1234


@dataclass(frozen=True)
class Mode:
    """Settings of one mode for one model. Params are studio request params (names as in the catalog)."""

    compare: dict[str, Any]  # the settings both sides run, `repeats` interleaved rounds
    repeats: int
    warmup: dict[str, Any] | None  # the reference's warm-up (short: it only needs to touch every code path)
    calibration: dict[str, Any]  # the studio's first run: loads the model and calibrates its estimate
    lengths: tuple[dict[str, Any], ...]  # predict, then run, each (the estimate accuracy check)
    prompt: str | None = None  # when it differs from the case's prompt
    calibration_prompt: str | None = None
    length_prompts: tuple[str, ...] = ()  # speech: the length is the text's


@dataclass(frozen=True)
class Case:
    name: str  # what --only takes
    repo: str
    family: str
    prompt: str
    quick: Mode
    full: Mode
    slow: bool = False  # in --quick only when named in --only (a single run takes minutes here)
    what: str = ""  # the compared work, in words, for the report
    what_full: str = ""
    extra: dict = field(default_factory=dict)

    def mode(self, quick: bool) -> Mode:
        return self.quick if quick else self.full


_SENTENCE = "Hello world, this is a test of the text to speech voice."
_SHORT = "Good morning, how are you?"
_MEDIUM = "Once upon a time there was a little girl who loved music, and she sang every day."
_LONG = ("Welcome to Audio Studio. Type a prompt and press generate. Music, speech and sound effects "
         "from a single studio, on your own machine, with the settings kept with every file.")

MMS = Case(
    name="mms-tts-eng", repo="facebook/mms-tts-eng", family="mms_tts", prompt=_SENTENCE,
    # A run takes about a second: nine rounds keep one disturbed round from deciding the median.
    quick=Mode(compare={}, repeats=9, warmup={}, calibration={}, lengths=({}, {}, {}),
               length_prompts=(_SHORT, _MEDIUM, _LONG)),
    full=Mode(compare={}, repeats=7, warmup={}, calibration={}, lengths=({}, {}, {}),
              length_prompts=(_SHORT, _MEDIUM, _LONG)),
    what=f"one sentence ({len(_SENTENCE)} characters)",
    extra={"overhead_repeats": {"quick": 9, "full": 21}},
)

MUSICGEN = Case(
    name="musicgen-small", repo="facebook/musicgen-small", family="musicgen",
    prompt="80s pop track with bassy drums and synth",
    # 0.94 s = 47 frames + 3 delay steps = 50 decoder steps; guidance 3 (a batch of 2), top-k 250.
    quick=Mode(compare={"duration": 0.94}, repeats=3, warmup={"duration": 0.5}, calibration={"duration": 0.5},
               lengths=({"duration": 0.6}, {"duration": 0.8}, {"duration": 1.2})),
    full=Mode(compare={"duration": 1.94}, repeats=5, warmup={"duration": 0.5}, calibration={"duration": 1.0},
              lengths=({"duration": 0.5}, {"duration": 1.5}, {"duration": 2.5})),
    what="50 decoder steps (0.94 s), guidance 3", what_full="100 decoder steps (1.94 s), guidance 3",
)

MUSICGEN_CONTINUATION = Case(
    name="musicgen-continuation", repo="facebook/musicgen-small", family="musicgen",
    prompt="80s pop track with bassy drums and synth",
    # Issue 13: a 5 s clip (250 codec frames, read by the decoder in one pass) continued by 5 s = 250 frames + 3
    # delay steps. "clip:S" is the bench's S-second 32 kHz clip file (bench/clips.py), passed as a user passes one.
    # The calibration run is text only, so the three lengths check how the estimate counts a prompt
    # (PROMPT_FRAME_COST in models/musicgen.py) at three prompt lengths. Compared runs take about a minute each
    # in float32 on 2 cores: slow, in --quick only when named.
    quick=Mode(compare={"audio": "clip:5", "duration": 5.0}, repeats=3, warmup={"audio": "clip:1", "duration": 0.5},
               calibration={"duration": 3.0},
               lengths=({"audio": "clip:5", "duration": 2.0}, {"audio": "clip:10", "duration": 3.0},
                        {"audio": "clip:2", "duration": 5.0})),
    full=Mode(compare={"audio": "clip:5", "duration": 5.0}, repeats=5, warmup={"audio": "clip:1", "duration": 0.5},
              calibration={"duration": 3.0},
              lengths=({"audio": "clip:5", "duration": 2.0}, {"audio": "clip:10", "duration": 3.0},
                       {"audio": "clip:2", "duration": 5.0})),
    slow=True, what="a 5 s clip continued by 5 s (250 prompt frames, 253 decoder steps), guidance 3",
)

BARK = Case(
    name="bark-small", repo="suno/bark-small", family="bark",
    prompt="Hello, my dog is cute. I need him in my life!",
    # Random weights never sample end-of-speech, so every run goes to its cap: cap = seconds of speech.
    quick=Mode(compare={"max_chunk_seconds": 1.0}, repeats=3, warmup={"max_chunk_seconds": 0.5},
               calibration={"max_chunk_seconds": 0.5},
               lengths=({"max_chunk_seconds": 0.75}, {"max_chunk_seconds": 1.0}, {"max_chunk_seconds": 1.5})),
    full=Mode(compare={"max_chunk_seconds": 2.0}, repeats=5, warmup={"max_chunk_seconds": 0.5},
              calibration={"max_chunk_seconds": 1.0},
              lengths=({"max_chunk_seconds": 0.5}, {"max_chunk_seconds": 2.0}, {"max_chunk_seconds": 3.0})),
    slow=True, what="1 s of speech (50 semantic tokens), voice v2/en_speaker_6",
    # On 2 cores a run is ~13 s of fixed cost (the fine stage's full 1024-frame window) + ~10 s per second.
    what_full="2 s of speech (100 semantic tokens), voice v2/en_speaker_6",
)

AUDIOLDM2 = Case(
    name="audioldm2", repo="cvssp/audioldm2", family="audioldm2", prompt="A dog barking in the distance",
    quick=Mode(compare={"duration": 2.56, "steps": 3}, repeats=3, warmup={"duration": 1.28, "steps": 1},
               calibration={"duration": 1.28, "steps": 3},
               lengths=({"duration": 1.92, "steps": 3}, {"duration": 3.2, "steps": 3},
                        {"duration": 4.48, "steps": 3})),
    full=Mode(compare={"duration": 5.12, "steps": 10}, repeats=5, warmup={"duration": 1.28, "steps": 1},
              calibration={"duration": 2.56, "steps": 10},
              lengths=({"duration": 1.28, "steps": 10}, {"duration": 5.12, "steps": 10},
                       {"duration": 10.24, "steps": 10})),
    what="3 DPM-Solver++ steps, 2.56 s, guidance 3.5", what_full="10 DPM-Solver++ steps, 5.12 s, guidance 3.5",
)

STABLE_AUDIO = Case(
    name="stable-audio-open-1.0", repo="stabilityai/stable-audio-open-1.0", family="stable_audio",
    prompt="A drum loop, 120 bpm",
    # Every length denoises and decodes the full 47.55 s window: the lengths check that the estimate knows it.
    # No reference warm-up: a run takes minutes, so first-call costs are lost in it.
    quick=Mode(compare={"duration": 5.0, "steps": 1}, repeats=1, warmup=None,
               calibration={"duration": 5.0, "steps": 1},
               lengths=({"duration": 2.0, "steps": 1}, {"duration": 10.0, "steps": 1},
                        {"duration": 30.0, "steps": 2})),
    full=Mode(compare={"duration": 10.0, "steps": 2}, repeats=3, warmup=None,
              calibration={"duration": 5.0, "steps": 1},
              lengths=({"duration": 2.0, "steps": 1}, {"duration": 20.0, "steps": 2},
                       {"duration": 40.0, "steps": 3})),
    # The reference decodes the whole window and crops; the studio decodes the clip's latents + a margin.
    slow=True, what="1 step (guidance 7) over the 47.55 s window, a 5 s clip decoded",
    what_full="2 steps (guidance 7) over the 47.55 s window, a 10 s clip decoded",
)

_LYRICS = ("[verse]\nNeon lights are calling out my name tonight\nRunning through the city till the morning light\n"
           "[chorus]\nWe are the signal in the noise\nDancing to a brand new voice")

ACE_STEP = Case(
    name="ace-step-xl-turbo", repo="ACE-Step/acestep-v15-xl-turbo-diffusers", family="ace_step",
    prompt="upbeat synth-pop with a catchy chorus",
    # Built with 2 of the XL DiT's 32 blocks (bench/checkpoints.py): the text and condition encoders and the VAE are
    # real-size, so the fixed costs and the decode are the real ones and the DiT's share is 1/16 of the real one
    # (bench.music_dit measures a block). 10 s is the pipeline's shortest song; the decode of 10 s of 48 kHz stereo
    # takes 17-50 s here depending on other jobs. The reference is built from the studio's float32 modules
    # (borrow): a second float32 copy (7.7 GB) would not fit the bench's memory share.
    quick=Mode(compare={"duration": 10.0, "steps": 4, "lyrics": _LYRICS}, repeats=2,
               warmup={"duration": 10.0, "steps": 1, "lyrics": _LYRICS},
               calibration={"duration": 10.0, "steps": 2, "lyrics": _LYRICS},
               lengths=({"duration": 10.0, "steps": 4, "lyrics": _LYRICS}, {"duration": 15.0, "steps": 2,
                                                                          "lyrics": _LYRICS},
                        {"duration": 20.0, "steps": 4, "lyrics": _LYRICS})),
    full=Mode(compare={"duration": 10.0, "steps": 8, "lyrics": _LYRICS}, repeats=3,
              warmup={"duration": 10.0, "steps": 1, "lyrics": _LYRICS},
              calibration={"duration": 10.0, "steps": 4, "lyrics": _LYRICS},
              lengths=({"duration": 10.0, "steps": 8, "lyrics": _LYRICS}, {"duration": 20.0, "steps": 4,
                                                                         "lyrics": _LYRICS},
                       {"duration": 30.0, "steps": 8, "lyrics": _LYRICS})),
    slow=True, what="a 10 s song with 4 lines of lyrics, 4 turbo steps (2 of the XL DiT's 32 blocks built)",
    what_full="a 10 s song with 4 lines of lyrics, 8 turbo steps (2 of the XL DiT's 32 blocks built)",
    extra={"borrow": True},
)

STABLE_AUDIO_3 = Case(
    name="stable-audio-3-medium", repo="stabilityai/stable-audio-3-medium", family="stable_audio_3",
    prompt="rain on a tin roof",
    # Built with 8 of the DiT's 24 blocks, in Stability's original layout: the studio converts it on its first
    # load (the calibration run's load). SAME-L's decode is real-size. Reference built from the studio's modules.
    quick=Mode(compare={"duration": 5.0, "steps": 4}, repeats=2, warmup={"duration": 2.0, "steps": 1},
               calibration={"duration": 5.0, "steps": 2},
               lengths=({"duration": 3.0, "steps": 4}, {"duration": 8.0, "steps": 2}, {"duration": 10.0, "steps": 4})),
    full=Mode(compare={"duration": 10.0, "steps": 8}, repeats=3, warmup={"duration": 2.0, "steps": 1},
              calibration={"duration": 5.0, "steps": 4},
              lengths=({"duration": 3.0, "steps": 8}, {"duration": 10.0, "steps": 4}, {"duration": 20.0, "steps": 8})),
    slow=True, what="5 s, 4 steps (8 of the DiT's 24 blocks built)",
    what_full="10 s, the distilled 8 steps (8 of the DiT's 24 blocks built)",
    extra={"borrow": True},
)

POCKET_TTS = Case(
    name="pocket-tts", repo="eustlb/pocket-tts", family="pocket_tts", prompt=_SENTENCE,
    # The published widths (89M + the 20M codec: the whole model), voice "alba" (10 s of latents). Random weights
    # never end a chunk, so each runs to the studio's cap, 1 s + 0.12 s a character: 97 frames (7.8 s of audio) for
    # the compared sentence, 1.8-2.2x the frames a trained model speaks for the same text (14 characters a
    # second), a factor the calibration run absorbs; the lengths then check how the estimate scales with the text.
    # `auto` is float32 on a CPU until measured otherwise: int8 and bfloat16 run in the same rounds.
    quick=Mode(compare={}, repeats=2, warmup={}, calibration={}, lengths=({}, {}, {}), prompt=_SENTENCE,
               calibration_prompt=_MEDIUM, length_prompts=(_SHORT, _SENTENCE, _LONG)),
    full=Mode(compare={}, repeats=4, warmup={}, calibration={}, lengths=({}, {}, {}), prompt=_SENTENCE,
              calibration_prompt=_MEDIUM, length_prompts=(_SHORT, _SENTENCE, _LONG)),
    slow=True, what=f"one sentence ({len(_SENTENCE)} characters) to the cap: 97 frames, 7.8 s of audio, voice alba",
    extra={"precisions": ("int8", "bfloat16")},
)

DIA = Case(
    name="dia-1.6b", repo="nari-labs/Dia-1.6B-0626", family="dia", prompt="[S1] Hello there.",
    # Built with 6 of the decoder's 18 layers (bench/checkpoints.py DIA_BENCH_LAYERS; the encoder and the DAC are
    # full-size). Random weights never end a run, so it goes to the studio's cap: max(1 s, spoken characters / 8) of
    # frames, 1.75x what a trained model says in the same text (14 characters a second), a factor the calibration
    # absorbs. Guidance 3 (a batch of 2), the published sampling.
    quick=Mode(compare={}, repeats=2, warmup={}, calibration={}, lengths=({}, {}, {}),
               calibration_prompt="[S1] Good morning to you.",
               length_prompts=("[S1] Hi there.", "[S1] Hello there, friend.", "[S1] Good morning. [S2] How are you?")),
    full=Mode(compare={}, repeats=3, warmup={}, calibration={}, lengths=({}, {}, {}),
              calibration_prompt="[S1] Good morning to you.",
              length_prompts=("[S1] Hi there.", "[S1] Hello there, friend.", "[S1] Good morning. [S2] How are you?")),
    slow=True, what="'[S1] Hello there.' to the cap: 146 decoder steps (1.5 s of 44.1 kHz audio), guidance 3 (6 of the "
                    "decoder's 18 layers built)",
)


# CSM and VibeVoice: random weights never end a turn, so a run lasts the studio's cap, which comes from the text
# (8 characters a second, a second at least): the text sets the length. 8 characters make the 1 s minimum; the three
# estimate lengths (9, 14 and 17 characters) are continuous in the cap, above that minimum. No voice clip: the voices
# the model picks, the docs' plain text-to-speech call.
_ONE_S, _TURN_9, _TURN_14, _TURN_17 = "See you.", "Thank you", "See you later.", "Nice to meet you!"

CSM = Case(
    name="csm-1b", repo="sesame/csm-1b", family="csm", prompt=_ONE_S,
    # One turn of Speaker 1: 13 frames of 32 codebooks (a backbone step and 31 depth-decoder steps each), 18-40 s in
    # float32 here; a quick run took 7.7 minutes with the build. The reference loads its own copy (3.6 GB in float32 at 4 layers): it fits beside the
    # studios. auto is float32 on a CPU (models/csm.py: not measured), so int8 and bfloat16 are weighed beside it.
    quick=Mode(compare={}, repeats=2, warmup={}, calibration={}, lengths=({}, {}, {}),
               length_prompts=(_TURN_9, _TURN_14, _TURN_17)),
    full=Mode(compare={}, repeats=3, warmup={}, calibration={}, lengths=({}, {}, {}), prompt=_TURN_17,
              length_prompts=(_TURN_9, _TURN_14, _TURN_17)),
    slow=True, what=f"one 8-character turn: 1 s, 13 frames of 32 codebooks ({CSM_BENCH_LAYERS} of the backbone's 16 "
                    "layers built)",
    what_full=f"one 17-character turn: 2.1 s, 27 frames of 32 codebooks ({CSM_BENCH_LAYERS} of the backbone's 16 layers "
              "built)",
    extra={"precisions": ("int8", "bfloat16")},
)

VIBEVOICE = Case(
    name="vibevoice-1.5b", repo="vibevoice/VibeVoice-1.5B-hf", family="vibevoice", prompt=_ONE_S,
    # A script of one line: 8 frames (7.5 a second, 3200 samples each), each an LM step in the guided and the
    # unconditioned branch, 10 DPM-Solver steps of the diffusion head, the acoustic decoder and the semantic encoder.
    # The reference is built from the studio's float32 model and processor (borrow): the tokenizers alone are 4.1 GB
    # in float32, and the studio holds three copies (float32, int8, bfloat16) in the same rounds. About 13 s a compared
    # run in float32 here; a quick run took 5.2 minutes with the build.
    quick=Mode(compare={}, repeats=2, warmup={}, calibration={}, lengths=({}, {}, {}),
               length_prompts=(_TURN_9, _TURN_14, _TURN_17)),
    full=Mode(compare={}, repeats=3, warmup={}, calibration={}, lengths=({}, {}, {}), prompt=_TURN_17,
              length_prompts=(_TURN_9, _TURN_14, _TURN_17)),
    slow=True, what=f"one 8-character line: 1 s, 8 frames, 10 diffusion steps, guidance 1.3 ({VIBEVOICE_BENCH_LAYERS} of "
                    "the LM's 28 layers built)",
    what_full=f"one 17-character line: 2.1 s, 16 frames, 10 diffusion steps, guidance 1.3 ({VIBEVOICE_BENCH_LAYERS} of "
              "the LM's 28 layers built)",
    extra={"borrow": True, "precisions": ("int8", "bfloat16")},
)

CASES: tuple[Case, ...] = (MMS, MUSICGEN, MUSICGEN_CONTINUATION, AUDIOLDM2, BARK, STABLE_AUDIO, ACE_STEP, STABLE_AUDIO_3,
                           POCKET_TTS, DIA, CSM, VIBEVOICE)


# ------------------------------------------------------------------------------------ MusicGen extension
@dataclass(frozen=True)
class Extension:
    """A clip extended window by window through the studio, against the same windows called directly."""

    clip_s: float
    extend_to: float
    repeats: int
    dtype: str = "int8"  # both sides run the studio's loaded model; int8 is the studio's default on a CPU
    # (window, context) seconds instead of the product's MAX_DURATION and CONTEXT_S; None = the product's own
    geometry: tuple[float, float] | None = None


@dataclass(frozen=True)
class PromptCost:
    """Continuations with prompts of `prompts_s` seconds vs text-only runs making the same `new_s` seconds."""

    new_s: tuple[float, ...]  # new lengths: each new step reads the prompt, so its cost grows with them
    short_s: float  # a shorter text-only run: with a longer one, the marginal time of a sampled step
    prompts_s: tuple[float, ...]
    repeats: int
    dtypes: tuple[str, ...]


# A 5 s clip extended to 50 s: two windows of the real 30 s / 10 s geometry, each a full window (5 s heard + 25 s
# new, then 10 s heard + 20 s new): 2,256 sampled steps, 5-6 minutes per run in int8 on 2 cores shared with about
# one core's worth of other jobs. Two rounds at least, so that each side goes first once (one round, with the
# direct windows first, measured the studio 10 % faster than its own windows).
# "tiny": the smoke runs on the tests' tiny checkpoint, in windows of 3 s hearing 1 s (the same arithmetic).
EXTENSION = {"quick": Extension(clip_s=5.0, extend_to=50.0, repeats=2),
             "full": Extension(clip_s=5.0, extend_to=50.0, repeats=3),
             "tiny": Extension(clip_s=1.0, extend_to=5.0, repeats=1, geometry=(3.0, 1.0))}
# 5 s new (253 steps) as in the continuation case and 20 s (1,003) as in an extension's window, each after the
# continuation's 5 s prompt and the extension's 10 s one: about 6 minutes a round in int8 on 2 shared cores.
PROMPT_COST = {"quick": PromptCost(new_s=(5.0, 20.0), short_s=1.0, prompts_s=(5.0, 10.0), repeats=3,
                                   dtypes=("int8",)),
               "full": PromptCost(new_s=(5.0, 20.0), short_s=1.0, prompts_s=(5.0, 10.0), repeats=3,
                                  dtypes=("int8", "float32")),
               "tiny": PromptCost(new_s=(1.0,), short_s=0.5, prompts_s=(1.0,), repeats=1, dtypes=("int8",))}
CONTINUATION_REPO = "facebook/musicgen-small"
CONTINUATION_PROMPT = "80s pop track with bassy drums and synth"

# Issue 14: ACE-Step XL turbo's plan under a 12 GB simulated accelerator. The real model is sized from its published
# parameters (estimate only); the bench's build (2 of 32 DiT blocks: 7.75 GB, largest part the 2.44 GB condition
# encoder) runs on a 5 GB simulated device, which like 12 GB for the real bfloat16 model holds its largest part but
# not the whole: both plans are CPU offload.
ACE_PLAN = {"repo": "ACE-Step/acestep-v15-xl-turbo-diffusers", "prompt": "upbeat synth-pop with a catchy chorus",
            "params": {"duration": 10.0, "steps": 2, "lyrics": _LYRICS}, "real_budget": 12 * 10**9,
            "build_budget": 5 * 10**9}

SECTIONS = ("page-start", "musicgen-extend", "musicgen-prompt-cost", "prototypes",
            "ace-xl-plan", "streaming", "precision-auto", "compiled", "rtf-floor")  # runs that are not one model's


def case_by_name(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)
