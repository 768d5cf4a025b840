"""studio.clips: a clip conformed to what a model takes, and its copy kept once in the output folder."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from studio.clips import INPUTS_DIR, MAX_UPLOAD_BYTES, read_clip, store_clip, stored_path


def _write(path, samples, rate):
    sf.write(path, samples, rate)
    return path


@pytest.fixture
def stereo(tmp_path):
    t = np.arange(44100) / 44100
    left, right = np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)
    return _write(tmp_path / "Stereo Riff.flac", (0.5 * np.stack([left, right], axis=1)).astype(np.float32), 44100)


def test_stereo_folds_to_mono_and_mono_doubles(stereo, tmp_path):
    clip = read_clip(stereo)
    assert (clip.channels, clip.sample_rate, clip.seconds) == (2, 44100, 1.0)
    mono = clip.conformed(44100, 1)
    np.testing.assert_allclose(mono[0], clip.samples.mean(axis=0), atol=1e-7)
    single = read_clip(_write(tmp_path / "mono.wav", clip.samples[0], 44100))
    doubled = single.conformed(44100, 2)
    np.testing.assert_array_equal(doubled[0], doubled[1])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 192000])
def test_resampling_keeps_the_length_and_the_pitch(tmp_path, rate):
    t = np.arange(rate) / rate
    clip = read_clip(_write(tmp_path / f"{rate}.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate))
    out = clip.conformed(32000, 1)[0]
    assert out.dtype == np.float32 and out.shape == (32000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 32000 / out.size - 440) <= 1  # still an A4


def test_a_clip_is_stored_once_by_content_under_its_format(stereo, tmp_path):
    out = tmp_path / "out"
    first = store_clip(read_clip(stereo), out)
    copy = tmp_path / "copy of it.flac"
    copy.write_bytes(stereo.read_bytes())
    second = store_clip(read_clip(copy), out)
    assert first.stored == second.stored and first.stored.startswith(f"{INPUTS_DIR}/")
    assert first.stored.endswith(".flac") and first.name == "Stereo Riff.flac"
    assert [p.name for p in (out / INPUTS_DIR).iterdir()] == [first.stored.split("/")[1]]  # no temporaries left
    assert stored_path(out, first.stored) == first.path
    # Storing the stored copy again is a no-op, and the copy reads back as the same clip.
    again = store_clip(read_clip(first.path, name=first.name), out)
    assert again.stored == first.stored and again.digest == first.digest


def test_an_upload_named_without_an_extension_is_stored_under_its_real_format(stereo, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(stereo.read_bytes())
    assert store_clip(read_clip(blob), tmp_path / "out").stored.endswith(".flac")


@pytest.mark.parametrize("name", ["../secret.wav", "inputs/../../x.wav", "/etc/passwd", "other/x.wav", 7])
def test_stored_path_never_leaves_the_inputs_folder(tmp_path, name):
    (tmp_path / "secret.wav").write_bytes(b"x")
    assert stored_path(tmp_path / "out", name) is None


def test_the_upload_limit_holds_five_minutes_of_48k_stereo_float():
    assert 300 * 48000 * 2 * 4 < MAX_UPLOAD_BYTES < 120 * 10**6
