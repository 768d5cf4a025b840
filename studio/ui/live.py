"""The page's live player: a run's pieces of audio (studio.run.RunContext.audio) played in the browser as they are made.

A click on Generate with the Stream switch on, for a model that streams, opens a channel here (`LiveRelay.open`: an
unguessable token); the page's script (LIVE_JS) reads `GET /studio/live/<token>` while the run's own event goes on as
always (its progress, Cancel, queue messages and result are untouched), and plays each piece with the Web Audio API,
scheduled end to end, as it arrives. The run's event hands its pieces to the channel (`publisher`) and closes it when
the run ends (`finish`).

Why not Gradio's streaming gr.Audio: it encodes every stream to AAC through an `ffmpeg` process (and then probes
every result file with `ffprobe`), so the page would need FFmpeg installed; and with a streaming output among the
run's outputs Gradio's page stops showing the run's progress. The route needs no login of its own: a token is made
only for a page that has passed Gradio's login, and works for one listener, until its run ends.

The wire format is a sequence of records, each a 12-byte little-endian header (kind u16, channels u16, sample rate
u32, frames u32) and, for a piece (kind 0), `frames * channels` 16-bit samples, interleaved. The last record is an
end (kind 1), whose `channels` field carries the run's outcome (END_DONE, END_CANCELLED, END_FAILED).
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import struct
import threading
import time
from typing import Any, AsyncIterator, Callable

import numpy as np
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from studio.catalog import ModelSpec

LIVE_PATH = "/studio/live/{token}"
PIECE, END = 0, 1
END_DONE, END_CANCELLED, END_FAILED = 0, 1, 2
HEADER = struct.Struct("<HHII")
# Open channels at most: each is one click of a page; the oldest goes first (its page has long gone).
MAX_CHANNELS = 64
# A channel nobody reads is dropped this long after it opened (a run may wait its turn for the device that long) or
# after its run ended (a page that closed before it listened).
UNREAD_OPEN_S = 3600.0
UNREAD_ENDED_S = 120.0
DISCONNECT_POLL_S = 1.0  # how often a waiting listener looks whether the page went away


def encode_piece(samples: Any, sample_rate: int) -> bytes:
    """A piece ((frames,) or (channels, frames), as studio.run.Audio) as a record: 16-bit PCM, channels interleaved.
    Samples past full scale are clipped (the saved file is scaled down as a whole instead,
    studio.audio.make_peak_safe)."""
    frames = np.asarray(samples, dtype=np.float32)
    frames = frames.reshape(1, -1) if frames.ndim == 1 else frames
    pcm = np.round(np.clip(np.nan_to_num(frames, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0) * 32767.0).astype("<i2")
    return HEADER.pack(PIECE, pcm.shape[0], int(sample_rate), pcm.shape[1]) + np.ascontiguousarray(pcm.T).tobytes()


def encode_end(outcome: int) -> bytes:
    return HEADER.pack(END, outcome, 0, 0)


def decode(data: bytes) -> list[tuple[int, int, int, np.ndarray | None]]:
    """The records in `data` as (kind, channels or outcome, sample rate, samples (frames, channels) or None): what
    the page's script reads, for tests and tools."""
    records, at = [], 0
    while at < len(data):
        kind, channels, rate, frames = HEADER.unpack_from(data, at)
        at += HEADER.size
        if kind == PIECE:
            count = frames * channels
            pcm = np.frombuffer(data, dtype="<i2", count=count, offset=at).reshape(frames, channels)
            records.append((kind, channels, rate, pcm.astype(np.float32) / 32767.0))
            at += 2 * count
        else:
            records.append((kind, channels, rate, None))
    return records


class LiveChannel:
    """One click's pieces, from the run's thread to the one listener's response."""

    def __init__(self) -> None:
        self.opened = time.monotonic()
        self.ended_at: float | None = None
        self.listened = False
        self.gone = False  # the listener went away: the run's pieces are not kept
        self.wake: Callable[[], Any] | None = None  # tells the listener a record came (set while one listens)
        self._records: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()

    def put(self, record: bytes) -> None:
        with self._lock:
            if not self.gone and self.ended_at is None:
                self._records.append(record)
        self._wake()

    def end(self, outcome: int) -> None:
        with self._lock:
            if self.ended_at is None:
                self._records.append(encode_end(outcome))
                self.ended_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None:
            try:
                wake()
            except RuntimeError:  # the listener's event loop has closed
                pass

    def take(self) -> tuple[list[bytes], bool]:
        """The records not yet taken, and whether the end is among them."""
        with self._lock:
            records = list(self._records)
            self._records.clear()
            return records, self.ended_at is not None


