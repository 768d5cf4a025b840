"""Controls built from a model's Params, and the updates that retarget them when the model changes.

A control never holds a value outside its own bounds, not even while hidden (a hidden slider left at 0 with a
minimum of 1 made every event of the tab fail with "Value 0 is less than minimum value 1"). And a value that
was inside the bounds when the page sent it is not an error when the bounds changed on its way (a model switch
narrows a range while an estimate is in flight): the tab's events other than Generate take the values as
sent (preprocess=False) and bring them into the model's ranges themselves (`fit`); a run is checked by the
studio against the model's ranges (Param.validate), with a message that names the model.

A model that does several things has a `mode` setting (catalog.MODE); a setting of some modes only (Param.modes)
is shown while the mode control holds one of them, and hidden otherwise with its value and bounds kept (it is
still the model's setting, set for it on every model switch). A hidden setting of another mode is not a setting
of the run: `active_settings` leaves it out, so the estimate and the run see only the mode's settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import gradio as gr

from studio.catalog import MODE, Catalog, ModelSpec, Param, voice_speaker
from studio.ui.text import voice_choices


def widget_kind(param: Param) -> str:
    if param.is_audio:
        return "audio"
    if param.kind is bool:
        return "checkbox"
    if param.choices is not None or voice_speaker(param.name) is not None:  # voice, voice_2, ...
        return "dropdown"
    if param.kind in (int, float):
        return "slider" if param.minimum is not None and param.maximum is not None else "number"
    return "text"


def mode_label(choice: str) -> str:
    """How the mode dropdown shows a mode: 'repaint' -> 'Repaint' (the API and the CLI take the value)."""
    return choice.replace("_", " ").capitalize()


def mode_of(spec: ModelSpec, value: Any) -> str | None:
    """The mode `spec` runs in when its mode control holds `value`: that value when it is one of the model's
    modes, else its default (a value sent before a model switch arrived); None for a model without modes."""
    param = spec.param(MODE)
    if param is None:
        return None
    return value if param.choices is None or value in param.choices else param.default


@dataclass
class Control:
    """One widget standing for the setting `name` of every model of a tab that has it with this kind of widget.

    `home` is the first of the tab's models that has it: a hidden control keeps that model's bounds and default.
    """

    name: str
    kind: str
    advanced: bool
    home: ModelSpec | None = None
    component: Any = None
    # A note under the widget: an audio input's Param help (gr.Audio has no info line), or what the chosen mode
    # does and needs under the mode control (Param.explain).
    note: Any = None
    modal: bool = False  # some model's setting behind this control belongs to some modes only (Param.modes)
    # Every model's setting behind this control belongs only to modes in which the model takes its audio input (a
    # range to repaint, a cover's strength): the page lays it out under the clip it is about.
    of_clip: bool = False
    lines: int = 1  # the home model's text box height: a multi-line text setting takes the column's width

    @property
    def wide(self) -> bool:
        """Whether the control takes the column's whole width: an audio input (its waveform and trim handles need
        the room) or a text box of several lines (lyrics)."""
        return self.kind == "audio" or (self.kind == "text" and self.lines > 1)

    @property
    def noted(self) -> bool:
        """Whether the control has a note under it (see `note`)."""
        return self.kind == "audio" or self.name == MODE


# A choice's help (Param.choice_help) this short is shown in the dropdown beside the choice ("en · English",
# "4 · 4/4: most pop, rock and hip-hop"); longer help goes into the control's info line, one choice after another.
CHOICE_LABEL_CHARS = 40


def _choices(param: Param, spec: ModelSpec, catalog: Catalog) -> list[Any]:
    if param.name == MODE and param.choices is not None:
        return [(mode_label(choice), choice) for choice in param.choices]
    if param.choices is not None and _short_help(param):
        return [(f"{choice} · {param.explain(choice)}" if param.explain(choice) else choice, choice)
                for choice in param.choices]
    if param.choices is not None:
        return list(param.choices)
    return voice_options(param, spec, catalog)


def voice_options(param: Param, spec: ModelSpec, catalog: Catalog) -> list[tuple[str, str]]:
    """A Voice dropdown's (label, value) pairs: the model's presets, then the saved voices it can speak in
    ("my-voice (saved)"); "None" first where the setting's default is no voice (a model without presets)."""
    # Speaker 1's Voice stands above its clip; speaker k's saved voice below all the clips (laid out with them).
    where = "below" if param.name == "voice" else "given"
    none = [(f"None (the clip {where}, or no voice)", "")] if param.default == "" else []
    saved = [(f"{name} (saved)", name) for name in catalog.saved_voices(spec)]
    return [*none, *voice_choices(catalog.voices(spec)), *saved]


