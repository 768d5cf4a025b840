"""The OpenAI-compatible speech API (/v1/audio/speech, /v1/models), driven by the official `openai` client against the
app served on a free port with the product's launch options, over the tiny checkpoints and a test-only streaming
speech model (tests/talker_family.py) that a test can hold between its first and second sentence."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studio.settings import Settings
from studio.ui.openai_api import KEY_PREFIX, api_key_for
from tests import talker_family
from tests.talker_family import GATE, TALKER

openai = pytest.importorskip("openai")

KEY = "test-key-0123456789"
MMS = "facebook/mms-tts-eng"


@pytest.fixture(scope="module")
def served(tiny_cache, tmp_path_factory):
    """(openai client, base URL, studio) for the app with the OpenAI routes, keyed, on a free port."""
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.ui.app import build_app, page_options
    from studio.ui.endpoints import Endpoints
    from studio.ui.launch import launch_options
    from studio.ui.openai_api import speech_routes
    from tests.serving import free_port

    talker_family.install(tiny_cache)
    settings = Settings(port=free_port(), output_dir=tmp_path_factory.mktemp("out"), memory_reserve=0, api_key=KEY)
    studio = Studio(settings, catalog=talker_family.catalog_with_talker(), device=CpuDevice())
    key, message = api_key_for(settings)
    assert key == KEY and message is None
    demo = build_app(studio)
    demo.launch(prevent_thread_lock=True, quiet=True, **page_options(),
                **launch_options(settings, None, speech_routes(Endpoints(studio), key)))
    url = f"http://127.0.0.1:{settings.port}"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
    try:
        yield client, url, studio
    finally:
        client.close()
        demo.close()


@pytest.fixture
def gate():
    GATE.reset()
    yield GATE
    GATE.open.set()  # never leave a run waiting


def _history(studio):
    return studio.history.list("", limit=50)


def _state(studio, model: str) -> str | None:
    return next((row["state"] for row in studio.manager.snapshot()["models"] if row["id"] == model), None)


def test_done_means_tts_alloy_hello_speaks_through_the_cpu_default(served):
    client, _, studio = served
    audio = client.audio.speech.create(model="tts", voice="alloy", input="Hello")  # the line, as it is
    samples, rate = sf.read(io.BytesIO(audio.content))  # OpenAI's default format, mp3
    assert rate == 24000 and len(samples) > 0
    item = _history(studio)[0]
    assert item.model == "eustlb/pocket-tts" and item.settings["voice"] == "alba"  # alloy, on Pocket TTS
    assert item.metadata["source"] == "api"
    assert item.metadata["api"] == {"endpoint": "/v1/audio/speech", "model": "tts", "voice": "alloy",
                                    "response_format": "mp3", "stream_format": "audio"}
    from studio.ui.history_tab import item_metadata
    from studio.ui.text import metadata_markdown

    assert "| From | the OpenAI-compatible API (/v1/audio/speech; model tts, voice alloy) |" in \
        metadata_markdown(item_metadata(item))  # what History's details show


def test_every_format_decodes_to_the_same_speech(served):
    client, _, studio = served
    decoded = {}
    for fmt in ("wav", "flac", "mp3", "opus", "pcm"):
        # stream false: the finished file's samples (streamed pieces are not yet scaled as the file is: see below)
        body = client.audio.speech.create(model=MMS, voice="nova", input="Hello there.", response_format=fmt,
                                          extra_body={"seed": 3, "stream": False}).content
        if fmt == "pcm":
            decoded[fmt] = (np.frombuffer(body, "<i2").astype(np.float32) / 32767, 16000)
        else:
            decoded[fmt] = sf.read(io.BytesIO(body), dtype="float32")
    reference, rate = decoded["flac"]
    assert rate == 16000 and decoded["wav"][1] == decoded["mp3"][1] == 16000 and decoded["opus"][1] == 16000
    for fmt in ("wav", "pcm"):  # lossless (16-bit): the same samples as the file History keeps
        assert len(decoded[fmt][0]) == len(reference)
        assert np.abs(decoded[fmt][0] - reference).max() < 2e-4
    for fmt in ("mp3", "opus"):  # lossy, the same length
        assert abs(len(decoded[fmt][0]) - len(reference)) <= 0.01 * rate
    # Streamed as it is made, the same speech: the samples as the model made them, which the file scales below
    # -1 dBFS when they peak above it (the README says so); this tiny voice peaks at full scale.
    streamed, _ = sf.read(io.BytesIO(client.audio.speech.create(
        model=MMS, voice="nova", input="Hello there.", response_format="wav", extra_body={"seed": 3}).content),
        dtype="float32")
    assert len(streamed) == len(reference)
    gain = np.abs(reference).max() / np.abs(streamed).max()
    assert 0.5 < gain <= 1.0 and np.abs(streamed * gain - reference).max() < 2e-3
    rows = _history(studio)[:6]
    assert [row.format for row in rows] == ["wav", "wav", "wav", "mp3", "flac", "wav"]  # pcm and opus keep a wav
    assert all(row.metadata["source"] == "api" for row in rows)


def test_models_lists_the_catalog_speech_models_and_the_aliases(served):
    client, _, studio = served
    models = {m.id: m for m in client.models.list()}
    assert set(studio.catalog.ids("speech")) <= set(models)
    assert not set(studio.catalog.ids("music")) & set(models)
    assert models["tts"].model_extra["alias_of"] == "eustlb/pocket-tts"  # the CPU's speech default
    assert models["tts-1-hd"].model_extra["alias_of"] == "suno/bark"
    assert "alba" in models["eustlb/pocket-tts"].model_extra["voices"]
    assert client.models.retrieve(MMS).id == MMS


def test_the_first_bytes_arrive_while_the_run_still_goes_on(served, gate):
    client, _, studio = served
    text = "One. Two. Three."
    with client.audio.speech.with_streaming_response.create(model=TALKER, voice="alloy", input=text,
                                                            response_format="wav") as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first.startswith(b"RIFF") and first[8:12] == b"WAVE"
        # The run is held before its second sentence: the bytes came from its first piece, not from the file.
        assert not gate.stopped.is_set() and _state(studio, TALKER) == "in use"
        gate.open.set()
        body = first + b"".join(chunks)
    samples, rate = sf.read(io.BytesIO(body), dtype="float32")
    saved, _ = sf.read(str(studio.history.path_of(_history(studio)[0])), dtype="float32")
    assert rate == 16000 and len(samples) == len(saved) == 3 * int(talker_family.SENTENCE_S * 16000)
    assert np.abs(samples - saved).max() < 2e-4


def test_sse_sends_base64_deltas_then_done(served, gate):
    client, url, _ = served
    gate.open.set()
    import httpx

    response = httpx.post(f"{url}/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                          json={"model": TALKER, "input": "One. Two.", "voice": "echo", "response_format": "pcm",
                                "stream_format": "sse", "instructions": "Speak warmly."})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-studio-ignored"] == "instructions"  # no model here takes instructions
    events = [json.loads(line[len("data: "):]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 2 + ["speech.audio.done"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) == 2 * 2 * int(talker_family.SENTENCE_S * 16000)


@pytest.mark.parametrize("key", ["wrong-key-000000", None])
def test_a_wrong_or_missing_key_is_401(served, key):
    _, url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key or "unused", max_retries=0,
                           default_headers={} if key else {"Authorization": ""})
    with pytest.raises(openai.AuthenticationError) as caught:
        client.audio.speech.create(model=MMS, voice="alloy", input="Hello")
    error = caught.value.body
    assert caught.value.status_code == 401 and error["code"] == "invalid_api_key" and "wrong-key" not in str(error)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize("fields, param, says", [
    ({"model": "tts-9"}, "model", ["'tts-9'", "eustlb/pocket-tts", "tts-1-hd"]),
    ({"voice": "darth"}, "voice", ["'darth'", "alba", "marius"]),
    ({"model": MMS, "voice": "darth"}, "voice", ["'darth'", "alloy"]),
    ({"response_format": "aac"}, "response_format", ["'aac'", "AAC encoder", "wav, pcm"]),
    ({"response_format": "ogg"}, "response_format", ["'ogg'", "mp3, opus, flac, wav, pcm"]),
    ({"input": "   "}, "input", ["empty"]),
    ({"model": MMS, "input": "a" * 20_001}, "input", ["20,001", "20,000"]),
    ({"speed": 0}, "speed", ["speed 0", "0.25 to 4"]),
    ({"speed": 100}, "speed", ["speed 100", "0.25 to 4"]),
    ({"speed": 1.5}, "speed", ["speed 1.5", "eustlb/pocket-tts", "MMS-TTS"]),
    ({"model": MMS, "speed": 3.0}, "speed", ["speed 3", "0.5 to 2"]),
    ({"stream_format": "chunks"}, "stream_format", ["'chunks'", "audio, sse"]),
])
def test_bad_input_is_an_openai_shaped_error_naming_the_value(served, fields, param, says):
    client, _, _ = served
    body = {"model": "tts", "voice": "alloy", "input": "Hello", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**body)
    error = caught.value.body
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param
    for text in says:
        assert text.lower() in error["message"].lower(), error["message"]


def test_speed_is_mms_speaking_rate(served):
    client, _, studio = served
    client.audio.speech.create(model=MMS, voice="alloy", input="Hello", response_format="wav", speed=1.5,
                               extra_body={"stream": False})
    assert _history(studio)[0].settings["speaking_rate"] == 1.5


def test_a_client_that_goes_away_mid_stream_frees_the_device(served, gate):
    client, _, studio = served
    with client.audio.speech.with_streaming_response.create(model=TALKER, voice="alloy", input="Uno. Dos. Tres.",
                                                            response_format="pcm") as response:
        next(response.iter_bytes())
        assert gate.started.is_set() and not gate.stopped.is_set()
        left = time.monotonic()
    # The gate never opens: only the cancel can end the run, at its next check (every 5 ms while it waits).
    assert gate.stopped.wait(5), "the run went on after its client left"
    assert gate.outcome == "cancelled" and time.monotonic() - left < 2.0
    started = time.monotonic()
    audio = client.audio.speech.create(model=MMS, voice="alloy", input="Next.", response_format="wav")
    assert sf.read(io.BytesIO(audio.content))[1] == 16000 and time.monotonic() - started < 30
    assert _state(studio, TALKER) != "in use"
    assert all(row.model != TALKER or row.prompt != "Uno. Dos. Tres." for row in _history(studio))


def test_a_key_is_made_for_auth_or_share_and_none_for_a_local_studio():
    assert api_key_for(Settings()) == (None, None)
    for settings in (Settings(auth=("me", "secret-pass")), Settings(share=True)):
        key, message = api_key_for(settings)
        assert key.startswith(KEY_PREFIX) and len(key) > 30 and key in message
    assert api_key_for(Settings(share=True, api_key="mine-12345678")) == ("mine-12345678", None)
    assert "mine-12345678" not in repr(Settings(api_key="mine-12345678"))


def test_api_key_from_the_flag_or_the_environment_and_a_bad_one_refused_without_echo():
    from studio.errors import InvalidInput
    from studio.settings import parse_settings

    assert parse_settings(["--api-key", "flag-key-123"], env={"STUDIO_API_KEY": "env-key-1234"}).api_key == "flag-key-123"
    assert parse_settings([], env={"STUDIO_API_KEY": "env-key-1234"}).api_key == "env-key-1234"
    with pytest.raises(InvalidInput) as caught:
        parse_settings([], env={"STUDIO_API_KEY": "short"})
    assert "short" not in str(caught.value) and "STUDIO_API_KEY" in str(caught.value)
