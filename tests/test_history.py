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


# ------------------------------------------------------------------ the sidecars are the truth: busy, killed, deleted

SPEECH = "facebook/mms-tts-eng"  # the fastest tiny model


def _rows_for(db: Path, name: str) -> int:
    """How many rows the database file itself holds for `name`, read as another process would (no History)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM generations WHERE file = ?", (name,)).fetchone()[0]
    finally:
        conn.close()


def _eventually(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.reliability("Faults", "history locked by another process during a generation",
                         "Studio.generate (MMS-TTS) while another sqlite3 connection holds BEGIN EXCLUSIVE on "
                         "history.sqlite3; then the lock is released, no restart")
def test_a_row_blocked_by_another_process_is_added_once_the_lock_is_released(make_studio, caplog, reliability):
    studio = make_studio()
    db = studio.settings.history_db
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a backup tool, a second studio, a CLI run in the middle of a write
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            generation = studio.generate(studio.request(None, SPEECH, "written while locked", seed=21))
        took = time.monotonic() - started
        assert generation.path.is_file() and generation.path.with_name(generation.path.name + ".json").is_file()
        assert generation.history_id is None  # pending, not failed
        assert any("another process holds the history" in r.getMessage() for r in caplog.records)
        assert studio.history.count() == 0
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert _eventually(lambda: studio.history.count("written while locked") == 1), "the row never appeared"
    assert _rows_for(db, generation.path.name) == 1
    assert studio.history.pending() == 0
    reliability.note(f"generate returned in {took:.1f} s with history_id None (row queued); after COMMIT the "
                     "background retry added it: 1 row, no restart")


def test_a_write_that_keeps_failing_on_a_constraint_is_not_retried(history, out):
    conn = sqlite3.connect(out / "history.sqlite3")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON generations BEGIN SELECT RAISE(ABORT, 'no'); END")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError):
        history.record(_file(out, "refused.wav", _meta(1)), _meta(1))
    assert history.pending() == 0


@pytest.mark.reliability("Faults", "killed between the sidecar and the row",
                         "a finished file + sidecar written as write_audio does, with no row (the writer killed "
                         "before its commit), in a folder whose history already exists; then a start")
def test_a_finished_file_without_its_row_is_listed_once_after_the_next_start(out, reliability):
    with History(out / "history.sqlite3", out) as first:
        kept = first.add(_real_clip(out, 1), _meta(1, format="flac", sample_rate=16000, prompt="real 1"))
    orphan = _real_clip(out, 2)  # on disk with its sidecar; its row never committed
    tag_only = _real_clip(out, 3)
    tag_only.with_name(tag_only.name + ".json").unlink()  # killed between the two renames: the tag has it

    with History(out / "history.sqlite3", out) as restarted:
        assert sorted(i.prompt for i in restarted.list()) == ["real 1", "real 2", "real 3"]
        assert restarted.get(kept.id) == kept  # the rows it had keep their ids
    with History(out / "history.sqlite3", out) as again:
        assert again.count() == 3
    for path in (orphan, tag_only):
        assert _rows_for(out / "history.sqlite3", path.name) == 1
    reliability.note("the existing database (not new, not corrupt) was reconciled at start: 2 files without a row "
                     "listed once each, the existing row kept its id; a second start added nothing")


@pytest.mark.reliability("Faults", "output folder deleted while the server runs",
                         "Studio.generate (MMS-TTS), then the whole output folder deleted, generate again, read "
                         "history.sqlite3 as another process, then a new Studio on the folder (a restart)")
def test_deleting_the_output_folder_under_a_running_studio_loses_nothing_later(make_studio, caplog, reliability):
    import shutil

    studio = make_studio()
    out, db = studio.settings.output_dir, studio.settings.history_db
    studio.generate(studio.request(None, SPEECH, "before the delete", seed=1))
    shutil.rmtree(out)
    with caplog.at_level(logging.WARNING, logger="studio.history"):
        later = [studio.generate(studio.request(None, SPEECH, f"after the delete {n}", seed=2 + n)) for n in range(2)]
    assert all(g.history_id is not None for g in later)
    assert db.is_file(), "the database was not created again"
    assert all(_rows_for(db, g.path.name) == 1 for g in later)  # in the file on disk, not in a deleted one
    assert any("was deleted while in use" in r.getMessage() for r in caplog.records)
    assert sorted(i.prompt for i in studio.history.list()) == ["after the delete 0", "after the delete 1"]

    restarted = make_studio()
    assert sorted(i.prompt for i in restarted.history.list()) == ["after the delete 0", "after the delete 1"]
    assert restarted.history.count() == 2
    reliability.note("the running studio noticed the deleted database, created it again and wrote its later "
                     "generations into the file on disk; after a restart both are listed, once each")


WRITER = r"""
import json, sys
from pathlib import Path
from studio.history import History

out, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
history = History(out / "history.sqlite3", out)
for k in range(n):
    path = out / f"{tag}-{k}.wav"
    meta = {"model": "m/x", "task": "music", "prompt": f"{tag} {k}", "seed": k, "duration": 1.0,
            "sample_rate": 16000, "settings": {}}
    path.write_bytes(b"RIFF")
    path.with_name(path.name + ".json").write_text(json.dumps(meta))
    if k % 5 == 4:
        continue  # as if killed between the sidecar and the row: the next start must index it
    history.record(path, meta)
    if k % 10 == 0:
        history.close()
        history = History(out / "history.sqlite3", out)  # a start: reconciles while the other process writes
assert history.wait_idle(30)
history.close()
print("done", flush=True)
"""


@pytest.mark.reliability("Faults", "two processes writing into one folder at once",
                         "2 subprocesses each write 60 files + sidecars into one output folder, recording rows "
                         "(every 5th left without a row, as if killed) and restarting their History every 10 files")
def test_two_processes_on_one_folder_list_everything_once(out, reliability):
    out.mkdir(parents=True)
    n = 60
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), tag, str(n)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    results = []
    for child in children:
        try:
            results.append(child.communicate(timeout=120))
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (stdout, stderr) in zip(children, results):
        assert child.returncode == 0 and stdout.strip() == "done", stderr[-3000:]

    with History(out / "history.sqlite3", out) as history:
        listed = [i.file for i in history.list(limit=1000)]
    assert len(listed) == len(set(listed)) == 2 * n
    assert set(listed) == {f"{tag}-{k}.wav" for tag in ("a", "b") for k in range(n)}
    conn = sqlite3.connect(out / "history.sqlite3")
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT file) FROM generations").fetchone() == (2 * n, 2 * n)
    conn.close()
    reliability.note(f"{2 * n} files from 2 processes (each restarting its history 6 times meanwhile, 24 left "
                     "without a row): all listed, none twice")


def _hold_exclusively(db: Path) -> sqlite3.Connection:
    """Another connection that keeps every other one out, readers too (exclusive locking mode)."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT OR IGNORE INTO forgotten (file) VALUES ('held')")
    holder.execute("COMMIT")  # in exclusive locking mode the lock stays until the connection closes
    return holder


@pytest.mark.reliability("Faults", "history locked by another process at start",
                         "Studio(...) while another connection holds history.sqlite3 in exclusive locking mode; "
                         "generate (MMS-TTS) meanwhile; then the lock is released")
def test_a_history_locked_at_start_does_not_stop_the_studio(make_studio, caplog, reliability):
    from studio.history import HistoryBusy

    first = make_studio()
    before = first.generate(first.request(None, SPEECH, "made before the lock", seed=1))
    first.history.close()
    holder = _hold_exclusively(first.settings.history_db)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="studio.history"):
            studio = make_studio()  # must not raise
        took = time.monotonic() - started
        said = [r.getMessage() for r in caplog.records if "Another process holds the history" in r.getMessage()]
        assert said, [r.getMessage() for r in caplog.records]
        with pytest.raises(HistoryBusy, match="Another process holds"):
            studio.history.list()  # the page says why, at once
        generation = studio.generate(studio.request(None, SPEECH, "made while locked", seed=2))
        assert generation.path.is_file() and generation.history_id is None
    finally:
        holder.close()
    assert studio.history.wait_idle(20), "the history never caught up"
    assert sorted(i.prompt for i in studio.history.list()) == ["made before the lock", "made while locked"]
    assert studio.history.get(before.history_id).prompt == "made before the lock"
    assert _rows_for(studio.settings.history_db, generation.path.name) == 1
    reliability.note(f"started in {took:.1f} s; message: {said[0][:150]}")
    reliability.note("a generation meanwhile was saved (history_id None); once released, the background thread "
                     "opened the history and both files are listed, once each")


@pytest.mark.reliability("Faults", "read-only output folder: the message",
                         "write_audio and History with the OS / SQLite refusing for permission (EACCES, EPERM, "
                         "SQLITE_READONLY) and, for contrast, for space (ENOSPC, SQLITE_FULL)")
