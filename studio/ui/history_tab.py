"""The History tab: past generations from the studio's SQLite history, newest first; search, play, download,
delete (into the trash, with Undo), and restore one into its tab.

Three parts, as gradio's guides lay out a Blocks page: `layout` makes the components and returns them as a
`HistoryView`; the handlers are top-level functions that take the `Endpoints` facade first and everything else
as event inputs (no page state held in closures); `wire` connects them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from studio.catalog import TASK_LABELS, TASKS, text_key
from studio.errors import InvalidInput, StudioError
from studio.ui.common import LIGHT
from studio.ui.endpoints import Endpoints, user_errors
from studio.ui.tab import AS_SENT, TabHandle, player
from studio.ui.text import deleted_html, history_html, metadata_markdown, sentence

log = logging.getLogger(__name__)

PAGE = 50
ALL = "all"
HINT = "Select a generation to play it, download it, delete it or restore its settings into its tab."

# A click on a row becomes a `click` event carrying the item id; delegated from the list's root element. It pauses
# the player first, as tab.PAUSE_JS says why (a listener with js only on the list's click did not run).
LIST_JS = """
element.addEventListener('click', (event) => {
  const row = event.target.closest('button[data-id]');
  if (!row) return;
  document.querySelectorAll('#history-audio audio').forEach(player => player.pause());
  trigger('click', {id: Number(row.dataset.id)});
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


# ---------------------------------------------------------------------- layout


@dataclass(frozen=True)
class HistoryView:
    """The History tab's components."""

    tab: gr.Tab
    query: gr.Textbox
    task: gr.Dropdown
    undo_bar: gr.Row  # "Deleted 'lofi beat' · Undo", after a delete
    undo_note: gr.HTML
    undo: gr.Button
    listing: gr.HTML
    count: gr.Markdown
    refresh: gr.Button
    audio: gr.Audio
    actions: gr.Column
    restore: gr.Button
    use_input: gr.Button  # shown for an item whose tab takes audio
    download: gr.DownloadButton
    delete: gr.Button
    details: gr.Markdown
    selected: gr.State  # the id of the item shown, or None
    deleted: gr.State  # the id of the item the Undo button brings back, or None

    @property
    def filters(self) -> list[Any]:
        return [self.query, self.task]

    @property
    def listed(self) -> list[Any]:
        """What `list_history` fills."""
        return [self.listing, self.count]

    @property
    def shown(self) -> list[Any]:
        """What `show_item` / `nothing_selected` fill."""
        return [self.audio, self.actions, self.download, self.details, self.selected, self.use_input]

    @property
    def undo_parts(self) -> list[Any]:
        """What `undo_offer` / `no_undo` fill."""
        return [self.undo_bar, self.undo_note, self.deleted]


def layout() -> HistoryView:
    """The tab's components, inside the gr.Tabs being built."""
    with gr.Tab("History", id="history", elem_id="tab-history") as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                with gr.Row():
                    query = gr.Textbox(label="Search", placeholder="Words from the prompt or the model id", scale=3,
                                       elem_id="history-search")
                    task = gr.Dropdown([("All", ALL), *[(TASK_LABELS[t], t) for t in TASKS]], value=ALL,
                                       label="Kind", scale=1, min_width=130, elem_id="history-task")
                with gr.Row(visible=False, elem_id="history-undo", elem_classes="studio-history-foot") as undo_bar:
                    undo_note = gr.HTML(elem_id="history-undo-note", padding=False)
                    undo = gr.Button("Undo", size="sm", scale=0, min_width=90, elem_id="history-undo-button")
                listing = gr.HTML(js_on_load=LIST_JS, elem_id="history-list", elem_classes="studio-history",
                                  max_height=520)
                with gr.Row(elem_classes="studio-history-foot"):
                    count = gr.Markdown(elem_classes="studio-note", elem_id="history-count")
                    refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_id="history-refresh")
            with gr.Column(scale=2, min_width=320):
                audio = gr.Audio(type="filepath", label="Selected", interactive=False, buttons=["download"],
                                 elem_id="history-audio")
                # Two lines, what goes back into a tab above what happens to the file, so no label wraps in the
                # column (four buttons on one line did, at 1280 px wide already).
                with gr.Column(visible=False, elem_id="history-actions", elem_classes="studio-actions") as actions:
                    with gr.Row(elem_classes="studio-actions"):
                        restore = gr.Button("Restore into its tab", size="sm", variant="primary", scale=3,
                                            min_width=60, elem_id="history-restore")
                        use_input = gr.Button("Use as input", size="sm", scale=2, min_width=60, visible=False,
                                              elem_id="history-use-input")
                    with gr.Row(elem_classes="studio-actions"):
                        download = gr.DownloadButton("Download", size="sm", scale=2, min_width=60,
                                                     elem_id="history-download")
                        delete = gr.Button("Delete", size="sm", variant="stop", scale=1, min_width=60,
                                           elem_id="history-delete")
                details = gr.Markdown(HINT, elem_classes="studio-details", elem_id="history-details")
        selected = gr.State(None)
        deleted = gr.State(None)
    return HistoryView(tab=tab, query=query, task=task, undo_bar=undo_bar, undo_note=undo_note, undo=undo,
                       listing=listing, count=count, refresh=refresh, audio=audio, actions=actions, restore=restore,
                       use_input=use_input, download=download, delete=delete, details=details, selected=selected,
                       deleted=deleted)


# ---------------------------------------------------------------------- handlers


def _kind(kind: str | None) -> str | None:
    return None if kind in (None, "", ALL) else kind


def list_history(endpoints: Endpoints, text: str, kind: str, chosen: int | None) -> list[Any]:
    """[the list's HTML, the count line] for this search, with `chosen` marked."""
    items, total = endpoints.history_page(text or "", _kind(kind), PAGE)
    if total == 0:
        note = "Nothing matches: try other words or another kind." if (text or _kind(kind)) else \
            "No generations yet: what you make in the other tabs appears here, and stays after a restart."
    else:
        note = f"{total} generation{'s' if total != 1 else ''}" + \
            (f", the newest {len(items)} shown" if total > len(items) else "")
    return [history_html(items, selected=chosen, labels=endpoints.model_labels()), note]


def refresh(endpoints: Endpoints, text: str, kind: str, chosen: int | None) -> list[Any]:
    """The list again; on a storage problem, a warning and the list as it was."""
    try:
        return list_history(endpoints, text, kind, chosen)
    except StudioError as error:
        gr.Warning(sentence(str(error)))
        return [gr.update(), gr.update()]


def show_item(endpoints: Endpoints, item: Any) -> list[Any]:
    """The player, the actions, the download, the details and the selection for `item`."""
    path = endpoints.history_file(item)
    note = "" if path else "\n\nThe file is missing or outside the output folder, so the page cannot play it."
    return [player(path, item.duration), gr.update(visible=True),
            gr.update(value=path, label=f"Download {item.format.upper()}", interactive=bool(path)),
            metadata_markdown(item_metadata(item)) + note, item.id,
            gr.update(visible=bool(path) and item.task in endpoints.audio_tasks())]


def nothing_selected() -> list[Any]:
    return [None, gr.update(visible=False), gr.update(value=None), HINT, None, gr.update(visible=False)]


def undo_offer(item: Any) -> list[Any]:
    return [gr.update(visible=True), deleted_html(item.prompt), item.id]


def no_undo() -> list[Any]:
    return [gr.update(visible=False), "", None]


def clicked_id(evt: gr.EventData | None) -> int | None:
    """The item id a click on the list carries (see LIST_JS), or None."""
    item_id = (getattr(evt, "_data", None) or {}).get("id")
    return int(item_id) if isinstance(item_id, (int, float)) and not isinstance(item_id, bool) else None


def select(endpoints: Endpoints, item_id: int | None, text: str, kind: str) -> list[Any]:
    """Show the clicked item: [*shown, *listed]."""
    item = endpoints.history_item(item_id) if item_id is not None else None
    if item is None:
        gr.Info("That generation is gone (deleted elsewhere).")
        return [*nothing_selected(), *refresh(endpoints, text, kind, None)]
    return [*show_item(endpoints, item), *refresh(endpoints, text, kind, item.id)]


@user_errors
def delete(endpoints: Endpoints, item_id: int | None, text: str, kind: str) -> list[Any]:
    """Move the selected item's file into the trash and offer Undo: [*shown, *listed, *undo_parts]."""
    if item_id is None:
        raise InvalidInput("select a generation first")
    item, undoable = endpoints.history_delete(item_id)
    if item is None:
        gr.Info("It was already gone.")
    elif not undoable:
        gr.Info("Deleted from the history; its file was already gone, so there is nothing to undo.")
    offer = undo_offer(item) if item is not None and undoable else no_undo()
    return [*nothing_selected(), *list_history(endpoints, text, kind, None), *offer]


@user_errors
def undo(endpoints: Endpoints, item_id: int | None, text: str, kind: str) -> list[Any]:
    """Bring the last deleted item back from the trash and select it: [*shown, *listed, *undo_parts]."""
    item = endpoints.history_undo(item_id) if item_id is not None else None
    if item is None:
        raise InvalidInput("nothing to undo: the trash is emptied when the studio starts again")
    return [*show_item(endpoints, item), *list_history(endpoints, text, kind, item.id), *no_undo()]


def restore_targets(tabs: gr.Tabs, handles: dict[str, TabHandle]) -> list[Any]:
    """What `restore` fills: the tabs, then each tab's restore outputs in `handles` order."""
    targets: list[Any] = [tabs]
    for handle in handles.values():
        targets += handle.restore_outputs()
    return targets


def _item_and_tab(endpoints: Endpoints, handles: dict[str, TabHandle], item_id: int | None) -> tuple[Any, TabHandle]:
    """The selected item and the tab it goes back into; a message when either is missing."""
    item = endpoints.history_item(item_id) if item_id is not None else None
    if item is None:
        raise InvalidInput("select a generation first")
    target = handles.get(item.task)
    if target is None:
        raise InvalidInput(f"this studio has no {TASK_LABELS.get(item.task, item.task).lower()} tab to restore into")
    return item, target


def _into_tab(handles: dict[str, TabHandle], task: str, updates: list[Any]) -> list[Any]:
    """[the tabs with `task`'s selected, then each tab's restore outputs]: `updates` for `task`'s, none for the
    others (see `restore_targets`)."""
    every: list[Any] = [gr.Tabs(selected=task)]
    for task_name, handle in handles.items():
        every += updates if task_name == task else [gr.skip() for _ in handle.restore_outputs()]
    return every


@user_errors
def restore(endpoints: Endpoints, handles: dict[str, TabHandle], item_id: int | None) -> list[Any]:
    """Open the item's tab with its model, words, seed, settings and format (see `restore_targets`)."""
    item, target = _item_and_tab(endpoints, handles, item_id)
    inputs = (getattr(item, "metadata", None) or {}).get("inputs")
    return _into_tab(handles, item.task, target.restore_updates(item.model, item.prompt, item.seed, item.settings,
                                                                item.format, inputs=inputs))


@user_errors
def use_as_input(endpoints: Endpoints, handles: dict[str, TabHandle], selected: Any, values: dict) -> list[Any]:
    """Open the item's tab with the item in its audio input (see TabHandle.input_updates; `values` holds the
    tabs' settings and, under `selected`, the item's id)."""
    item, target = _item_and_tab(endpoints, handles, values[selected])
    path = endpoints.history_file(item)
    if path is None:
        raise InvalidInput(f"the file of this generation ({Path(item.file).name}) is missing or outside the output "
                           "folder: there is nothing to use")
    updates = target.input_updates(values, path, item.model)
    return _into_tab(handles, item.task, [updates.get(c, gr.skip()) for c in target.restore_outputs()])


# ---------------------------------------------------------------------- wiring


def wire(demo: gr.Blocks, view: HistoryView, endpoints: Endpoints, tabs: gr.Tabs,
         handles: dict[str, TabHandle]) -> None:
    """Connect the view's events to the handlers."""
    v = view
    on_refresh = functools.partial(refresh, endpoints)

    def on_click(text: str, kind: str, evt: gr.EventData) -> list[Any]:  # gradio passes EventData by annotation
        return select(endpoints, clicked_id(evt), text, kind)

    gr.on([v.query.change, v.task.change], on_refresh, [*v.filters, v.selected], v.listed,
          trigger_mode="always_last", **LIGHT)
    gr.on([v.refresh.click, v.tab.select, demo.load], on_refresh, [*v.filters, v.selected], v.listed, **LIGHT)
    v.listing.click(on_click, v.filters, [*v.shown, *v.listed], **LIGHT)
    v.delete.click(functools.partial(delete, endpoints), [v.selected, *v.filters],
                   [*v.shown, *v.listed, *v.undo_parts], **LIGHT)
    v.undo.click(functools.partial(undo, endpoints), [v.deleted, *v.filters],
                 [*v.shown, *v.listed, *v.undo_parts], **LIGHT)
    v.restore.click(functools.partial(restore, endpoints, handles), v.selected, restore_targets(tabs, handles),
                    **LIGHT)
    # Every tab's settings as sent (the tab may switch models: they are carried as on a switch; see tab.AS_SENT).
    takes = [inputs for handle in handles.values() if handle.ui.audio_input is not None
             for inputs in (*handle.ui.settings_inputs(), handle.ui.shown)]
    v.use_input.click(functools.partial(use_as_input, endpoints, handles, v.selected), {v.selected, *takes},
                      restore_targets(tabs, handles), **AS_SENT)


def build_history_tab(demo: gr.Blocks, endpoints: Endpoints, tabs: gr.Tabs,
                      handles: dict[str, TabHandle]) -> tuple[Any, list[Any], list[Any]] | None:
    """The History tab, or a note where the history store is not available.

    Returns (refresh function, its inputs, its outputs), so each Generate can refresh the list when it is done.
    """
    if endpoints.history is None:
        with gr.Tab("History", id="history", elem_id="tab-history"):
            gr.Markdown("History is not available in this build: results are still saved in the output folder, "
                        "each with its settings beside it.", elem_classes="studio-empty")
        return None
    view = layout()
    wire(demo, view, endpoints, tabs, handles)
    return functools.partial(refresh, endpoints), [*view.filters, view.selected], view.listed
