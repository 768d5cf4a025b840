"""One tab per task: model, prompt, the model's settings, estimate, generate/cancel, result."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.audio import FORMATS
from studio.catalog import TASK_LABELS, ModelSpec
from studio.errors import StudioError
from studio.ui import controls as ctl
from studio.ui.endpoints import NO_MODELS, Endpoints, session_of, user_errors
from studio.ui.text import estimate_line, metadata_markdown, model_choices, model_note

PROMPT = {
    "music": ("Prompt", "lo-fi hip hop beat with warm piano and vinyl crackle"),
    "speech": ("Text to speak", "Hello! This is Audio Studio speaking."),
    "sfx": ("Prompt", "a door creaking open in an empty hall"),
}
LIGHT = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}


def build_tab(demo: gr.Blocks, task: str, endpoints: Endpoints) -> None:
    """Lay out and wire the tab for `task`; call inside `demo`'s gr.Tabs."""
    catalog = endpoints.studio.catalog
    specs = endpoints.specs(task)
    with gr.Tab(TASK_LABELS[task], id=task):
        if not specs:
            gr.Markdown(NO_MODELS.get(task, "No models for this task are installed."), elem_classes="studio-empty")
            return
        first = specs[0]
        plan = ctl.plan_controls(specs)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                model = gr.Dropdown(model_choices(specs), value=first.repo_id, label="Model", filterable=True)
                note = gr.Markdown(model_note(first), elem_classes="studio-note")
                label, placeholder = PROMPT[task]
                prompt = gr.Textbox(label=label, placeholder=placeholder, lines=3, max_lines=12)
                for control in plan:
                    if not control.advanced:
                        ctl.render(control, first, catalog)
                with gr.Row():
                    seed = gr.Number(-1, label="Seed", info="-1 picks a random seed", precision=0, minimum=-1)
                    fmt = gr.Dropdown(list(FORMATS), value="wav", label="Format")
                if any(c.advanced for c in plan):
                    with gr.Accordion("Advanced", open=False):
                        for control in plan:
                            if control.advanced:
                                ctl.render(control, first, catalog)
                estimate = gr.Markdown(elem_classes="studio-estimate")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", scale=1)
            with gr.Column(scale=4, min_width=320):
                audio = gr.Audio(type="filepath", label="Result", interactive=False)
                details = gr.Markdown(elem_classes="studio-details")

    widgets = [c.component for c in plan]
    inputs = {model, prompt, *widgets}

    def estimate_text(values: dict) -> str:
        try:
            spec = catalog.get(values[model], task)
            settings = ctl.active_settings(plan, spec, values)
            return estimate_line(endpoints.estimate(task, spec.repo_id, values[prompt], settings).summary())
        except StudioError as error:  # shown in place of the figure while the input is incomplete
            return estimate_line(str(error))

    @user_errors
    def on_model(values: dict) -> list[Any]:
        spec = catalog.get(values[model], task)
        updates = [ctl.retarget(c, spec, catalog) for c in plan]
        fresh = {**values, **{c.component: _default(c, spec) for c in plan}}
        return [model_note(spec), *updates, estimate_text(fresh)]

    @user_errors
    def on_generate(values: dict, request: gr.Request, progress=gr.Progress()) -> tuple[str, str]:
        spec = catalog.get(values[model], task)
        result = endpoints.generate(
            task, spec.repo_id, values[prompt], seed=values[seed], params=ctl.active_settings(plan, spec, values),
            fmt=values[fmt], session=session_of(request), progress=progress,
        )
        return str(result.path), metadata_markdown(result.metadata)

    def on_cancel(request: gr.Request) -> None:
        if endpoints.cancel(session_of(request)):
            gr.Info("Cancelling: the run stops at its next step.")

    model.change(on_model, inputs, [note, *widgets, estimate], **LIGHT)
    gr.on([prompt.change, *[w.input for w in widgets]], estimate_text, inputs, estimate,
          trigger_mode="always_last", **LIGHT)
    run = generate.click(
        on_generate, {model, prompt, seed, fmt, *widgets}, [audio, details],
        concurrency_id="device", concurrency_limit=1, api_visibility="private",
    )
    run.then(estimate_text, inputs, estimate, **LIGHT)  # the model is resident now: no load time
    cancel.click(on_cancel, None, None, cancels=[run], queue=False, api_visibility="private")
    demo.load(estimate_text, inputs, estimate, **LIGHT)


def _default(control: ctl.Control, spec: ModelSpec) -> Any:
    param = spec.param(control.name)
    return param.default if param is not None else None
