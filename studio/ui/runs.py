"""Runs in flight, by browser session, so Cancel reaches the right one; and the bridge from a run to gr.Progress."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from typing import Any, Callable, Iterator

from studio.run import RunContext
from studio.ui.text import progress_desc, remaining_seconds

log = logging.getLogger(__name__)


class RunRegistry:
    """The cancel Events of the runs each key (a browser session and tab, or an API session) has started.

    A Cancel that arrives while the key's request still waits in Gradio's queue is remembered, and the
    run is stopped as soon as it starts, before it loads anything.
    """

    PENDING_TTL_S = 600.0  # a remembered Cancel older than this is forgotten (its request must be long gone)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, set[threading.Event]] = {}
        self._pending: dict[str, float] = {}
        self._clock = clock

    @contextlib.contextmanager
    def track(self, key: str) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            self._runs.setdefault(key, set()).add(event)
            asked = self._pending.pop(key, None)
            if asked is not None and self._clock() - asked < self.PENDING_TTL_S:
                event.set()
        try:
            yield event
        finally:
            with self._lock:
                events = self._runs.get(key, set())
                events.discard(event)
                if not events:
                    self._runs.pop(key, None)

    def cancel(self, key: str) -> int:
        """Ask every run of `key` to stop at its next step; returns how many were asked."""
        with self._lock:
            events = list(self._runs.get(key, ()))
        for event in events:
            event.set()
        return len(events)

    def cancel_queued(self, key: str) -> None:
        """Stop `key`'s next run as soon as it starts (it is still waiting in the queue)."""
        with self._lock:
            self._pending[key] = self._clock()

    def active(self, key: str) -> int:
        with self._lock:
            return len(self._runs.get(key, ()))


def gradio_queued(session_hash: str, fn: Callable) -> int:
    """How many requests of this browser session for the event function `fn` wait in Gradio's queue.

    Call it from inside a Gradio event (it finds the app through Gradio's context); 0 elsewhere.
    """
    try:
        from gradio.context import LocalContext

        queue = getattr(LocalContext.blocks.get(None), "_queue", None)
        return sum(1 for waiting in list(queue.event_queue_per_concurrency_id.values()) for event in list(waiting.queue)
                   if event.session_hash == session_hash and getattr(event.fn, "fn", None) is fn)
    except Exception:  # a private structure of gradio's: if it changes shape, say nothing is queued
        return 0


def gradio_event_cancelled() -> Callable[[], bool]:
    """A check, made in the thread running a Gradio event, that tells whether Gradio has dropped that event.

    Gradio cancels an event (the page's `cancels=`, or an API client's `job.cancel()`) by cancelling the
    asyncio task that awaits the worker thread; the thread itself runs on. Gradio then takes the event
    off its active jobs, which is what this watches. Outside a Gradio event it always says False.
    """
    try:
        from gradio.context import LocalContext
    except ImportError:  # pragma: no cover - gradio is a dependency of this package
        return lambda: False
    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or not event_id or not hasattr(queue, "active_jobs"):
        return lambda: False

    def running() -> bool:
        try:
            return any(job is not None and any(getattr(evt, "_id", None) == event_id for evt in job)
                       for job in list(queue.active_jobs))
        except Exception:  # a private structure of gradio's: if it changes shape, never cancel by mistake
            return True

    seen = running()
    return lambda: seen and not running()


class ProgressBridge:
    """Drives a `gr.Progress`-like callable from a run: the stage, the steps and the time left.

    Steps show as (done, total); stages without steps (queued, loading, decoding, saving) as the share
    of the estimated time spent. A ticker thread repeats the last report every `tick_s`, so the time
    left keeps moving during a long load, and polls `cancelled`: when it says yes, the run's cancel
    Event is set and the adapter stops at its next step. Use as a context manager around the run.
    """

    def __init__(self, cancel: threading.Event, progress: Callable[..., Any], *, estimated_s: float | None = None,
                 cancelled: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 tick_s: float = 0.5) -> None:
        self.cancel = cancel
        self._progress = progress
        self._estimated = estimated_s
        self._cancelled = cancelled
        self._clock = clock
        self._tick_s = tick_s
        self._lock = threading.Lock()
        self._started = clock()
        self._stage, self._since = "queued", self._started
        self._steps: tuple[int, int | None] = (0, None)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.context = RunContext(cancel=cancel, on_progress=self._on_progress, on_stage=self._on_stage)

    def __enter__(self) -> "ProgressBridge":
        # The ticker reports through gr.Progress, which finds its event in context variables: run it in a copy.
        context = contextvars.copy_context()
        self._ticker = threading.Thread(target=context.run, args=(self._tick,), name="progress-ticker", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            self._watch()
            with self._lock:
                stepping = self._stage == "generating" and self._steps[1]
            if not stepping:  # step reports are frequent enough on their own
                self._report()

    def _watch(self) -> None:
        if not self.cancel.is_set() and self._cancelled():
            log.info("the request was cancelled or dropped; stopping the run at its next step")
            self.cancel.set()

    def _on_stage(self, name: str) -> None:
        self._watch()
        with self._lock:
            self._stage, self._since, self._steps = name, self._clock(), (0, None)
        self._report()

    def _on_progress(self, done: int, total: int) -> None:
        self._watch()
        with self._lock:
            self._steps = (done, total)
        self._report()

    def _report(self) -> None:
        with self._lock:
            stage, since, (done, total) = self._stage, self._since, self._steps
        now = self._clock()
        elapsed = now - self._started
        left = remaining_seconds(estimated_total=self._estimated, elapsed=elapsed, stage=stage,
                                 stage_elapsed=now - since, done=done, total=total)
        desc = progress_desc(stage, left)
        if total:
            self._progress((done, total), desc=desc, unit="steps")
        elif self._estimated:
            self._progress(min(0.99, elapsed / max(elapsed + (left or 0.0), 1e-6)), desc=desc)
        else:
            self._progress(None, desc=desc)
