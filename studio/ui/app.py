"""The page: a tab per task, the memory panel beside them, and the named API endpoints of DESIGN.md."""

from __future__ import annotations

import gradio as gr

from studio.catalog import TASKS
from studio.service import Studio
from studio.ui.endpoints import Endpoints
from studio.ui.memory_panel import build_memory_panel
from studio.ui.tab import build_tab

CSS = """
.studio-note p { font-size: var(--text-sm); color: var(--body-text-color-subdued); margin: 0; }
.studio-estimate p { margin: 0; }
.studio-details table { font-size: var(--text-sm); width: 100%; }
.studio-details thead { display: none; }
.studio-details td { padding: 4px 8px !important; overflow-wrap: anywhere; vertical-align: top; }
.studio-details td:first-child { white-space: nowrap; color: var(--body-text-color-subdued); width: 1%; }
.studio-empty { padding: var(--spacing-xxl) 0; }
.studio-memory ul { padding-left: 1em; }
.studio-memory li { font-size: var(--text-sm); overflow-wrap: anywhere; }
"""
# System fonts: the studio runs offline, and the default theme would fetch its fonts from Google.
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


def page_options() -> dict:
    """The look of the page, which gradio 6 takes at launch: `demo.launch(**page_options(), ...)`."""
    theme = gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))
    return {"css": CSS, "theme": theme}


def build_app(studio: Studio) -> gr.Blocks:
    """Build the Blocks app over `studio`; launch it with `page_options()` and `studio.ui.launch.launch_options`."""
    endpoints = Endpoints(studio)
    with gr.Blocks(title="Audio Studio") as demo:
        gr.Markdown("# Audio Studio\nMusic, speech and sound effects with open models, on this machine.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                with gr.Tabs():
                    for task in TASKS:
                        build_tab(demo, task, endpoints)
            with gr.Column(scale=1, min_width=280):
                build_memory_panel(demo, endpoints)

        for task in TASKS:
            gr.api(endpoints.api_generate(task), api_name=task, concurrency_id="device", concurrency_limit=1)
        gr.api(endpoints.api_estimate(), api_name="estimate", concurrency_limit=None)
        gr.api(endpoints.api_memory(), api_name="memory", concurrency_limit=None)
    demo.queue()
    return demo