def voice_refresh(control: "Control", spec: ModelSpec, catalog: Catalog, value: Any,
                  renamed: tuple[str, str] | None = None) -> Any:
    """The update that lists the saved voices as they are now in a Voice control set for `spec`, keeping its
    value where it is still a choice (following a rename), else the model's default."""
    param = _param_for(control, spec)
    if param is None:
        return gr.update()
    choices = voice_options(param, spec, catalog)
    if renamed is not None and isinstance(value, str) and value.casefold() == renamed[0].casefold():
        value = renamed[1]
    values = [v for _, v in choices]
    return gr.update(choices=choices, value=value if value in values else param.default)


def _short_help(param: Param) -> bool:
    return bool(param.choice_help) and all(len(help) <= CHOICE_LABEL_CHARS for _, help in param.choice_help)


def _info(param: Param) -> str | None:
    """The line under a control's label: its help, and each choice's when it is too long for the dropdown (a mode's
    is under the mode control instead, for the chosen mode)."""
    if param.name == MODE or not param.choice_help or _short_help(param):
        return param.help or None
    each = " ".join(f"{choice}: {help.rstrip('.')}." for choice, help in param.choice_help)
    return f"{param.help} {each}".strip()


def _props(param: Param, spec: ModelSpec, catalog: Catalog) -> dict[str, Any]:
    props: dict[str, Any] = {"label": param.label, "info": _info(param), "value": param.default, "visible": True}
    kind = widget_kind(param)
    if kind == "audio":  # gr.Audio has no info line; a clip is the user's to give, with no default
        return {"label": param.label, "value": None, "visible": True}
    if kind == "slider":
        props.update(minimum=param.minimum, maximum=param.maximum, step=param.step or (1 if param.kind is int else 0.01))
    elif kind == "number":
        props.update(minimum=param.minimum, maximum=param.maximum, precision=0 if param.kind is int else None)
    elif kind == "dropdown":
        props.update(choices=_choices(param, spec, catalog))
    elif param.lines > 1:  # grows with the text up to twice its height, then scrolls (a phone keeps its page)
        props.update(lines=param.lines, max_lines=2 * param.lines)
    return props


def plan_controls(specs: list[ModelSpec]) -> list[Control]:
    """One Control per (setting, widget kind) over all of a tab's models, in first-seen order."""
    controls: dict[tuple[str, str], Control] = {}
    for spec in specs:
        for param in spec.params:
            key = (param.name, widget_kind(param))
            fresh = key not in controls
            control = controls.setdefault(key, Control(param.name, key[1], param.advanced, home=spec,
                                                       lines=param.lines))
            control.modal = control.modal or bool(param.modes)
            control.of_clip = (fresh or control.of_clip) and _of_clip(param, spec)
    return list(controls.values())


def _of_clip(param: Param, spec: ModelSpec) -> bool:
    """Whether `param` of `spec` is used only in modes in which `spec` takes its audio input."""
    clip = spec.param("audio")
    return (bool(param.modes) and not param.is_audio and clip is not None
            and all(clip.applies({MODE: mode}) for mode in param.modes))


def shown(control: Control, spec: ModelSpec, mode: str | None) -> bool:
    """Whether the control is shown for `spec` in `mode`: the model has the setting, and it belongs to the mode."""
    param = _param_for(control, spec)
    return param is not None and param.applies({MODE: mode})


