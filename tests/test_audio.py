"""Tests for studio.audio: peak safety, frame layout, file naming, encoding, tags and storage failures."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio import __version__
from studio.audio import (
    FORMATS,
    check_format,
    make_peak_safe,
    output_path,
    read_metadata,
    to_frames,
    write_audio,
)
from studio.errors import InvalidInput, StorageError

CEILING = 10 ** (-1 / 20)  # -1 dBFS
UNICODE_PROMPT = "lofi 🎵 rain 雨の夜 مرحبا بالعالم café ñ — \u200f"
METADATA = {
    "prompt": UNICODE_PROMPT,
    "model": "facebook/musicgen-small",
    "seed": 42,
    "sample_rate": 32000,
    "duration": 1.0,
    "settings": {"guidance": 3.0, "top_k": 250},
    "tags": ["a", "ß", "👩‍👩‍👧"],
}
NAME_RE = re.compile(r"^\d{8}-\d{6}(-[a-z0-9]+)*-s-?\d+(-[a-z0-9]+)*-[0-9a-f]{6}\.(wav|flac|mp3|ogg)$")


def chirp(sample_rate: int, seconds: float, channels: int, peak: float = 0.5) -> np.ndarray:
    """(n, channels) chirp; not periodic, so a time shift shows up as a large error."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = peak * np.sin(2 * np.pi * (100 * t + 400 * t**2))
    return np.stack([x * (0.9**c) for c in range(channels)], axis=1).astype(np.float32)


def tags_of(path: Path) -> dict[str, str]:
    with sf.SoundFile(path) as f:
        return f.copy_metadata()


def new_file(tmp_path: Path, fmt: str, prompt: str = "test clip") -> Path:
    return output_path(tmp_path, task="music", model_id="facebook/musicgen-small", seed=1, prompt=prompt, ext=fmt)


# --- formats -------------------------------------------------------------------------------


def test_formats_table_matches_libsndfile():
    assert set(FORMATS) == {"wav", "flac", "mp3", "ogg"}
    for key, info in FORMATS.items():
        assert info.ext == key
        assert sf.check_format(info.sf_format, info.subtype), key
    assert [k for k, i in FORMATS.items() if i.lossy] == ["mp3", "ogg"]
    assert FORMATS["mp3"].mime == "audio/mpeg"


@pytest.mark.parametrize("name, expected", [("WAV", "wav"), (" Flac ", "flac"), (".mp3", "mp3"), ("ogg", "ogg")])
def test_check_format_normalises(name, expected):
    assert check_format(name) == expected


@pytest.mark.parametrize("name", ["aiff", "", "wav/../x", None, 3])
def test_check_format_rejects_with_choices(name):
    with pytest.raises(InvalidInput) as exc:
        check_format(name)
    message = str(exc.value)
    assert repr(name) in message and "wav, flac, mp3, ogg" in message


# --- peak safety ------------------------------------------------------------------------------


