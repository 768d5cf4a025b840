"""Models with modes on the page, without a browser: the mode control and its note, the settings that follow the
mode (shown, hidden, sent), model switches, Reuse and History's restore, Use as input, and lyrics' box.

The models with modes are tests/modes_family.py's (song / repaint / cover and generate / vary / inpaint), registered
beside the real tiny models in a catalog of the test's own.
"""

from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from studio.catalog import MODE, Param
from studio.ui import controls as ctl
from tests.modes_family import SHAPER, SHAPER_MODE, SONG, SONG_MODE, SPECS, catalog_with_modes

NO_AUDIO = "cvssp/audioldm2-music"  # a music model that takes no clip
SMALL = "facebook/musicgen-small"
STABLE_AUDIO = "stabilityai/stable-audio-open-1.0"  # "strength" and "audio" without modes


# ------------------------------------------------------------------ pure: labels, what shows, what is sent


def test_the_mode_dropdown_shows_words_and_sends_the_lowercase_values():
    assert ctl.widget_kind(SONG_MODE) == "dropdown"
    props = ctl._props(SONG_MODE, SPECS[0], catalog=None)
    assert props["choices"] == [("Song", "song"), ("Repaint", "repaint"), ("Cover", "cover")]
    assert props["value"] == "song"
    assert ctl.mode_label("extract") == "Extract" and ctl.mode_label("text_to_music") == "Text to music"
    # Other settings with choices keep theirs as they are.
    precision = ctl._props(Param("precision", str, "auto", "Precision", choices=("auto", "float32")), SPECS[0],
                           catalog=None)
    assert precision["choices"] == ["auto", "float32"]


def test_a_mode_not_of_the_model_falls_back_to_its_default():
    song, shaper = SPECS
    assert ctl.mode_of(song, "repaint") == "repaint"
    assert ctl.mode_of(shaper, "repaint") == "generate"  # sent before a switch to it arrived
    assert ctl.mode_of(song, None) == "song"
    assert ctl.mode_of(catalog_with_modes().get(SMALL), "song") is None  # no modes at all


def _controls(specs):
    """The plan for `specs`, each control's component a stand-in (the values are keyed by it)."""
    plan = ctl.plan_controls(list(specs))
    for control in plan:
        control.component = f"<{control.name}:{control.kind}>"
    return plan


def test_only_the_modes_settings_are_shown_and_sent():
    song = SPECS[0]
    plan = _controls(SPECS)
    named = {c.name: c for c in plan}
    assert [c.name for c in plan if c.modal] == ["duration", "lyrics", "audio", "repaint_start", "repaint_end",
                                                 "cover_strength", "strength", "inpaint_start", "inpaint_end"]
    # Those used only with a clip are laid out under it (not Duration: a song's; not the clip itself).
    assert [c.name for c in plan if c.of_clip] == ["repaint_start", "repaint_end", "cover_strength", "strength",
                                                   "inpaint_start", "inpaint_end"]
    values = {c.component: song.param(c.name).default if song.param(c.name) else None for c in plan}
    values[named["audio"].component] = {"path": "/tmp/x/riff.wav", "orig_name": "riff.wav"}
    values[named["lyrics"].component] = "[verse]\nla la"

    sent = ctl.active_settings(plan, song, values)
    assert sent == {MODE: "song", "duration": 30.0, "lyrics": "[verse]\nla la", "steps": 8}  # no clip, no range
    assert [c.name for c in plan if ctl.shown(c, song, "song")] == [MODE, "duration", "lyrics", "steps"]

    values[named[MODE].component] = "repaint"
    sent = ctl.active_settings(plan, song, values)
    assert set(sent) == {MODE, "audio", "repaint_start", "repaint_end", "steps"}  # an edit is as long as its clip
    values[named[MODE].component] = "cover"
    assert set(ctl.active_settings(plan, song, values)) == {MODE, "audio", "cover_strength", "steps"}

    # A mode another model sent (the switch to this one still on its way): fitted, the model's default mode.
    values[named[MODE].component] = "inpaint"
    assert ctl.active_settings(plan, song, values, fitted=True)[MODE] == "song"
    assert "audio" not in ctl.active_settings(plan, song, values, fitted=True)

    # By name (a past run's settings): the same rule.
    assert ctl.in_mode(song, {MODE: "song", "lyrics": "x", "repaint_start": 1.0, "nope": 1}) == \
        {MODE: "song", "lyrics": "x"}


