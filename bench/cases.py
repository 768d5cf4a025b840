"""What each benchmarked model runs: prompt, the compared settings, warm-up and the estimate lengths, per mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

CASES: tuple[Case, ...] = (MMS, MUSICGEN, AUDIOLDM2, BARK, STABLE_AUDIO)
SECTIONS = ("page-start", "prototypes")  # runs that are not one model's: --only takes these names too


def case_by_name(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)
