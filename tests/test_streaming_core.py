"""The streaming seam: RunContext.audio hands pieces on; studio.streaming.stream reads them while the run goes on."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from studio.errors import Cancelled
from studio.run import RunContext
from studio.streaming import Done, Piece, stream


def test_pieces_arrive_while_the_run_goes_on_then_its_result():
    second = threading.Event()

    def run(on_audio):
        ctx = RunContext(on_audio=on_audio)
        ctx.audio(np.ones(4, dtype=np.float32), 8)
        assert second.wait(5), "the reader never saw the first piece while the run was still going"
        ctx.audio(np.zeros((2, 0), dtype=np.float32), 8)  # an empty piece is not handed on
        ctx.audio(np.full(2, 0.5, dtype=np.float32), 8)
        return "result"

    items = stream(run)
    first = next(items)
    assert isinstance(first, Piece) and first.sample_rate == 8 and first.seconds == 0.5
    second.set()
    rest = list(items)
    assert [type(i) for i in rest] == [Piece, Done]
    assert rest[0].samples.tolist() == [0.5, 0.5] and rest[1].value == "result"


def test_an_error_of_the_run_comes_after_the_pieces_made_before_it():
    def run(on_audio):
        on_audio(np.ones(3, dtype=np.float32), 16)
        raise Cancelled("cancelled by the user")

    items = stream(run)
    assert isinstance(next(items), Piece)
    with pytest.raises(Cancelled):
        next(items)


def test_a_reader_that_goes_away_cancels_the_run():
    cancel = threading.Event()
    stopped = threading.Event()

    def run(on_audio):
        ctx = RunContext(cancel=cancel, on_audio=on_audio)
        ctx.audio(np.ones(2, dtype=np.float32), 8)
        try:
            while True:  # a run's steps, each checking for cancel
                ctx.check()
                cancel.wait(0.01)
        finally:
            stopped.set()

    items = stream(run, cancel=cancel)
    next(items)
    items.close()
    assert cancel.is_set() and stopped.wait(5)


def test_a_piece_is_a_copy_the_run_may_reuse_its_buffer():
    buffer = np.ones(2, dtype=np.float32)

    def run(on_audio):
        on_audio(buffer, 8)
        buffer[:] = 0.0
        return None

    pieces = [i for i in stream(run) if isinstance(i, Piece)]
    assert pieces[0].samples.tolist() == [1.0, 1.0]


def test_a_context_without_a_reader_says_so_and_drops_pieces():
    ctx = RunContext()
    assert not ctx.listening
    ctx.audio(np.ones(2, dtype=np.float32), 8)  # nobody to hand it to: nothing happens
    heard = []
    assert RunContext(on_audio=lambda samples, rate: heard.append(rate)).listening


def test_a_retried_run_hands_on_only_what_the_listener_has_not_heard():
    heard = []
    ctx = RunContext(on_audio=lambda samples, rate: heard.append(samples.copy()))
    ramp = np.arange(12, dtype=np.float32)
    ctx.audio(ramp[0:4], 8)
    ctx.audio(ramp[4:8], 8)
    ctx.retrying()  # out of memory: the manager runs it again from the start, in other pieces
    for start, end in ((0, 3), (3, 6), (6, 10)):
        ctx.audio(ramp[start:end], 8)
    ctx.retrying()
    stereo = np.stack([ramp, -ramp])
    ctx.audio(stereo[:, 0:11], 8)  # (channels, frames): cut along the frames
    assert np.concatenate([h if h.ndim == 1 else h[0] for h in heard]).tolist() == ramp[:11].tolist()
    assert [h.shape[-1] for h in heard] == [4, 4, 2, 1] and heard[-1].tolist() == [[10.0], [-10.0]]