def test_loud_clip_scaled_to_ceiling_without_clipping():
    x = np.sin(np.linspace(0, 60, 5000)) * 2.0
    x[123] = -2.0
    out, report = make_peak_safe(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.abs(out).max() == pytest.approx(CEILING, rel=1e-6)
    assert report["peak_in"] == pytest.approx(2.0)
    assert report["gain_db"] == pytest.approx(-1 - 20 * np.log10(2.0), abs=1e-6)
    assert report["nonfinite"] == 0
    # one gain for the whole clip: the waveform shape is unchanged
    np.testing.assert_allclose(out, x * (CEILING / 2.0), rtol=1e-6, atol=1e-7)


def test_quiet_clip_is_untouched():
    x = (0.3 * np.sin(np.linspace(0, 60, 5000))).astype(np.float32)
    out, report = make_peak_safe(x)
    np.testing.assert_array_equal(out, x)
    assert report["gain_db"] == 0.0


def test_nonfinite_samples_zeroed_and_counted_input_not_mutated():
    x = np.full((2, 6), 0.25, dtype=np.float32)
    x[0, 1], x[1, 2], x[1, 5] = np.nan, np.inf, -np.inf
    before = x.copy()
    out, report = make_peak_safe(x)
    assert report["nonfinite"] == 3
    assert np.isfinite(out).all()
    assert out[0, 1] == out[1, 2] == out[1, 5] == 0.0
    assert out[0, 0] == np.float32(0.25)
    np.testing.assert_array_equal(x, before)


def test_huge_finite_float64_is_scaled_not_zeroed():
    out, report = make_peak_safe(np.array([1e300, -5e299, 0.0]))
    assert report["nonfinite"] == 0
    np.testing.assert_allclose(out, [CEILING, -CEILING / 2, 0.0], rtol=1e-6)


@pytest.mark.parametrize("ceiling", [0.5, float("nan"), float("inf")])
def test_bad_ceiling_rejected(ceiling):
    with pytest.raises(InvalidInput, match="ceiling_db"):
        make_peak_safe(np.zeros(4), ceiling_db=ceiling)


# --- frame layout -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expected",
    [((100,), (100, 1)), ((2, 100), (100, 2)), ((100, 2), (100, 2)), ((8, 9), (9, 8)), ((1, 5), (5, 1)), ((3, 2), (3, 2))],
)
def test_to_frames_layouts(shape, expected):
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    out = to_frames(x)
    assert out.shape == expected and out.dtype == np.float32 and out.flags.c_contiguous
    if len(shape) == 2 and shape[0] < shape[1] and shape[0] <= 8:
        np.testing.assert_array_equal(out, x.T.astype(np.float32))


def test_to_frames_scales_int16_pcm():
    out = to_frames(np.array([-32768, 0, 16384], dtype=np.int16))
    np.testing.assert_allclose(out[:, 0], [-1.0, 0.0, 0.5])


@pytest.mark.parametrize(
    "x", [np.zeros((9, 9)), np.zeros((20, 10)), np.zeros((1, 2, 100)), np.zeros(0), np.zeros(4, dtype=complex)]
)
def test_to_frames_rejects_ambiguous_or_empty(x):
    with pytest.raises(InvalidInput):
        to_frames(x)


# --- output paths -------------------------------------------------------------------------------


def test_output_path_name_and_exclusive_creation(tmp_path):
    now = datetime(2026, 11, 23, 23, 45, 1)
    p = output_path(
        tmp_path, task="music", model_id="facebook/musicgen-small", seed=42, prompt="Lofi Beat!", ext="WAV", now=now
    )
    assert p.parent == tmp_path and p.is_file() and p.stat().st_size == 0
    assert re.fullmatch(r"20261123-234501-music-musicgen-small-s42-lofi-beat-[0-9a-f]{6}\.wav", p.name), p.name


@pytest.mark.parametrize(
    "prompt, slug",
    [
        ("", None),
        ("🎵🎵 雨", None),
        ("../../etc/passwd", "etc-passwd"),
        ("Café Crème ﬁne", "cafe-creme-fine"),
        ("a" * 100, "a" * 32),
        ("word " * 20, "word-word-word-word-word-word-wo"),
        ("abcdefg " * 10, "abcdefg-abcdefg-abcdefg-abcdefg"),  # the cut lands on a dash
    ],
)
def test_output_path_prompt_slug(tmp_path, prompt, slug):
    name = output_path(tmp_path, task="music", model_id="m/x", seed=7, prompt=prompt, ext="ogg").name
    middle = name[len("20260101-000000-music-x-s7-") : -len("-abcdef.ogg")]
    assert middle == (slug or "")
    assert "--" not in name


def test_output_path_creates_missing_dir(tmp_path):
    p = output_path(tmp_path / "a" / "b", task="tts", model_id="x", seed=0, prompt="hi", ext="mp3")
    assert p.is_file()