class LiveRelay:
    """The open channels by token, and the route that serves them (`routes`)."""

    def __init__(self) -> None:
        self._channels: dict[str, LiveChannel] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        """A channel for one click's run; its token goes to the page, which listens on LIVE_PATH."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._prune()
            while len(self._channels) >= MAX_CHANNELS:
                self._channels.pop(next(iter(self._channels)))
            self._channels[token] = LiveChannel()
        return token

    def publisher(self, token: Any) -> Callable[[Any, int], None] | None:
        """The run's on_audio for the channel `token`; None for no channel (Stream off, or one that is gone)."""
        channel = self._get(token)
        if channel is None:
            return None
        return lambda samples, rate: channel.put(encode_piece(samples, rate))

    def finish(self, token: Any, outcome: int) -> None:
        """The run of `token` ended; its listener hears the rest and then the end."""
        channel = self._get(token)
        if channel is not None:
            channel.end(outcome)

    def open_channels(self) -> int:
        with self._lock:
            self._prune()
            return len(self._channels)

    def _get(self, token: Any) -> LiveChannel | None:
        if not isinstance(token, str) or not token:
            return None
        with self._lock:
            return self._channels.get(token)

    def _prune(self) -> None:
        now = time.monotonic()
        for token, channel in list(self._channels.items()):
            if channel.listened:
                continue
            if now - channel.opened > UNREAD_OPEN_S or \
                    (channel.ended_at is not None and now - channel.ended_at > UNREAD_ENDED_S):
                del self._channels[token]

    def _drop(self, token: str, channel: LiveChannel) -> None:
        channel.gone = True
        with self._lock:
            if self._channels.get(token) is channel:
                del self._channels[token]

    # ------------------------------------------------------------------ the route
    def routes(self) -> list[Route]:
        return [Route(LIVE_PATH, self.listen, methods=["GET"])]

    async def listen(self, request: Request) -> Response:
        token = request.path_params["token"]
        with self._lock:
            channel = self._channels.get(token)
            taken = channel is not None and channel.listened
            if channel is not None:
                channel.listened = True
        if channel is None or taken:
            return PlainTextResponse("No such live stream: it has ended, or another player has it. Generate again "
                                     "to hear a run while it is made.", status_code=404)
        return StreamingResponse(self._records(token, channel, request), media_type="application/octet-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _records(self, token: str, channel: LiveChannel, request: Request) -> AsyncIterator[bytes]:
        """The channel's records as the run puts them: woken by each (LiveChannel.wake), and every
        DISCONNECT_POLL_S to see whether the page went away. No polling in between: the server's event loop shares
        the interpreter with the run."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        channel.wake = lambda: loop.call_soon_threadsafe(woken.set)
        try:
            while True:
                woken.clear()
                records, ended = channel.take()
                if records:
                    yield b"".join(records)
                if ended:
                    return
                try:
                    await asyncio.wait_for(woken.wait(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if request is not None and await request.is_disconnected():
                        return
        finally:
            channel.wake = None
            self._drop(token, channel)


def streams(family: Any) -> bool:
    """Whether a family's runs hand their audio on piece by piece (Family.first_audio_units)."""
    return getattr(family, "first_audio_units", None) is not None


def stream_note(spec: ModelSpec, streams_here: bool) -> str:
    """The line under Generate for a model that does not stream: why its result plays when done ('' for one that
    streams: the Stream switch shows instead)."""
    if streams_here:
        return ""
    if "step" in spec.unit:  # a diffusion model: every step refines the whole clip
        return f"{spec.label} denoises the whole clip at once: it plays when done."
    return f"{spec.label} makes its audio in one piece: it plays when done."


# The live player's box (a gr.HTML under Generate), filled and shown by LIVE_JS while a run streams.
LIVE_HTML = ('<div class="studio-live" data-state="idle" hidden><span class="studio-live-dot" aria-hidden="true">'
             '</span><span class="studio-live-text" aria-live="polite"></span>'
             '<button type="button" class="studio-live-stop">Stop</button></div>')

# The page's script (launch's `head`): window.studioLive.start(task, token) listens to a run's channel and plays its
# pieces end to end; a new start, the Stop button, or playing the result's player stops what plays.
LIVE_JS = r"""<script>
window.studioLive = (() => {
  const runs = {};
  const seconds = (s) => s < 10 ? s.toFixed(1) + ' s' : Math.round(s) + ' s';
  const show = (task, state, text) => {
    if (runs[task]) runs[task].status.state = state;
    const panel = document.querySelector('#' + task + '-live .studio-live');
    if (!panel || (panel.dataset.state === state && panel.dataset.text === text)) return;  // no needless layout
    panel.dataset.state = state;
    panel.dataset.text = text;
    panel.hidden = state === 'idle';
    panel.querySelector('.studio-live-text').textContent = text;
    panel.querySelector('.studio-live-stop').hidden = !['waiting', 'playing', 'gap'].includes(state);
  };
  const heard = (run) => run.ctx && run.first !== null ? Math.max(0, Math.min(run.ctx.currentTime, run.next) - run.first) : 0;
  const tick = (task, run) => {
    if (runs[task] !== run) return;
    const played = heard(run), behind = run.next - (run.ctx ? run.ctx.currentTime : 0);
    run.status.heard = played;
    if (run.first === null) {
      show(task, 'waiting', 'Live: waiting for the first audio…');
    } else if (behind > 0.01) {
      show(task, 'playing', run.outcome === null
        ? 'Live: playing as it is made · ' + seconds(played) + ' of ' + seconds(run.seconds) + ' made so far'
        : 'Live: playing · ' + seconds(played) + ' of ' + seconds(run.seconds));
    } else if (run.outcome === null) {
      show(task, 'gap', 'Live: waiting for the next piece · ' + seconds(played) + ' heard');
    } else {
      finish(task, run, 'done', 'Live: played ' + seconds(run.seconds) + ' as it was made' +
             (run.outcome === 0 ? '; the result is below' : ', before the run failed'));
      return;
    }
    run.timer = setTimeout(() => tick(task, run), 200);
  };
  const finish = (task, run, state, text) => {
    run.status.state = state;
    clearTimeout(run.timer);
    show(task, state, text);
    if (run.ctx) run.ctx.close();
  };
  const play = (run, pcm, channels, rate, frames) => {
    if (!frames) return;
    if (!run.ctx) {  // at the run's own rate where the browser allows it: nothing to resample in the page
      try { run.ctx = new AudioContext({sampleRate: rate}); } catch (error) { run.ctx = new AudioContext(); }
    }
    const ctx = run.ctx;
    if (ctx.state === 'suspended') ctx.resume();
    const buffer = ctx.createBuffer(channels, frames, rate);
    for (let c = 0; c < channels; c++) {
      const out = buffer.getChannelData(c);
      for (let i = 0; i < frames; i++) out[i] = pcm[i * channels + c] / 32768;
    }
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const at = Math.max(run.next, ctx.currentTime + 0.05);
    source.start(at);
    if (run.first === null) { run.first = at; run.status.firstAt = performance.now(); }
    run.next = at + buffer.duration;
    run.seconds += buffer.duration;
    run.status.pieces += 1;
    run.status.seconds = run.seconds;
    run.sources.push(source);
  };
  const stop = (task, state, text) => {
    const run = runs[task];
    if (run) {
      delete runs[task];
      run.controller.abort();
      clearTimeout(run.timer);
      run.sources.forEach((source) => { try { source.stop(); } catch (e) {} });
      if (run.ctx) run.ctx.close();
      run.status.state = state || 'stopped';
    }
    show(task, state || 'idle', text || '');
  };
  const start = async (task, token) => {
    stop(task);
    if (!token) return;
    const run = {controller: new AbortController(), ctx: null, first: null, next: 0, seconds: 0, sources: [],
                 outcome: null, timer: null, status: {state: 'waiting', pieces: 0, seconds: 0, heard: 0, firstAt: null}};
    runs[task] = run;
    window.studioLive.last[task] = run.status;
    tick(task, run);
    const root = ((window.gradio_config && window.gradio_config.root) || (location.origin + location.pathname)).replace(/\/+$/, '');
    try {
      const response = await fetch(root + '/studio/live/' + token, {signal: run.controller.signal, cache: 'no-store'});
      if (!response.ok) { finish(task, run, 'failed', 'Live: could not listen (' + response.status + '); the result plays when done'); return; }
      const reader = response.body.getReader();
      // The bytes as they come, parsed without joining them again and again: a record's header, then its samples.
      const chunks = [];
      let have = 0, header = null;
      const take = (n) => {
        const out = new Uint8Array(n);
        for (let at = 0; at < n;) {
          const chunk = chunks[0], k = Math.min(chunk.length, n - at);
          out.set(chunk.subarray(0, k), at);
          at += k;
          if (k === chunk.length) chunks.shift(); else chunks[0] = chunk.subarray(k);
        }
        have -= n;
        return out;
      };
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        chunks.push(value);
        have += value.length;
        for (;;) {
          if (header === null) {
            if (have < 12) break;
            const view = new DataView(take(12).buffer);
            header = {kind: view.getUint16(0, true), channels: view.getUint16(2, true),
                      rate: view.getUint32(4, true), frames: view.getUint32(8, true)};
          }
          const size = header.kind === 0 ? header.frames * header.channels * 2 : 0;
          if (have < size) break;
          if (header.kind === 0) play(run, new Int16Array(take(size).buffer), header.channels, header.rate, header.frames);
          else run.outcome = header.channels;
          header = null;
        }
        if (runs[task] !== run) return;
      }
    } catch (error) {
      if (runs[task] === run) finish(task, run, 'failed', 'Live: the stream broke off; the result plays when done');
      return;
    }
    if (runs[task] !== run) return;
    if (run.outcome === 1) stop(task, 'cancelled', 'Live: cancelled');
    else if (run.first === null) stop(task, 'idle');  // nothing was heard: the result or the error says the rest
    else if (run.outcome === null) run.outcome = 2;  // the tick under way plays the rest out, then says so
  };
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('.studio-live-stop');
    if (!button) return;
    const box = button.closest('[id$="-live"]');
    if (box) stop(box.id.slice(0, -'-live'.length), 'stopped', 'Live: stopped; the run goes on and its result comes below');
  });
  document.addEventListener('play', (event) => {  // the result's player starts: the live one gives way
    const box = event.target.closest && event.target.closest('[id$="-audio"]');
    if (box && runs[box.id.slice(0, -'-audio'.length)]) stop(box.id.slice(0, -'-audio'.length), 'idle');
  }, true);
  return {start, stop, last: {}};
})();
</script>"""
