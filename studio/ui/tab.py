"""One tab per task: model (and language), prompt, the model's settings, estimate, generate/cancel, the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gradio as gr

from studio.audio import FORMATS
from studio.catalog import TASK_LABELS, Catalog, ModelSpec, format_parameters, metadata_text
from studio.errors import Cancelled, InvalidInput, StudioError
from studio.settings import format_bytes
from studio.ui import controls as ctl
from studio.ui.endpoints import NO_MODELS, Endpoints, session_of, user_errors
from studio.ui.picker import ModelGroup, find_group, group_models
from studio.ui.runs import gradio_queued
from studio.ui.text import estimate_html, format_choices, metadata_markdown, model_choice_label, model_note

PROMPT = {
    "music": ("Prompt", "Describe the music: genre, instruments, mood, tempo"),
    "speech": ("Text to speak", "Type what the voice should say. Bark also reads cues like [laughs] and ♪"),
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
SAMPLE_TEXT = "Hello! This is about how long a short sentence takes to say."  # sizes the speech models' memory need
LIGHT = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}


@dataclass
class TabHandle:
    """A built tab: its components, and the updates that put a past run's settings back into them."""

    task: str
    endpoints: Endpoints
    groups: list[ModelGroup]
    model: Any
    language: Any
    note: Any
    prompt: Any
    seed: Any
    fmt: Any
    estimate: Any
    plan: list[ctl.Control]
    run: Any = None  # the Generate event, for .then() chains

    @property
    def catalog(self) -> Catalog:
        return self.endpoints.studio.catalog

    @property
    def widgets(self) -> list[Any]:
        return [c.component for c in self.plan]

    def restore_outputs(self) -> list[Any]:
        return [self.model, self.language, self.note, self.prompt, self.seed, self.fmt, *self.widgets, self.estimate]

    def restore_updates(self, model_id: str, prompt: str, seed: Any, settings: Mapping[str, Any] | None,
                        fmt: str | None) -> list[Any]:
        """Updates for restore_outputs(): the model (and language), prompt, seed, format and every setting."""
        group = find_group(self.groups, model_id)
        if group is None:
            raise InvalidInput(f"{model_id} is not a {TASK_LABELS[self.task].lower()} model of this studio any more")
        spec = self.catalog.get(model_id if model_id != group.key else group.default.repo_id, self.task)
        settings = dict(settings or {})
        return [
            gr.update(value=group.key),
            language_update(group, spec),
            model_note(spec),
            gr.update(value=prompt),
            gr.update(value=seed if seed is not None else -1),
            gr.update(value=fmt) if fmt in FORMATS else gr.update(),
            *[ctl.restore(c, spec, self.catalog, settings) for c in self.plan],
            self.estimate_for(spec, prompt, {k: v for k, v in settings.items() if spec.param(k) is not None}),
        ]

    def spec_of(self, model_key: Any, language: Any) -> ModelSpec:
        group = next((g for g in self.groups if g.key == model_key), None)
        if group is None:  # the page only offers groups; anything else is a stale or forged value
            return self.catalog.get(model_key, self.task)
        return group.spec_for(language) if group.by_language else group.specs[0]

    def estimate_for(self, spec: ModelSpec, prompt: Any, settings: Mapping[str, Any]) -> str:
        try:
            return estimate_html(self.endpoints.estimate(self.task, spec.repo_id, prompt, settings))
        except StudioError as error:  # shown in place of the figure while the input is incomplete
            return estimate_html(None, problem=_sentence(str(error)))


def language_update(group: ModelGroup, spec: ModelSpec) -> Any:
    if not group.by_language:
        return gr.update(visible=False)
    return gr.update(visible=True, choices=group.languages(), value=spec.repo_id)


def default_need(endpoints: Endpoints, task: str, spec: ModelSpec) -> int | None:
    """Bytes a run at the default settings needs (weights + working memory), for the dropdown label."""
    try:
        prompt = SAMPLE_TEXT if task == "speech" else "sample"
        estimate = endpoints.estimate(task, spec.repo_id, prompt, None)
        return estimate.weights_bytes + estimate.working_bytes
    except StudioError:
        return None


def group_choices(endpoints: Endpoints | None, task: str, groups: list[ModelGroup]) -> list[tuple[str, str]]:
    """The model dropdown's (label, value) pairs; with `endpoints`, each label says the memory a default run needs.

    Without it (while the page is built, before the device is known) the labels carry the parameter count.
    """
    choices = []
    for group in groups:
        label = group.label if not group.by_language or len(group.specs) == 1 else \
            f"{group.label} ({len(group.specs)} languages)"
        spec = group.default
        size = default_need(endpoints, task, spec) if endpoints is not None else None
        if size is None:
            label = f"{label} · {format_parameters(spec.parameters)} parameters"
        choices.append((model_choice_label(label, size, spec.license), group.key))
    return choices


