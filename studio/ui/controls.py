"""Controls built from a model's Params, and the updates that retarget them when the model changes.

A control never holds a value outside its own bounds, not even while hidden (a hidden slider left at 0 with a
minimum of 1 made every event of the tab fail with "Value 0 is less than minimum value 1"). And a value that
was inside the bounds when the page sent it is not an error when the bounds changed on its way (a model switch
narrows a range while an estimate is in flight): the tab's events other than Generate take the values as
sent (preprocess=False) and bring them into the model's ranges themselves (`fit`); a run is checked by the
studio against the model's ranges (Param.validate), with a message that names the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import gradio as gr

from studio.catalog import Catalog, ModelSpec, Param
from studio.ui.text import voice_choices


def widget_kind(param: Param) -> str:
    if param.is_audio:
        return "audio"
    if param.kind is bool:
        return "checkbox"
    if param.choices is not None or param.name == "voice":
        return "dropdown"
    if param.kind in (int, float):
        return "slider" if param.minimum is not None and param.maximum is not None else "number"
    return "text"


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
    note: Any = None  # a widget with no info line of its own (an audio input) has its Param's help under it


def _choices(param: Param, spec: ModelSpec, catalog: Catalog) -> list[Any]:
    if param.choices is not None:
        return list(param.choices)
    return voice_choices(catalog.voices(spec))


def _props(param: Param, spec: ModelSpec, catalog: Catalog) -> dict[str, Any]:
    props: dict[str, Any] = {"label": param.label, "info": param.help or None, "value": param.default, "visible": True}
    kind = widget_kind(param)
    if kind == "audio":  # gr.Audio has no info line; a clip is the user's to give, with no default
        return {"label": param.label, "value": None, "visible": True}
    if kind == "slider":
        props.update(minimum=param.minimum, maximum=param.maximum, step=param.step or (1 if param.kind is int else 0.01))
    elif kind == "number":
        props.update(minimum=param.minimum, maximum=param.maximum, precision=0 if param.kind is int else None)
    elif kind == "dropdown":
        props.update(choices=_choices(param, spec, catalog))
    return props


def plan_controls(specs: list[ModelSpec]) -> list[Control]:
    """One Control per (setting, widget kind) over all of a tab's models, in first-seen order."""
    controls: dict[tuple[str, str], Control] = {}
    for spec in specs:
        for param in spec.params:
            key = (param.name, widget_kind(param))
            controls.setdefault(key, Control(param.name, key[1], param.advanced, home=spec))
    return list(controls.values())


def render(control: Control, spec: ModelSpec, catalog: Catalog, *, elem_id: str | None = None) -> Any:
    """Create the widget, shown and set for `spec` when it has the setting; otherwise hidden, but set for the
    first model that has it, so its value is inside its bounds. An audio input gets its help as a note under it."""
    owner = spec if _param_for(control, spec) is not None else control.home
    param = _param_for(control, owner) if owner is not None else None
    props = _props(param, owner, catalog) if param is not None else {}
    props["visible"] = owner is spec
    props.setdefault("label", control.name.replace("_", " ").capitalize())
    if control.kind == "checkbox":
        component = gr.Checkbox(**props)
    elif control.kind == "dropdown":
        component = gr.Dropdown(filterable=True, **props)
    elif control.kind == "audio":
        component = audio_input(props, elem_id)
        control.note = gr.Markdown(**note_props(param, owner is spec), elem_classes="studio-note",
                                   elem_id=f"{elem_id}-note" if elem_id else None)
    elif control.kind == "slider":
        component = gr.Slider(**props)
    elif control.kind == "number":
        component = gr.Number(**props)
    else:
        component = gr.Textbox(**props)
    control.component = component
    return component


def audio_input(props: dict[str, Any], elem_id: str | None = None) -> Any:
    """An audio input: upload (WAV, FLAC, OGG, MP3) or record, its waveform shown, trimmable before it is sent."""
    return gr.Audio(sources=["upload", "microphone"], type="filepath", editable=True, buttons=[],
                    elem_classes="studio-audio-input", elem_id=elem_id, **props)


def note_props(param: Param | None, visible: bool) -> dict[str, Any]:
    return {"value": param.help if param is not None else "", "visible": visible and param is not None}


def note_update(control: Control, spec: ModelSpec) -> Any:
    """The update that shows the note under `control` with `spec`'s help, or hides it."""
    return gr.update(**note_props(_param_for(control, spec), True))


def retarget(control: Control, spec: ModelSpec, catalog: Catalog) -> Any:
    """The update that shows the control with `spec`'s bounds and default, or hides it."""
    return carry(control, None, spec, catalog, None)[0]


def carry(control: Control, old: ModelSpec | None, new: ModelSpec, catalog: Catalog, value: Any) -> tuple[Any, str | None]:
    """The update that moves the control from model `old` to model `new`, and a note when it changed the value.

    The value the control holds is kept where `new` has the setting and accepts it (a number out of `new`'s
    range is brought into it, and the note says so); a setting `old` did not have, or an advanced one still at
    `old`'s default (a tuning of that model, such as its guidance), takes `new`'s default. A setting `new` does
    not have is hidden. An audio input keeps its clip whatever the models (hidden while a model takes none, so
    a look at another model loses nothing); the studio checks the clip against the model it runs.
    """
    param = _param_for(control, new)
    if param is None:
        return gr.update(visible=False), None
    props = _props(param, new, catalog)
    if control.kind == "audio":
        props.pop("value")  # the page sends a clip as a file payload, which is no value to hand back
        return gr.update(**props), None
    before = _param_for(control, old) if old is not None else None
    note = None
    if before is not None and value is not None and not (before.advanced and value == before.default):
        props["value"], note = fit(param, new, value, props.get("choices"))
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
            return param.default, f"{name} is back to {spec.label}'s default: it has no {value}."
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
    """Like retarget, with the value `settings` holds for this control (a past run's), else the default."""
    param = _param_for(control, spec)
    if param is None:
        return gr.update(visible=False)
    props = _props(param, spec, catalog)
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


def active_settings(controls: list[Control], spec: ModelSpec, values: dict[Any, Any], *,
                    fitted: bool = False) -> dict[str, Any]:
    """The values of the controls that belong to `spec`: hidden ones of other models are left out.

    `fitted` brings numbers into `spec`'s ranges, as the controls show them once a model switch has arrived
    (for an estimate computed from values sent before it had).
    """
    settings: dict[str, Any] = {}
    for control in controls:
        param = _param_for(control, spec)
        if param is not None:
            value = values.get(control.component)
            if value is not None:
                settings[control.name] = fit(param, spec, value)[0] if fitted and control.kind == "slider" else value
    return settings
