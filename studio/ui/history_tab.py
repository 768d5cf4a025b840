"""The History tab: past generations from the studio's SQLite history, newest first; search, play, download,
delete, and restore one into its tab."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from studio.catalog import TASK_LABELS, TASKS, text_key
from studio.errors import InvalidInput, StudioError
from studio.ui.endpoints import Endpoints, user_errors
from studio.ui.tab import TabHandle
from studio.ui.text import history_html, metadata_markdown

log = logging.getLogger(__name__)

PAGE = 50
ALL = "all"
LIGHT = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}
HINT = "Select a generation to play it, download it, delete it or restore its settings into its tab."

# A click on a row becomes a `click` event carrying the item id; delegated from the list's root element.
LIST_JS = """
element.addEventListener('click', (event) => {
  const row = event.target.closest('button[data-id]');
  if (row) trigger('click', {id: Number(row.dataset.id)});
});
"""


def item_metadata(item: Any) -> dict[str, Any]:
    """A history item as the result table expects it: its stored metadata, with the item's own columns on top."""
    metadata = dict(getattr(item, "metadata", None) or {})
    metadata.update({
        "model": item.model, "seed": item.seed, "settings": item.settings, "format": item.format,
        "duration": item.duration, "sample_rate": item.sample_rate, "elapsed_s": item.elapsed_s,
        "estimated_s": item.estimated_s, "peak_bytes": item.peak_bytes, "file": Path(item.file).name,
    })
    metadata.pop("prompt", None)
    metadata.pop("text", None)
    metadata[text_key(item.task)] = item.prompt
    return metadata


def build_history_tab(demo: gr.Blocks, endpoints: Endpoints, tabs: gr.Tabs,
                      handles: dict[str, TabHandle]) -> tuple[Any, list[Any], list[Any]] | None:
    """The History tab, or a note where the history store is not available.

    Returns (refresh function, its inputs, its outputs), so each Generate can refresh the list when it is done.
    """
    history = endpoints.history
    output_dir = Path(endpoints.studio.settings.output_dir).expanduser().resolve()
    labels = {spec.repo_id: spec.label for spec in endpoints.studio.catalog}
    with gr.Tab("History", id="history", elem_id="tab-history") as tab:
        if history is None:
            gr.Markdown("History is not available in this build: results are still saved in the output folder, "
                        "each with its settings beside it.", elem_classes="studio-empty")
            return None
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                with gr.Row():
                    query = gr.Textbox(label="Search", placeholder="Words from the prompt or the model id", scale=3,
                                       elem_id="history-search")
                    task = gr.Dropdown([("All", ALL), *[(TASK_LABELS[t], t) for t in TASKS]], value=ALL,
                                       label="Kind", scale=1, min_width=130, elem_id="history-task")
                listing = gr.HTML(js_on_load=LIST_JS, elem_id="history-list", elem_classes="studio-history",
                                  max_height=520)
                with gr.Row(elem_classes="studio-history-foot"):
                    count = gr.Markdown(elem_classes="studio-note", elem_id="history-count")
                    refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_id="history-refresh")
            with gr.Column(scale=2, min_width=320):
                audio = gr.Audio(type="filepath", label="Selected", interactive=False, buttons=["download"],
                                 elem_id="history-audio")
                with gr.Row(visible=False, elem_id="history-actions", elem_classes="studio-actions") as actions:
                    restore = gr.Button("Restore into its tab", size="sm", variant="primary", scale=3, min_width=60,
                                        elem_id="history-restore")
                    download = gr.DownloadButton("Download", size="sm", scale=2, min_width=60,
                                                 elem_id="history-download")
                    delete = gr.Button("Delete", size="sm", variant="stop", scale=1, min_width=60,
                                       elem_id="history-delete")
                details = gr.Markdown(HINT, elem_classes="studio-details", elem_id="history-details")
        selected = gr.State(None)

    def list_items(text: str, kind: str, chosen: int | None) -> list[Any]:
        kind_arg = None if kind in (None, "", ALL) else kind
        items = history.list(text or "", task=kind_arg, limit=PAGE)
        total = history.count(text or "", task=kind_arg)
        if total == 0:
            note = "Nothing matches: try other words or another kind." if (text or kind_arg) else \
                "No generations yet: what you make in the other tabs appears here, and stays after a restart."
        else:
            note = f"{total} generation{'s' if total != 1 else ''}" + \
                (f", the newest {len(items)} shown" if total > len(items) else "")
        return [history_html(items, selected=chosen, labels=labels), note]

    def on_refresh(text: str, kind: str, chosen: int | None) -> list[Any]:
        try:
            return list_items(text, kind, chosen)
        except StudioError as error:
            gr.Warning(str(error))
            return [gr.update(), gr.update()]

    def servable(item: Any) -> str | None:
        path = Path(history.path_of(item)).resolve()
        if not path.is_file():
            return None
        return str(path) if path.is_relative_to(output_dir) else None  # the only folder the server serves

    def show(item: Any) -> list[Any]:
        path = servable(item)
        note = "" if path else "\n\nThe file is missing or outside the output folder, so the page cannot play it."
        return [path, gr.update(visible=True),
                gr.update(value=path, label=f"Download {item.format.upper()}", interactive=bool(path)),
                metadata_markdown(item_metadata(item)) + note, item.id]

    def nothing_selected() -> list[Any]:
        return [None, gr.update(visible=False), gr.update(value=None), HINT, None]

    def on_select(text: str, kind: str, evt: gr.EventData) -> list[Any]:
        item_id = (getattr(evt, "_data", None) or {}).get("id")
        item = history.get(int(item_id)) if isinstance(item_id, (int, float)) else None
        if item is None:
            gr.Info("That generation is gone (deleted elsewhere).")
            return [*nothing_selected(), *on_refresh(text, kind, None)]
        return [*show(item), *on_refresh(text, kind, item.id)]

    @user_errors
    def on_delete(item_id: int | None, text: str, kind: str) -> list[Any]:
        if item_id is None:
            raise InvalidInput("select a generation first")
        deleted = history.delete(item_id, delete_file=True)
        gr.Info("Deleted, with its file." if deleted else "It was already gone.")
        return [*nothing_selected(), *list_items(text, kind, None)]

    restore_targets = [tabs]
    for handle in handles.values():
        restore_targets += handle.restore_outputs()

    @user_errors
    def on_restore(item_id: int | None) -> list[Any]:
        item = history.get(item_id) if item_id is not None else None
        if item is None:
            raise InvalidInput("select a generation first")
        target = handles.get(item.task)
        if target is None:
            raise InvalidInput(f"this studio has no {TASK_LABELS.get(item.task, item.task).lower()} tab to restore into")
        updates: list[Any] = [gr.Tabs(selected=item.task)]
        for task_name, handle in handles.items():
            if task_name == item.task:
                updates += handle.restore_updates(item.model, item.prompt, item.seed, item.settings, item.format)
            else:
                updates += [gr.skip() for _ in handle.restore_outputs()]
        return updates

    listed = [listing, count]
    shown = [audio, actions, download, details, selected]
    gr.on([query.change, task.change], on_refresh, [query, task, selected], listed, trigger_mode="always_last",
          **LIGHT)
    gr.on([refresh.click, tab.select, demo.load], on_refresh, [query, task, selected], listed, **LIGHT)
    listing.click(on_select, [query, task], [*shown, *listed], **LIGHT)
    delete.click(on_delete, [selected, query, task], [*shown, *listed], **LIGHT)
    restore.click(on_restore, selected, restore_targets, **LIGHT)
    return on_refresh, [query, task, selected], listed
