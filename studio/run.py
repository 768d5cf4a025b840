"""The seam between adapters and whoever runs them: progress (done, total), stages, cancel, and the audio returned."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from studio.errors import Cancelled


@dataclass
class RunContext:
    """Handed to an adapter's generate(); it knows nothing of any UI."""

    cancel: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[int, int], None] = lambda done, total: None
    on_stage: Callable[[str], None] = lambda stage: None
    # While the run waits for its device: how many runs are ahead of it there, and their estimated seconds left.
    on_wait: Callable[[int, float], None] = lambda ahead, seconds: None
    # Once the run has its device: the estimate it runs by (an Estimate), made when it leaves the queue.
    on_estimate: Callable[[Any], None] = lambda estimate: None
    # Seconds the run has left by what it has measured so far (None: not known), for the runs waiting behind it.
    remaining: Callable[[], float | None] = lambda: None
    # A finished piece of the output, as soon as it is made (streaming: the page's player, /v1/audio/speech): float32
    # samples shaped as Audio.samples, and their rate. Pieces come in order and, joined, are the run's audio as the
    # adapter returns it (before the studio's own finishing, studio.audio.make_peak_safe). Nobody listening: a no-op.
    on_audio: Callable[[np.ndarray, int], None] | None = None
    # Frames handed on so far, and frames the current attempt has made (see retrying): a run retried after running
    # out of memory makes its audio again from the start, and only what is new goes on.
    _heard: int = field(default=0, init=False, repr=False)
    _made: int = field(default=0, init=False, repr=False)

    def progress(self, done: int, total: int) -> None:
        self.on_progress(done, total)

    def stage(self, name: str) -> None:
        self.on_stage(name)

    def waiting(self, ahead: int, seconds: float) -> None:
        self.on_wait(ahead, seconds)

    def planned(self, estimate: Any) -> None:
        self.on_estimate(estimate)

    @property
    def listening(self) -> bool:
        """Someone takes the pieces: an adapter may skip work done only for them (MusicGen's window decodes)."""
        return self.on_audio is not None

    def audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Hand on a finished piece of the output (see on_audio); adapters that make audio piece by piece call it.
        After `retrying`, the part of a piece the listener has already heard is left out."""
        if self.on_audio is None or not samples.shape[-1]:
            return
        start, self._made = self._made, self._made + samples.shape[-1]
        if self._made <= self._heard:
            return
        fresh = samples[..., self._heard - start:] if self._heard > start else samples
        self._heard = self._made
        self.on_audio(fresh, sample_rate)

    def retrying(self) -> None:
        """The run starts over (the manager retries it after running out of memory): its pieces count from the
        start again, and the listener hears only what comes after what it has heard."""
        self._made = 0

    def check(self) -> None:
        """Call between steps: raises Cancelled once the user has asked to stop."""
        if self.cancel.is_set():
            raise Cancelled("cancelled by the user")


@dataclass
class Audio:
    samples: np.ndarray  # float32, (samples,) or (channels, samples)
    sample_rate: int
    info: dict = field(default_factory=dict)  # what the adapter wants kept with the result (tokens, chunks, ...)

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.samples.shape[-1] / float(self.sample_rate)


class LoadedModel(Protocol):
    """What a family's load() returns."""

    def generate(self, request, ctx: RunContext) -> Audio: ...

    def modules(self) -> list:  # torch.nn.Modules holding the weights, for byte counts and leak checks
        ...

    def move(self, torch_device: str) -> None: ...
