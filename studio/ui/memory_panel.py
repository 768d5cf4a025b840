"""The memory panel: device, used/budget/total and one row per model, refreshed every second; Unload all."""

from __future__ import annotations

import gradio as gr

from studio.ui.endpoints import Endpoints
from studio.ui.text import memory_markdown

REFRESH_S = 1.0


def build_memory_panel(demo: gr.Blocks, endpoints: Endpoints) -> None:
    def render() -> str:
        return memory_markdown(endpoints.memory())

    def unload_all() -> str:
        outcome = endpoints.unload_all()
        deferred = [model for model, what in outcome.items() if what == "deferred"]
        unloaded = sum(1 for what in outcome.values() if what == "unloaded")
        message = f"Unloaded {unloaded} model{'s' if unloaded != 1 else ''}."
        if deferred:
            message += f" {', '.join(deferred)} is in use and unloads when its run ends."
        gr.Info(message)
        return render()

    with gr.Column(variant="panel", elem_classes="studio-memory"):
        gr.Markdown("### Memory")
        panel = gr.Markdown()
        button = gr.Button("Unload all", size="sm", variant="secondary")
    quiet = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}
    timer = gr.Timer(REFRESH_S)
    gr.on([demo.load, timer.tick], render, None, panel, **quiet)
    button.click(unload_all, None, panel, **quiet)