def render(control: Control, spec: ModelSpec, catalog: Catalog, *, elem_id: str | None = None,
           min_width: int | None = None) -> Any:
    """Create the widget, shown and set for `spec` (in its default mode) when it has the setting; otherwise hidden,
    but set for the first model that has it, so its value is inside its bounds. An audio input gets its help as a
    note under it, the mode control what its mode does."""
    owner = spec if _param_for(control, spec) is not None else control.home
    param = _param_for(control, owner) if owner is not None else None
    props = _props(param, owner, catalog) if param is not None else {}
    mode = mode_of(spec, None)
    props["visible"] = owner is spec and shown(control, spec, mode)
    props.setdefault("label", control.name.replace("_", " ").capitalize())
    if min_width is not None:
        props["min_width"] = min_width
    if control.kind == "checkbox":
        component = gr.Checkbox(elem_id=elem_id, **props)
    elif control.kind == "dropdown":
        # A mode is one of a few: a plain list (a filter box would bring up a phone's keyboard for nothing).
        component = gr.Dropdown(filterable=control.name != MODE, elem_id=elem_id, **props)
    elif control.kind == "audio":
        component = audio_input(props, elem_id)
    elif control.kind == "slider":
        component = gr.Slider(elem_id=elem_id, **props)
    elif control.kind == "number":
        component = gr.Number(elem_id=elem_id, **props)
    else:
        component = gr.Textbox(elem_id=elem_id, **props)
    if control.noted:
        control.note = gr.Markdown(**note_props(control, spec if owner is spec else None, mode),
                                   elem_classes="studio-note", elem_id=f"{elem_id}-note" if elem_id else None)
    control.component = component
    return component


def audio_input(props: dict[str, Any], elem_id: str | None = None) -> Any:
    """An audio input: upload (WAV, FLAC, OGG, MP3) or record, its waveform shown, trimmable before it is sent."""
    return gr.Audio(sources=["upload", "microphone"], type="filepath", editable=True, buttons=[],
                    elem_classes="studio-audio-input", elem_id=elem_id, **props)


def note_text(control: Control, spec: ModelSpec | None, mode: str | None) -> str:
    """What the note under `control` says for `spec` in `mode`: an audio input's help, the mode's explanation."""
    param = _param_for(control, spec) if spec is not None else None
    if param is None or not shown(control, spec, mode):
        return ""
    return param.explain(mode) if control.name == MODE else param.help


def note_props(control: Control, spec: ModelSpec | None, mode: str | None) -> dict[str, Any]:
    text = note_text(control, spec, mode)
    return {"value": text, "visible": bool(text)}


def note_update(control: Control, spec: ModelSpec, mode: str | None = None) -> Any:
    """The update that shows the note under `control` for `spec` in `mode`, or hides it."""
    return gr.update(**note_props(control, spec, mode))


def mode_updates(controls: list[Control], spec: ModelSpec, mode: str | None) -> dict[Any, Any]:
    """What a change of mode changes: the settings of some modes shown or hidden (their values and bounds kept:
    they are `spec`'s already), and the notes that follow the mode (what it does; an audio input's help)."""
    updates: dict[Any, Any] = {}
    for control in controls:
        if control.modal:
            updates[control.component] = gr.update(visible=shown(control, spec, mode))
        if control.note is not None and (control.modal or control.name == MODE):
            updates[control.note] = note_update(control, spec, mode)
    return updates


def carry(control: Control, old: ModelSpec | None, new: ModelSpec, catalog: Catalog, value: Any,
          mode: str | None = None) -> tuple[Any, str | None]:
    """The update that moves the control from model `old` to model `new` (in `mode`, new's mode after the switch),
    and a note when it changed the value.

    The value the control holds is kept where `new` has the setting and accepts it (a number out of `new`'s
    range is brought into it, and the note says so); a setting `old` did not have, or an advanced one still at
    `old`'s default (a tuning of that model, such as its guidance), takes `new`'s default. A setting `new` does
    not have is hidden. An audio input keeps its clip whatever the models (hidden while a model takes none, so
    a look at another model loses nothing); the studio checks the clip against the model it runs.

    A setting of other modes than `mode` is set for `new` all the same but hidden, and its value is brought into
    new's range without a note (it says nothing about the run in view). The mode itself is kept where `new` has
    it; `old`'s default mode, like an advanced setting at its default, becomes new's default without a note.
    """
    param = _param_for(control, new)
    if param is None:
        return gr.update(visible=False), None
    props = _props(param, new, catalog)
    props["visible"] = shown(control, new, mode)
    if control.kind == "audio":
        props.pop("value")  # the page sends a clip as a file payload, which is no value to hand back
        return gr.update(**props), None
    before = _param_for(control, old) if old is not None else None
    note = None
    tuning = before is not None and (before.advanced or before.name == MODE) and value == before.default
    if before is not None and value is not None and not tuning:
        props["value"], note = fit(param, new, value, props.get("choices"))
        note = note if props["visible"] else None
    return gr.update(**props), note


