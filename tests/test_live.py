"""The page's live channel (studio/ui/live.py): records that decode to the pieces a run handed on, one listener per
click, unknown and finished channels refused, a listener that goes away drops its channel; the Speech tab opens a
channel only with Stream on for a model that streams. The browser's side is tests/test_browser_stream.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from studio.ui import live as live_module
from studio.ui.live import END, END_CANCELLED, END_DONE, PIECE, LiveRelay, decode, encode_piece, stream_note


def _client(relay: LiveRelay) -> TestClient:
    return TestClient(Starlette(routes=relay.routes()))


def test_a_piece_round_trips_as_16_bit_pcm_mono_and_stereo():
    mono = np.linspace(-1.0, 1.0, 101, dtype=np.float32)
    stereo = np.stack([mono, -mono])
    records = decode(encode_piece(mono, 24000) + encode_piece(stereo, 32000))
    assert [(kind, channels, rate) for kind, channels, rate, _ in records] == [(PIECE, 1, 24000), (PIECE, 2, 32000)]
    np.testing.assert_allclose(records[0][3][:, 0], mono, atol=1 / 32767)
    np.testing.assert_allclose(records[1][3].T, stereo, atol=1 / 32767)
    # Past full scale is clipped, not wrapped; NaN is silence.
    loud = decode(encode_piece(np.array([2.0, -3.0, np.nan], dtype=np.float32), 8000))[0][3][:, 0]
    np.testing.assert_allclose(loud, [1.0, -1.0, 0.0], atol=1 / 32767)


def test_the_listener_hears_every_piece_in_order_then_the_end():
    relay = LiveRelay()
    token = relay.open()
    publish = relay.publisher(token)
    pieces = [np.full(240 * (n + 1), n / 10, dtype=np.float32) for n in range(5)]

    def run():
        for piece in pieces:
            publish(piece, 24000)
        relay.finish(token, END_DONE)

    worker = threading.Thread(target=run)
    worker.start()
    with _client(relay) as client:
        response = client.get(f"/studio/live/{token}")
    worker.join()
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    records = decode(response.content)
    assert [r[0] for r in records] == [PIECE] * 5 + [END] and records[-1][1] == END_DONE
    for (_, _, rate, samples), piece in zip(records, pieces):
        assert rate == 24000
        np.testing.assert_allclose(samples[:, 0], piece, atol=1 / 32767)
    assert relay.open_channels() == 0  # heard to the end: gone


def test_one_listener_per_channel_and_unknown_or_ended_channels_are_refused():
    relay = LiveRelay()
    token = relay.open()
    relay.finish(token, END_CANCELLED)
    with _client(relay) as client:
        assert decode(client.get(f"/studio/live/{token}").content)[-1][:2] == (END, END_CANCELLED)
        again = client.get(f"/studio/live/{token}")
        assert again.status_code == 404 and "Generate again" in again.text
        assert client.get("/studio/live/not-a-token").status_code == 404
    # A run with no channel (Stream off, or a forged token) hands its pieces to no one.
    assert relay.publisher("") is None and relay.publisher(None) is None and relay.publisher("nope") is None
    relay.finish("nope", END_DONE)  # no error


def test_channels_are_capped_and_unread_ones_expire(monkeypatch):
    relay = LiveRelay()
    tokens = [relay.open() for _ in range(live_module.MAX_CHANNELS + 3)]
    assert relay.open_channels() == live_module.MAX_CHANNELS
    assert relay.publisher(tokens[0]) is None and relay.publisher(tokens[-1]) is not None  # the oldest went first
    relay.finish(tokens[-1], END_DONE)
    monkeypatch.setattr(live_module, "UNREAD_ENDED_S", 0.0)
    assert relay.open_channels() == live_module.MAX_CHANNELS - 1  # ended and never read
    monkeypatch.setattr(live_module, "UNREAD_OPEN_S", 0.0)
    assert relay.open_channels() == 0


def test_a_listener_that_goes_away_drops_its_channel_and_the_run_goes_on():
    relay = LiveRelay()
    token = relay.open()
    publish = relay.publisher(token)
    publish(np.zeros(100, dtype=np.float32), 16000)
    channel = relay._get(token)

    async def leave():
        iterator = relay._records(token, channel, request=None)
        first = await iterator.__anext__()
        await iterator.aclose()  # the page closed its fetch
        return first

    import asyncio

    assert decode(asyncio.run(leave()))[0][0] == PIECE
    assert relay.open_channels() == 0 and channel.gone
    publish(np.zeros(100, dtype=np.float32), 16000)  # the run's later pieces go nowhere, without error
    relay.finish(token, END_DONE)
    assert channel.take() == ([], False)


@pytest.mark.parametrize("unit, expected", [("steps", "denoises the whole clip at once"),
                                            ("frames", "makes its audio in one piece")])
def test_a_model_that_does_not_stream_says_why(unit, expected):
    class Spec:
        label = "Some model"

    Spec.unit = unit
    assert expected in stream_note(Spec(), False) and stream_note(Spec(), True) == ""


def test_generate_opens_a_channel_only_with_stream_on_for_a_model_that_streams_and_the_pieces_are_the_file(
        make_studio):
    import gradio as gr
    import soundfile as sf

    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab, on_start, stream_updates

    endpoints = Endpoints(make_studio())
    with gr.Blocks() as demo, gr.Tabs():
        speech = build_tab(demo, "speech", endpoints)
        music = build_tab(demo, "music", endpoints)

    def start(tab, model, stream, language=None):
        return on_start(tab, {tab.model: model, tab.language: language, tab.ui.stream: stream})[1]

    mms = "facebook/mms-tts-eng"
    token = start(speech, "facebook/mms-tts", True, mms)
    assert token and endpoints.live.publisher(token) is not None
    assert start(speech, "facebook/mms-tts", False, mms) == ""  # Stream off
    assert start(music, "cvssp/audioldm2-music", True) == ""  # a diffusion model
    assert start(music, "no/such-model", True) == ""  # the run itself says what is wrong
    switch, note = stream_updates(endpoints, endpoints.studio.catalog.get("cvssp/audioldm2-music"))
    assert switch["visible"] is False and "denoises the whole clip at once" in note["value"]
    switch, note = stream_updates(endpoints, endpoints.studio.catalog.get("facebook/musicgen-small"))
    assert switch["visible"] is True and note["visible"] is False

    # The run hands its pieces to the channel; joined, they are the saved file (to 16-bit PCM).
    text = "Hello there. This is the second sentence, a little longer than the first one. And a third."
    result = endpoints.generate("speech", mms, text, seed=3, on_audio=endpoints.live.publisher(token))
    endpoints.live.finish(token, END_DONE)
    with _client(endpoints.live) as client:
        records = decode(client.get(f"/studio/live/{token}").content)
    pieces = [samples[:, 0] for kind, _, _, samples in records if kind == PIECE]
    assert len(pieces) >= 2 and records[-1][:2] == (END, END_DONE)
    saved, _ = sf.read(result.path, dtype="float32")
    joined = np.concatenate(pieces)
    assert joined.shape == saved.shape
    peak = float(np.max(np.abs(joined))) or 1.0
    np.testing.assert_allclose(joined / peak, saved / float(np.max(np.abs(saved)) or 1.0), atol=2e-3)
