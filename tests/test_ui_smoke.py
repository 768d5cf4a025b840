"""The web app served in-process on the tiny cache, driven through gradio_client by its named API endpoints."""

from __future__ import annotations

import re

import socket
from pathlib import Path

import pytest
import soundfile as sf

from studio.settings import Settings
from studio.ui.launch import SHARE_USER, launch_auth, launch_options

ENDPOINTS = {"/music", "/speech", "/sfx", "/estimate", "/memory", "/voices", "/voice_save", "/voice_delete", "/voice_rename"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(make_studio):
    """(client, studio) for the app launched on a free port; closed afterwards."""
    from gradio_client import Client

    from studio.ui.app import build_app, page_options

    studio = make_studio()
    demo = build_app(studio)
    settings = Settings(port=_free_port(), output_dir=studio.settings.output_dir)
    options = launch_options(settings, None)
    demo.launch(prevent_thread_lock=True, quiet=True, **page_options(), **options)
    try:
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        yield client, studio
        client.close()
    finally:
        demo.close()


def _check_audio(path: str, metadata: dict, *, rate: int, duration: float | None = None) -> None:
    info = sf.info(path)
    assert info.samplerate == rate == metadata["sample_rate"]
    assert info.frames / info.samplerate == pytest.approx(metadata["duration"], abs=1e-3)
    if duration is not None:
        assert metadata["duration"] == pytest.approx(duration, abs=0.05)
    assert {"model", "seed", "sample_rate", "duration", "elapsed_s", "estimated_s"} <= set(metadata)


def test_named_api_round_trip(served):
    client, studio = served
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert named == ENDPOINTS  # the page's own events stay private

    path, meta = client.predict(model="facebook/mms-tts-eng", text="hello world", seed=5, api_name="/speech")
    _check_audio(path, meta, rate=16000)
    assert meta["model"] == "facebook/mms-tts-eng" and meta["seed"] == 5 and meta["text"] == "hello world"

    path, meta = client.predict(model="facebook/musicgen-small", prompt="lofi", duration=1, api_name="/music")
    _check_audio(path, meta, rate=32000, duration=1.0)
    assert meta["model"] == "facebook/musicgen-small" and 0 <= meta["seed"] < 2**32
    assert meta["settings"]["guidance_scale"] == 3.0  # not given: the model's default

    estimate = client.predict(model="facebook/musicgen-small", duration=1, api_name="/estimate")
    assert {"seconds", "bytes", "fits", "evicts"} <= set(estimate)
    assert estimate["fits"] is True and estimate["evicts"] == [] and estimate["resident"] is True
    speech = client.predict(model="facebook/mms-tts-eng", text="a much longer sentence to speak " * 4, api_name="/estimate")
    assert speech["seconds"] > 0 and speech["bytes"] > 0

    memory = client.predict(api_name="/memory")
    assert memory["device"] == studio.device.name and memory["budget_bytes"] > 0
    rows = {row["id"]: row for row in memory["models"]}
    assert {"facebook/mms-tts-eng", "facebook/musicgen-small"} <= set(rows)
    assert all(rows[m]["bytes"] > 0 and rows[m]["state"] == "on device" for m in ("facebook/mms-tts-eng", "facebook/musicgen-small"))


def test_bad_requests_explain_and_the_server_stays_up(served):
    client, _ = served
    with pytest.raises(Exception, match="nope/unknown-model"):
        client.predict(model="nope/unknown-model", text="hi", api_name="/speech")
    with pytest.raises(Exception, match="Duration must be between"):
        client.predict(model="facebook/musicgen-small", prompt="lofi", duration=999, api_name="/music")
    with pytest.raises(Exception, match="text"):
        client.predict(model="facebook/mms-tts-eng", api_name="/estimate")  # speech without text has no length
    path, meta = client.predict(model="facebook/mms-tts-eng", text="still here", api_name="/speech")
    assert Path(path).exists() and meta["model"] == "facebook/mms-tts-eng"


def test_cancel_reaches_the_running_generation(make_studio):
    """The Cancel button's path: the session's registered Event stops the run at its next step, shown as gr.Error."""
    import gradio as gr

    from studio.ui.endpoints import Endpoints, user_errors

    endpoints = Endpoints(make_studio())
    stages = []

    def progress(value, desc=None, **_):
        stages.append(desc)
        if re.search(r" · [1-9]\d*/\d+ steps", desc or ""):  # a step has run: the user clicks Cancel
            assert endpoints.cancel("session-1") == 1

    run = user_errors(endpoints.generate)
    with pytest.raises(gr.Error, match="Cancelled by the user"):
        run("music", "facebook/musicgen-small", "lofi", params={"duration": 0.5}, session="session-1", progress=progress)
    assert any(stage.startswith("Generating") for stage in stages) and endpoints.runs.active("session-1") == 0
    assert endpoints.cancel("session-1") == 0  # nothing left to cancel
    assert endpoints.generate("speech", "facebook/mms-tts-eng", "next one", session="session-1").path.exists()


def test_result_details_are_a_readable_table_not_json():
    from studio.ui.text import metadata_markdown

    table = metadata_markdown({
        "model": "facebook/mms-tts-eng", "text": "hi <b>there</b> | [x](y)", "seed": 5, "sample_rate": 16000,
        "channels": 1, "duration": 1.25, "elapsed_s": 0.4, "estimated_s": 1.2, "peak_bytes": 47_800_000,
        "device": "CPU", "placement": "device", "dtype": "float32", "settings": {"speaking_rate": 1.0},
        "file": "a.wav", "format": "wav", "license": "CC-BY-NC-4.0",
    })
    assert "{" not in table and "| Seed | 5 |" in table and "1.25 s at 16 kHz" in table
    assert "<b>" not in table and "\\|" in table  # user text cannot break out of its cell


# ------------------------------------------------------------------ launch decisions (no server, no tunnel)


def test_share_without_auth_makes_a_password_and_says_so_once():
    auth, message = launch_auth(Settings(share=True))
    assert auth is not None and auth[0] == SHARE_USER and len(auth[1]) >= 20
    assert auth[1] in message and SHARE_USER in message
    again, _ = launch_auth(Settings(share=True))
    assert again[1] != auth[1]  # fresh per launch, never a fixed default


@pytest.mark.parametrize("settings,expected", [
    (Settings(), None),
    (Settings(auth=("me", "secret-pass")), ("me", "secret-pass")),
    (Settings(share=True, auth=("me", "secret-pass")), ("me", "secret-pass")),
])
def test_auth_is_the_users_or_none_and_nothing_is_printed(settings, expected):
    assert launch_auth(settings) == (expected, None)


def test_launch_serves_only_the_output_directory(tmp_path):
    options = launch_options(Settings(host="0.0.0.0", port=9000, output_dir=tmp_path / "out"), ("u", "p"))
    assert options["allowed_paths"] == [str((tmp_path / "out").resolve())]
    assert (options["server_name"], options["server_port"], options["auth"]) == ("0.0.0.0", 9000, ("u", "p"))
