"""Controls built from a model's Params, and the updates that retarget them when the model changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.catalog import Catalog, ModelSpec, Param
from studio.ui.text import voice_choices


def widget_kind(param: Param) -> str:
    if param.kind is bool:
        return "checkbox"
    if param.choices is not None or param.name == "voice":
        return "dropdown"
    if param.kind in (int, float):
        return "slider" if param.minimum is not None and param.maximum is not None else "number"
    return "text"


@dataclass
class Control:
    """One widget standing for the setting `name` of every model of a tab that has it with this kind of widget."""

    name: str
    kind: str
    advanced: bool
    component: Any = None


def _choices(param: Param, spec: ModelSpec, catalog: Catalog) -> list[Any]:
    if param.choices is not None:
        return list(param.choices)
    return voice_choices(catalog.voices(spec))


def _props(param: Param, spec: ModelSpec, catalog: Catalog) -> dict[str, Any]:
    props: dict[str, Any] = {"label": param.label, "info": param.help or None, "value": param.default, "visible": True}
    kind = widget_kind(param)
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
            controls.setdefault(key, Control(param.name, key[1], param.advanced))
    return list(controls.values())


def render(control: Control, spec: ModelSpec, catalog: Catalog) -> Any:
    """Create the widget, shown and set for `spec` when it has the setting, hidden otherwise."""
    param = _param_for(control, spec)
    props = _props(param, spec, catalog) if param is not None else {"visible": False}
    props.setdefault("label", control.name.replace("_", " ").capitalize())
    if control.kind == "checkbox":
        component = gr.Checkbox(**props)
    elif control.kind == "dropdown":
        component = gr.Dropdown(filterable=True, **props)
    elif control.kind == "slider":
        component = gr.Slider(**props)
    elif control.kind == "number":
        component = gr.Number(**props)
    else:
        component = gr.Textbox(**props)
    control.component = component
    return component


def retarget(control: Control, spec: ModelSpec, catalog: Catalog) -> Any:
    """The update that shows the control with `spec`'s bounds and default, or hides it."""
    param = _param_for(control, spec)
    if param is None:
        return gr.update(visible=False)
    return gr.update(**_props(param, spec, catalog))


def restore(control: Control, spec: ModelSpec, catalog: Catalog, settings: dict[str, Any]) -> Any:
    """Like retarget, with the value `settings` holds for this control (a past run's), else the default."""
    param = _param_for(control, spec)
    if param is None:
        return gr.update(visible=False)
    props = _props(param, spec, catalog)
    if settings.get(control.name) is not None:
        props["value"] = settings[control.name]
    return gr.update(**props)


def _param_for(control: Control, spec: ModelSpec) -> Param | None:
    param = spec.param(control.name)
    if param is None or widget_kind(param) != control.kind:
        return None
    return param


def active_settings(controls: list[Control], spec: ModelSpec, values: dict[Any, Any]) -> dict[str, Any]:
    """The values of the controls that belong to `spec`: hidden ones of other models are left out."""
    settings: dict[str, Any] = {}
    for control in controls:
        if _param_for(control, spec) is not None:
            value = values.get(control.component)
            if value is not None:
                settings[control.name] = value
    return settings
