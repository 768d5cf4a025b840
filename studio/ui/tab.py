"""One tab per task: model (and language), prompt, the model's settings, estimate, generate/cancel, the result.

Three parts, in this order: the layout (`lay_out`, which returns the tab's components as a `TabLayout`), the
handlers (top-level functions that take the tab's `TabHandle` first and reach the studio only through its
Endpoints facade), and the wiring (`wire`, which binds the handlers to the components' events).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import gradio as gr

from studio.audio import FORMATS
from studio.catalog import MODE, TASK_LABELS, Catalog, ModelSpec, format_parameters, metadata_text, speaker_of
from studio.errors import Cancelled, InvalidInput, StudioError
from studio.settings import format_bytes
from studio.ui import controls as ctl
from studio.ui.common import LIGHT
from studio.ui.endpoints import NO_MODELS, Endpoints, session_of, user_errors
from studio.ui.live import END_CANCELLED, END_DONE, END_FAILED, LIVE_HTML, stream_note
from studio.ui.picker import ModelGroup, find_group, group_models
from studio.ui.runs import gradio_queued
from studio.ui.text import (clip_gone, estimate_html, format_choices, metadata_markdown, model_choice_label,
                             model_note)

PROMPT = {
    "music": ("Prompt", "Describe the music: genre, instruments, mood, tempo"),
    "speech": ("Text to speak", "Type what the voice should say"),
    "sfx": ("Prompt", "Describe the sound: what makes it, where, how it moves"),
}
# Prompts that give good results with the real models (MusicGen, Bark, AudioLDM 2 / Stable Audio Open).
EXAMPLES = {
    "music": [
        ["lo-fi hip hop beat with mellow piano and vinyl crackle, 80 bpm", 10],
        ["energetic 80s synthwave with driving bass, gated drums and a bright lead synth, 120 bpm", 12],
        ["acoustic folk guitar fingerpicking, warm and intimate, soft brushed drums", 10],
        ["epic orchestral trailer music with big brass, taiko drums and a choir", 15],
    ],
    "speech": [
        ["Hello! [laughs] I didn't expect you so early."],
        ["Welcome to Audio Studio. Everything you hear was generated on this machine."],
        ["Hmm... I'm not sure about that. [sighs] Let me think it over and call you back."],
        ["♪ In the jungle, the mighty jungle, the lion sleeps tonight ♪"],
    ],
    "sfx": [
        ["glass shattering on a tile floor", 4],
        ["heavy rain on a tin roof with distant rolling thunder", 10],
        ["a wooden door creaking open slowly in an empty hall", 5],
        ["footsteps on gravel, walking at a steady pace", 6],
    ],
}
# The tab's own events other than Generate take the values as the page sent them: a model switch narrows a
# slider's range while other events are on their way, and gradio would refuse their (then out of range) values
# with an error toast. The handlers fit the values into the model's ranges themselves.
AS_SENT = {**LIGHT, "preprocess": False}
# The estimate's box keeps this height from the start (a two-line figure with its meter), so Generate below it
# does not move when the figure arrives or changes.
ESTIMATE_MIN_HEIGHT = 112  # a two-line figure measured 103 px in Chromium (96 let Generate jump 7 px); style.py too
ESTIMATE_PENDING = "Working out memory and time…"
# The result's action buttons: two a line in the result column, whether 330 px (a phone) or 430 px (1280 px wide).
ACTION_MIN_WIDTH = 150
# A setting about the clip (see lay_out) is at least this wide: two fit a line in the tab's left column at 1280 px
# wide (470 px), one on a phone (330 px).
CLIP_SETTING_MIN_WIDTH = 200
# Extend makes the result this much longer (up to the model's longest), as one click.
EXTEND_BY_S = 30.0
# A result's player draws its waveform up to this length; a longer result gets the browser's own player. The
# waveform player (wavesurfer.js) fetches the whole file, decodes all of it into the page and draws it before it
# plays; the browser's streams the file and knows its length from the header. Measured in Debian's Chromium
# (Playwright) on this 2-core CPU while other jobs kept its load at 4-8, on 4-minute 48 kHz stereo 24-bit WAV
# results (69 MB), 5-6 runs each way: with the waveform, playable 2.2-3.8 s after the result arrived (History:
# 1.9-2.7 s after a click), main-thread tasks of up to 240-360 ms (History: 160-570 ms), a JS heap of 230-285 MB
# once the tab and History had shown it; with the browser's player 0.07-0.27 s (History 0.4-0.8 s), tasks of up
# to 0-190 ms, 30-50 MB. A 60 s result with the waveform: 1.1 s and 116 MB (30 s: 0.9 s, 80 MB).
WAVEFORM_MAX_S = 60.0
# Pauses a result's player before another result replaces it. Gradio's player keeps a "playing" flag that the
# browser's own player clears only by its pause event, which a player switched to a waveform never fires: a short
# result after a long one that was playing showed Pause, not Play, until clicked.
PAUSE_JS = "() => { document.querySelectorAll('#%s audio').forEach(player => player.pause()); }"


def pause_player(trigger: Any, player: Any) -> None:
    """On `trigger` (a click that brings another result), pause `player` in the browser, with no server call."""
    trigger(None, None, None, js=PAUSE_JS % player.elem_id, queue=False, api_visibility="private")


# ------------------------------------------------------------------ layout


@dataclass
class TabLayout:
    """The components of one task tab."""

    model: gr.Dropdown
    note: gr.Markdown
    prompt: gr.Textbox
    language: gr.Dropdown
    fmt: gr.Dropdown
    adjusted: gr.Markdown  # says which settings a model switch had to change
    seed: gr.Number
    random_seed: gr.Button
    last_seed: gr.Button
    estimate: gr.HTML
    generate: gr.Button
    cancel: gr.Button
    stream: gr.Checkbox  # hear the run while it is made; shown for a model that streams (stream_updates)
    stream_note: gr.Markdown  # why the result plays when done, for a model that does not stream
    live: gr.HTML  # the live player's box (studio.ui.live), filled by the page's script
    live_token: gr.Textbox  # hidden: the channel of the latest click's run, which the page's script listens to
    audio: gr.Audio
    actions: gr.Row
    download: gr.DownloadButton
    reuse: gr.Button
    use_input: gr.Button | None  # puts the result into the tab's audio input; only where a model takes audio
    extend: gr.Button | None  # extends the result at once; shown for a result of a model that extends
    details: gr.Markdown
    shown: gr.State  # the repo id the settings are set for: a model switch carries them from it
    last: gr.State  # the metadata of this session's last result in this tab
    plan: list[ctl.Control] = field(default_factory=list)
    below: Any = None  # what lay_out's `below` laid out at the bottom of the input column (the Voice library's)

    @property
    def widgets(self) -> list[Any]:
        return [c.component for c in self.plan]

    @property
    def notes(self) -> list[Any]:
        """The notes under the controls that have one (an audio input's help, the mode's), in plan order."""
        return [c.note for c in self.plan if c.note is not None]

    @property
    def mode(self) -> ctl.Control | None:
        """The mode control (what a model of several uses does: song, repaint, ...), when a model has one."""
        return next((c for c in self.plan if c.name == MODE and c.kind == "dropdown"), None)

    def mode_outputs(self) -> list[Any]:
        """What a change of mode updates (see ctl.mode_updates)."""
        return [*[c.component for c in self.plan if c.modal],
                *[c.note for c in self.plan if c.note is not None and (c.modal or c.name == MODE)]]

    @property
    def audio_input(self) -> ctl.Control | None:
        """The tab's audio input ("Use as input" fills it): the control named audio, else the first audio one."""
        inputs = [c for c in self.plan if c.kind == "audio"]
        return next((c for c in inputs if c.name == "audio"), inputs[0] if inputs else None)

    def settings_inputs(self) -> set[Any]:
        """What an estimate reads: the model, language, prompt, every setting, and the Stream switch (whether it
        says when the run is first heard)."""
        return {self.model, self.language, self.prompt, self.stream, *self.widgets}