# ------------------------------------------------------------------ the tab


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    out = tmp_path_factory.mktemp("modes") / "out"
    return Studio(Settings(output_dir=out), catalog=catalog_with_modes(), device=CpuDevice())


@pytest.fixture(scope="module")
def music(studio):
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    with gr.Blocks() as demo, gr.Tabs():
        return build_tab(demo, "music", Endpoints(studio))


@pytest.fixture
def said(monkeypatch):
    messages = []
    monkeypatch.setattr(gr, "Info", lambda message, *a, **k: messages.append(message))
    return messages


def _control(tab, name: str, kind: str | None = None):
    """The tab's control for the setting `name` of the test's Song editor (a real model may have a setting of the same
    name behind a control of another kind: ACE-Step's repaint range has no maximum, so it is a number box)."""
    found = [c for c in tab.plan if c.name == name and (kind is None or c.kind == kind)]
    song = tab.catalog.get(SONG)
    return next((c for c in found if ctl.takes(c, song)), found[0])


def _values(tab, model: str, **settings) -> dict:
    """The tab's values as the page sends them, set for `model` with its defaults and `settings`."""
    spec = tab.catalog.get(model)
    values = {tab.model: model, tab.language: None, tab.prompt: "synth-pop", tab.seed: -1, tab.fmt: "wav",
              tab.ui.shown: model, tab.ui.last: settings.pop("last", None)}
    for control in tab.plan:
        param = spec.param(control.name)
        values[control.component] = settings.get(control.name, param.default if param is not None else None)
    return values


def _visible(tab, updates) -> set[str]:
    """The settings an update set shows (visible=True)."""
    return {c.name for c in tab.plan if (updates.get(c.component) or {}).get("visible") is True}


def _has(update, **expected) -> bool:
    return expected.items() <= dict(update).items()


def _hidden(tab, updates) -> set[str]:
    return {c.name for c in tab.plan if (updates.get(c.component) or {}).get("visible") is False}


def test_the_mode_comes_first_with_its_note_and_lyrics_get_a_tall_box_under_the_prompt(music):
    mode, lyrics = _control(music, MODE, "dropdown"), _control(music, "lyrics")
    assert music.ui.mode is mode and mode.component.elem_id == "music-input-mode"
    assert mode.note.elem_id == "music-input-mode-note" and mode.component.filterable is False
    # The tab opens on MusicGen small (the featured model): no mode, no lyrics, no note.
    assert not mode.component.visible and not mode.note.visible and not lyrics.component.visible
    assert lyrics.wide and ctl.takes(lyrics, music.catalog.get(SONG))  # its home: the first model with lyrics
    # Built in reading order: model, mode (and its note), prompt, lyrics, the row of settings and Format, the clip,
    # what is about the clip (a range to repaint: side by side where there is room); Stable Audio Open's strength
    # (no mode) stays in the row it had.
    clip, start, end = (_control(music, name).component for name in ("audio", "repaint_start", "repaint_end"))
    order = [music.model, mode.component, mode.note, music.prompt, lyrics.component, music.fmt, clip, start, end]
    assert [b._id for b in order] == sorted(b._id for b in order)
    assert start.min_width == end.min_width == 200 and not _control(music, "strength").of_clip
    from studio.ui.tab import on_model

    updates = on_model(music, {**_values(music, SMALL), music.model: SONG})
    assert updates[lyrics.component]["lines"] == 8 and updates[lyrics.component]["max_lines"] == 16
    assert updates[mode.component]["choices"][1] == ("Repaint", "repaint")
    assert updates[mode.note] == gr.update(value=SONG_MODE.explain("song"), visible=True)