def build_tab(demo: gr.Blocks, task: str, endpoints: Endpoints) -> TabHandle | None:
    """Lay out and wire the tab for `task`; call inside `demo`'s gr.Tabs. None when the task has no models."""
    catalog = endpoints.studio.catalog
    specs = endpoints.specs(task)
    with gr.Tab(TASK_LABELS[task], id=task, elem_id=f"tab-{task}"):
        if not specs:
            gr.Markdown(NO_MODELS.get(task, "No models for this task are installed."), elem_classes="studio-empty")
            return None
        groups = group_models(specs)
        first_group = groups[0]
        first = first_group.default
        plan = ctl.plan_controls(specs)
        with gr.Row(equal_height=False, elem_classes="studio-tab"):
            with gr.Column(scale=11, min_width=360):
                model = gr.Dropdown(group_choices(None, task, groups), value=first_group.key, label="Model",
                                    filterable=True, elem_id=f"{task}-model")
                note = gr.Markdown(model_note(first), elem_classes="studio-note", elem_id=f"{task}-note")
                label, placeholder = PROMPT[task]
                prompt = gr.Textbox(label=label, placeholder=placeholder, lines=3, max_lines=10,
                                    elem_id=f"{task}-prompt")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=200):
                        language = gr.Dropdown(first_group.languages() if first_group.by_language else [],
                                               value=first.repo_id if first_group.by_language else None,
                                               label="Language", info="Each language is a model of its own",
                                               filterable=True, visible=first_group.by_language,
                                               elem_id=f"{task}-language")
                        for control in plan:
                            if not control.advanced:
                                ctl.render(control, first, catalog)
                    fmt = gr.Dropdown(format_choices(FORMATS), value="wav", label="Format", scale=1, min_width=110,
                                      elem_id=f"{task}-format")
                with gr.Accordion("Advanced", open=False, elem_id=f"{task}-advanced"):
                    with gr.Row(equal_height=False, elem_classes="studio-seed-row"):
                        seed = gr.Number(-1, label="Seed", info="-1 picks a random one; reuse one to repeat a result",
                                         precision=0, minimum=-1, scale=4, elem_id=f"{task}-seed")
                        random_seed = gr.Button("Random", size="sm", scale=1, min_width=80,
                                                elem_id=f"{task}-seed-random")
                        last_seed = gr.Button("Last seed", size="sm", scale=1, min_width=90,
                                              elem_id=f"{task}-seed-last")
                    for control in plan:
                        if control.advanced:
                            ctl.render(control, first, catalog)
            with gr.Column(scale=10, min_width=340):
                estimate = gr.HTML(elem_id=f"{task}-estimate", apply_default_css=False)
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", scale=3, elem_id=f"{task}-generate")
                    cancel = gr.Button("Cancel", variant="stop", scale=1, elem_id=f"{task}-cancel")
                audio = gr.Audio(type="filepath", label="Result", interactive=False, buttons=["download"],
                                 elem_id=f"{task}-audio")
                with gr.Row(visible=False, elem_id=f"{task}-result-actions", elem_classes="studio-actions") as actions:
                    download = gr.DownloadButton("Download", size="sm", elem_id=f"{task}-download")
                    reuse = gr.Button("Reuse these settings", size="sm", elem_id=f"{task}-reuse")
                details = gr.Markdown(elem_classes="studio-details", elem_id=f"{task}-details")
        duration = next((c.component for c in plan if c.name == "duration" and c.kind == "slider"), None)
        example_inputs = [prompt] if duration is None or task == "speech" else [prompt, duration]
        gr.Examples(EXAMPLES[task], example_inputs, label="Examples: click one to fill the prompt",
                    examples_per_page=4)
        last = gr.State(None)  # the metadata of this session's last result in this tab

    handle = TabHandle(task, endpoints, groups, model, language, note, prompt, seed, fmt, estimate, plan)
    widgets = handle.widgets
    inputs = {model, language, prompt, *widgets}

    def run_key(session: str) -> str:
        return f"{session}:{task}"  # Cancel in one tab leaves the session's runs in other tabs alone

    def current(values: dict) -> tuple[ModelSpec, dict[str, Any]]:
        spec = handle.spec_of(values[model], values[language])
        return spec, ctl.active_settings(plan, spec, values)

    def estimate_text(values: dict) -> str:
        try:
            spec, settings = current(values)
        except StudioError as error:
            return estimate_html(None, problem=_sentence(str(error)))
        return handle.estimate_for(spec, values[prompt], settings)

    def on_model(values: dict) -> list[Any]:
        group = next((g for g in groups if g.key == values[model]), None)
        if group is None:
            return [gr.update(), gr.update(), *[gr.update() for _ in plan], estimate_text(values)]
        spec = group.spec_for(values[language]) if group.by_language else group.specs[0]
        fresh = {**values, **{c.component: _default(c, spec) for c in plan}}
        return [language_update(group, spec), model_note(spec), *[ctl.retarget(c, spec, catalog) for c in plan],
                handle.estimate_for(spec, values[prompt], ctl.active_settings(plan, spec, fresh))]

    def on_language(values: dict) -> list[Any]:
        spec, settings = current(values)
        return [model_note(spec), handle.estimate_for(spec, values[prompt], settings)]

    @user_errors
    def on_generate(values: dict, request: gr.Request, progress=gr.Progress()) -> list[Any]:
        spec, settings = current(values)
        try:
            result = endpoints.generate(
                task, spec.repo_id, values[prompt], seed=values[seed], params=settings, fmt=values[fmt],
                session=run_key(session_of(request)), progress=progress,
            )
        except Cancelled:  # the user asked for it and Cancel already said so: not an error
            return [gr.skip() for _ in range(5)]
        metadata = result.metadata
        size = format_bytes(Path(result.path).stat().st_size)
        return [str(result.path), gr.update(visible=True),
                gr.update(value=str(result.path), label=f"Download {str(values[fmt]).upper()} · {size}"),
                metadata_markdown(metadata), metadata]

    def on_cancel(request: gr.Request) -> None:
        session = session_of(request)
        if endpoints.cancel(run_key(session)):
            gr.Info("Cancelled: the studio is ready for the next run.")
        elif gradio_queued(session, on_generate):
            endpoints.runs.cancel_queued(run_key(session))
            gr.Info("Cancelled: the request leaves the queue without running.")
        else:
            gr.Info("Nothing to cancel: no run of this tab is in progress.")

    @user_errors
    def on_reuse(metadata: dict | None) -> list[Any]:
        if not metadata:
            raise InvalidInput("there is no result to reuse yet: generate something first")
        return handle.restore_updates(metadata["model"], metadata_text(metadata)[1],
                                      metadata.get("seed"), metadata.get("settings"), metadata.get("format"))

    def on_last_seed(metadata: dict | None) -> Any:
        if not metadata:
            gr.Info("No result yet in this tab: the last seed is kept once you generate.")
            return gr.update()
        return metadata.get("seed", -1)

    # The model and language follow the user's choice (.input), so restoring a past run (which sets them
    # programmatically) does not reset the settings it restores.
    model.input(on_model, inputs, [language, note, *widgets, estimate], **LIGHT)
    language.input(on_language, inputs, [note, estimate], **LIGHT)
    gr.on([prompt.change, *[w.change for w in widgets]], estimate_text, inputs, estimate,
          trigger_mode="always_last", **LIGHT)
    random_seed.click(lambda: -1, None, seed, **LIGHT)
    last_seed.click(on_last_seed, last, seed, **LIGHT)
    run = generate.click(
        on_generate, {model, language, prompt, seed, fmt, *widgets}, [audio, actions, download, details, last],
        concurrency_id="device", concurrency_limit=endpoints.run_slots(), api_visibility="private",
        show_progress_on=[audio],
    )
    run.then(estimate_text, inputs, estimate, **LIGHT)  # the model is resident now: no load time
    # No `cancels=[run]`: that would free Gradio's device slot at once while the run's thread still works;
    # the Event stops the run at its next step, and the run then ends as a normal (skipped) update.
    cancel.click(on_cancel, None, None, **LIGHT)  # queued (so its message reaches the page), never waits
    reuse.click(on_reuse, last, handle.restore_outputs(), **LIGHT)
    def on_load(values: dict) -> list[Any]:
        # The device is known by now (asking decides it): the labels get each model's memory need.
        return [gr.update(choices=group_choices(endpoints, task, groups)), estimate_text(values)]

    demo.load(on_load, inputs, [model, estimate], **LIGHT)
    handle.run = run
    return handle


def _default(control: ctl.Control, spec: ModelSpec) -> Any:
    param = spec.param(control.name)
    return param.default if param is not None else None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")