def stream_updates(endpoints: Endpoints, spec: ModelSpec) -> tuple[Any, Any]:
    """The Stream switch (as the user left it) where `spec` streams; else the note that says why it plays when done."""
    streams = endpoints.streams(spec)
    note = stream_note(spec, streams)
    return gr.update(visible=streams), gr.update(value=note, visible=bool(note))


def choice_label(group: ModelGroup) -> str:
    """The model dropdown's label for `group`: 'MusicGen small · 587M parameters · CC-BY-NC-4.0'.

    Known when the page is built and never changed afterwards; the memory a run needs is the estimate's.
    """
    label = group.label if not group.by_language or len(group.specs) == 1 else \
        f"{group.label} ({len(group.specs)} languages)"
    spec = group.default
    return model_choice_label(f"{label} · {format_parameters(spec.parameters)} parameters", None, spec.license)


def placeholder(task: str, spec: ModelSpec) -> str:
    """The text box's placeholder while `spec` is picked: what its text looks like, else the tab's own."""
    return spec.prompt_hint or PROMPT[task][1]


def group_choices(groups: list[ModelGroup]) -> list[tuple[str, str]]:
    """The model dropdown's (label, value) pairs."""
    return [(choice_label(group), group.key) for group in groups]


def clip_speakers(plan: list[ctl.Control]) -> dict[str, list[ctl.Control]]:
    """The settings laid out under each speaker's clip, by the clip's name: speaker k's saved voice and transcript
    (voice_k, transcript_k) under audio_k, and speaker 1's transcript under audio.

    Speaker 1's Voice stays among the settings: Bark and Pocket TTS pick presets there, with no clip to sit under.
    A speaker's setting without a clip of that speaker in the tab keeps its place among the settings too.
    """
    clips = {speaker_of(c.name): c.name for c in plan if c.kind == "audio" and speaker_of(c.name) is not None}
    grouped: dict[str, list[ctl.Control]] = {name: [] for name in clips.values()}
    for control in plan:
        speaker = speaker_of(control.name) if control.kind != "audio" else None
        if speaker in clips and not (speaker == 1 and control.name == "voice"):
            grouped[clips[speaker]].append(control)
    return grouped


