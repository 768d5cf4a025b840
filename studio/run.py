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
        """Hand on a finished piece of the output (see on_audio); adapters that make audio piece by piece call it."""
        if self.on_audio is not None and samples.shape[-1]:
            self.on_audio(samples, sample_rate)

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
