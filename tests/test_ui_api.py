"""The named API through gradio_client against the app on a free port, with a simulated GPU budget.

Each endpoint returns audio of the requested length with its metadata; /estimate and /memory agree with what
then happens; a budget that fits one model at a time keeps one model on the device; errors are readable
and leave the server working; a queued request has a place; job.cancel() stops the run itself.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.serving import serving

MUSIC, SPEECH, SFX, BARK = "facebook/musicgen-small", "facebook/mms-tts-eng", "cvssp/audioldm2", "suno/bark-small"
GB = 10**9


def _on_device(memory: dict) -> set[str]:
    return {row["id"] for row in memory["models"] if row["state"] in ("on device", "in use")}


def _audio(path: str, metadata: dict) -> tuple[int, float]:
    info = sf.info(path)
    assert info.samplerate == metadata["sample_rate"]
    assert info.frames / info.samplerate == pytest.approx(metadata["duration"], abs=1e-3)
    assert {"model", "seed", "sample_rate", "duration", "elapsed_s", "estimated_s", "peak_bytes"} <= set(metadata)
    return info.samplerate, info.frames / info.samplerate


def test_every_endpoint_returns_audio_of_the_requested_length(make_studio):
    with serving(make_studio(8 * GB)) as client:
        path, meta = client.predict(model=MUSIC, prompt="lofi piano", duration=1.5, seed=3, api_name="/music")
        assert _audio(path, meta) == (32000, pytest.approx(1.5, abs=0.05))
        assert (meta["model"], meta["seed"], meta["settings"]["duration"]) == (MUSIC, 3, 1.5)

        path, meta = client.predict(model=SFX, prompt="glass shattering", duration=1, seed=4, steps=2, api_name="/sfx")
        assert _audio(path, meta)[1] == pytest.approx(1.0, abs=0.05)
        assert meta["model"] == SFX and meta["settings"]["steps"] == 2

        path, meta = client.predict(model=SPEECH, text="Hello there.", seed=5, format="flac", api_name="/speech")
        assert path.endswith(".flac") and _audio(path, meta)[0] == 16000
        assert meta["text"] == "Hello there." and meta["format"] == "flac"


def test_estimate_and_memory_agree_and_one_model_fits_at_a_time(make_studio, tmp_path):
    # Size the budget from the estimates: room for either run alone, never for both models at once.
    probe = make_studio(8 * GB)
    from studio.ui.endpoints import Endpoints

    endpoints = Endpoints(probe)
    text, short = "Hello there, how are you?", {"max_chunk_seconds": 1.0}
    music = endpoints.estimate("music", MUSIC, "lofi", {"duration": 1})
    speech = endpoints.estimate("speech", BARK, text, short)
    budget = max(music.bytes, speech.bytes) + 1_000_000
    assert music.weights_bytes + speech.bytes > budget, "the tiny models no longer exercise eviction"

    studio = make_studio(8 * GB, budget=budget)
    with serving(studio) as client:
        before = client.predict(api_name="/memory")
        assert before["budget_bytes"] == budget and before["used_bytes"] == 0 and before["models"] == []

        estimate = client.predict(model=MUSIC, duration=1, api_name="/estimate")
        assert estimate["fits"] and estimate["evicts"] == [] and estimate["summary"].startswith("about ")
        _, meta = client.predict(model=MUSIC, prompt="lofi", duration=1, api_name="/music")
        assert meta["estimated_bytes"] == estimate["bytes"]  # what the page showed is what the run planned
        assert meta["peak_bytes"] <= budget
        assert _on_device(client.predict(api_name="/memory")) == {MUSIC}

        estimate = client.predict(model=BARK, text=text, max_chunk_seconds=1.0, api_name="/estimate")
        assert estimate["fits"] and estimate["evicts"] == [MUSIC]
        assert f"will unload {MUSIC}" in estimate["summary"]
        _, meta = client.predict(model=BARK, text=text, max_chunk_seconds=1.0, api_name="/speech")
        assert meta["peak_bytes"] <= budget

        memory = client.predict(api_name="/memory")
        assert _on_device(memory) == {BARK}  # music made room for speech
        assert memory["used_bytes"] <= budget
        rows = {row["id"]: row for row in memory["models"]}
        assert rows[BARK]["bytes"] > 0 and rows[BARK]["last_used"] is not None
        assert MUSIC not in rows or rows[MUSIC]["state"] == "in RAM"  # an unloaded model leaves no row


def test_bad_input_is_a_readable_error_and_the_next_request_works(make_studio):
    with serving(make_studio(8 * GB)) as client:
        cases = [
            ({"model": "nope/unknown", "prompt": "x", "api_name": "/music"}, "nope/unknown"),
            ({"model": MUSIC, "prompt": "x", "duration": 999, "api_name": "/music"}, "Duration must be between"),
            ({"model": MUSIC, "prompt": "   ", "api_name": "/music"}, "prompt is empty"),
            ({"model": SPEECH, "text": "hi", "seed": -5, "api_name": "/speech"}, "Seed must be between"),
            ({"model": SPEECH, "text": "hi", "format": "aiff", "api_name": "/speech"}, "aiff"),
            ({"model": SPEECH, "prompt": "hi", "api_name": "/music"}, "not a music model"),
        ]
        for kwargs, message in cases:
            with pytest.raises(Exception, match=message):
                client.predict(**kwargs)
        path, meta = client.predict(model=SPEECH, text="still here", api_name="/speech")
        assert Path(path).exists() and meta["model"] == SPEECH


def test_a_queued_request_has_a_place_and_job_cancel_stops_the_run(make_studio):
    from gradio_client.utils import Status

    studio = make_studio(8 * GB)
    with serving(studio) as client:
        client.predict(model=MUSIC, prompt="warm up", duration=0.5, api_name="/music")  # loaded: the long run starts at once
        long_run = client.submit(model=MUSIC, prompt="a very long drone", duration=30, api_name="/music")
        deadline = time.monotonic() + 30
        while studio.manager.state_of(MUSIC) != "in use" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert studio.manager.state_of(MUSIC) == "in use"

        queued = client.submit(model=SPEECH, text="after the drone", api_name="/speech")
        # It waits in the studio's queue (inside the handler, so Gradio reports it as running), and its status
        # says its place and the time the drone has left: first in line, one run ahead. (For the moment between
        # entering the queue and finding its place it says "Waiting for the device" alone.)
        waits = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = queued.status()
            said = [unit.desc for unit in status.progress_data or () if unit.desc]
            if status.code == Status.PROGRESS and said and said[-1].startswith("Waiting for the device"):
                waits.append(said[-1])
                if said[-1] != "Waiting for the device":
                    break
            time.sleep(0.05)
        assert waits and re.fullmatch(r"Waiting for the device: 1 run ahead, (about .+|finishing)", waits[-1]), \
            f"the second request should wait first in line for the device, and say so: {waits[-3:]}"
        assert studio.manager.state_of(SPEECH) != "in use"  # waiting, not loading or running

        started = time.monotonic()
        assert long_run.cancel()
        path, meta = queued.result(timeout=60)  # it runs once the drone has stopped
        assert meta["model"] == SPEECH and Path(path).exists()
        assert time.monotonic() - started < 30
        deadline = time.monotonic() + 10
        while studio.manager.state_of(MUSIC) == "in use" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert studio.manager.state_of(MUSIC) == "on device"  # stopped, and ready for the next run
        files = [p.name for p in Path(studio.settings.output_dir).glob("*.wav")]
        assert not any("very-long-drone" in name for name in files), files