def test_output_path_rejects_non_int_seed_and_bad_ext(tmp_path):
    with pytest.raises(InvalidInput, match="seed"):
        output_path(tmp_path, task="music", model_id="m", seed="../1", prompt="p", ext="wav")
    with pytest.raises(InvalidInput, match="exe"):
        output_path(tmp_path, task="music", model_id="m", seed=1, prompt="p", ext="exe")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=300), task=st.text(max_size=20), model_id=st.text(max_size=60), seed=st.integers())
def test_output_path_is_safe_for_any_text(tmp_path, prompt, task, model_id, seed):
    p = output_path(tmp_path, task=task, model_id=model_id, seed=seed, prompt=prompt, ext="flac")
    name = p.name
    assert p.parent == tmp_path and p.is_file()
    assert NAME_RE.fullmatch(name), name
    assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name
    assert not any(unicodedata.category(c).startswith("C") for c in name)
    assert len(name) < 200


def test_output_path_unique_under_200_threads(tmp_path):
    now = datetime(2026, 1, 1)
    barrier = threading.Barrier(50)

    def make(_):
        barrier.wait()
        return output_path(tmp_path, task="music", model_id="m/x", seed=1, prompt="same", ext="wav", now=now)

    with ThreadPoolExecutor(max_workers=50) as pool:
        paths = list(pool.map(make, range(200)))
    assert len(set(paths)) == 200
    assert len(list(tmp_path.iterdir())) == 200