def test_switching_the_mode_shows_its_settings_and_hides_the_others_at_once(music):
    from studio.ui.tab import on_mode

    mode, audio = _control(music, MODE, "dropdown"), _control(music, "audio")
    values = _values(music, SONG, mode="repaint")
    updates = on_mode(music, values)
    assert set(updates) == set(music.ui.mode_outputs())  # one event updates every setting that follows the mode
    assert _visible(music, updates) == {"audio", "repaint_start", "repaint_end"}
    assert {"duration", "lyrics", "cover_strength", "strength", "inpaint_start"} <= _hidden(music, updates)
    assert all(set(u) == {"__type__", "visible"} for c in music.plan if (u := updates.get(c.component)))  # values kept
    assert updates[mode.note]["value"] == SONG_MODE.explain("repaint")
    assert updates[audio.note] == gr.update(value=audio.home and SPECS[0].param("audio").help, visible=True)

    updates = on_mode(music, _values(music, SONG, mode="song"))
    assert _visible(music, updates) == {"duration", "lyrics"} and "audio" in _hidden(music, updates)
    assert updates[audio.note]["visible"] is False
    # The other model's modes.
    updates = on_mode(music, _values(music, SHAPER, mode="vary"))
    assert _visible(music, updates) == {"audio", "strength"}
    assert updates[mode.note]["value"] == SHAPER_MODE.explain("vary")
    # A model without modes (a stale event): the settings are its own, every one of them shown.
    assert {"audio", "strength"} <= _visible(music, on_mode(music, _values(music, STABLE_AUDIO)))


def test_a_model_switch_applies_the_mode_it_lands_in(music):
    from studio.ui.tab import on_model

    mode, adjusted = _control(music, MODE, "dropdown"), music.ui.adjusted
    # Song editor in Repaint -> Sound shaper, which has no repaint: its default mode, and the page says so.
    values = {**_values(music, SONG, mode="repaint", repaint_start=4.0), music.model: SHAPER}
    updates = on_model(music, values)
    assert updates[mode.component]["value"] == "generate" and updates[mode.component]["visible"] is True
    assert updates[adjusted] == gr.update(value="Mode is back to Sound shaper (test)'s default: it has no Repaint.",
                                          visible=True)
    assert {"audio", "strength", "inpaint_start", "inpaint_end", "repaint_start", "lyrics"} <= _hidden(music, updates)
    # Hidden or shown, a setting of the new model is set for it: its bounds and default, inside them.
    assert updates[_control(music, "inpaint_end").component]["value"] == 10.0
    assert updates[_control(music, "strength").component]["maximum"] == 1.0
    assert updates[mode.note]["value"] == SHAPER_MODE.explain("generate")

    # In the old model's default mode, the new model's default mode comes silently.
    updates = on_model(music, {**_values(music, SONG), music.model: SHAPER})
    assert updates[mode.component]["value"] == "generate" and updates[adjusted]["visible"] is False
    # Sound shaper in Vary -> Stable Audio Open, whose clip and strength belong to no mode: shown, the mode hidden.
    updates = on_model(music, {**_values(music, SHAPER, mode="vary"), music.model: STABLE_AUDIO})
    assert {"audio", "strength"} <= _visible(music, updates) and {MODE, "lyrics"} <= _hidden(music, updates)
    assert updates[mode.note]["visible"] is False and updates[_control(music, "audio").note]["visible"] is True
    # MusicGen (a clip to continue) -> Song editor, in Song: no clip there, and a clip held is not sent.
    clip = {"path": "/tmp/gradio/x/riff.wav", "orig_name": "riff.wav"}
    updates = on_model(music, {**_values(music, SMALL, audio=clip), music.model: SONG})
    assert "audio" in _hidden(music, updates) and {"duration", "lyrics"} <= _visible(music, updates)
    assert "value" not in updates[_control(music, "audio").component]  # the clip stays in the (hidden) input
    assert "continues" not in updates[music.estimate] and "needs" in updates[music.estimate]


def _wav(path, seconds: float, rate: int = 48000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype("float32"), rate)
    return path


