"""The page: a tab per task and the History, the memory panel beside them, and the named API endpoints
(/music, /speech, /sfx, /estimate, /memory, and the voice library's /voices, /voice_save, /voice_delete,
/voice_rename)."""

from __future__ import annotations

import gradio as gr

from studio.catalog import TASKS
from studio.service import Studio
from studio.ui.common import LIGHT
from studio.ui.endpoints import Endpoints
from studio.ui.history_tab import build_history_tab
from studio.ui.live import LIVE_JS
from studio.ui.memory_panel import build_memory_panel
from studio.ui.style import CSS, page_theme
from studio.ui.tab import TabHandle, build_tab


def page_options() -> dict:
    """The look of the page and its live player's script, which gradio 6 takes at launch:
    `demo.launch(**page_options(), ...)`."""
    return {"css": CSS, "theme": page_theme(), "head": LIVE_JS}


def page_routes(endpoints: Endpoints) -> list:
    """The routes the page itself needs besides Gradio's: its live player's (studio.ui.live)."""
    return endpoints.live.routes()


def memory_version(snapshot: dict) -> str:
    """What of the memory an estimate depends on (which models are where, in which state and precision), as a
    string that changes only when that does: not with the seconds since a model was last used."""
    rows = sorted((m["id"], m["state"], m["placement"] or "", m["dtype"] or "", m["device"] or "", m["bytes"])
                  for m in snapshot.get("models", ()))
    budgets = [(d["name"], d["budget_bytes"]) for d in snapshot.get("devices", ())]
    return repr((rows, budgets, snapshot.get("budget_bytes")))


def build_app(studio: Studio, endpoints: Endpoints | None = None) -> gr.Blocks:
    """Build the Blocks app over `studio` (through `endpoints`, made here when not given); launch it with
    `page_options()` and `studio.ui.launch.launch_options`, with `page_routes(endpoints)` among its routes."""
    endpoints = endpoints or Endpoints(studio)
    with gr.Blocks(title="Audio Studio") as demo:
        with gr.Row(elem_classes="studio-header"):
            gr.Markdown("# Audio Studio\nMusic, speech and sound effects with open models, on this machine.")
        with gr.Sidebar(position="right", width=300, open=True, elem_id="memory-sidebar"):
            panel = build_memory_panel(demo, endpoints)
        handles: dict[str, TabHandle] = {}
        with gr.Tabs(elem_id="studio-tabs", overflow_behavior="wrap") as tabs:  # no tab hidden behind "…"
            for task in TASKS:
                handle = build_tab(demo, task, endpoints)
                if handle is not None:
                    handles[task] = handle
            refresh = build_history_tab(demo, endpoints, tabs, handles)
        # Each tab's estimate follows the panel when the loaded models change (a load, Unload, Unload all),
        # not on every refresh of the panel.
        loaded = gr.State("")
        panel.change(lambda: memory_version(endpoints.memory()), None, loaded, **LIGHT)
        for handle in handles.values():
            handle.follow(loaded.change)
        if refresh is not None:
            fn, inputs, outputs = refresh
            for handle in handles.values():
                for run in handle.runs:  # a new result appears in History at once
                    run.then(fn, inputs, outputs, **LIGHT)

        for task in TASKS:
            gr.api(endpoints.api_generate(task), api_name=task, concurrency_id="device",
                   concurrency_limit=endpoints.run_slots())
        gr.api(endpoints.api_estimate(), api_name="estimate", concurrency_limit=None)
        gr.api(endpoints.api_memory(), api_name="memory", concurrency_limit=None)
        gr.api(endpoints.api_voices(), api_name="voices", concurrency_limit=None)
        gr.api(endpoints.api_voice_save(), api_name="voice_save", concurrency_limit=None)
        gr.api(endpoints.api_voice_delete(), api_name="voice_delete", concurrency_limit=None)
        gr.api(endpoints.api_voice_rename(), api_name="voice_rename", concurrency_limit=None)
    demo.queue(default_concurrency_limit=None)
    return demo