# --- encoding round trips -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [16000, 24000, 32000, 44100])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_rate_channels_length(tmp_path, fmt, rate, channels):
    x = chirp(rate, 0.5, channels)
    p = write_audio(new_file(tmp_path, fmt), x, rate, fmt, {"prompt": "chirp"})
    y, got_rate = sf.read(p, dtype="float32", always_2d=True)
    assert got_rate == rate
    assert y.shape[1] == channels
    # Measured with libsndfile 1.2.2: mp3 (LAME Info tag) and ogg (granule positions) are gapless,
    # so the decoded length is exact for every format, with no time shift.
    assert y.shape[0] == x.shape[0]
    if FORMATS[fmt].lossy:
        inner = slice(len(x) // 10, -len(x) // 10)
        rel_rms = np.sqrt(np.mean((y[inner] - x[inner]) ** 2) / np.mean(x[inner] ** 2))
        assert rel_rms < 0.1, rel_rms  # measured 0.006-0.04; a 1-sample shift of this chirp gives > 0.2
    else:
        np.testing.assert_allclose(y, x, atol=2.0**-22)  # 24-bit PCM quantisation


def test_written_audio_is_peak_safe(tmp_path):
    x = chirp(16000, 0.5, 1, peak=2.0)
    p = write_audio(new_file(tmp_path, "wav"), x, 16000, "wav", {})
    y, _ = sf.read(p, dtype="float32")
    assert np.abs(y).max() == pytest.approx(CEILING, abs=1e-5)


def test_mp3_rejects_unsupported_rate_and_channels(tmp_path):
    with pytest.raises(InvalidInput) as exc:
        write_audio(tmp_path / "a.mp3", np.zeros(1000), 30000, "mp3", {})
    assert "30000" in str(exc.value) and "mp3" in str(exc.value) and "44100" in str(exc.value)
    with pytest.raises(InvalidInput, match="at most 2 channels"):
        write_audio(tmp_path / "b.mp3", np.zeros((3, 1000)), 16000, "mp3", {})
    assert list(tmp_path.iterdir()) == []


def test_ogg_accepts_any_reasonable_rate(tmp_path):
    p = write_audio(tmp_path / "odd.ogg", chirp(30000, 0.2, 1), 30000, "ogg", {})
    assert sf.info(str(p)).samplerate == 30000


@pytest.mark.parametrize("rate", [0, 100, 10**7])
def test_nonsense_rate_rejected(tmp_path, rate):
    with pytest.raises(InvalidInput, match=str(rate)):
        write_audio(tmp_path / "x.wav", np.zeros(100), rate, "wav", {})


def test_final_file_permissions_follow_umask(tmp_path):
    p = write_audio(tmp_path / "perm.flac", np.zeros(100), 16000, "flac", {})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


# --- metadata -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sidecar_round_trips_unicode_exactly(tmp_path, fmt):
    p = write_audio(new_file(tmp_path, fmt, UNICODE_PROMPT), chirp(32000, 0.2, 1), 32000, fmt, METADATA)
    sidecar = p.with_name(p.name + ".json")
    text = sidecar.read_text(encoding="utf-8")
    assert "🎵" in text and "雨の夜" in text  # ensure_ascii=False
    assert text.startswith('{\n  "prompt"')  # indent 2
    assert read_metadata(p) == METADATA


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_comment_tag_round_trips_without_sidecar(tmp_path, fmt):
    p = write_audio(new_file(tmp_path, fmt), chirp(32000, 0.2, 1), 32000, fmt, METADATA)
    p.with_name(p.name + ".json").unlink()
    assert read_metadata(p) == METADATA


# Which tags each format keeps, as measured with libsndfile 1.2.2 (see FormatInfo).
EXPECTED_TAGS = {
    "wav": {
        "title": "lofi \\U0001f3b5 rain \\u96e8\\u306e\\u591c",
        "artist": "facebook/musicgen-small",
        "software": f"Audio Studio {__version__} (libsndfile-",
        "date": "2026-11-23",
    },
    "flac": {
        "title": "lofi 🎵 rain 雨の夜",
        "artist": "facebook/musicgen-small",
        "software": f"Audio Studio {__version__} (libsndfile-",
        "date": "2026-11-23T22:45:01Z",
    },
    "ogg": {
        "title": "lofi 🎵 rain 雨の夜",
        "artist": "facebook/musicgen-small",
        "software": f"Audio Studio {__version__} (libsndfile-",
        "date": "2026-11-23T22:45:01Z",
    },
    "mp3": {
        "title": "lofi \\U0001f3b5 rain \\u96e8\\u306e\\u591c",
        "artist": "facebook/musicgen-small",
        "software": "LAME",  # LAME overwrites it
        "date": "2026",  # ID3v2.3 TYER holds a year
    },
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_tags_each_format_keeps(tmp_path, fmt):
    metadata = {"prompt": "lofi 🎵 rain 雨の夜", "model": "facebook/musicgen-small", "created": "2026-11-23T23:45:01+01:00"}
    p = write_audio(new_file(tmp_path, fmt), chirp(24000, 0.2, 1), 24000, fmt, metadata)
    tags = tags_of(p)
    for key, expected in EXPECTED_TAGS[fmt].items():
        assert tags[key].startswith(expected), (key, tags[key])
    assert json.loads(tags["comment"]) == metadata
    if not FORMATS[fmt].unicode_tags:
        assert all(v.isascii() for v in tags.values())


def test_title_truncated_to_200_chars(tmp_path):
    prompt = "x" * 500
    p = write_audio(tmp_path / "t.flac", np.zeros(100), 16000, "flac", {"prompt": prompt})
    title = tags_of(p)["title"]
    assert len(title) == 200 and title.endswith("…")
    assert read_metadata(p)["prompt"] == prompt


def test_wav_long_unicode_prompt_keeps_tags_within_info_limit(tmp_path):
    # libsndfile silently drops *all* RIFF INFO tags when one exceeds 2045 bytes.
    metadata = {"prompt": "雨" * 3000, "model": "m/x", "seed": 5}
    p = write_audio(tmp_path / "long.wav", np.zeros(100), 16000, "wav", metadata)
    tags = tags_of(p)
    assert tags["artist"] == "m/x" and tags["title"]
    assert len(tags["comment"]) <= 2045
    short = json.loads(tags["comment"])
    assert short["_truncated"] is True and short["seed"] == 5
    assert "雨" * 3000 != short["prompt"] and short["prompt"].startswith("雨雨")
    assert read_metadata(p) == metadata  # the sidecar keeps everything


def test_wav_overlong_artist_is_cut_not_dropping_all_tags(tmp_path):
    model = "org/" + "x" * 3000
    p = write_audio(tmp_path / "artist.wav", np.zeros(100), 16000, "wav", {"prompt": "p", "model": model})
    tags = tags_of(p)
    assert tags["title"] == "p"
    assert model.startswith(tags["artist"]) and 2000 < len(tags["artist"]) <= 2045
    assert read_metadata(p)["model"] == model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=100), fmt=st.sampled_from(list(FORMATS)))
