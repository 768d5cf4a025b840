"""A test-only family of two music models with modes, for the page's side of modes (tests/test_ui_modes.py).

Laid out as the families the issue asks for declare theirs (catalog.MODE with choice_help; settings with `modes`;
the source clip named `audio`; a multi-line `lyrics`): "Song editor (test)" does song / repaint / cover, as
ACE-Step 1.5 does; "Sound shaper (test)" does generate / vary / inpaint, as Stable Audio 3 does. Registered into a
Catalog built in the test beside the real tiny models (`catalog_with_modes`), never into the product's.

Its "generation" is a tone of the asked length at 48 kHz stereo (no weights to speak of: a 4x4 linear layer, so
the manager's byte accounting has a module to count), so a test can make a 4-minute result in a second. The repo
is installed into the tests' temporary HF cache (`install`), so the estimate reads it as downloaded.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from studio.catalog import MODE, Catalog, Family, ModelSpec, Param, Request, SpeedPrior, duration_param
from studio.clips import Clip
from studio.errors import InvalidInput
from studio.run import Audio, RunContext

SONG, SHAPER = "studio-tests/song-editor", "studio-tests/sound-shaper"
RATE = 48000
LONGEST = 240.0  # 4 minutes: the long result the page must handle

SONG_MODE = Param(
    MODE, str, "song", "Mode", "What the model does; each mode shows the settings it uses.",
    choices=("song", "repaint", "cover"), advanced=False,
    choice_help=(
        ("song", "Writes a song in the prompt's style, singing the Lyrics (none: instrumental). Needs a prompt."),
        ("repaint", "Regenerates the part of the clip in Audio to edit between Repaint from and Repaint to, and "
                    "keeps the rest. Needs a clip and a range inside it."),
        ("cover", "Plays the clip in Audio to edit again in the prompt's style, as close to it as Cover strength "
                  "says. Needs a clip."),
    ),
)
SHAPER_MODE = Param(
    MODE, str, "generate", "Mode", "What the model does; each mode shows the settings it uses.",
    choices=("generate", "vary", "inpaint"), advanced=False,
    choice_help=(
        ("generate", "Makes Duration seconds from the prompt. Needs a prompt."),
        ("vary", "Makes a variation of the clip in Audio to edit, as free as Variation strength says. Needs a "
                 "clip."),
        ("inpaint", "Regenerates the part of the clip in Audio to edit between Inpaint from and Inpaint to. Needs "
                    "a clip and a range inside it."),
    ),
)
EDIT_HELP = "The clip to edit (WAV, FLAC, OGG or MP3, or a recording), 1 to 240 s; the result is as long as it."


def _range(prefix: str, label: str, modes: tuple[str, ...]) -> tuple[Param, Param]:
    return (Param(f"{prefix}_start", float, 0.0, f"{label} from (s)", "Where the part to redo starts in the clip.",
                  minimum=0.0, maximum=LONGEST, step=0.5, advanced=False, modes=modes),
            Param(f"{prefix}_end", float, 10.0, f"{label} to (s)", "Where the part to redo ends in the clip.",
                  minimum=0.0, maximum=LONGEST, step=0.5, advanced=False, modes=modes))


SONG_PARAMS = (
    SONG_MODE,
    replace(duration_param(LONGEST, 30.0, minimum=10.0, step=1.0), modes=("song",)),  # an edit is as long as its clip
    Param("lyrics", str, "", "Lyrics", "One line a line, sections tagged [verse], [chorus], [bridge]. "
          "Empty: instrumental.", lines=8, advanced=False, modes=("song",)),
    Param("audio", Clip, None, "Audio to edit", EDIT_HELP, minimum=1.0, maximum=LONGEST, advanced=False,
          modes=("repaint", "cover")),
    *_range("repaint", "Repaint", ("repaint",)),
    Param("cover_strength", float, 0.5, "Cover strength", "How close the cover stays to the clip: 1 keeps its "
          "melody and structure, 0 keeps little.", minimum=0.0, maximum=1.0, step=0.05, advanced=False,
          modes=("cover",)),
    Param("steps", int, 8, "Steps", "Denoising steps; the turbo model is made for 8.", minimum=1, maximum=100,
          step=1),
)
SHAPER_PARAMS = (
    SHAPER_MODE,
    replace(duration_param(LONGEST, 20.0), modes=("generate",)),
    Param("audio", Clip, None, "Audio to edit", EDIT_HELP, minimum=1.0, maximum=LONGEST, advanced=False,
          modes=("vary", "inpaint")),
    Param("strength", float, 0.6, "Variation strength", "How much of the clip may change: 0 none, 1 all of it.",
          minimum=0.0, maximum=1.0, step=0.05, advanced=False, modes=("vary",)),
    *_range("inpaint", "Inpaint", ("inpaint",)),
    Param("steps", int, 8, "Steps", "Denoising steps.", minimum=1, maximum=100, step=1),
)

SPECS = (
    ModelSpec(repo_id=SONG, family="modes_test", tasks=("music",), label="Song editor (test)", license="MIT",
              parameters=16, sample_rate=RATE, channels=2, max_duration=LONGEST, params=SONG_PARAMS,
              speed={"cpu": SpeedPrior(0.2, 0.0001)}, unit="step",
              description="A test model with modes: songs from lyrics, repaint, cover."),
    ModelSpec(repo_id=SHAPER, family="modes_test", tasks=("music", "sfx"), label="Sound shaper (test)",
              license="MIT", parameters=16, sample_rate=RATE, channels=2, max_duration=LONGEST, params=SHAPER_PARAMS,
              speed={"cpu": SpeedPrior(0.2, 0.0001)}, unit="step",
              description="A test model with modes: generate, vary, inpaint."),
)


def _edits(values: Mapping[str, Any]) -> bool:
    return values.get(MODE) not in ("song", "generate")


def check(spec: ModelSpec, values: Mapping[str, Any]) -> None:
    """A mode that edits needs a clip; a range must lie inside it and not be empty."""
    mode = values[MODE]
    if not _edits(values):
        return
    clip = values.get("audio")
    if clip is None:
        raise InvalidInput(f"{mode.capitalize()} needs a clip in Audio to edit: upload or record one, or pick "
                           f"{spec.param(MODE).default.capitalize()}")
    prefix = {"repaint": "repaint", "inpaint": "inpaint"}.get(mode)
    if prefix is not None:
        start, end = values[f"{prefix}_start"], values[f"{prefix}_end"]
        if not 0 <= start < end <= clip.seconds + 1e-6:
            raise InvalidInput(f"the range {start:g}-{end:g} s is not inside the {clip.seconds:.1f} s clip "
                               f"{clip.name!r}: pick a start before the end, both within 0-{clip.seconds:.1f} s")


def describe(spec: ModelSpec, request: Request) -> str:
    mode, clip = request.get(MODE), request.clips().get("audio")
    if clip is None:
        return ""
    if mode in ("repaint", "inpaint"):
        return (f"{mode}s {request.get(mode + '_start'):.1f}-{request.get(mode + '_end'):.1f} s of the "
                f"{clip.seconds:.1f} s clip {clip.name!r}")
    return f"{'covers' if mode == 'cover' else 'varies'} the {clip.seconds:.1f} s clip {clip.name!r}"


def length(request: Request) -> float:
    clip = request.clips().get("audio")
    return clip.seconds if clip is not None else float(request.get("duration"))


def work_units(spec: ModelSpec, request: Request) -> float:
    return request.get("steps") * length(request)


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    return int(length(request) * RATE * 2 * 4 * 3)


class ToneModel:
    """A 220 Hz tone with a 2 Hz beat, as long as the request asks, at 48 kHz stereo."""

    def __init__(self) -> None:
        import torch

        self.layer = torch.nn.Linear(4, 4)

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        steps = int(request.get("steps"))
        for step in range(steps):
            ctx.check()
            ctx.progress(step + 1, steps)
        t = np.arange(int(round(length(request) * RATE)), dtype=np.float32) / RATE
        tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
        return Audio(np.stack([tone, tone[::-1].copy()]), RATE, {"mode": request.get(MODE)})

    def modules(self) -> list:
        return [self.layer]

    def move(self, torch_device: str) -> None:
        self.layer.to(torch_device)


def load(spec: ModelSpec, torch_device: str, dtype: str) -> ToneModel:
    model = ToneModel()
    model.move(torch_device)
    return model


FAMILY = Family(name="modes_test", load=load, work_units=work_units, working_bytes=working_bytes, check=check,
                describe=describe, precisions=("float32",), preferred_dtypes={"cuda": "float32", "mps": "float32",
                                                                              "cpu": "float32"},
                libraries=("torch",), speed_param="steps")


def catalog_with_modes() -> Catalog:
    """The product's catalog (every real model) with the two test models registered after them."""
    catalog = Catalog.discover("models")
    catalog.register(FAMILY, SPECS)
    return catalog


def install(hf_home: Path) -> None:
    """Put both repos into the HF cache at `hf_home` (a config and a 64-byte safetensors file each)."""
    from safetensors.numpy import save_file

    from tests.tiny_models import install_repo

    def build(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps({"model_type": "modes_test"}))
        save_file({"layer.weight": np.zeros((4, 4), np.float32)}, str(folder / "model.safetensors"))

    for repo_id in (SONG, SHAPER):
        install_repo(hf_home, repo_id, build)