def lay_out(task: str, groups: list[ModelGroup], plan: list[ctl.Control], endpoints: Endpoints,
            below: Callable[[], Any] | None = None) -> TabLayout:
    """Create the tab's components in the current container (a gr.Tab), set for the first group's default model.

    `below()` lays out more of the tab at the bottom of its input column (the Speech tab's Voice library); what it
    returns is the layout's `below`.
    """
    first_group = groups[0]
    first = first_group.default
    catalog = endpoints.studio.catalog

    def render(control: ctl.Control, **options: Any) -> None:
        ctl.render(control, first, catalog, elem_id=f"{task}-input-{control.name}", **options)

    by_clip = clip_speakers(plan)
    under_clip = {id(c) for controls in by_clip.values() for c in controls}

    def render_clip(control: ctl.Control) -> None:
        """An audio input, with its speaker's settings under it, side by side where there is room."""
        render(control)
        if by_clip.get(control.name):
            with gr.Row(equal_height=False, elem_id=f"{task}-{control.name}-speaker",
                        elem_classes="studio-clip-settings"):
                for setting in by_clip[control.name]:
                    render(setting, min_width=CLIP_SETTING_MIN_WIDTH)

    basic = [c for c in plan if not c.advanced and id(c) not in under_clip]
    with gr.Row(equal_height=False, elem_classes="studio-tab"):
        with gr.Column(scale=11, min_width=360):
            model = gr.Dropdown(group_choices(groups), value=first_group.key, label="Model",
                                filterable=True, elem_id=f"{task}-model")
            note = gr.Markdown(model_note(first), elem_classes="studio-note", elem_id=f"{task}-note")
            # What the model is to do comes first: the settings below follow it.
            for control in basic:
                if control.name == MODE:
                    render(control)
            prompt = gr.Textbox(label=PROMPT[task][0], placeholder=placeholder(task, first), lines=3, max_lines=10,
                                elem_id=f"{task}-prompt")
            for control in basic:  # text of several lines (lyrics) under the prompt, the column's width
                if control.wide and control.kind == "text":
                    render(control)
            with gr.Row(equal_height=False, elem_classes="studio-settings-row"):
                with gr.Column(scale=3, min_width=200, elem_classes="studio-settings"):
                    language = gr.Dropdown(first_group.languages() if first_group.by_language else [],
                                           value=first.repo_id if first_group.by_language else None,
                                           label="Language", info="Each language is a model of its own",
                                           filterable=True, visible=first_group.by_language,
                                           elem_id=f"{task}-language")
                    for control in basic:
                        if not control.wide and control.name != MODE and not control.of_clip:
                            render(control)
                fmt = gr.Dropdown(format_choices(FORMATS), value="wav", label="Format", scale=1, min_width=110,
                                  elem_id=f"{task}-format")
            # An audio input takes the column's whole width: its waveform and trim handles need the room. A speaker's
            # clip has that speaker's saved voice and transcript right under it (clip_speakers).
            for control in basic:
                if control.kind == "audio":
                    render_clip(control)
            # Settings about the clip (a range to repaint: from, to) under it, side by side where there is room
            # (two at 1280 px wide; one a line on a phone, where two sliders with their number boxes are too narrow).
            with gr.Row(equal_height=False, elem_id=f"{task}-clip-settings", elem_classes="studio-clip-settings"):
                for control in basic:
                    if control.of_clip:
                        render(control, min_width=CLIP_SETTING_MIN_WIDTH)
            adjusted = gr.Markdown(visible=False, elem_classes="studio-note", elem_id=f"{task}-adjusted")
            with gr.Accordion("Advanced", open=False, elem_id=f"{task}-advanced"):
                with gr.Row(equal_height=False, elem_classes="studio-seed-row"):
                    seed = gr.Number(-1, label="Seed", info="-1 picks a random one; reuse one to repeat a result",
                                     precision=0, minimum=-1, scale=4, elem_id=f"{task}-seed")
                    random_seed = gr.Button("Random", size="sm", scale=1, min_width=80, elem_id=f"{task}-seed-random")
                    last_seed = gr.Button("Last seed", size="sm", scale=1, min_width=90, elem_id=f"{task}-seed-last")
                for control in plan:
                    if not control.advanced or id(control) in under_clip:
                        continue
                    if control.kind == "audio":  # a speaker's clip kept for the few (VibeVoice's Speakers 3, 4)
                        render_clip(control)
                    else:
                        render(control)
            extra = below() if below is not None else None
        with gr.Column(scale=10, min_width=340):
            # Filled on page load (building the page asks the device nothing); its height is kept from the start.
            estimate = gr.HTML(estimate_html(None, problem=ESTIMATE_PENDING), min_height=ESTIMATE_MIN_HEIGHT,
                               elem_id=f"{task}-estimate", elem_classes="studio-estimate-block",
                               apply_default_css=False)
            with gr.Row(equal_height=True):
                generate = gr.Button("Generate", variant="primary", scale=4, elem_id=f"{task}-generate")
                # Enabled only while a run of this tab (in this browser tab) waits or works.
                cancel = gr.Button("Cancel", variant="secondary", scale=1, min_width=90, interactive=False,
                                   elem_id=f"{task}-cancel")
            switch, why = stream_updates(endpoints, first)
            stream = gr.Checkbox(True, label="Stream: hear it while it is made", container=False,
                                 visible=switch["visible"], elem_id=f"{task}-stream")
            stream_note = gr.Markdown(why["value"], visible=why["visible"], elem_classes="studio-note",
                                      elem_id=f"{task}-stream-note")
            # Shown by the page's script from a streaming run's start; it plays on while the result comes below.
            live = gr.HTML(LIVE_HTML, apply_default_css=False, padding=False, container=False, elem_id=f"{task}-live",
                           elem_classes="studio-live-block")
            live_token = gr.Textbox("", visible=False, elem_id=f"{task}-live-token")
            # One way to download: the button below, which names the format and size.
            audio = gr.Audio(type="filepath", label="Result", interactive=False, buttons=[], elem_id=f"{task}-audio")
            # Two buttons a line, on a phone as beside the result on a wide screen (three would not fit either).
            with gr.Row(visible=False, elem_id=f"{task}-result-actions", elem_classes="studio-actions") as actions:
                wide = {"size": "sm", "min_width": ACTION_MIN_WIDTH}
                download = gr.DownloadButton("Download", elem_id=f"{task}-download", **wide)
                reuse = gr.Button("Reuse these settings", elem_id=f"{task}-reuse", **wide)
                takes_audio = any(c.kind == "audio" for c in plan)
                use_input = gr.Button("Use as input", elem_id=f"{task}-use-input", **wide) if takes_audio else None
                extends = any(spec.param("extend_to") is not None for group in groups for spec in group.specs)
                extend = gr.Button("Extend", visible=False, elem_id=f"{task}-extend", **wide) if extends else None
            details = gr.Markdown(elem_classes="studio-details", elem_id=f"{task}-details")
    duration = next((c.component for c in plan if c.name == "duration" and c.kind == "slider"), None)
    example_inputs = [prompt] if duration is None or task == "speech" else [prompt, duration]
    gr.Examples(EXAMPLES[task], example_inputs, label="Examples: click one to fill the prompt", examples_per_page=4)
    return TabLayout(model=model, note=note, prompt=prompt, language=language, fmt=fmt, adjusted=adjusted, seed=seed,
                     random_seed=random_seed, last_seed=last_seed, estimate=estimate, generate=generate,
                     cancel=cancel, stream=stream, stream_note=stream_note, live=live, live_token=live_token,
                     audio=audio, actions=actions, download=download, reuse=reuse,
                     use_input=use_input, extend=extend, details=details,
                     shown=gr.State(first.repo_id), last=gr.State(None), plan=plan, below=extra)


