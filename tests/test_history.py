"""The SQLite history: what it records, finds and forgets, and that it survives threads, kill -9 and corruption."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from studio.errors import InvalidInput, StorageError
from studio.history import SCHEMA_VERSION, History, HistoryItem

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, tzinfo=timezone.utc)  # row n of the tests was made n seconds after this


def _meta(n: int = 0, **overrides) -> dict:
    meta = {
        "model": "facebook/musicgen-small",
        "task": "music",
        "prompt": f"lofi beat {n}",
        "seed": 1000 + n,
        "sample_rate": 32000,
        "channels": 1,
        "duration": 1.5,
        "elapsed_s": 2.25,
        "estimated_s": 3.0,
        "peak_bytes": 123_456_789,
        "settings": {"duration": 1.5, "guidance_scale": 3.0},
        "format": "wav",
        "created": (T0 + timedelta(seconds=n)).isoformat(),
    }
    meta.update(overrides)
    return meta


def _file(out: Path, name: str, meta: dict | None = None) -> Path:
    """A stand-in audio file (the history never decodes it) with its sidecar when `meta` is given."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_bytes(b"RIFF-not-really-audio")
    if meta is not None:
        path.with_name(name + ".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def history(out):
    h = History(out / "history.sqlite3", out)
    yield h
    h.close()


def _add(history: History, out: Path, n: int, **overrides) -> HistoryItem:
    return history.add(_file(out, f"clip-{n}.wav"), _meta(n, **overrides))


# ------------------------------------------------------------------ add / get / list / count


def test_add_returns_the_row_and_get_reads_it_back(history, out):
    meta = _meta(7, settings={"duration": 1.5, "guidance_scale": 3.0, "top_k": 250})
    path = _file(out, "clip.flac")
    item = history.add(path, meta)

    assert item == history.get(item.id)
    assert (item.task, item.model, item.prompt, item.seed) == ("music", "facebook/musicgen-small", "lofi beat 7", 1007)
    assert item.settings == {"duration": 1.5, "guidance_scale": 3.0, "top_k": 250}
    assert (item.format, item.duration, item.sample_rate) == ("wav", 1.5, 32000)
    assert (item.elapsed_s, item.estimated_s, item.peak_bytes) == (2.25, 3.0, 123_456_789)
    assert item.created == "2026-11-24T00:00:07+00:00"
    assert item.metadata == meta
    assert item.file == "clip.flac"  # relative inside the output directory
    assert history.path_of(item) == path.resolve()
    assert history.get(item.id + 1) is None


def test_speech_text_is_the_prompt_and_optional_numbers_may_be_missing(history, out):
    meta = _meta(1, task="speech", model="facebook/mms-tts-eng", settings={"speaking_rate": 1.0})
    del meta["prompt"], meta["estimated_s"], meta["peak_bytes"]
    meta["text"] = "Hello, world"
    item = history.add(_file(out, "speech.wav"), meta)
    assert item.prompt == "Hello, world"
    assert item.estimated_s is None and item.peak_bytes is None
    assert history.list("hello")[0].id == item.id


def test_created_is_normalised_to_utc_seconds(history, out):
    item = _add(history, out, 1, created="2026-11-24T02:09:37.123456+02:00")
    assert item.created == "2026-11-24T00:09:37+00:00"
    no_time = _meta(2)
    del no_time["created"]
    path = _file(out, "fresh.wav")
    os.utime(path, (T0.timestamp() + 90, T0.timestamp() + 90))
    assert history.add(path, no_time).created == "2026-11-24T00:01:30+00:00"  # the file's time


def test_add_refuses_a_file_that_does_not_exist_or_metadata_without_model(history, out):
    with pytest.raises(StorageError, match="does not exist"):
        history.add(out / "never-written.wav", _meta())
    with pytest.raises(InvalidInput, match="'model'"):
        history.add(_file(out, "x.wav"), {k: v for k, v in _meta().items() if k != "model"})
    assert history.count() == 0


def test_list_is_newest_first_with_paging_and_task_filter(history, out):
    order = [5, 1, 9, 3, 7, 2]  # added out of time order: the created time decides
    items = {n: _add(history, out, n, task="sfx" if n % 2 else "music") for n in order}
    ids = [i.id for i in history.list()]
    assert ids == [items[n].id for n in sorted(order, reverse=True)]
    assert [i.id for i in history.list(limit=2, offset=1)] == ids[1:3]
    assert history.list(offset=len(order)) == []
    assert history.list(limit=0) == []
    assert [i.seed for i in history.list(task="sfx")] == [1009, 1007, 1005, 1003, 1001]
    assert history.count() == 6 and history.count(task="music") == 1 and history.count(task="speech") == 0


def test_same_second_is_ordered_by_id(history, out):
    first = _add(history, out, 1, created="2026-11-24T00:00:00+00:00")
    second = _add(history, out, 2, created="2026-11-24T00:00:00+00:00")
    assert [i.id for i in history.list()] == [second.id, first.id]


@pytest.mark.parametrize("bad", [-1, 1001, 2.5, "10", True])
def test_list_refuses_bad_limit(history, bad):
    with pytest.raises(InvalidInput, match="limit"):
        history.list(limit=bad)


def test_adding_the_same_file_again_replaces_its_row(history, out):
    path = _file(out, "same.wav")
    old = history.add(path, _meta(1))
    new = history.add(path, _meta(2))
    assert new.id != old.id and history.get(old.id) is None
    assert [i.prompt for i in history.list()] == ["lofi beat 2"]


def test_file_outside_the_output_directory_is_stored_absolute(history, tmp_path):
    elsewhere = _file(tmp_path / "elsewhere", "cli.wav")
    item = history.add(elsewhere, _meta())
    assert Path(item.file).is_absolute()
    assert history.path_of(item) == elsewhere.resolve()
    assert history.list()[0].id == item.id


# ------------------------------------------------------------------ search


def test_search_is_case_insensitive_over_prompt_and_model(history, out):
    a = _add(history, out, 1, prompt="Lofi BEAT with Piano")
    b = _add(history, out, 2, prompt="Epic drums", model="facebook/musicgen-MELODY")
    c = _add(history, out, 3, prompt="Straße bei Nacht", task="speech")
    assert [i.id for i in history.list("piano")] == [a.id]
    assert [i.id for i in history.list("Melody")] == [b.id]
    assert [i.id for i in history.list("musicgen")] == [c.id, b.id, a.id]
    assert [i.id for i in history.list("STRASSE")] == [c.id]  # Unicode case folding
    assert [i.id for i in history.list("  drums ")] == [b.id]
    assert history.list("piano", task="speech") == [] and history.count("piano") == 1


HOSTILE = [
    "%", "_", "\\", "%%", "a_c", "100%", "'", '"', "'; DROP TABLE generations; --", "\") OR 1=1 --",
    "Ünïcödé", "日本語", "🎸", "🎸🥁", "\x00", "\ud800", "x" * 60_000,
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_search_text_only_matches_itself(history, out, query):
    prompts = [
        "plain words", "100% pure", "a_c and abc", "back\\slash", "it's \"quoted\"",
        "'; DROP TABLE generations; --", "Ünïcödé chant", "日本語の歌", "rock 🎸🥁 jam", "x" * 60_000,
    ]
    for n, prompt in enumerate(prompts):
        _add(history, out, n, prompt=prompt)
    folded = query.strip().casefold().replace("\ud800", "\ufffd")
    expected = sorted(p for p in prompts if folded in p.casefold() or folded in "facebook/musicgen-small")
    found = sorted(i.prompt for i in history.list(query, limit=100))
    assert found == expected
    assert history.count(query) == len(expected)
    assert history.count() == len(prompts)  # the table is still there


def test_lone_surrogates_in_metadata_are_stored_as_replacement_characters(history, out):
    item = _add(history, out, 1, prompt="bad \ud800 text")
    assert item.prompt == "bad \ufffd text"
    assert history.get(item.id).metadata["prompt"] == "bad \ufffd text"


# ------------------------------------------------------------------ delete and missing files


def test_delete_removes_row_audio_and_sidecar(history, out):
    path = _file(out, "gone.wav", _meta())
    keep = _add(history, out, 2)
    item = history.add(path, _meta())
    assert history.delete(item.id) is True
    assert not path.exists() and not path.with_name("gone.wav.json").exists()
    assert history.get(item.id) is None
    assert [i.id for i in history.list()] == [keep.id]
    assert history.delete(item.id) is False
    assert history.delete(10_000) is False


def test_delete_keeping_the_file_is_not_undone_by_a_rebuild(history, out):
    path = _file(out, "kept.wav", _meta())
    item = history.add(path, _meta())
    assert history.delete(item.id, delete_file=False) is True
    assert path.exists() and path.with_name("kept.wav.json").exists()
    assert history.rebuild_from_sidecars() == 0 and history.count() == 0
    again = history.add(path, _meta())  # adding it explicitly brings it back
    assert history.list()[0].id == again.id


def test_delete_keeps_the_row_when_the_file_cannot_be_removed(history, out):
    item = _add(history, out, 1)
    sidecar = out / "clip-1.wav.json"
    sidecar.mkdir()  # a directory where the sidecar should be: unlink fails
    (sidecar / "x").write_text("x")
    os.chmod(out, 0o500)
    try:
        if os.access(out, os.W_OK):  # root ignores permissions
            pytest.skip("cannot make a folder read-only as this user")
        with pytest.raises(StorageError, match="Could not delete"):
            history.delete(item.id)
    finally:
        os.chmod(out, 0o700)
    assert history.get(item.id) is not None


def test_missing_files_are_hidden_from_list_but_not_forgotten(history, out, caplog):
    a = _add(history, out, 1)
    b = _add(history, out, 2)
    history.path_of(a).unlink()
    with caplog.at_level(logging.WARNING, logger="studio.history"):
        assert [i.id for i in history.list()] == [b.id]
        assert history.count() == 1
        history.list()
    assert sum("gone" in r.getMessage() for r in caplog.records) == 1  # logged once
    assert history.get(a.id) == a
    history.path_of(a).write_bytes(b"back")  # e.g. the drive is mounted again
    assert [i.id for i in history.list()] == [b.id, a.id]


def test_paging_skips_missing_files_consistently(history, out):
    items = [_add(history, out, n) for n in range(10)]
    for item in items[::3]:
        history.path_of(item).unlink()
    present = [i.id for i in reversed(items) if history.path_of(i).exists()]
    pages = [history.list(limit=2, offset=o) for o in range(0, 10, 2)]
    assert [i.id for page in pages for i in page] == present
    assert history.count() == len(present)


# ------------------------------------------------------------------ persistence and schema


def test_survives_reopen(out):
    first = History(out / "history.sqlite3", out)
    items = [_add(first, out, n) for n in range(3)]
    first.close()
    with pytest.raises(StorageError, match="closed"):
        first.list()

    with History(out / "history.sqlite3", out) as second:
        assert [i.id for i in second.list()] == [i.id for i in reversed(items)]
        assert second.get(items[0].id) == items[0]
        assert _add(second, out, 9).id > items[-1].id
    conn = sqlite3.connect(out / "history.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_ids_are_never_reused_after_delete(history, out):
    items = [_add(history, out, n) for n in range(3)]
    history.delete(items[-1].id)
    assert _add(history, out, 5).id > items[-1].id


def test_newer_schema_is_refused_with_the_fix(out):
    History(out / "history.sqlite3", out).close()
    conn = sqlite3.connect(out / "history.sqlite3")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="upgrade Audio Studio"):
        History(out / "history.sqlite3", out)
    assert (out / "history.sqlite3").exists()  # not moved aside: it is not corrupt, just newer


def test_sqlite_write_errors_become_storage_errors_naming_the_db_and_fix(history, out):
    conn = sqlite3.connect(out / "history.sqlite3")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON generations BEGIN SELECT RAISE(ABORT, 'disk is full'); END")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError) as caught:
        _add(history, out, 1)
    message = str(caught.value)
    assert str(out / "history.sqlite3") in message and "disk is full" in message
    assert "check disk space and permissions of --output-dir" in message
    assert history.count() == 0  # the failed transaction left nothing behind


# ------------------------------------------------------------------ concurrency and crashes


def test_concurrent_adds_from_16_threads_are_all_recorded(history, out):
    per_thread = 25
    ids: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work(t: int) -> None:
        try:
            start.wait()
            for k in range(per_thread):
                n = t * per_thread + k
                ids.append(history.add(_file(out, f"t{t}-{k}.wav"), _meta(n)).id)
                history.list("lofi", limit=5)  # reads interleaved with the writes
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(ids) == len(set(ids)) == 16 * per_thread
    assert history.count() == 16 * per_thread
    assert {i.id for i in history.list(limit=1000)} == set(ids)


def test_two_processes_share_the_database(out):
    """A second History on the same file (as the CLI next to the app) sees and makes changes."""
    a = History(out / "history.sqlite3", out)
    b = History(out / "history.sqlite3", out)
    item = _add(a, out, 1)
    assert b.get(item.id) == item
    other = _add(b, out, 2)
    assert [i.id for i in a.list()] == [other.id, item.id]
    a.close()
    b.close()


CHILD = r"""
import sys
from pathlib import Path
from studio.history import History

out = Path(sys.argv[1])
history = History(out / "history.sqlite3", out)
n = 0
while True:
    path = out / f"clip-{n}.wav"
    path.write_bytes(b"RIFF")
    item = history.add(path, {"model": "m/x", "task": "music", "prompt": f"p{n} " + "x" * 2000, "seed": n,
                              "duration": 1.0, "sample_rate": 16000, "settings": {"n": n}})
    print(item.id, flush=True)  # only after the commit returned
    n += 1
"""


def test_kill_9_mid_loop_leaves_every_committed_row(out):
    out.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(committed) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            committed.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, err = child.communicate(timeout=30)
    committed += [int(line) for line in rest.split()]
    assert child.returncode == -signal.SIGKILL
    assert len(committed) >= 300, err

    conn = sqlite3.connect(out / "history.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    with History(out / "history.sqlite3", out) as history:
        assert history.count() >= len(committed)
        assert all(history.get(i) is not None for i in committed)
        assert history.get(committed[-1]).settings == {"n": len(committed) - 1}


# ------------------------------------------------------------------ corruption and rebuilding


def _real_clip(out: Path, n: int) -> Path:
    """A real encoded file with its sidecar, as Studio.generate leaves it."""
    from studio.audio import write_audio

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"real-{n}.flac"
    samples = np.sin(np.linspace(0, 100, 1600, dtype=np.float32)) * 0.3
    write_audio(path, samples, 16000, "flac", _meta(n, format="flac", sample_rate=16000, prompt=f"real {n}"))
    return path


def test_a_file_that_is_not_a_database_is_moved_aside_and_rebuilt(out, caplog):
    clips = [_real_clip(out, n) for n in range(3)]
    _file(out, "no-sidecar-foreign.wav")  # not ours: no sidecar, no metadata tag
    (out / "notes.json").write_text("{}")  # a sidecar of nothing
    garbage = b"this is not a sqlite database\n" * 200
    (out / "history.sqlite3").write_bytes(garbage)

    with caplog.at_level(logging.WARNING, logger="studio.history"):
        history = History(out / "history.sqlite3", out)
    aside = list(out.glob("history.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert any("moved it to" in r.getMessage() for r in caplog.records)
    assert sorted(i.prompt for i in history.list()) == ["real 0", "real 1", "real 2"]
    assert {history.path_of(i) for i in history.list()} == {c.resolve() for c in clips}
    assert history.rebuild_from_sidecars() == 0  # nothing left to restore
    _add(history, out, 9)  # and it is writable
    history.close()


def test_a_damaged_database_is_moved_aside_and_rebuilt(out):
    history = History(out / "history.sqlite3", out)
    for n in range(300):
        _add(history, out, n, prompt=f"row {n} " + "y" * 500)
    history.close()
    db = out / "history.sqlite3"
    with open(db, "r+b") as f:  # scribble over the middle pages (the first page, the header, stays)
        f.seek(8192)
        f.write(random.Random(0).randbytes(40_000))
    for n in range(300):
        (out / f"clip-{n}.wav.json").write_text(json.dumps(_meta(n, prompt=f"row {n}")))

    with History(db, out) as recovered:
        assert len(list(out.glob("history.sqlite3.corrupt-*"))) == 1
        assert recovered.count() == 300
        assert recovered.list("row 299")[0].seed == 1299


def test_deleted_database_is_restored_from_sidecars_on_open(out):
    history = History(out / "history.sqlite3", out)
    item = history.add(_real_clip(out, 1), _meta(1, format="flac", sample_rate=16000, prompt="real 1"))
    history.close()
    for name in ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm"):
        (out / name).unlink(missing_ok=True)
    with History(out / "history.sqlite3", out) as again:
        [restored] = again.list()
        assert (restored.file, restored.prompt, restored.settings, restored.created) == (
            item.file, item.prompt, item.settings, item.created)


def test_rebuild_reads_the_tag_of_audio_whose_sidecar_was_never_written(history, out):
    clip = _real_clip(out, 4)
    clip.with_name(clip.name + ".json").unlink()  # as if killed between the two renames
    assert history.rebuild_from_sidecars() == 1
    assert history.list()[0].prompt == "real 4"
    assert history.rebuild_from_sidecars() == 0


# ------------------------------------------------------------------ scale


def test_list_on_10k_rows_is_not_pathological(history, out):
    for n in range(10_000):
        history.add(_file(out, f"c{n}.wav"), _meta(n, prompt=f"clip number {n}", task=("music", "sfx")[n % 2]))
    started = time.perf_counter()
    page = history.list(limit=50)
    search = history.list("number 99", task="sfx")
    took = time.perf_counter() - started
    assert len(page) == 50 and page[0].prompt == "clip number 9999"
    assert [i.prompt for i in search][:2] == ["clip number 9999", "clip number 9997"]
    assert took < 1.0
    assert history.count() == 10_000


# ------------------------------------------------------------------ through the studio


def test_a_generation_lands_in_history_and_stays_after_a_restart(make_studio):
    studio = make_studio()
    request = studio.request(None, "facebook/musicgen-small", "history lofi test",
                             seed=42, params={"duration": 0.5, "guidance_scale": 2.5})
    generation = studio.generate(request, fmt="flac")

    assert generation.history_id is not None
    assert generation.metadata["history_id"] == generation.history_id
    item = studio.history.get(generation.history_id)
    assert (item.task, item.model, item.prompt, item.seed, item.format) == (
        "music", "facebook/musicgen-small", "history lofi test", 42, "flac")
    assert item.settings == dict(request.params) and item.settings["guidance_scale"] == 2.5
    assert item.file == generation.path.name
    assert studio.history.path_of(item) == generation.path.resolve()
    sidecar = json.loads(generation.path.with_name(generation.path.name + ".json").read_text())
    assert item.metadata == sidecar
    assert (item.duration, item.sample_rate) == (sidecar["duration"], sidecar["sample_rate"])

    restarted = make_studio()  # a new Studio on the same settings, as after a restart
    assert [i.id for i in restarted.history.list("LOFI TEST")] == [item.id]
    assert restarted.history.get(item.id) == item


def test_a_history_failure_does_not_lose_the_generation(make_studio, caplog):
    studio = make_studio()
    db = studio.settings.history_db
    conn = sqlite3.connect(db)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON generations BEGIN SELECT RAISE(ABORT, 'disk is full'); END")
    conn.commit()
    request = studio.request(None, "facebook/mms-tts-eng", "kept anyway", seed=3)
    with caplog.at_level(logging.ERROR, logger="studio.service"):
        generation = studio.generate(request)
    assert generation.path.is_file()
    assert generation.history_id is None and generation.metadata["history_id"] is None
    assert any("not added to the history" in r.getMessage() for r in caplog.records)

    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    assert studio.history.rebuild_from_sidecars() == 1
    assert studio.history.list()[0].prompt == "kept anyway"
