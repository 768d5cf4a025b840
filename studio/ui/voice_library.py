"""The Speech tab's Voice library: save a voice from an uploaded or recorded clip, list, play, rename and delete the
saved ones; each change refreshes the tab's Voice dropdowns at once (studio.voices holds the rules).

Layout (`lay_out`), handlers (top-level functions taking the `LibraryHandle` first), wiring (`wire`), as in tab.py.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.catalog import can_clone
from studio.errors import InvalidInput
from studio.ui import controls as ctl
from studio.ui.common import LIGHT
from studio.ui.endpoints import Endpoints, user_errors
from studio.ui.tab import TabHandle, bind
from studio.voices import CONSENT_TEXT, MAX_SECONDS, MIN_SECONDS, speaker_of

INTRO = ("Save a voice once, then pick it in **Voice** with a model that clones ({models}). Voices are files in the "
         "output folder's `voices/`; every result made with one says so in its details.")


@dataclass
class LibraryLayout:
    clip: gr.Audio
    name: gr.Textbox
    transcript: gr.Textbox
    consent: gr.Checkbox
    save: gr.Button
    listing: gr.HTML
    pick: gr.Dropdown
    player: gr.Audio
    new_name: gr.Textbox
    rename: gr.Button
    delete: gr.Button


@dataclass
class LibraryHandle:
    endpoints: Endpoints
    tab: TabHandle
    ui: LibraryLayout

    def voice_controls(self) -> list[ctl.Control]:
        """The tab's Voice dropdowns (speaker 1's `voice`, and `voice_k` of a model with several speakers)."""
        return [c for c in self.tab.plan
                if c.kind == "dropdown" and c.name.startswith("voice") and speaker_of(c.name) is not None]

    def refresh_outputs(self) -> list[Any]:
        return [self.ui.listing, self.ui.pick, *[c.component for c in self.voice_controls()]]

    def refresh_inputs(self) -> set[Any]:
        return {self.tab.ui.model, self.tab.ui.language, self.ui.pick, *[c.component for c in self.voice_controls()]}


# ------------------------------------------------------------------ layout


def lay_out(models: str) -> LibraryLayout:
    with gr.Accordion("Voice library", open=False, elem_id="speech-voice-library"):
        gr.Markdown(INTRO.format(models=models), elem_classes="studio-note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                clip = ctl.audio_input({"label": "Voice clip", "value": None}, elem_id="voice-clip")
                gr.Markdown(f"Upload or record {MIN_SECONDS:g} to {MAX_SECONDS:g} s of one speaker; 5-10 s of clean "
                            "speech work best.", elem_classes="studio-note")
            with gr.Column(scale=2, min_width=260):
                name = gr.Textbox(label="Name", placeholder="e.g. my-voice", max_lines=1,
                                  info="1-40 letters, digits, spaces, '-' or '_'", elem_id="voice-name")
                transcript = gr.Textbox(label="Transcript", lines=2, max_lines=4,
                                        info="What is said in the clip; needed by Dia", elem_id="voice-transcript")
                consent = gr.Checkbox(False, label=CONSENT_TEXT, elem_id="voice-consent")
                save = gr.Button("Save voice", variant="primary", elem_id="voice-save")
        listing = gr.HTML(elem_id="voice-list")
        with gr.Row(equal_height=False, elem_classes="studio-voice-manage"):
            pick = gr.Dropdown([], value=None, label="Saved voice", scale=2, min_width=200, elem_id="voice-pick")
            new_name = gr.Textbox(label="New name", max_lines=1, scale=2, min_width=200, elem_id="voice-new-name")
            with gr.Column(scale=1, min_width=150):
                rename = gr.Button("Rename", size="sm", elem_id="voice-rename")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="voice-delete")
        player = gr.Audio(type="filepath", label="Saved voice's clip", interactive=False, buttons=[], visible=False,
                          elem_id="voice-player")
    return LibraryLayout(clip=clip, name=name, transcript=transcript, consent=consent, save=save, listing=listing,
                         pick=pick, player=player, new_name=new_name, rename=rename, delete=delete)


def listing_html(voices: list[Any]) -> str:
    """The saved voices as a small table: name, length, transcript; a broken one with the reason."""
    if not voices:
        return '<p class="studio-note">No voices saved yet.</p>'
    rows = []
    for voice in voices:
        name = html.escape(voice.name)
        if voice.broken:
            rows.append(f'<tr class="broken"><td>{name}</td><td colspan="2">Cannot be used: '
                        f'{html.escape(voice.problem)}. Delete it and save it again.</td></tr>')
            continue
        words = html.escape(voice.transcript) if voice.transcript else '<span class="studio-note">no transcript</span>'
        rows.append(f"<tr><td>{name}</td><td>{voice.seconds:.1f} s</td><td>{words}</td></tr>")
    return ('<table class="studio-voice-table"><thead><tr><th>Name</th><th>Length</th><th>Transcript</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


# ------------------------------------------------------------------ handlers


def refreshed(lib: LibraryHandle, values: dict, *, pick: Any = None, renamed: tuple[str, str] | None = None
              ) -> dict[Any, Any]:
    """The list, the manage dropdown and the tab's Voice dropdowns as the library is now."""
    voices = lib.endpoints.voices()
    names = [v.name for v in voices]
    chosen = pick if pick is not None else values.get(lib.ui.pick)
    updates: dict[Any, Any] = {lib.ui.listing: listing_html(voices),
                               lib.ui.pick: gr.update(choices=names, value=chosen if chosen in names else None)}
    try:
        spec = lib.tab.spec_of(values[lib.tab.ui.model], values[lib.tab.ui.language])
    except Exception:  # a stale or forged model: the next model switch sets the voices
        return updates
    for control in lib.voice_controls():
        updates[control.component] = ctl.voice_refresh(control, spec, lib.tab.catalog, values.get(control.component),
                                                        renamed)
    return updates


