"""Runs in flight, by browser session, so the Cancel button reaches the right one; and the progress bridge."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

from studio.run import RunContext
from studio.ui.text import STAGE_LABELS


class RunRegistry:
    """The cancel Events of the runs each session has started and not yet finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, set[threading.Event]] = {}

    @contextlib.contextmanager
    def track(self, session: str) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            self._runs.setdefault(session, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._runs.get(session, set())
                events.discard(event)
                if not events:
                    self._runs.pop(session, None)

    def cancel(self, session: str) -> int:
        """Ask every run of `session` to stop at its next step; returns how many were asked."""
        with self._lock:
            events = list(self._runs.get(session, ()))
        for event in events:
            event.set()
        return len(events)

    def active(self, session: str) -> int:
        with self._lock:
            return len(self._runs.get(session, ()))


def progress_context(cancel: threading.Event, progress: Callable[..., Any]) -> RunContext:
    """A RunContext whose stages and steps drive a `gr.Progress`-like callable: progress((done, total), desc=...)."""
    state = {"stage": STAGE_LABELS["queued"]}

    def on_stage(name: str) -> None:
        state["stage"] = STAGE_LABELS.get(name, name.capitalize())
        progress((0, None), desc=state["stage"], unit="steps")

    def on_progress(done: int, total: int) -> None:
        progress((done, total), desc=state["stage"], unit="steps")

    return RunContext(cancel=cancel, on_progress=on_progress, on_stage=on_stage)