def test_a_permission_error_names_permission_not_disk_space(out, monkeypatch, reliability):
    import errno

    import studio.audio as audio
    from studio.audio import write_audio

    def refusing(code):
        def encode(tmp, *args, **kwargs):
            raise OSError(code, os.strerror(code), str(tmp))
        return encode

    out.mkdir(parents=True)
    messages = {}
    for code in (errno.EACCES, errno.EPERM, errno.ENOSPC):
        monkeypatch.setattr(audio, "_encode", refusing(code))
        with pytest.raises(StorageError) as caught:
            write_audio(out / f"x-{code}.wav", np.zeros(100), 16000, "wav", {})
        messages[errno.errorcode[code]] = str(caught.value).replace(str(out), "OUT")  # the test's path says "permission"
    monkeypatch.undo()
    for name in ("EACCES", "EPERM"):
        assert "permission" in messages[name].lower() and "disk space" not in messages[name].lower(), messages[name]
        assert "--output-dir" in messages[name]
    assert "free disk space" in messages["ENOSPC"].lower() and "permission" not in messages["ENOSPC"].lower()

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(StorageError) as caught:
        History(out / "history.sqlite3", out)
    monkeypatch.undo()
    messages["History, mkdir"] = str(caught.value).replace(str(out), "OUT")

    for code, name in ((sqlite3.SQLITE_READONLY, "attempt to write a readonly database"),
                       (sqlite3.SQLITE_FULL, "database or disk is full")):
        def refuse(self, name=name, code=code):
            error = sqlite3.OperationalError(name)
            error.sqlite_errorcode = code
            raise error
        monkeypatch.setattr(History, "_open", refuse)
        with pytest.raises(StorageError) as caught:
            History(out / "history.sqlite3", out)
        monkeypatch.undo()
        messages[f"History, {name}"] = str(caught.value).replace(str(out), "OUT")
    for key in ("History, mkdir", "History, attempt to write a readonly database"):
        assert "permission" in messages[key].lower() and "disk space" not in messages[key].lower(), messages[key]
        assert "--output-dir" in messages[key]
    assert "disk space" in messages["History, database or disk is full"]
    reliability.note("EACCES: " + messages["EACCES"][-110:])
    reliability.note("SQLITE_READONLY: " + messages["History, attempt to write a readonly database"][-110:])


@pytest.mark.reliability("Faults", "history locked while a headless CLI run finishes",
                         "another connection holds BEGIN EXCLUSIVE on history.sqlite3 while `python -m studio generate` "
                         "runs; released 3 s after the run printed its result")
def test_a_cli_run_waits_for_a_busy_history_and_writes_its_row_before_leaving(tmp_path, tiny_cache, reliability):
    out_dir = tmp_path / "outputs"
    History(out_dir / "history.sqlite3", out_dir).close()  # the database exists, as after any earlier run
    holder = sqlite3.connect(out_dir / "history.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    proc = subprocess.Popen([sys.executable, "-m", "studio", "generate", "--model", "facebook/mms-tts-eng", "--prompt",
                             "hello", "--seed", "3", "--output-dir", str(out_dir), "--out", str(out_dir / "hi.wav")],
                            cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = proc.stdout.readline()  # the metadata: the file is written, its row waits for the lock
        assert json.loads(printed)["history_id"] is None
        time.sleep(3)
        assert proc.poll() is None  # still waiting for the database, not gone with the row unwritten
        holder.execute("ROLLBACK")
        assert proc.wait(timeout=60) == 0
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
    rows = sqlite3.connect(out_dir / "history.sqlite3").execute("SELECT file FROM generations").fetchall()
    assert rows == [("hi.wav",)]  # written by the run itself, before the next start of anything
    reliability.note("the run printed its result at once, waited for the lock, wrote its row and exited 0")


# ------------------------------------------------------------------ delete into the trash, and undo


def _trashed(out: Path) -> list[str]:
    """Names of the files in the trash (any session, any item)."""
    trash = out / ".trash"
    return sorted(p.name for p in trash.rglob("*") if p.is_file() and p.name not in (".lock", "entry.json")) \
        if trash.exists() else []


def test_delete_moves_the_file_and_its_sidecar_into_the_trash(history, out):
    keep = _add(history, out, 1)
    item = history.add(_file(out, "lofi.wav", _meta(2)), _meta(2))
    assert history.delete(item.id) is True
    assert not (out / "lofi.wav").exists() and not (out / "lofi.wav.json").exists()
    assert _trashed(out) == ["lofi.wav", "lofi.wav.json"]
    assert [i.id for i in history.list()] == [keep.id] and history.count() == 1
    assert history.get(item.id) is None and history.in_trash(item.id)
    assert history.rebuild_from_sidecars() == 0 and history.count() == 1  # the reconcile does not see the trash


