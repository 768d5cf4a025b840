"""The memory panel: per device a used/budget/total bar and its models, with Pin and Unload; refreshed every second.

The panel is one gr.HTML. Gradio 6 re-renders it by diffing the DOM, so its buttons survive the refresh;
a click becomes a `click` event carrying {action, model}, handled here.
"""

from __future__ import annotations

import logging

import gradio as gr

from studio.errors import StudioError
from studio.ui.endpoints import Endpoints
from studio.ui.common import LIGHT
from studio.ui.text import memory_html, pin_message, sentence, steady_snapshot, unload_message

log = logging.getLogger(__name__)

REFRESH_S = 1.0
STARTING = '<div class="mem"><div class="mem-empty">Finding the device…</div></div>'

# Clicks anywhere in the panel are delegated from its root element, which outlives every re-render.
# On a narrow screen gradio's sidebar, once open, covers the whole page (its own CSS, up to 768 px): there the
# panel starts closed. gr.Sidebar(open=...) is fixed when the page is built and gradio opens the sidebar just
# after mounting it, so the script waits for that and closes it once with the sidebar's own toggle (which keeps
# gradio's state right); the toggle gets a name and, in style.py, a thumb-sized target.
NARROW = "(max-width: 768px)"
PANEL_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (!button || button.disabled) return;
  const data = {action: button.dataset.action, model: button.dataset.model || ''};
  if (data.action === 'pin') data.pinned = button.dataset.pinned !== 'true';
  trigger('click', data);
});
const sidebar = element.closest('.sidebar');
const toggle = sidebar && sidebar.querySelector(':scope > .toggle-button');
if (toggle) {
  toggle.setAttribute('aria-label', 'Memory panel');
  toggle.title = 'Show or hide the memory panel';
  if (window.matchMedia('%s').matches) {
    let closed = false;
    const observer = new MutationObserver(() => close());
    const close = () => {
      if (closed || !sidebar.classList.contains('open')) return;
      closed = true;
      observer.disconnect();
      toggle.click();
    };
    observer.observe(sidebar, {attributes: true, attributeFilter: ['class']});
    close();
    setTimeout(() => observer.disconnect(), 10000);
  }
}
""" % NARROW


def build_memory_panel(demo: gr.Blocks, endpoints: Endpoints) -> gr.HTML:
    """Lay out the panel in the current container and wire its timer and buttons; returns the HTML component."""

    shown: dict[str, int] = {}  # the budgets shown last, so that a CPU's does not flicker (see steady_budget)

    def render() -> str:
        return memory_html(steady_snapshot(endpoints.memory(), shown))

    def act(evt: gr.EventData) -> str:
        data = dict(getattr(evt, "_data", None) or {})
        action, model = data.get("action"), str(data.get("model") or "")
        try:
            if action == "unload-all":
                outcome = endpoints.unload_all()
                gr.Info(unload_message(outcome, {m: endpoints.label(m) for m in outcome}))
            elif action == "unload" and model:
                pinned = any(row["id"] == model and row["pinned"] for row in endpoints.memory()["models"])
                outcome = {model: endpoints.unload(model)}
                gr.Info(unload_message(outcome, {model: endpoints.label(model)}, [model] if pinned else ()))
            elif action == "pin" and model:
                gr.Info(pin_message(endpoints.label(model), endpoints.pin(model, bool(data.get("pinned")))))
        except StudioError as error:
            gr.Warning(sentence(str(error)))
        return render()

    gr.Markdown("### Memory", elem_classes="studio-panel-title")
    # Filled in on page load: building the page must not ask the device anything (with --device auto that
    # would import torch before the page is served).
    panel = gr.HTML(STARTING, js_on_load=PANEL_JS, elem_id="memory-panel", elem_classes="studio-memory")
    timer = gr.Timer(REFRESH_S)
    # Off the queue: the panel keeps moving while a generation holds the device's queue slot.
    gr.on([demo.load, timer.tick], render, None, panel, queue=False, **LIGHT)
    panel.click(act, None, panel, **LIGHT)
    return panel