# ------------------------------------------------------------------ the tab, as other parts of the page see it


@dataclass
class TabHandle:
    """A built tab: its task, models, components and the Endpoints facade its handlers use; and the updates that
    put a past run's settings back into it."""

    task: str
    endpoints: Endpoints
    groups: list[ModelGroup]
    ui: TabLayout
    run: Any = None  # the Generate event, for .then() chains
    runs: list[Any] = field(default_factory=list)  # every event that ends a run: Generate's, Extend's
    generate_fn: Callable | None = None  # the bound on_generate, to find this tab's requests in gradio's queue

    @property
    def catalog(self) -> Catalog:
        return self.endpoints.studio.catalog

    # The components the history and the tests reach for.
    model = property(lambda self: self.ui.model)
    language = property(lambda self: self.ui.language)
    note = property(lambda self: self.ui.note)
    prompt = property(lambda self: self.ui.prompt)
    seed = property(lambda self: self.ui.seed)
    fmt = property(lambda self: self.ui.fmt)
    estimate = property(lambda self: self.ui.estimate)
    plan = property(lambda self: self.ui.plan)
    widgets = property(lambda self: self.ui.widgets)

    def run_key(self, session: str) -> str:
        return f"{session}:{self.task}"  # Cancel in one tab leaves the session's runs in other tabs alone

    def restore_outputs(self) -> list[Any]:
        """What restore_updates fills, and what Use as input and Extend may change."""
        ui = self.ui
        return [ui.model, ui.language, ui.note, ui.prompt, ui.seed, ui.fmt, *ui.widgets, ui.estimate, ui.shown,
                ui.adjusted, *ui.notes, ui.stream, ui.stream_note]

    def restore_updates(self, model_id: str, prompt: str, seed: Any, settings: Mapping[str, Any] | None,
                        fmt: str | None, *, inputs: Mapping[str, Any] | None = None) -> list[Any]:
        """Updates for restore_outputs(): the model (and language), prompt, seed, format and every setting.

        An audio setting names its file as a past run's metadata does ("inputs/<digest>.wav", its stored copy) or
        as a file in the output folder; when the file is gone the control is left empty and the adjusted note
        says so, naming the clip by `inputs` (the metadata's "inputs": the name the user knew it by).
        """
        group = find_group(self.groups, model_id)
        if group is None:
            raise InvalidInput(f"{model_id} is not a {TASK_LABELS[self.task].lower()} model of this studio any more")
        spec = self.catalog.get(model_id if model_id != group.key else group.default.repo_id, self.task)
        settings = dict(settings or {})
        notes = []
        for control in self.plan:
            named = settings.get(control.name)
            if control.kind == "audio" and named is not None and spec.param(control.name) is not None:
                settings[control.name] = self.endpoints.input_file(named)
                if settings[control.name] is None:
                    notes.append(clip_gone(spec.param(control.name).label, named, (inputs or {}).get(control.name)))
        widgets = [ctl.restore(c, spec, self.catalog, settings) for c in self.plan]
        restored = {name: value for name, value in settings.items() if spec.param(name) is not None}
        restored.update({c.name: u["value"] for c, u in zip(self.plan, widgets) if "value" in u})
        mode = ctl.mode_of(spec, restored.get(MODE))
        return [
            gr.update(value=group.key),
            language_update(group, spec),
            model_note(spec),
            gr.update(value=prompt, placeholder=placeholder(self.task, spec)),
            gr.update(value=seed if seed is not None else -1),
            gr.update(value=fmt) if fmt in FORMATS else gr.update(),
            *widgets,
            self.estimate_for(spec, prompt, ctl.in_mode(spec, restored)),
            spec.repo_id,
            gr.update(value=" ".join(notes), visible=bool(notes)),
            *[ctl.note_update(c, spec, mode) for c in self.plan if c.note is not None],
            *stream_updates(self.endpoints, spec),
        ]

    def switch_updates(self, values: Mapping[Any, Any], old: ModelSpec | None,
                       spec: ModelSpec) -> tuple[dict[Any, Any], dict[Any, Any]]:
        """The updates that move the tab from model `old` to `spec` (its language picker, note, controls and
        their notes, the adjusted note; not the estimate), and the values the controls hold afterwards."""
        ui = self.ui
        group = find_group(self.groups, spec.repo_id)
        updates: dict[Any, Any] = {ui.language: language_update(group, spec), ui.note: model_note(spec),
                                   ui.shown: spec.repo_id, ui.prompt: gr.update(placeholder=placeholder(self.task, spec))}
        updates[ui.stream], updates[ui.stream_note] = stream_updates(self.endpoints, spec)
        notes, fresh = [], dict(values)
        mode = ctl.mode_of(spec, None)
        for control in sorted(ui.plan, key=lambda c: c.name != MODE):  # the mode first: the others show by it
            update, note = ctl.carry(control, old, spec, self.catalog, values.get(control.component), mode)
            updates[control.component] = update
            if "value" in update:
                fresh[control.component] = update["value"]
                if control.name == MODE:
                    mode = ctl.mode_of(spec, update["value"])
            if control.note is not None:
                updates[control.note] = ctl.note_update(control, spec, mode)
            if note:
                notes.append(note)
        updates[ui.adjusted] = gr.update(value=" ".join(notes), visible=bool(notes))
        return updates, fresh

    def input_updates(self, values: Mapping[Any, Any], file: str, made_by: str | None) -> dict[Any, Any]:
        """Updates (of restore_outputs()) that put `file` into the tab's audio input, keeping every other setting.

        When the model the tab is set for takes no audio, the tab switches to one that does: `made_by` (the model
        that made the file) if it does, else the first of the tab's models that does; and when the model's mode
        takes none (a song from lyrics), to its first mode that does (repaint); a toast says so.
        """
        ui, control = self.ui, self.ui.audio_input
        if control is None:
            raise InvalidInput(f"the {TASK_LABELS[self.task].lower()} tab takes no audio input")
        spec = self.spec_of(values[ui.model], values[ui.language])
        updates: dict[Any, Any] = {}
        fresh = dict(values)
        switched = ""
        if not ctl.takes(control, spec):
            target = self.audio_model(made_by)
            updates, fresh = self.switch_updates(values, spec, target)
            updates[ui.model] = gr.update(value=find_group(self.groups, target.repo_id).key)
            switched = f"{spec.label} takes no audio input: switched to {target.label}"
            spec = target
        mode = ctl.control_mode(ui.plan, spec, fresh)
        taking = self.audio_mode(spec, mode)
        if taking != mode:
            for component, update in ctl.mode_updates(ui.plan, spec, taking).items():
                updates[component] = {**updates.get(component, gr.update()), **update}
            updates[ui.mode.component] = {**updates.get(ui.mode.component, gr.update()), "value": taking}
            fresh[ui.mode.component] = taking
            switched = (f"{switched} in {ctl.mode_label(taking)} mode" if switched else
                        f"{ctl.mode_label(mode)} takes no audio input: switched to {ctl.mode_label(taking)}")
        if switched:
            gr.Info(f"{switched}, which takes it as its {spec.param(control.name).label.lower()}.")
        updates[control.component] = {**updates.get(control.component, gr.update()), "value": file}  # shown, if hidden
        fresh[control.component] = file
        updates[ui.estimate] = self.estimate_for(spec, values[ui.prompt], ctl.active_settings(ui.plan, spec, fresh))
        return updates

    def audio_mode(self, spec: ModelSpec, mode: str | None) -> str | None:
        """The mode of `spec` to take an audio input in: `mode` if its audio input belongs to it, else the first of
        the model's modes (in their order) that takes one."""
        control = self.ui.audio_input
        param = spec.param(control.name) if control is not None else None
        choices = spec.param(MODE).choices if spec.param(MODE) is not None else None
        if param is None or param.applies({MODE: mode}) or not choices:
            return mode
        return next((choice for choice in choices if param.applies({MODE: choice})), mode)

    def audio_model(self, preferred: str | None) -> ModelSpec:
        """The model to switch to for an audio input: `preferred` if it is one of the tab's and takes audio, else
        the first of the tab's models (in the picker's order) that does."""
        control = self.ui.audio_input
        specs = [spec for group in self.groups for spec in group.specs]
        takers = [spec for spec in specs if control is not None and ctl.takes(control, spec)]
        if not takers:
            raise InvalidInput(f"no {TASK_LABELS[self.task].lower()} model of this studio takes an audio input")
        return next((spec for spec in takers if spec.repo_id == preferred), takers[0])

    def spec_of(self, model_key: Any, language: Any) -> ModelSpec:
        group = next((g for g in self.groups if g.key == model_key), None)
        if group is None:  # the page only offers groups; anything else is a stale or forged value
            return self.catalog.get(model_key, self.task)
        return group.spec_for(language) if group.by_language else group.specs[0]

    def current(self, values: Mapping[Any, Any], *, fitted: bool = False) -> tuple[ModelSpec, dict[str, Any]]:
        """The model and settings the tab's `values` stand for (`fitted`: see ctl.active_settings)."""
        spec = self.spec_of(values[self.ui.model], values[self.ui.language])
        return spec, ctl.active_settings(self.plan, spec, dict(values), fitted=fitted)

    def estimate_for(self, spec: ModelSpec, prompt: Any, settings: Mapping[str, Any], stream: Any = True) -> str:
        """The estimate's box; with the Stream switch on (`stream`), a run that streams also says when it is first
        heard."""
        try:
            return estimate_html(self.endpoints.estimate(self.task, spec.repo_id, prompt, settings),
                                 first_audio=stream is not False)
        except StudioError as error:  # shown in place of the figure while the input is incomplete
            return estimate_html(None, problem=_sentence(str(error)))

    def follow(self, trigger: Any) -> None:
        """Refresh the estimate on `trigger` (an event, such as the loaded models changing)."""
        gr.on([trigger], bind(estimate_now, self), self.ui.settings_inputs(), self.ui.estimate,
              trigger_mode="always_last", **AS_SENT)