def test_undo_lists_it_again_with_its_file_its_sidecar_and_its_id(history, out):
    item = history.add(_file(out, "lofi.wav", _meta(2)), _meta(2))
    sidecar = (out / "lofi.wav.json").read_text()
    history.delete(item.id)
    back = history.undo_delete(item.id)
    assert back == item  # same id, same content
    assert [i.id for i in history.list()] == [item.id]
    assert (out / "lofi.wav").read_bytes() == b"RIFF-not-really-audio"
    assert (out / "lofi.wav.json").read_text() == sidecar
    assert _trashed(out) == [] and not history.in_trash(item.id)
    assert history.undo_delete(item.id) is None  # nothing left to undo
    assert history.undo_delete(10_000) is None and history.undo_delete("1") is None
    # and it can be deleted and undone again
    assert history.delete(item.id) is True and history.undo_delete(item.id) == item


def test_undo_survives_a_lost_database_and_the_reconcile_keeps_the_undone_file(out):
    history = History(out / "history.sqlite3", out)
    item = history.add(_file(out, "lofi.wav", _meta(2)), _meta(2))
    history.delete(item.id)
    history.undo_delete(item.id)
    history.close()
    for name in ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm"):
        (out / name).unlink(missing_ok=True)
    with History(out / "history.sqlite3", out) as again:
        assert [i.prompt for i in again.list()] == [item.prompt]


def test_a_restart_empties_the_trash_and_the_deleted_item_stays_gone(out, caplog):
    history = History(out / "history.sqlite3", out)
    keep = _add(history, out, 1)
    item = history.add(_file(out, "lofi.wav", _meta(2)), _meta(2))
    history.delete(item.id)
    assert _trashed(out) == ["lofi.wav", "lofi.wav.json"]
    history.close()
    with caplog.at_level(logging.INFO, logger="studio.history"), History(out / "history.sqlite3", out) as again:
        assert _trashed(out) == [] and list((out / ".trash").iterdir()) == []
        assert [i.id for i in again.list()] == [keep.id]
        assert again.get(item.id) is None and again.undo_delete(item.id) is None
    assert any("Emptied the trash" in r.getMessage() for r in caplog.records)
    with History(out / "history.sqlite3", out) as third:  # and after yet another start
        assert [i.id for i in third.list()] == [keep.id]


def test_the_reconcile_at_start_does_not_bring_a_trashed_item_back(out):
    history = History(out / "history.sqlite3", out)
    item = history.add(_real_clip(out, 1), _meta(1, format="flac", sample_rate=16000, prompt="real 1"))
    history.delete(item.id)
    # A second start on the same folder while the first is still open (and could still Undo), even with the
    # database gone: nothing comes back, and the first one's trash stays.
    for name in ("history.sqlite3", "history.sqlite3-wal", "history.sqlite3-shm"):
        (out / name).unlink(missing_ok=True)
    with History(out / "history.sqlite3", out) as second:
        assert second.count() == 0 and second.list() == []
    assert _trashed(out) == ["real-1.flac", "real-1.flac.json"]
    assert history.undo_delete(item.id).prompt == "real 1"
    assert history.count() == 1
    history.close()


def test_the_clean_up_of_abandoned_writes_leaves_the_trash_alone(history, out):
    from studio.audio import remove_abandoned_writes

    item = history.add(_file(out, "lofi.wav", _meta(2)), _meta(2))
    (out / "lofi.wav").write_bytes(b"")  # as empty as a placeholder, once in the trash without its sidecar
    history.delete(item.id)
    for path in (out / ".trash").rglob("*"):
        os.utime(path, (0, 0))
    assert remove_abandoned_writes(out, older_than_s=0) == []
    assert _trashed(out) == ["lofi.wav", "lofi.wav.json"]


DELETER = r"""
import sys
from pathlib import Path
from studio.history import History

out = Path(sys.argv[1])
history = History(out / "history.sqlite3", out)
[item] = history.list("deleted elsewhere")
assert history.delete(item.id)
print("deleted", item.id, flush=True)
sys.stdin.readline()  # the other process starts meanwhile
back = history.undo_delete(item.id)
print("undone", back.id, flush=True)
history.close()
"""


def test_a_delete_in_one_process_is_respected_by_the_other_s_reconcile(out):
    with History(out / "history.sqlite3", out) as history:
        meta = _meta(3, prompt="deleted elsewhere")
        item = history.add(_file(out, "elsewhere.wav", meta), meta)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", DELETER, str(out)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["deleted", str(item.id)], child.stderr.read()
        with History(out / "history.sqlite3", out) as other:  # a start: reconcile and empty the trash
            assert other.count() == 0 and other.get(item.id) is None
            assert other.rebuild_from_sidecars() == 0
            assert _trashed(out) == ["elsewhere.wav", "elsewhere.wav.json"]  # the live process's Undo still works
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().split() == ["undone", str(item.id)], child.stderr.read()
            assert [i.id for i in other.list()] == [item.id] and (out / "elsewhere.wav").exists()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