def test_any_text_round_trips_through_sidecar_and_comment(tmp_path, prompt, fmt):
    metadata = {"prompt": prompt, "model": "m/x"}
    p = write_audio(new_file(tmp_path, fmt, prompt), np.zeros(64, np.float32), 16000, fmt, metadata)
    assert read_metadata(p) == metadata
    assert json.loads(tags_of(p)["comment"]) == metadata


def test_metadata_numpy_and_paths_are_stored_as_json(tmp_path):
    metadata = {"seed": np.int64(3), "gain": np.float32(0.5), "out": Path("/x"), "when": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    p = write_audio(tmp_path / "n.ogg", np.zeros(100), 16000, "ogg", metadata)
    assert read_metadata(p) == {"seed": 3, "gain": 0.5, "out": "/x", "when": "2026-01-01T00:00:00+00:00"}


def test_unserialisable_metadata_rejected_before_writing(tmp_path):
    with pytest.raises(InvalidInput, match="object"):
        write_audio(tmp_path / "bad.wav", np.zeros(100), 16000, "wav", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_read_metadata_without_metadata_or_file(tmp_path):
    plain = tmp_path / "plain.wav"
    sf.write(plain, np.zeros(100), 16000)
    with pytest.raises(StorageError, match="no Audio Studio metadata"):
        read_metadata(plain)
    with pytest.raises(StorageError, match="missing.wav"):
        read_metadata(tmp_path / "missing.wav")


# --- storage failures -----------------------------------------------------------------------


def assert_storage_message(exc: StorageError, path: Path, reason: str,
                           fix: str = "free disk space or choose another --output-dir"):
    message = str(exc)
    assert str(path) in message and reason in message
    assert fix in message.lower()


def test_path_under_a_file_gives_storage_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StorageError) as exc:
        write_audio(blocker / "out.wav", np.zeros(100), 16000, "wav", {})
    assert_storage_message(exc.value, blocker / "out.wav", "Not a directory",
                           fix=f"create the folder {blocker} or choose another one".lower())
    with pytest.raises(StorageError) as exc:
        output_path(blocker / "sub", task="music", model_id="m", seed=1, prompt="p", ext="wav")
    assert "Not a directory" in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_disk_full_during_encode_leaves_nothing(tmp_path, monkeypatch, fmt):
    # libsndfile reports a real ENOSPC as LibsndfileError code 2 ("System error."), not OSError.
    path = new_file(tmp_path, fmt)
    real_write = sf.SoundFile.write

    def half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise sf.LibsndfileError(2)

    monkeypatch.setattr(sf.SoundFile, "write", half_then_fail)
    with pytest.raises(StorageError) as exc:
        write_audio(path, chirp(16000, 0.5, 1), 16000, fmt, {"prompt": "p"})
    assert_storage_message(exc.value, path, "libsndfile error 2")
    assert "MB free" in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # no temp file, no sidecar, no empty placeholder


@pytest.mark.parametrize("code, reason, fix", [
    (errno.ENOSPC, "No space left on device", "free disk space or choose another --output-dir"),
    # A read-only file system is not a full disk: the fix names the real cause only.
    (errno.EROFS, "Read-only file system", "read-only file system: remount it writable, or choose another --output-dir"),
])
def test_os_error_on_rename_keeps_previous_file_intact(tmp_path, monkeypatch, code, reason, fix):
    path = tmp_path / "keep.wav"
    path.write_bytes(b"previous take")

    def fail(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError) as exc:
        write_audio(path, np.zeros(100), 16000, "wav", {})
    assert_storage_message(exc.value, path, reason, fix)
    assert errno.errorcode[code] in str(exc.value)
    if code == errno.EROFS:
        assert "disk space" not in str(exc.value).lower()
    assert path.read_bytes() == b"previous take"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_sidecar_failure_rolls_back_audio(tmp_path, monkeypatch):
    path = new_file(tmp_path, "flac")
    real_replace = os.replace

    def fail_on_sidecar(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_sidecar)
    with pytest.raises(StorageError, match="Permission denied"):
        write_audio(path, np.zeros(100), 16000, "flac", {})
    assert list(tmp_path.iterdir()) == []


def test_final_name_never_holds_a_partial_file(tmp_path, monkeypatch):
    path = new_file(tmp_path, "wav")
    seen = []
    real_write = sf.SoundFile.write

    def spy(self, data):
        seen.append(path.stat().st_size)  # mid-encode, the final name is still the empty reservation
        real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", spy)
    write_audio(path, np.zeros(1000), 16000, "wav", {})
    assert seen == [0]
    assert sf.info(str(path)).frames == 1000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.skipif(os.name == "nt", reason="advisory locks (fcntl) only; Windows keeps the age rule")
def test_a_write_in_progress_is_locked_against_the_clean_up_at_start(tmp_path, monkeypatch):
    """Another process starting on the folder mid-write (remove_abandoned_writes) must leave this write alone."""
    from studio.audio import remove_abandoned_writes

    path = output_path(tmp_path, task="speech", model_id="m/x", seed=1, prompt="busy", ext="flac")
    removed: list[Path] = []
    real_write = sf.SoundFile.write

    def clean_up_meanwhile(self, data):
        real_write(self, data)
        unfinished = [p for p in tmp_path.iterdir() if p.name.endswith(".part")] + [path]
        old = datetime.now().timestamp() - 120  # older than any age rule: only the writer's lock protects them
        for p in unfinished:
            os.utime(p, (old, old))
        removed.extend(remove_abandoned_writes(tmp_path))

    monkeypatch.setattr(sf.SoundFile, "write", clean_up_meanwhile)
    write_audio(path, np.zeros(1000), 16000, "flac", {"prompt": "busy"})
    assert removed == []
    assert sf.info(str(path)).frames == 1000 and path.with_name(path.name + ".json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".json"])


def test_output_path_retries_on_a_taken_name(tmp_path, monkeypatch):
    import studio.audio

    suffixes = iter(["abcdef", "abcdef", "123456"])
    monkeypatch.setattr(studio.audio.secrets, "token_hex", lambda n: next(suffixes))
    now = datetime(2026, 1, 1)
    first = output_path(tmp_path, task="music", model_id="m/x", seed=1, prompt="p", ext="wav", now=now)
    second = output_path(tmp_path, task="music", model_id="m/x", seed=1, prompt="p", ext="wav", now=now)
    assert first.name.endswith("-abcdef.wav") and second.name.endswith("-123456.wav")


def test_silently_short_encode_is_caught(tmp_path, monkeypatch):
    path = new_file(tmp_path, "ogg")
    real_write = sf.SoundFile.write
    monkeypatch.setattr(sf.SoundFile, "write", lambda self, data: real_write(self, data[: len(data) // 2]))
    with pytest.raises(StorageError, match="encoder wrote 500 frames"):
        write_audio(path, np.zeros(1000), 16000, "ogg", {})
    assert list(tmp_path.iterdir()) == []