def language_update(group: ModelGroup, spec: ModelSpec) -> Any:
    if not group.by_language:
        return gr.update(visible=False)
    return gr.update(visible=True, choices=group.languages(), value=spec.repo_id)


# ------------------------------------------------------------------ handlers


def estimate_now(tab: TabHandle, values: dict) -> str:
    try:
        spec, settings = tab.current(values, fitted=True)
    except StudioError as error:
        return estimate_html(None, problem=_sentence(str(error)))
    return tab.estimate_for(spec, values[tab.ui.prompt], settings, values.get(tab.ui.stream))


def on_model(tab: TabHandle, values: dict) -> dict[Any, Any]:
    """Another model: its language picker and note; the settings carried over where it has them (brought into
    its ranges, with a note saying so), its defaults for the rest; the estimate."""
    ui = tab.ui
    group = next((g for g in tab.groups if g.key == values[ui.model]), None)
    if group is None:
        return {ui.estimate: estimate_now(tab, values)}
    spec = group.spec_for(values[ui.language]) if group.by_language else group.specs[0]
    if values[ui.shown] == spec.repo_id:  # already switched (the dropdown may send its input twice, the second
        return {ui.estimate: gr.skip()}  # with the values from before the first's answer): nothing to carry
    try:
        old = tab.catalog.get(values[ui.shown], tab.task) if values[ui.shown] else None
    except StudioError:
        old = None
    updates, fresh = tab.switch_updates(values, old, spec)
    updates[ui.estimate] = tab.estimate_for(spec, values[ui.prompt], ctl.active_settings(ui.plan, spec, fresh),
                                            values.get(ui.stream))
    return updates