def on_load(lib: LibraryHandle, values: dict) -> dict[Any, Any]:
    return refreshed(lib, values)


@user_errors
def on_save(lib: LibraryHandle, values: dict) -> dict[Any, Any]:
    ui = lib.ui
    voice = lib.endpoints.voice_save(values[ui.clip], values[ui.name], values[ui.transcript], values[ui.consent])
    gr.Info(f"Saved the voice '{voice.name}' ({voice.seconds:.1f} s): pick it in Voice.")
    updates = refreshed(lib, values, pick=voice.name)
    updates.update({ui.clip: None, ui.name: "", ui.transcript: "", ui.consent: False})
    return updates


@user_errors
def on_rename(lib: LibraryHandle, values: dict) -> dict[Any, Any]:
    old = values[lib.ui.pick]
    if not old:
        raise InvalidInput("pick the saved voice to rename first, then type its new name")
    voice = lib.endpoints.voice_rename(old, values[lib.ui.new_name])
    gr.Info(f"Renamed the voice '{old}' to '{voice.name}'.")
    updates = refreshed(lib, values, pick=voice.name, renamed=(old, voice.name))
    updates[lib.ui.new_name] = ""
    return updates


@user_errors
def on_delete(lib: LibraryHandle, values: dict) -> dict[Any, Any]:
    name = values[lib.ui.pick]
    if not name:
        raise InvalidInput("pick the saved voice to delete first")
    voice = lib.endpoints.voice_delete(name)
    gr.Info(f"Deleted the voice '{voice.name}'.")
    updates = refreshed(lib, values, pick="")
    updates[lib.ui.player] = gr.update(value=None, visible=False)
    return updates


def on_pick(lib: LibraryHandle, name: Any) -> Any:
    """Play the picked voice's clip (hidden when it has none)."""
    path = lib.endpoints.voice_file(name) if name else None
    return gr.update(value=path, visible=path is not None)


# ------------------------------------------------------------------ wiring


def wire(demo: gr.Blocks, lib: LibraryHandle) -> None:
    ui = lib.ui
    inputs, outputs = lib.refresh_inputs(), lib.refresh_outputs()
    ui.save.click(bind(on_save, lib), {*inputs, ui.clip, ui.name, ui.transcript, ui.consent},
                  [*outputs, ui.clip, ui.name, ui.transcript, ui.consent], **LIGHT)
    ui.rename.click(bind(on_rename, lib), {*inputs, ui.new_name}, [*outputs, ui.new_name], **LIGHT)
    ui.delete.click(bind(on_delete, lib), inputs, [*outputs, ui.player], **LIGHT)
    ui.pick.change(bind(on_pick, lib), ui.pick, ui.player, **LIGHT)
    # Voices saved since the page was built (by the CLI, the API or another browser) are listed at every load.
    demo.load(bind(on_load, lib), inputs, outputs, **LIGHT)


def layout_for(groups: list[Any]) -> Any:
    """What lays out the library in the Speech tab (tab.lay_out's `below`), or None when no speech model clones."""
    cloners = [spec.label for group in groups for spec in group.specs if can_clone(spec)]
    return (lambda: lay_out(", ".join(cloners))) if cloners else None


def build_voice_library(demo: gr.Blocks, endpoints: Endpoints, tab: TabHandle, ui: LibraryLayout) -> LibraryHandle:
    """Wire the library laid out at the bottom of the Speech tab's input column (`layout_for`); call inside the tab."""
    lib = LibraryHandle(endpoints, tab, ui)
    wire(demo, lib)
    return lib