def _repaint_result(studio, *, mode: str = "repaint", clip_name: str | None = None) -> dict:
    """A past repaint's metadata (its clip stored as a run stores it), with its file in the output folder."""
    from studio.clips import read_clip, store_clip

    out = studio.settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    clip = store_clip(read_clip(_wav(out.parent / "riff.wav", 20.0)), out)
    path = _wav(out / f"20260101-000000-music-{mode}.wav", 20.0)
    settings = {MODE: mode, "duration": 30.0, "steps": 8, "audio": clip.stored}
    if mode == "repaint":
        settings.update(repaint_start=5.0, repaint_end=12.0)
    return {"model": SONG, "task": "music", "prompt": "synth-pop", "seed": 7, "duration": 20.0, "sample_rate": 48000,
            "format": "wav", "file": path.name, "settings": settings,
            "inputs": {"audio": {**clip.describe(), "name": "riff.wav"}}}


def test_reuse_and_history_restore_bring_the_mode_back_with_its_settings(studio, music):
    from studio.ui import history_tab
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import on_reuse

    metadata = _repaint_result(studio)
    updates = dict(zip(music.restore_outputs(), on_reuse(music, metadata)))
    mode = _control(music, MODE, "dropdown")
    assert updates[mode.component]["value"] == "repaint" and updates[mode.component]["visible"] is True
    assert _has(updates[_control(music, "repaint_start").component], value=5.0, visible=True)
    assert updates[_control(music, "repaint_end").component]["value"] == 12.0
    assert updates[_control(music, "audio").component]["value"].endswith(metadata["settings"]["audio"][7:])
    assert {"lyrics", "cover_strength", "inpaint_start"} <= _hidden(music, updates)
    assert updates[mode.note]["value"] == SONG_MODE.explain("repaint")
    assert "repaints 5.0-12.0 s of the 20.0 s clip" in updates[music.estimate]

    # History's restore goes through the same updates, from the item's sidecar.
    endpoints = Endpoints(studio)
    path = studio.settings.output_dir / metadata["file"]
    path.with_name(path.name + ".json").write_text(json.dumps(metadata))
    item = studio.history.add(path, metadata)
    mine = dict(zip(music.restore_outputs(), history_tab.restore(endpoints, {"music": music}, item.id)[1:]))
    assert mine[mode.component]["value"] == "repaint" and mine[_control(music, "repaint_end").component]["visible"]
    assert "repaints 5.0-12.0 s" in mine[music.estimate]

    # A song restores as a song: the clip and range of another mode are not brought back into view.
    song = {**metadata, "settings": {MODE: "song", "duration": 40.0, "lyrics": "[chorus]\nhey", "steps": 8}}
    updates = dict(zip(music.restore_outputs(), on_reuse(music, song)))
    assert _has(updates[_control(music, "lyrics").component], value="[chorus]\nhey", visible=True)
    assert {"audio", "repaint_start"} <= _hidden(music, updates)


def test_use_as_input_switches_to_the_first_mode_that_takes_audio_and_says_so(studio, music, said):
    from studio.ui.tab import on_use_input

    audio, mode = _control(music, "audio"), _control(music, MODE, "dropdown")
    result = _repaint_result(studio, mode="song")
    updates = on_use_input(music, _values(music, SONG, last=result))
    file = str(studio.settings.output_dir.resolve() / result["file"])
    assert updates[mode.component]["value"] == "repaint"
    assert _has(updates[audio.component], value=file, visible=True)
    assert updates[_control(music, "repaint_start").component]["visible"] is True
    assert updates[_control(music, "lyrics").component]["visible"] is False
    assert updates[mode.note]["value"] == SONG_MODE.explain("repaint") and updates[audio.note]["visible"] is True
    assert said == ["Song takes no audio input: switched to Repaint, which takes it as its audio to edit."]
    assert "repaints 0.0-10.0 s of the 20.0 s clip" in updates[music.estimate]

    # In a mode that takes audio already (Cover): nothing but the clip changes, and nothing is said.
    said.clear()
    updates = on_use_input(music, _values(music, SONG, mode="cover", last=result))
    assert mode.component not in updates and said == [] and "covers the 20.0 s clip" in updates[music.estimate]

    # From a model that takes no clip: back to the result's model, in a mode that takes one.
    updates = on_use_input(music, _values(music, NO_AUDIO, last=result))
    assert updates[music.model]["value"] == SONG and updates[mode.component]["value"] == "repaint"
    assert updates[audio.component]["visible"] is True and updates[mode.component]["visible"] is True
    assert said == ["AudioLDM 2 music takes no audio input: switched to Song editor (test) in Repaint mode, which "
                    "takes it as its audio to edit."]