def on_mode(tab: TabHandle, values: dict) -> dict[Any, Any]:
    """Another mode: the settings of other modes hidden, this mode's shown (as they were: set for the model
    already), and its note says what it does and needs. The estimate follows by the control's change event."""
    try:
        spec = tab.spec_of(values[tab.ui.model], values[tab.ui.language])
    except StudioError:  # a stale or forged model: the next model switch sets everything
        return {}
    return ctl.mode_updates(tab.plan, spec, ctl.mode_of(spec, values[tab.ui.mode.component]))


def on_language(tab: TabHandle, values: dict) -> dict[Any, Any]:
    spec, settings = tab.current(values, fitted=True)
    return {tab.ui.note: model_note(spec), tab.ui.shown: spec.repo_id,
            tab.ui.estimate: tab.estimate_for(spec, values[tab.ui.prompt], settings, values.get(tab.ui.stream))}


def hide_adjusted() -> Any:
    return gr.update(visible=False)


def on_start(tab: TabHandle, values: dict) -> tuple[Any, str]:
    """Generate was pressed: Cancel can reach the run from now on; with the Stream switch on, for a model that
    streams, a live channel for the run's pieces, whose token the page's script listens to (studio.ui.live)."""
    token = ""
    if values.get(tab.ui.stream):
        try:
            if tab.endpoints.streams(tab.spec_of(values[tab.ui.model], values[tab.ui.language])):
                token = tab.endpoints.live.open()
        except StudioError:  # a stale model: the run says what is wrong
            pass
    return gr.update(interactive=True), token


@user_errors
def on_generate(tab: TabHandle, values: dict, request: gr.Request, progress=gr.Progress()) -> dict[Any, Any]:
    """Run the tab's request. With a live channel (on_start), each piece of audio goes to the page's live player as
    the run makes it; the result (file, download, details, History row) is the same either way."""
    ui = tab.ui
    live = tab.endpoints.live
    token = values.get(ui.live_token)
    outcome = END_FAILED
    try:
        spec, settings = tab.current(values)
        result = tab.endpoints.generate(
            tab.task, spec.repo_id, values[ui.prompt], seed=values[ui.seed], params=settings, fmt=values[ui.fmt],
            session=tab.run_key(session_of(request)), progress=progress, on_audio=live.publisher(token),
        )
        outcome = END_DONE
    except Cancelled:  # the user asked for it and Cancel already said so: not an error; nothing changes
        outcome = END_CANCELLED
        return {ui.audio: gr.skip()}
    finally:
        live.finish(token, outcome)
    size = format_bytes(Path(result.path).stat().st_size)
    label = f"Download {str(values[ui.fmt]).upper()} · {size}"
    updates = {ui.audio: player(str(result.path), result.metadata.get("duration")),
               ui.actions: gr.update(visible=True), ui.download: gr.update(value=str(result.path), label=label),
               ui.details: metadata_markdown(result.metadata), ui.last: result.metadata}
    if ui.extend is not None:
        total = extend_target(spec, result.metadata)
        added = f"{total - result.metadata['duration']:.0f} s" if total is not None else ""
        updates[ui.extend] = gr.update(visible=total is not None, value=f"Extend by {added}")
    return updates


