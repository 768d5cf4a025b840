"""Runs in flight, by browser session, so Cancel reaches the right one; and the bridge from a run to gr.Progress."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from typing import Any, Callable, Iterator

from studio.run import RunContext
from studio.ui.text import TAIL_SHARE, progress_desc, remaining_seconds, waiting_desc

# Steps are reported to the page at most this often (stages and a stage's last step at once). Gradio sends a
# progress message every 10 ms while reports come, and its page spends tens of milliseconds on each one: a model
# stepping faster than that (MusicGen, Bark, a tiny checkpoint) kept the page's main thread busy from end to end, so
# a click on Cancel was not taken for 20 s and more (measured in Chromium: 8 s busy in 8 s).
STEP_REPORT_EVERY_S = 0.25

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
        self._waiting: set[threading.Event] = set()  # runs still waiting for their device
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
                self._waiting.discard(event)
                if not events:
                    self._runs.pop(key, None)

    def cancel(self, key: str) -> int:
        """Ask every run of `key` to stop at its next step; returns how many were asked."""
        with self._lock:
            events = list(self._runs.get(key, ()))
        for event in events:
            event.set()
        return len(events)

    def cancel_all(self) -> int:
        """Ask every run of every session to stop at its next step (the app is closing); returns how many."""
        with self._lock:
            events = [event for events in self._runs.values() for event in events]
        for event in events:
            event.set()
        return len(events)

    def cancel_queued(self, key: str) -> None:
        """Stop `key`'s next run as soon as it starts (it is still waiting in the queue)."""
        with self._lock:
            self._pending[key] = self._clock()

    def set_waiting(self, event: threading.Event, queued: bool) -> None:
        """Note whether the run of `event` waits for its device (in the studio's queue) or has started."""
        with self._lock:
            if not queued:
                self._waiting.discard(event)
            elif any(event in events for events in self._runs.values()):
                self._waiting.add(event)

    def waiting(self, key: str) -> bool:
        """Whether `key` has runs and every one still waits for its device: a Cancel now stops them unstarted."""
        with self._lock:
            events = self._runs.get(key, set())
            return bool(events) and events <= self._waiting

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

    While the run waits for its device the text says how many runs are ahead and how long they take, with an
    empty bar. From then on the bar is the share of the run's time spent, spent / (spent + left), and never goes
    back; the steps, when the model reports them, are in the text ("Generating · 12/50 steps · about 8 s left").

    Time left: the estimate minus the time spent until the first step; from then on it is measured: the seconds
    per step seen so far times the steps to go, plus the part after the last step (decoding, saving) scaled from
    the same measure by the estimate's share of it (TAIL_SHARE). So a first run whose estimate is far off counts
    down from what it measures instead of jumping back to the estimate after its last step.

    Steps are reported at most every `step_report_s` (STEP_REPORT_EVERY_S), a stage's last step and every new stage
    at once. A ticker thread repeats the report every `tick_s`, so the time left keeps moving during a long load or
    a long step, and polls `cancelled`: when it says yes, the run's cancel Event is set and the adapter stops at its
    next step. `waiting(True/False)` is told when the run starts and stops waiting for its device; `on_audio` hears the
    pieces of audio the run hands on (RunContext.on_audio; studio.streaming). Use as a context manager around the run.
    """

    def __init__(self, cancel: threading.Event, progress: Callable[..., Any], *, estimated_s: float | None = None,
                 cancelled: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 tick_s: float = 0.5, waiting: Callable[[bool], None] = lambda queued: None,
                 tail_share: float = TAIL_SHARE, estimate: Any = None,
                 on_audio: Callable[[Any, int], None] | None = None,
                 step_report_s: float = STEP_REPORT_EVERY_S) -> None:
        self.cancel = cancel
        self._progress = progress
        self._estimated = estimated_s
        self._split: tuple[float, float] | None = None  # (load, compute) seconds of the estimate, when known
        self._cancelled = cancelled
        self._clock = clock
        self._tick_s = tick_s
        self._step_report_s = step_report_s
        self._reported = float("-inf")  # when the page was last told
        self._told_progress = False  # ... and whether that showed steps (or a stage's share): the first shows at once
        self._on_waiting = waiting
        self._tail_share = tail_share
        self._lock = threading.Lock()
        self._stage, self._since = "queued", clock()
        self._ahead: tuple[int, float] | None = None  # (runs ahead, their seconds left) while queued
        self._run_start: float | None = None  # when the run left the queue
        self._gen_start: float | None = None  # its first "generating" stage (of the latest attempt)
        self._gen_latest = float("-inf")  # the latest "generating" stage
        self._steps: tuple[int, int | None] = (0, None)
        # Progress reported before the run's first "generating" stage (a one-time conversion of the checkpoint):
        # (done, total) of that stage's own work, shown as a share in the text; never counted as denoising steps.
        self._stage_progress: tuple[int, int] | None = None
        self._first: tuple[float, int] | None = None  # (when, done) of the first step report
        self._last: tuple[float, int] | None = None  # ... and of the latest
        self._steps_end: float | None = None  # when the last step was reported
        self._shown = 0.0  # the largest share of the bar reported: it never goes back
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.context = RunContext(cancel=cancel, on_progress=self._on_progress, on_stage=self._on_stage,
                                  on_wait=self._on_wait, on_estimate=self._on_estimate, remaining=self.remaining,
                                  on_audio=on_audio)
        if estimate is not None:
            self._on_estimate(estimate)

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
        self._set_waiting(False)

    def _tick(self) -> None:
        while not self._stop.wait(self._tick_s):
            self._watch()
            self.report()

    def _watch(self) -> None:
        if not self.cancel.is_set() and self._cancelled():
            log.info("the request was cancelled or dropped; stopping the run at its next step")
            self.cancel.set()

    def _set_waiting(self, queued: bool) -> None:
        try:
            self._on_waiting(queued)
        except Exception:  # bookkeeping for Cancel's message: never let it break a run
            log.exception("could not note whether the run waits for its device")

    def _on_stage(self, name: str) -> None:
        self._watch()
        now = self._clock()
        with self._lock:
            self._stage, self._since = name, now
            self._stage_progress = None
            if name != "queued" and self._run_start is None:
                self._run_start = now
            if name == "generating":
                self._gen_latest = now
                if self._gen_start is None:
                    self._gen_start = now
        self._set_waiting(name == "queued")
        self.report()

    def _on_wait(self, ahead: int, seconds: float) -> None:
        self._watch()
        with self._lock:
            self._ahead = (ahead, seconds)
        self.report()

    def _on_estimate(self, estimate: Any) -> None:
        # Made as the run leaves the queue (or before it waits): whether it loads, and how long each part takes.
        seconds = getattr(estimate, "seconds", None)
        load, compute = getattr(estimate, "load_seconds", None), getattr(estimate, "compute_seconds", None)
        with self._lock:
            if seconds is not None:
                self._estimated = float(seconds)
            if load is not None and compute is not None:
                self._split = (float(load), float(compute))

    def _on_progress(self, done: int, total: int) -> None:
        self._watch()
        now = self._clock()
        with self._lock:
            if self._gen_latest == float("-inf") and self._stage != "queued":
                # Before generation nothing counts steps: this is the stage's own work (converting, once).
                self._stage_progress = (done, total) if total else None
                if self._run_start is None:
                    self._run_start = now
            else:
                self._on_step(done, total, now)
            due = (not self._told_progress or now - self._reported >= self._step_report_s
                   or bool(total) and done >= total)
        if due:
            self.report()

    def _on_step(self, done: int, total: int, now: float) -> None:
        """A denoising step (or token) reported; call with the lock held."""
        if self._gen_start is None:
            self._gen_start = self._run_start if self._run_start is not None else now
        if self._run_start is None:
            self._run_start = self._gen_start
        if self._last is not None and (done < self._last[1] or total != self._steps[1]):
            # A retried generation (after running out of memory) counts afresh from its own start.
            self._gen_start = self._gen_latest if self._gen_latest > self._last[0] else now
            self._first = self._last = self._steps_end = None
        if done > 0:
            if self._first is None:
                self._first = (now, done)
            if self._last is None or done > self._last[1]:
                self._last = (now, done)
        if total and done >= total and self._steps_end is None:
            self._steps_end = now
        self._steps = (done, total)

    def _stage_share(self) -> float | None:
        """The share of a preparation stage's work done (converting, once), None outside one; lock held."""
        if self._stage_progress is None:
            return None
        done, total = self._stage_progress
        return min(1.0, max(0.0, done / total))

    def remaining(self) -> float | None:
        """Seconds left by what is known now (see the class notes); None without an estimate or a step."""
        with self._lock:
            return self._remaining(self._clock())

    def _remaining(self, now: float) -> float | None:
        done, total = self._steps
        spent = now - self._run_start if self._run_start is not None else 0.0
        if not (total and self._first is not None and self._last is not None):
            if self._split is not None:  # a load or a start-up longer than planned does not eat the compute
                load, compute = self._split
                if self._stage in ("downloading", "loading") or self._stage_progress is not None:
                    return max(0.0, load - (now - self._since)) + compute
                if self._stage == "generating" and self._gen_start is not None:
                    return max(compute - (now - self._gen_start), compute * self._tail_share)
            return remaining_seconds(estimated_total=self._estimated, elapsed=spent)
        (t0, d0), (t1, d1) = self._first, self._last
        if d1 > d0 and t1 > t0:  # the first step carries the run's start-up: measure the steps after it
            per_step = (t1 - t0) / (d1 - d0)
        else:
            per_step = (t0 - (self._gen_start or t0)) / max(d0, 1)
        return remaining_seconds(estimated_total=self._estimated, elapsed=spent, done=d1, total=total,
                                 per_step=per_step, since_step=now - t1,
                                 since_steps_end=None if self._steps_end is None else now - self._steps_end,
                                 tail_share=self._tail_share)

    def report(self) -> None:
        """Send the current stage, steps, time left and share of the bar to the progress callable."""
        now = self._clock()
        with self._lock:
            self._reported, self._told_progress = now, False
            stage, (done, total), ahead = self._stage, self._steps, self._ahead
            if stage == "queued" and self._run_start is None:
                # 0, not None: Gradio's page shows no text at all for a progress of None.
                value, desc = 0.0, waiting_desc(*ahead) if ahead is not None else progress_desc("queued", None)
            else:
                left = self._remaining(now)
                spent = now - self._run_start if self._run_start is not None else 0.0
                value = None
                if left is not None:
                    share = spent / max(spent + left, 1e-6)
                    self._shown = max(self._shown, min(0.99, share))
                    value = self._shown
                elif self._shown:
                    value = self._shown
                steps = (done, total) if stage == "generating" and total else None
                share = self._stage_share()
                desc = progress_desc(stage, left, steps=steps, share=share)
                self._told_progress = steps is not None or share is not None
        self._progress(value, desc=desc)