def test_lyrics_in_the_result_details_show_their_start_and_length():
    from studio.ui.text import metadata_markdown

    lyrics = "[verse]\n" + "\n".join(f"line {n} of the song goes on" for n in range(40))
    shown = metadata_markdown({"model": SONG, "prompt": "synth-pop", "seed": 1,
                               "settings": {MODE: "song", "lyrics": lyrics, "steps": 8}})
    assert ("mode song · lyrics “\\[verse\\] line 0 of the song goes on line 1 of the song goes …” "
            f"({len(lyrics):,} characters) · steps 8") in shown  # Markdown-escaped brackets
    shown = metadata_markdown({"model": SONG, "prompt": "p", "seed": 1,
                               "settings": {"lyrics": "", "reference": None, "steps": 8}})
    assert "lyrics “” · steps 8 |" in shown and "None" not in shown  # a clip not given is not a setting to show


def test_a_long_result_plays_in_the_browsers_own_player_in_the_tab_and_in_history(studio, music, monkeypatch):
    from studio.ui import history_tab, tab
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import on_generate

    monkeypatch.setattr(tab, "WAVEFORM_MAX_S", 2.0)  # a minute in the product: short runs make the same point
    players = {}
    for seconds in (2.0, 2.5):
        updates = on_generate(music, _values(music, SHAPER, duration=seconds), None)
        metadata = updates[music.ui.last]
        assert metadata["duration"] == seconds and metadata["sample_rate"] == 48000
        players[seconds] = updates[music.ui.audio]
        assert players[seconds]["value"].endswith(metadata["file"])
        item = next(i for i in studio.history.list("synth-pop") if i.file.endswith(metadata["file"]))
        assert history_tab.show_item(Endpoints(studio), item)[0] == players[seconds]
    # The waveform up to the limit; past it the browser's player, which streams the file instead of decoding all
    # of it into the page (see WAVEFORM_MAX_S for the figures).
    assert players[2.0]["waveform_options"] == {"show_recording_waveform": True}
    assert players[2.5]["waveform_options"] == {"show_recording_waveform": False}


def test_short_choice_help_labels_the_choices_and_long_help_goes_into_the_info_line():
    language = Param("language", str, "en", "Vocal language", "The language of the lyrics.", choices=("en", "de"),
                     choice_help=(("en", "English"), ("de", "German")))
    props = ctl._props(language, SPECS[0], catalog=None)
    assert props["choices"] == [("en · English", "en"), ("de · German", "de")] and props["value"] == "en"
    assert props["info"] == "The language of the lyrics."
    scheduler = Param("scheduler", str, "a", "Scheduler", "How steps are spaced.", choices=("a", "b", "c"),
                      choice_help=(("a", "Even steps, the library's default for this model."),
                                   ("b", "More steps near the end, for finer detail.")))
    props = ctl._props(scheduler, SPECS[0], catalog=None)
    assert props["choices"] == ["a", "b", "c"]
    assert props["info"] == ("How steps are spaced. a: Even steps, the library's default for this model. "
                             "b: More steps near the end, for finer detail.")
    assert ctl._props(SONG_MODE, SPECS[0], catalog=None)["info"] == SONG_MODE.help  # the chosen mode's: a note


def test_the_text_box_says_what_the_picked_models_text_looks_like(music, catalog):
    """A model's prompt_hint is the placeholder while it is picked (Dia's script tags); others get the tab's own."""
    from dataclasses import replace

    from studio.ui.tab import PROMPT, on_model, placeholder

    updates = on_model(music, {**_values(music, SMALL), music.model: SONG})
    assert updates[music.prompt] == gr.update(placeholder=PROMPT["music"][1])
    song = music.catalog.get(SONG)
    assert placeholder("music", replace(song, prompt_hint="[verse] ...")) == "[verse] ..."
    dia = catalog.get("nari-labs/Dia-1.6B-0626")
    assert placeholder("speech", dia).startswith("A dialogue: [S1]") and "Bark" not in placeholder("speech", dia)
    assert "Bark also reads" in placeholder("speech", catalog.get("suno/bark-small"))