def player(path: str | None, seconds: Any) -> Any:
    """The update that puts the audio file at `path` into a result's player: with its waveform drawn, or in the
    browser's own player when it is longer than WAVEFORM_MAX_S (see there)."""
    drawn = not isinstance(seconds, (int, float)) or seconds <= WAVEFORM_MAX_S
    return gr.update(value=path, waveform_options={"show_recording_waveform": drawn})


def on_run_end(tab: TabHandle, values: dict, request: gr.Request) -> dict[Any, Any]:
    """A run ended (done, failed or cancelled): the estimate without the load time now that the model is
    resident; Cancel stays enabled only while another run of this tab is still waiting or working."""
    session = session_of(request)
    busy = tab.endpoints.runs.active(tab.run_key(session)) or gradio_queued(session, tab.generate_fn)
    return {tab.ui.estimate: estimate_now(tab, values), tab.ui.cancel: gr.update(interactive=bool(busy))}


def on_cancel(tab: TabHandle, request: gr.Request) -> None:
    session = session_of(request)
    key = tab.run_key(session)
    waiting = tab.endpoints.runs.waiting(key)  # still in the studio's queue for the device: it never starts
    if tab.endpoints.cancel(key):
        gr.Info("Cancelled: the request leaves the queue without running." if waiting
                else "Cancelled: the studio is ready for the next run.")
    elif gradio_queued(session, tab.generate_fn):
        tab.endpoints.runs.cancel_queued(key)
        gr.Info("Cancelled: the request leaves the queue without running.")
    else:
        gr.Info("Nothing to cancel: no run of this tab is in progress.")


@user_errors
def on_reuse(tab: TabHandle, metadata: dict | None) -> list[Any]:
    if not metadata:
        raise InvalidInput("there is no result to reuse yet: generate something first")
    return tab.restore_updates(metadata["model"], metadata_text(metadata)[1], metadata.get("seed"),
                               metadata.get("settings"), metadata.get("format"), inputs=metadata.get("inputs"))


def result_file(tab: TabHandle, metadata: Mapping[str, Any] | None, doing: str) -> str:
    """The file of the tab's last result, for `doing` ("use", "extend"); a message when there is none."""
    if not metadata:
        raise InvalidInput(f"there is no result to {doing} yet: generate something first")
    file = tab.endpoints.result_file(metadata)
    if file is None:
        raise InvalidInput(f"the result's file {metadata.get('file')!r} is no longer in the output folder: generate "
                           "it again, or pick another result in History")
    return file


@user_errors
def on_use_input(tab: TabHandle, values: dict) -> dict[Any, Any]:
    """Put the tab's last result into its audio input (switching to a model that takes audio if need be)."""
    metadata = values[tab.ui.last]
    return tab.input_updates(values, result_file(tab, metadata, "use"), metadata.get("model"))


def extend_target(spec: ModelSpec, metadata: Mapping[str, Any]) -> float | None:
    """The length Extend asks for, EXTEND_BY_S past the result (at most the model's longest); None when the
    model does not extend, or the result is already as long as it makes."""
    param = spec.param("extend_to")
    if param is None:
        return None
    duration = float(metadata.get("duration") or 0.0)
    total = round(min(param.maximum if param.maximum is not None else duration + EXTEND_BY_S,
                      duration + EXTEND_BY_S), 2)
    return total if total - duration >= 1.0 else None


@user_errors
def on_extend(tab: TabHandle, metadata: dict | None) -> list[Any]:
    """The result's own settings, with the result as the audio input and extend_to EXTEND_BY_S past its end: the
    run then starts as Generate's does (see `wire`)."""
    file = result_file(tab, metadata, "extend")
    spec = tab.catalog.get(metadata.get("model"), tab.task)
    total = extend_target(spec, metadata)
    control = tab.ui.audio_input
    if total is None or control is None or not ctl.takes(control, spec):
        longest = spec.param("extend_to")
        if longest is None:
            extenders = [s.label for group in tab.groups for s in group.specs if s.param("extend_to") is not None]
            raise InvalidInput(f"{spec.label} does not extend audio; these models do: {', '.join(extenders)}")
        raise InvalidInput(f"the result is {metadata.get('duration', 0):.1f} s long, and {spec.label} makes at most "
                           f"{longest.maximum:g} s: it cannot be extended further")
    settings = {**(metadata.get("settings") or {}), control.name: file, "extend_to": total}
    return tab.restore_updates(spec.repo_id, metadata_text(metadata)[1], metadata.get("seed"), settings,
                               metadata.get("format"))


def on_last_seed(metadata: dict | None) -> Any:
    if not metadata:
        gr.Info("No result yet in this tab: the last seed is kept once you generate.")
        return gr.update()
    return metadata.get("seed", -1)


def random_seed() -> int:
    return -1


# ------------------------------------------------------------------ wiring


