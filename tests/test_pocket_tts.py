"""Pocket TTS speaks with a shipped voice or a cloned one: rate, length, seed, progress, cancel, cloning, bad input.

On the tiny checkpoint (tests/tiny_pocket_tts.py: eustlb/pocket-tts with three voices, and its codec repo). Its
end-of-speech head never fires, as a random model's would not, so every chunk runs to the studio's cap
(pocket_tts.frame_cap) and lengths are exact.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile

from models.pocket_tts import MAX_PROMPT_S, frame_cap, CHUNK_CHARS
from models.common import speech_chunks
from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.cli_process import run_studio
from tests.speech_fixtures import cpu_studio, one_thread  # noqa: F401 (one_thread: autouse)

REPO = "eustlb/pocket-tts"
RATE = 24000
HOP = 1920  # samples a frame
PAUSE = int(0.15 * RATE)  # the pause before each chunk after the first (models.common.SpokenChunks)
TEXT = "Hello there, how are you?"  # one sentence: one chunk
SHORT = "Hi there."  # 26 frames: the runs that are only compared with each other
LONG = " ".join(f"Sentence number {i} makes the text long enough for two chunks." for i in range(4))  # 236 chars


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two different 2 s voices (a low hum and a bright buzz) at 44.1 kHz, a 0.5 s one and one over the limit."""
    folder = tmp_path_factory.mktemp("clips")
    paths = {}
    for name, seconds, pitch in (("low", 2.0, 110.0), ("bright", 2.0, 880.0), ("short", 0.5, 220.0),
                                 ("long", MAX_PROMPT_S + 1, 220.0)):
        t = np.arange(int(seconds * 44100)) / 44100
        wave = 0.3 * np.sign(np.sin(2 * np.pi * pitch * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        paths[name] = folder / f"{name}.wav"
        soundfile.write(paths[name], wave.astype(np.float32), 44100)
    return paths


def _request(studio, text=SHORT, seed=7, **params):
    return studio.request("speech", REPO, text, seed=seed, params=params)


@pytest.fixture(scope="module")
def runs(studio, clips):
    """The runs several tests compare, made once."""
    run = lambda **kw: studio.manager.run(_request(studio, **kw)).audio  # noqa: E731
    return {
        "text": run(text=TEXT), "alba": run(), "alba again": run(), "other seed": run(seed=8), "marius": run(voice="marius"),
        "low": run(audio=str(clips["low"])), "low again": run(audio=str(clips["low"])),
        "bright": run(audio=str(clips["bright"])),
    }


def test_speaks_at_24_khz_mono_for_the_capped_length(runs):
    audio = runs["text"]
    assert audio.sample_rate == RATE and audio.samples.ndim == 1
    # One chunk (one sentence), run to its cap: frames x 1920 samples.
    assert audio.samples.shape[0] == frame_cap(TEXT) * HOP
    assert audio.info["frames"] == [frame_cap(TEXT)]
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0


@pytest.fixture(scope="module")
def long_run(studio):
    """A text of two chunks, with the progress it reported."""
    seen = []
    audio = studio.manager.run(_request(studio, LONG), RunContext(on_progress=lambda done, n: seen.append((done, n))))
    return audio.audio, seen


def test_long_text_is_spoken_chunk_by_chunk_within_the_caps(long_run):
    audio, _ = long_run
    chunks = [chunk for chunk, _ in speech_chunks(LONG, CHUNK_CHARS)]
    assert len(chunks) == 2
    assert audio.info["chunks"] == len(chunks)
    expected = sum(frame_cap(c) for c in chunks) * HOP + PAUSE * (len(chunks) - 1)
    assert audio.samples.shape[0] == expected
    # The cap is the upper bound, and it grows with the text: a second plus 0.12 s a character.
    assert frame_cap("Hi.") < frame_cap(TEXT) < frame_cap(chunks[0])


def test_progress_counts_frames_over_the_whole_text(long_run):
    _, seen = long_run
    total = sum(frame_cap(c) for c, _ in speech_chunks(LONG, CHUNK_CHARS))
    assert {n for _, n in seen} == {total}  # one bar across every chunk
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total
    assert set(done) == set(range(1, total + 1))  # every frame of every chunk moved it


def test_same_seed_same_audio_and_another_seed_or_voice_differs(runs):
    assert np.array_equal(runs["alba"].samples, runs["alba again"].samples)
    assert not np.allclose(runs["alba"].samples, runs["other seed"].samples)
    assert not np.allclose(runs["alba"].samples, runs["marius"].samples)


def test_a_cloned_voice_reaches_the_model(runs):
    # The same clip twice: the same audio; two different clips: different audio, and neither is the preset's.
    assert runs["low"].info["cloned"] and not runs["alba"].info["cloned"]
    assert np.array_equal(runs["low"].samples, runs["low again"].samples)
    assert not np.allclose(runs["low"].samples, runs["bright"].samples)
    assert not np.allclose(runs["low"].samples, runs["alba"].samples)


def test_cancel_stops_within_one_frame(studio):
    cancel = threading.Event()
    frames = []

    def on_progress(done, total):
        frames.append(done)
        if done == 5:
            cancel.set()

    with pytest.raises(Cancelled):
        studio.manager.run(_request(studio, LONG), RunContext(cancel=cancel, on_progress=on_progress))
    assert frames[-1] == 5  # the frame that saw the cancel was the last one made


def test_describe_says_which_voice(studio, clips, catalog):
    family = catalog.family(catalog.get(REPO))
    spec = catalog.get(REPO)
    assert "'alba'" in family.describe(spec, _request(studio))
    assert "'low.wav'" in family.describe(spec, _request(studio, audio=str(clips["low"])))


def test_the_cached_voices_are_offered(studio, catalog):
    assert catalog.voices(catalog.get(REPO)) == ("alba", "javert", "marius")


@pytest.mark.parametrize("params, text, must_name", [
    ({"audio": "short"}, TEXT, ["'short.wav'", "0.5 s", "at least 1 s", "longer clip"]),
    ({"audio": "long"}, TEXT, ["'long.wav'", f"{MAX_PROMPT_S:g}", "trim"]),
    ({"voice": "nobody"}, TEXT, ["'nobody'", "alba, javert, marius"]),
    ({}, "   ", ["empty"]),
])
def test_bad_input_is_refused_naming_the_value_and_the_fix(studio, clips, params, text, must_name):
    params = {k: str(clips[v]) if k == "audio" else v for k, v in params.items()}
    with pytest.raises(InvalidInput) as error:
        _request(studio, text, **params)
    message = str(error.value)
    for part in must_name:
        assert part.lower() in message.lower(), message


def test_cli_speaks_offline(tiny_cache, tmp_path):
    from tests.conftest import ROOT

    out = tmp_path / "x.wav"
    proc = run_studio(["generate", "--model", REPO, "--prompt", TEXT, "--out", str(out),
                       "--output-dir", str(tmp_path / "outputs")], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples, rate = soundfile.read(out)
    assert rate == RATE and samples.shape[0] == frame_cap(TEXT) * HOP
