"""Streaming: the pieces of audio a run hands on as it makes them (RunContext.audio), read while it runs.

One helper for every reader (the page's player, `/v1/audio/speech`): the run goes on in a worker thread, as it
would anywhere else (same manager, queue and cancel), and the reader iterates its pieces, then its result.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

OnAudio = Callable[[np.ndarray, int], None]


@dataclass(frozen=True)
class Piece:
    """A finished piece of the output: float32 samples shaped as Audio.samples, at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / float(self.sample_rate)


@dataclass(frozen=True)
class Done:
    """The run's own result (what `run` returned), after its last piece."""

    value: Any


_END = object()
# The threads streamed runs work in, kept between runs: a fresh thread per run starts torch's OpenMP team afresh, which
# cost short CPU runs about 10 % (MMS-TTS's six sentences on a 2-core CPU: 4.4-4.5 s in a warm thread, 4.7-5.2 s in a
# new one). Threads are made only as concurrent streams need them (one run per device at a time, waiting ones too).
WORKERS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="studio-stream")


def stream(run: Callable[[OnAudio], Any], *, cancel: threading.Event | None = None) -> Iterator[Piece | Done]:
    """Call `run(on_audio)` in a worker thread (WORKERS); yield a Piece for each call of on_audio as it happens, then
    Done(result). An error of the run is raised here, after the pieces made before it. A reader that stops early
    (closes the iterator: a client that went away) sets `cancel`, so the run stops at its next step and frees the
    device; it is not waited for. The worker runs in a copy of the caller's context (Gradio's request state)."""
    pieces: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def on_audio(samples: np.ndarray, rate: int) -> None:
        pieces.put(Piece(np.array(samples, dtype=np.float32, copy=True), int(rate)))

    def work() -> None:
        try:
            outcome["value"] = run(on_audio)
        except BaseException as error:  # handed to the reader, raised in its thread
            outcome["error"] = error
        finally:
            pieces.put(_END)

    WORKERS.submit(contextvars.copy_context().run, work)
    finished = False
    try:
        while True:
            item = pieces.get()
            if item is _END:
                finished = True
                break
            yield item
        if "error" in outcome:
            raise outcome["error"]
        yield Done(outcome.get("value"))
    finally:
        if not finished and cancel is not None:
            cancel.set()