def bind(handler: Callable, tab: TabHandle) -> Callable:
    """`handler` with its first argument (the tab) given, in a form gradio inspects like the handler itself
    (functools.partial hides the gr.Request and gr.Progress parameters from gradio)."""

    @functools.wraps(handler)
    def bound(*args: Any, **kwargs: Any) -> Any:
        return handler(tab, *args, **kwargs)

    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
    return bound


def wire(demo: gr.Blocks, tab: TabHandle) -> None:
    ui = tab.ui
    inputs = ui.settings_inputs()
    widgets = ui.widgets
    # The model and language follow the user's choice (.input), so restoring a past run (which sets them
    # programmatically) does not reset the settings it restores.
    ui.model.input(bind(on_model, tab), {*inputs, ui.shown},
                   [ui.language, ui.note, ui.prompt, *widgets, ui.adjusted, ui.estimate, ui.shown, *ui.notes,
                    ui.stream, ui.stream_note],
                   **AS_SENT)
    ui.language.input(bind(on_language, tab), inputs, [ui.note, ui.shown, ui.estimate], **AS_SENT)
    if ui.mode is not None:  # shows and hides at once, off the queue; the estimate follows as for any setting
        ui.mode.component.input(bind(on_mode, tab), {ui.model, ui.language, ui.mode.component}, ui.mode_outputs(),
                                queue=False, **AS_SENT)
    gr.on([ui.prompt.change, ui.stream.input, *[w.change for w in widgets]], bind(estimate_now, tab), inputs,
          ui.estimate, trigger_mode="always_last", **AS_SENT)
    gr.on([w.input for w in widgets], hide_adjusted, None, ui.adjusted, queue=False, **LIGHT)
    ui.random_seed.click(random_seed, None, ui.seed, **LIGHT)
    ui.last_seed.click(on_last_seed, ui.last, ui.seed, **LIGHT)

    tab.generate_fn = bind(on_generate, tab)
    starts = {ui.model, ui.language, ui.stream}
    tab.run = run_after(tab, ui.generate.click(bind(on_start, tab), starts, [ui.cancel, ui.live_token], queue=False,
                                               **AS_SENT))
    pause_player(ui.generate.click, ui.audio)
    # No `cancels=[run]`: that would free Gradio's device slot at once while the run's thread still works;
    # the Event stops the run at its next step, and the run then ends as a normal (skipped) update.
    ui.cancel.click(bind(on_cancel, tab), None, None, **LIGHT)  # queued (so its message reaches the page), never waits
    ui.reuse.click(bind(on_reuse, tab), ui.last, tab.restore_outputs(), **LIGHT)
    if ui.use_input is not None:
        ui.use_input.click(bind(on_use_input, tab), {*inputs, ui.shown, ui.last}, tab.restore_outputs(), **AS_SENT)
    if ui.extend is not None:
        # Extend sets the tab up, then runs exactly as Generate does (same queue, Cancel, progress, estimate);
        # a refusal (the file is gone) stops the chain before the run.
        extended = ui.extend.click(bind(on_extend, tab), ui.last, tab.restore_outputs(), **LIGHT)
        pause_player(ui.extend.click, ui.audio)
        run_after(tab, extended.success(bind(on_start, tab), starts, [ui.cancel, ui.live_token], queue=False,
                                        **AS_SENT))
    # The page's script listens to each new live channel (and stops the last run's player when there is none).
    ui.live_token.change(None, ui.live_token, None, js=f"(token) => window.studioLive.start('{tab.task}', token)",
                         queue=False, **LIGHT)
    # The device is known by now (asking decides it).
    demo.load(bind(estimate_now, tab), inputs, ui.estimate, **AS_SENT)


def run_after(tab: TabHandle, started: Any) -> Any:
    """Chain a run of the tab (the bound on_generate, on the shared device queue) and its ending to `started`
    (the event that enabled Cancel); returns the run's event, which tab.runs lists."""
    ui = tab.ui
    run = started.then(
        tab.generate_fn, {ui.model, ui.language, ui.prompt, ui.seed, ui.fmt, ui.live_token, *ui.widgets},
        [ui.audio, ui.actions, ui.download, ui.details, ui.last, *([ui.extend] if ui.extend is not None else [])],
        concurrency_id="device", concurrency_limit=tab.endpoints.run_slots(), api_visibility="private",
        show_progress_on=[ui.audio],
    )
    run.then(bind(on_run_end, tab), ui.settings_inputs(), [ui.estimate, ui.cancel], **AS_SENT)
    tab.runs.append(run)
    return run


def build_tab(demo: gr.Blocks, task: str, endpoints: Endpoints) -> TabHandle | None:
    """Lay out and wire the tab for `task`; call inside `demo`'s gr.Tabs. None when the task has no models."""
    specs = endpoints.specs(task)
    with gr.Tab(TASK_LABELS[task], id=task, elem_id=f"tab-{task}"):
        if not specs:
            gr.Markdown(NO_MODELS.get(task, "No models for this task are installed."), elem_classes="studio-empty")
            return None
        groups = group_models(specs)
        library = None
        if task == "speech":  # the saved voices, at the bottom of the settings (a model that clones speaks in them)
            from studio.ui import voice_library

            library = voice_library.layout_for(groups)
        ui = lay_out(task, groups, ctl.plan_controls(specs), endpoints, below=library)
        tab = TabHandle(task, endpoints, groups, ui)
        if library is not None:
            voice_library.build_voice_library(demo, endpoints, tab, ui.below)
    wire(demo, tab)
    return tab


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")