def fit(param: Param, spec: ModelSpec, value: Any, choices: Iterable[Any] | None = None) -> tuple[Any, str | None]:
    """`value` made acceptable to `param` of `spec`, and a note when that changed it (None when it did not)."""
    if param.kind in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        low = param.minimum if param.minimum is not None else value
        high = param.maximum if param.maximum is not None else value
        fitted = param.kind(min(max(value, low), high))
        if fitted == value:
            return fitted, None
        name, unit = _name_and_unit(param.label)
        return fitted, (f"{name} is {fitted:g}{unit} now: {spec.label} takes {_g(low)}–{_g(high)}{unit} "
                        f"(it was {value:g}{unit}).")
    if choices is not None:
        values = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
        if value not in values:
            name, _ = _name_and_unit(param.label)
            shown_as = mode_label(value) if param.name == MODE and isinstance(value, str) else value
            return param.default, f"{name} is back to {spec.label}'s default: it has no {shown_as}."
    if param.kind is bool and not isinstance(value, bool):
        return param.default, None
    if param.kind is str and not isinstance(value, str):
        return param.default, None
    return value, None


def _g(number: float) -> str:
    return f"{number:g}"


def _name_and_unit(label: str) -> tuple[str, str]:
    """'Duration (s)' -> ('Duration', ' s'); 'Guidance' -> ('Guidance', '')."""
    found = re.fullmatch(r"(.*?)\s*\(([^()]+)\)", label)
    return (found.group(1), f" {found.group(2)}") if found else (label, "")


def restore(control: Control, spec: ModelSpec, catalog: Catalog, settings: dict[str, Any]) -> Any:
    """The update that sets the control for `spec` with the value `settings` holds for it (a past run's), else the
    default; shown when `spec` has it in the mode `settings` names (else in its default mode)."""
    param = _param_for(control, spec)
    if param is None:
        return gr.update(visible=False)
    props = _props(param, spec, catalog)
    props["visible"] = shown(control, spec, mode_of(spec, settings.get(MODE)))
    if settings.get(control.name) is not None:
        props["value"] = fit(param, spec, settings[control.name], props.get("choices"))[0]
    return gr.update(**props)


def takes(control: Control, spec: ModelSpec) -> bool:
    """Whether `spec` has the setting `control` stands for (its widget is shown for `spec`)."""
    return _param_for(control, spec) is not None


def _param_for(control: Control, spec: ModelSpec) -> Param | None:
    param = spec.param(control.name)
    if param is None or widget_kind(param) != control.kind:
        return None
    return param


def control_mode(controls: list[Control], spec: ModelSpec, values: dict[Any, Any]) -> str | None:
    """The mode `spec` runs in with the tab's `values` (see mode_of)."""
    control = next((c for c in controls if c.name == MODE and _param_for(c, spec) is not None), None)
    return mode_of(spec, values.get(control.component) if control is not None else None)


def active_settings(controls: list[Control], spec: ModelSpec, values: dict[Any, Any], *,
                    fitted: bool = False) -> dict[str, Any]:
    """The values of the controls that belong to `spec` in its mode: hidden ones of other models, and of other
    modes of this one, are left out.

    `fitted` brings numbers into `spec`'s ranges, and the mode among its modes, as the controls show them once a
    model switch has arrived (for an estimate computed from values sent before it had).
    """
    mode = control_mode(controls, spec, values)
    settings: dict[str, Any] = {}
    for control in controls:
        if not shown(control, spec, mode):
            continue
        param = _param_for(control, spec)
        value = values.get(control.component)
        if value is None:
            continue
        if fitted and control.kind == "slider":
            value = fit(param, spec, value)[0]
        elif fitted and control.name == MODE:
            value = mode
        settings[control.name] = value
    return settings


def in_mode(spec: ModelSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (by name) without those `spec` does not have or that belong to other modes than theirs."""
    mode = mode_of(spec, settings.get(MODE))
    return {name: value for name, value in settings.items()
            if (param := spec.param(name)) is not None and param.applies({MODE: mode})}
