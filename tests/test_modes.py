"""Settings that belong to some of a model's modes (Param.modes): used and kept only in those modes."""

import numpy as np

from studio.catalog import MODE, Param, Request
from studio.clips import Clip

PARAMS = (
    Param(MODE, str, "song", "Mode", choices=("song", "repaint"),
          choice_help=(("repaint", "Regenerates a range of the clip."),)),
    Param("start", float, 0.0, "Start", modes=("repaint",)),
    Param("audio", Clip, None, "Audio", modes=("repaint",)),
)


def _clip() -> Clip:
    from pathlib import Path

    return Clip(np.zeros((1, 800), np.float32), 8000, name="riff.wav", path=Path("riff.wav"), digest="0" * 64)


def test_a_setting_of_another_mode_is_left_out_of_the_metadata_and_the_inputs():
    clip = _clip()
    song = Request("m", "music", "p", 1, {MODE: "song", "start": 2.0, "audio": clip}, spec_params=PARAMS)
    assert song.settings() == {MODE: "song"}
    assert song.clips() == {}
    repaint = Request("m", "music", "p", 1, {MODE: "repaint", "start": 2.0, "audio": clip}, spec_params=PARAMS)
    assert repaint.settings()[MODE] == "repaint" and repaint.settings()["start"] == 2.0
    assert repaint.clips() == {"audio": clip}


def test_a_request_without_the_models_params_keeps_every_setting():
    request = Request("m", "music", "p", 1, {MODE: "song", "start": 2.0})
    assert request.settings() == {MODE: "song", "start": 2.0}


def test_choice_help_names_what_a_choice_does():
    mode = PARAMS[0]
    assert mode.explain("repaint") == "Regenerates a range of the clip."
    assert mode.explain("song") == ""
    assert PARAMS[1].applies({MODE: "repaint"}) and not PARAMS[1].applies({MODE: "song"})
    assert mode.applies({MODE: "song"})
