"""Dialogue scripts, as every multi-speaker speech family reads them: `[S1] ... [S2] ...` tags or lines that begin
`Speaker 1:`, `Speaker 2:` (the Speech tab's Dialogue contract), with non-verbal cues in parentheses.

One parser, so a script that one model takes reads the same in every other; each family says how many speakers
it has and what its messages call it, and renders the turns in its own input format.

The Speech tab's modes are declared here too, one wording for every speech family: Single voice (one voice, preset
or cloned; a tag for a second speaker is refused), Dialogue (a script, a voice per speaker) and Long form (many
paragraphs in one voice, chunked by sentence). Each family offers the ones it can do (`mode_param`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from studio.catalog import MODE, Param, echo
from studio.errors import InvalidInput

# "Speaker N:" opens a turn at the start of a line, or after the end of a sentence (or a cue) on the same line, so
# that a one-line script typed in a terminal reads as it would in lines: "Speaker 1: Hello. Speaker 2: Hi there."
_SPEAKER_LINE = re.compile(r"(?:^|(?<=[.!?…)]))[ \t]*speaker[ \t]*(\w+)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_TAG = re.compile(r"\[\s*(S\s*\w+)\s*\]", re.IGNORECASE)
CUE = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class Turn:
    speaker: int  # 1-based, as the script numbers them
    text: str

    @property
    def tag(self) -> str:
        return f"S{self.speaker}"


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _voices(model: str, speakers: int) -> str:
    names = _listed([f"Speaker {n}" for n in range(1, speakers + 1)])
    tags = _listed([f"[S{n}]" for n in range(1, speakers + 1)])
    count = {1: "one voice", 2: "two voices", 3: "three voices", 4: "four voices"}.get(speakers, f"{speakers} voices")
    return f"{model} speaks {count}, {names} ({tags})"


def parse_script(text: str, *, speakers: int, model: str, what: str = "text") -> list[Turn]:
    """The script's turns, refusing what a model of `speakers` voices cannot speak; `what` names the setting.

    "Speaker N: ..." at the start of a line, or after a sentence's end on the same line, becomes [SN]; text before any tag is spoken by Speaker 1. A turn must
    have words: a turn of nothing, or a script of cues alone, is refused.
    """
    def number(raw: str, shown: str) -> int:
        digits = re.sub(r"\s+", "", raw)
        if not digits.isdigit() or not 1 <= int(digits) <= speakers:
            raise InvalidInput(f"the {what} has a turn for {echo(shown)}: {_voices(model, speakers)}; give that "
                               "turn to one of them")
        return int(digits)

    def line_tag(match: re.Match) -> str:
        return f"[S{number(match.group(1), match.group(0).strip())}]"

    tagged = _SPEAKER_LINE.sub(line_tag, text)
    turns: list[Turn] = []
    pieces = _TAG.split(tagged)  # text, tag, text, tag, text ...
    lead = " ".join(pieces[0].split())
    if lead:
        turns.append(Turn(1, lead))
    for raw, body in zip(pieces[1::2], pieces[2::2]):
        speaker = number(re.sub(r"^\s*[sS]", "", raw), f"[{raw}]")
        words = " ".join(body.split())
        if not words:
            raise InvalidInput(f"the {what}'s turn {len(turns) + 1} ([S{speaker}]) is empty: write what Speaker "
                               f"{speaker} says after the tag, or remove the tag")
        turns.append(Turn(speaker, words))
    if not turns:
        raise InvalidInput(f"the {what} is empty: write lines like '[S1] Hello! [S2] Hi there.'")
    if not any(re.search(r"\w", CUE.sub(" ", turn.text)) for turn in turns):
        raise InvalidInput(f"the {what} {echo(text)} has only non-verbal cues: {model} makes cues like (laughs) "
                           "between words; add words for a speaker to say")
    return turns


def tagged_text(turns: list[Turn]) -> str:
    """The one-line tagged form: "[S1] Hi! [S2] Hello there. (laughs)"."""
    return " ".join(f"[{turn.tag}] {turn.text}" for turn in turns)


# ----------------------------------------------------------------------------------------------------------------
# The Speech tab's modes
# ----------------------------------------------------------------------------------------------------------------

SINGLE, DIALOGUE, LONG_FORM = "single voice", "dialogue", "long form"
MODE_NAMES = {SINGLE: "Single voice", DIALOGUE: "Dialogue", LONG_FORM: "Long form"}
MODE_HELP = {
    SINGLE: "Single voice: the text in one voice, a preset or one cloned from a clip or a saved voice. A tag for "
            "another speaker ('Speaker 2:', '[S2]') is refused: switch to Dialogue for that.",
    DIALOGUE: "Dialogue: a script of lines 'Speaker 1: ...' / 'Speaker 2: ...' (or [S1] ... [S2] ...), each speaker "
              "in their own voice: Voice (Speaker 1) and Voice of Speaker 2 ... pick saved voices or take clips.",
    LONG_FORM: "Long form: a text of many paragraphs in one voice, spoken sentence by sentence with a longer pause "
               "between paragraphs; one progress bar over the whole, and the estimate covers all of it.",
}


def mode_param(modes: tuple[str, ...], default: str, notes: dict[str, str] | None = None) -> Param:
    """The `mode` setting of a speech model that can do `modes` (SINGLE, DIALOGUE, LONG_FORM); `notes` adds a
    model's own words to a mode's help (what its voice needs, how long a run can be)."""
    notes = notes or {}
    helps = tuple((mode, f"{MODE_HELP[mode]} {notes[mode]}".strip() if mode in notes else MODE_HELP[mode])
                  for mode in modes)
    what = ", ".join(MODE_NAMES[mode] for mode in modes)
    return Param(MODE, str, default, "Mode", f"What to speak: {what}.", choices=modes, advanced=False,
                 choice_help=helps)


DIALOGUE_MODELS = "Dia, CSM or VibeVoice"  # the speech families with a Dialogue mode, for the fix of a model without


def check_one_voice(text: str, mode: str, *, model: str, dialogue: bool, what: str = "text") -> None:
    """Refuse a tag for a second speaker in a one-voice mode (Single voice, Long form), naming the fix: Dialogue
    where `model` has it, else a model that has it."""
    for match in [*_SPEAKER_LINE.finditer(text), *_TAG.finditer(text)]:
        # "[S2]" or "Speaker 2:"; a cue in brackets such as Bark's [sighs] matches _TAG's pattern and is no speaker.
        digits = re.sub(r"^[sS]|\s+", "", match.group(1))
        if not digits.isdigit() or int(digits) == 1:
            continue
        shown = match.group(0).strip()
        who, fix = ((MODE_NAMES[mode], "switch Mode to Dialogue to give each speaker a voice") if dialogue
                    else (model, f"for a dialogue pick {DIALOGUE_MODELS} (Mode: Dialogue)"))
        raise InvalidInput(f"the {what} has a turn for another speaker ({echo(shown)}), and {who} speaks one voice: "
                           f"{fix}, or remove the tag")


def paragraphs(text: str) -> list[str]:
    """The text's paragraphs: pieces between blank lines, each with its words."""
    return [part.strip() for part in re.split(r"\n[ \t]*\n", text) if part.strip()]
