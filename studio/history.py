"""SQLite history of generations (the embedded default store).

One row per finished file, added by the caller only after the audio and its sidecar are on disk.
The sidecars are the source of truth: the database is an index of them that can always be rebuilt
(`History.rebuild_from_sidecars`), so a lost or corrupt database costs nothing but a rescan.

- **Nothing finished goes missing.** Every open reconciles the index with the folder: a sidecar without a row
  (its row could not be written: the database was locked, or the writer was killed between the sidecar and
  the row) gets one; rows whose files vanished are kept as below. The check is by file name (one query and
  one directory listing); only the sidecars of files without a row are read.
- **Busy.** A generation's row (`record`) waits for SQLite's busy timeout; if another process still holds
  the database (a second studio, a CLI run, a backup tool), the row is queued and a background thread keeps
  trying until it is written, without blocking the generation or the page. A database held at start is
  opened by that thread once it is free (the studio starts all the same, saying which file is held).
- **Deleted or replaced.** Before each use the database file is compared with the one open (existence and
  inode); if it was deleted (say, with the output folder) or replaced, it is opened (created) again and
  reconciled, instead of writing on into a file nobody else can see.

Choices, so the UI can rely on them:
- **Threads and processes.** One connection shared under a lock (`check_same_thread=False`), so the
  Gradio worker threads take turns; other processes (the CLI, a second app) meet it through SQLite's
  own locking, with WAL, `synchronous=NORMAL` and a busy timeout. Every write is one
  `BEGIN IMMEDIATE` transaction: a kill -9 loses at most the write in progress, never a committed
  row (a power cut may lose the last commits, which the sidecars bring back). The file name is a unique
  key, so processes indexing the same folder at once never duplicate a file.
- **Missing files.** Rows whose audio file is gone are kept (a drive may come back), but `list()` and
  `count()` skip them and log each one once; `get()` still returns them, so a link to one can say
  what is gone. `delete()` removes the row whether or not the file exists.
- **Trash.** `delete()` never removes a file: it moves the audio and its sidecar into
  `OUTPUT_DIR/.trash/<session>/<id>/` (hidden, so neither the reconcile, which reads the top level only,
  nor the clean-up of abandoned writes sees them) and `undo_delete()` moves both back and writes the
  row again, with the same id. Each History holds an advisory lock on its own session folder while it
  is open; a start empties the session folders of the Histories that are gone (made before the start
  and unlocked), so a second process starting on the same folder never takes the Undo of a running one.
- **Search** is a case-insensitive substring match over the prompt (or the text spoken) and the model
  id. Both sides are Unicode case-folded ("STRASSE" finds "Straße"); the user's text is a bound LIKE
  parameter with `\\`, `%` and `_` escaped, so it only ever matches itself (NUL, where SQLite's LIKE
  would stop reading, is U+FFFD on both sides; a query beyond LIKE's 50 kB limit uses `instr`).
- **Order** is newest first by the generation's own `created` time, then by id.
- **Files** are stored relative to the output directory when inside it (the folder can be moved),
  otherwise absolute. Adding a file already in the history replaces its row (the file was
  overwritten, so the old row described audio that no longer exists).
- **Corruption.** A database file SQLite cannot read is moved aside to
  `history.sqlite3.corrupt-<UTC timestamp>` (with its -wal/-shm), a fresh one is created and filled
  from the sidecars. A missing database is likewise filled from the sidecars.
- **Schema** versions live in `PRAGMA user_version`; `_MIGRATIONS` takes a database from any older
  version to `SCHEMA_VERSION` in one transaction.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from studio.audio import read_metadata, sidecar_path, valid_unicode

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there, which is the lock
    fcntl = None  # type: ignore[assignment]
from studio.catalog import metadata_text
from studio.errors import InvalidInput, StorageError, StudioError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000  # how long a call waits for another process's write to finish
RECORD_WAIT_MS = 2_000  # a generation's row waits this long, then is queued for the background thread
START_WAIT_MS = 2_000  # opening at start waits this long, then the background thread takes over
RETRY_WAIT_MS = 250  # each background attempt waits this long (holding the connection: the page waits too)
RETRY_FIRST_S, RETRY_MAX_S = 0.25, 2.0  # pause between background attempts: doubling, up to the maximum
MAX_LIMIT = 1_000
_FEW = 200  # above this many rows, checking which files exist scans the folder once instead of a stat per row
AUDIO_EXTS = ("wav", "flac", "mp3", "ogg")
FIX = "check disk space and permissions of --output-dir"
PERMISSION_FIX = "give this user write permission on --output-dir (and history.sqlite3 in it), or choose another"
SPACE_FIX = "free disk space or choose another --output-dir"
TRASH = ".trash"  # inside the output directory: deleted files wait here for an Undo until the next start
TRASH_LOCK = ".lock"  # in each session folder: held (flock) by the History that deletes into it
TRASH_ENTRY = "entry.json"  # in each item's trash folder: its id, where it was and its metadata
TRASH_MAKING_S = 60.0  # a session folder still being made (hidden name) older than this was abandoned

# Each entry takes the database from version (index) to version (index + 1).
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE generations (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the UI may hold an id after a delete
            created     TEXT    NOT NULL,                   -- ISO 8601 UTC, seconds: sorts as text
            task        TEXT    NOT NULL,
            model       TEXT    NOT NULL,
            prompt      TEXT    NOT NULL,
            seed        INTEGER NOT NULL,
            settings    TEXT    NOT NULL,                   -- JSON object
            format      TEXT    NOT NULL,
            file        TEXT    NOT NULL UNIQUE,
            duration    REAL    NOT NULL,
            sample_rate INTEGER NOT NULL,
            elapsed_s   REAL    NOT NULL,
            estimated_s REAL,
            peak_bytes  INTEGER,
            metadata    TEXT    NOT NULL,                   -- JSON object, as in the sidecar
            search      TEXT    NOT NULL                    -- casefold(prompt + U+001F + model)
        )""",
        "CREATE INDEX generations_newest ON generations (created DESC, id DESC)",
        "CREATE INDEX generations_task_newest ON generations (task, created DESC, id DESC)",
        # Files taken out of the history but kept on disk: a rebuild must not bring them back.
        "CREATE TABLE forgotten (file TEXT PRIMARY KEY)",
    ],
]

_COLUMNS = ("id, created, task, model, prompt, seed, settings, format, file, duration, sample_rate, "
            "elapsed_s, estimated_s, peak_bytes, metadata")
_COLUMN_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))
# Prompt and model are searched as one folded text; this separator keeps a match from spanning both.
_SEARCH_SEP = "\x1f"
# SQLite refuses LIKE patterns over 50,000 bytes; longer queries use instr(), the same substring test.
_MAX_LIKE_BYTES = 40_000


@dataclass(frozen=True)
class HistoryItem:
    id: int
    created: str  # ISO 8601 UTC, e.g. 2026-11-24T00:09:37+00:00
    task: str  # music / speech / sfx
    model: str
    prompt: str  # the prompt, or the text spoken
    seed: int
    settings: dict  # the model's settings as generated (duration, guidance_scale, voice, ...)
    format: str  # wav / flac / mp3 / ogg
    file: str  # relative to the output directory when inside it, else absolute
    duration: float
    sample_rate: int
    elapsed_s: float
    estimated_s: float | None
    peak_bytes: int | None
    metadata: dict  # the full metadata dict as written to the sidecar


class HistoryBusy(StorageError):
    """Another process holds the database: the call may succeed later (`History.record` queues its row)."""


class History:
    """The generations in `output_dir`, indexed in the SQLite file `db_path`. Safe to share between threads."""

    def __init__(self, db_path: Path, output_dir: Path) -> None:
        self.db_path = Path(db_path).expanduser().absolute()
        self.output_dir = Path(output_dir).expanduser().resolve()
        self._lock = threading.RLock()
        self._reported_missing: set[int] = set()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the database file `_conn` has open
        self._closed = False
        self._wait_ms = BUSY_TIMEOUT_MS
        self._waiting: str | None = None  # why the database is not open yet (another process holds it)
        self._pending: dict[str, tuple[Path, dict]] = {}  # rows of finished files that wait for the database
        self._needs_reconcile = False
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_problem = ""
        self._trash_session: Path | None = None  # this History's folder in the trash, made at its first delete
        self._trash_fd: int | None = None  # holds the session's lock while this History is open
        self._make_folders()
        self.empty_trash()
        with self._lock, self._busy_wait(START_WAIT_MS):
            try:
                self._connect()
            except HistoryBusy as exc:
                self._waiting = str(exc)
                log.warning("%s", exc)
                self._kick()

    # ------------------------------------------------------------------ public API
    def record(self, path: Path, metadata: Mapping) -> HistoryItem | None:
        """`add` for a generation just written: the row, or None if the database is busy and the row is queued.

        A queued row is written by a background thread as soon as the database is free (and, should this
        process end first, by the reconcile at the next start: the sidecar is on disk). Errors that waiting
        cannot cure (bad metadata, a refused row) are raised as from `add`.
        """
        path = Path(path)
        try:
            with self._lock, self._busy_wait(RECORD_WAIT_MS):
                return self.add(path, metadata)
        except StorageError as exc:
            if not (isinstance(exc, HistoryBusy) or isinstance(exc.__cause__, sqlite3.OperationalError)):
                raise
            if not path.is_file():
                raise
            with self._lock:
                if self._closed:
                    raise
                self._pending[self._key(path)] = (path, dict(metadata))
                self._kick()
            if isinstance(exc, HistoryBusy):
                log.warning("%s is written; another process holds the history %s for now, so its entry is added in "
                            "the background as soon as the database is free.", path, self.db_path)
            else:
                log.warning("%s is written, but the history cannot take its entry yet (%s); it is added in the "
                            "background as soon as it can.", path, exc)
            return None

    def pending(self) -> int:
        """How many finished files wait for their row (see `record`)."""
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the background thread to write what waits; True if nothing waits now."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                idle = self._conn is not None and not self._pending and not self._needs_reconcile
            if idle or time.monotonic() >= deadline:
                return idle
            time.sleep(0.05)

    def add(self, path: Path, metadata: Mapping) -> HistoryItem:
        """Record the finished file `path` (which must exist) with its sidecar `metadata`; return the row."""
        path = Path(path)
        if not path.is_file():
            raise StorageError(f"Cannot add {path} to the history: the file does not exist; write it first.")
        row = _row(metadata, self._key(path), path)
        with self._write() as conn:
            conn.execute("DELETE FROM generations WHERE file = ?", (row["file"],))
            conn.execute("DELETE FROM forgotten WHERE file = ?", (row["file"],))
            cursor = conn.execute(_INSERT, row)
            item_id = cursor.lastrowid
        return _item_from(row, item_id)

    def list(self, query: str = "", *, task: str | None = None, limit: int = 50, offset: int = 0) -> list[HistoryItem]:
        """Newest first, matching `query` (substring of prompt or model, any case) and `task`; missing files skipped."""
        limit = _check_int(limit, "limit", 0, MAX_LIMIT)
        offset = _check_int(offset, "offset", 0, None)
        if limit == 0:
            return []
        where, params = _where(query, task)
        with self._read() as conn:
            wanted: list[int] = []
            skipped = 0
            cursor = conn.execute(f"SELECT id, file FROM generations{where} ORDER BY created DESC, id DESC", params)
            missing: list[tuple[int, str]] = []
            exists = self._existence(many=offset + limit > _FEW)
            for item_id, file in cursor:
                if not exists(file):
                    missing.append((item_id, file))
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                wanted.append(item_id)
                if len(wanted) == limit:
                    break
            cursor.close()
            rows = {}
            if wanted:
                marks = ",".join("?" * len(wanted))
                for r in conn.execute(f"SELECT {_COLUMNS} FROM generations WHERE id IN ({marks})", wanted):
                    rows[r[0]] = r
        self._report_missing(missing)
        return [_item_from_db(rows[i]) for i in wanted if i in rows]

    def count(self, query: str = "", *, task: str | None = None) -> int:
        """How many entries `list` would show with this query and task, over all pages."""
        where, params = _where(query, task)
        with self._read() as conn:
            files = conn.execute(f"SELECT id, file FROM generations{where}", params).fetchall()
        exists = self._existence(many=len(files) > _FEW)
        missing = [(i, f) for i, f in files if not exists(f)]
        self._report_missing(missing)
        return len(files) - len(missing)

    def get(self, item_id: int) -> HistoryItem | None:
        """The entry with this id, even if its file is gone (see `path_of`); None if there is none."""
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            return None
        with self._read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM generations WHERE id = ?", (item_id,)).fetchone()
        return _item_from_db(row) if row else None

    def delete(self, item_id: int, *, delete_file: bool = True) -> bool:
        """Remove the entry; with `delete_file`, move its audio and sidecar into the trash, from where
        `undo_delete` brings them back until the next start. False if there was no such entry.

        The files go first: if one cannot be moved, StorageError is raised and the entry and its files
        stay as they were, so the history never loses track of a file still on disk.
        """
        item = self.get(item_id)
        if item is None:
            return False
        entry = self._to_trash(item) if delete_file else None
        try:
            with self._write() as conn:
                gone = conn.execute("DELETE FROM generations WHERE id = ?", (item.id,)).rowcount
                if not delete_file:
                    conn.execute("INSERT OR IGNORE INTO forgotten (file) VALUES (?)", (item.file,))
        except BaseException:
            if entry is not None:  # the row stays, so its files come back beside it
                try:
                    self._out_of_trash(entry, item.file)
                    _remove_tree(entry)
                except StudioError as exc:
                    log.error("%s; undo the delete to get it back before the next start.", exc)
            raise
        return gone > 0

    def in_trash(self, item_id: int) -> bool:
        """Whether this History deleted the entry `item_id` into its trash and can still `undo_delete` it."""
        entry = self._trash_entry(item_id)
        return entry is not None and (entry / TRASH_ENTRY).is_file()

    def undo_delete(self, item_id: int) -> HistoryItem | None:
        """Move a file `delete` put in the trash (and its sidecar) back, and list it again with the same id.

        None if this History has no such file in its trash (never deleted here, already undone, or
        emptied by a restart). The row is written from the sidecar, the record; if the database is busy,
        the files are back all the same and the row is queued as in `record` (StorageError says so).
        """
        entry = self._trash_entry(item_id)
        if entry is None or not (entry / TRASH_ENTRY).is_file():
            return None
        try:
            saved = json.loads((entry / TRASH_ENTRY).read_text(encoding="utf-8"))
            file, metadata = str(saved["file"]), saved["metadata"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"Cannot undo: the trash entry {entry} is unreadable ({exc}); its files are in "
                               f"that folder until the next start.") from exc
        audio = self._out_of_trash(entry, file)
        _remove_tree(entry)
        metadata = _read_sidecar(audio) or metadata
        row = _row(metadata, file, audio)
        try:
            with self._write() as conn:
                existing = conn.execute(f"SELECT {_COLUMNS} FROM generations WHERE file = ?", (file,)).fetchone()
                if existing:  # another process indexed it as soon as it was back
                    return _item_from_db(existing)
                conn.execute("DELETE FROM forgotten WHERE file = ?", (file,))
                if conn.execute("SELECT 1 FROM generations WHERE id = ?", (item_id,)).fetchone():
                    new_id = conn.execute(_INSERT, row).lastrowid
                else:
                    conn.execute(_INSERT_WITH_ID, {**row, "id": item_id})
                    new_id = item_id
        except HistoryBusy:
            with self._lock:
                self._pending[file] = (audio, dict(metadata))
                self._kick()
            raise
        return _item_from(row, new_id)

    def empty_trash(self) -> int:
        """Remove for good what Histories that are gone left in the trash (see the module notes); how many
        session folders went. Called at start; the session of a History still open is never touched."""
        trash = self.output_dir / TRASH
        try:
            entries = list(os.scandir(trash))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("Could not read the trash %s: %s", trash, exc)
            return 0
        started = time.time()
        emptied = 0
        for entry in entries:
            path = Path(entry.path)
            if self._trash_session is not None and path == self._trash_session:
                continue
            if entry.name.startswith("."):  # a session being made (see _session): only if long abandoned
                try:
                    if entry.stat(follow_symlinks=False).st_mtime > started - TRASH_MAKING_S:
                        continue
                except OSError:
                    continue
            if entry.is_dir(follow_symlinks=False):
                fd = _take_trash_lock(path / TRASH_LOCK)
                if fd is False:
                    continue  # a live History holds it: its Undo still works
                try:
                    _remove_tree(path)
                finally:
                    if isinstance(fd, int):
                        os.close(fd)
            else:
                _remove_quietly(path)
            emptied += not os.path.lexists(path)
        if emptied:
            log.info("Emptied the trash %s: %d folder(s) of files deleted before this start.", trash, emptied)
        return emptied

    def path_of(self, item: HistoryItem) -> Path:
        """Absolute path of the entry's audio file (which may no longer exist)."""
        return self._path(item.file)

    def rebuild_from_sidecars(self) -> int:
        """Index the finished files in the output directory (top level) that have no row; return how many.

        A file counts when its audio and metadata are there: the `<file>.json` sidecar, or, for audio
        whose sidecar was never renamed into place, the JSON comment tag. Files taken out with
        `delete(..., delete_file=False)` stay out. Unreadable or foreign files are skipped with a log line.
        """
        with self._read() as conn:
            known = {f for (f,) in conn.execute("SELECT file FROM generations UNION SELECT file FROM forgotten")}
        rows = []
        for audio, metadata in self._finished_files(known):
            try:
                rows.append(_row(metadata, self._key(audio), audio))
            except InvalidInput as exc:
                log.info("Not indexing %s: %s", audio, exc)
        added = 0
        for start in range(0, len(rows), 500):  # short transactions: adds from other threads go in between
            with self._write() as conn:
                for row in rows[start:start + 500]:
                    # Checked again inside the transaction: another process may have forgotten or deleted it since.
                    if conn.execute("SELECT 1 FROM forgotten WHERE file = ?", (row["file"],)).fetchone():
                        continue
                    if not os.path.isfile(self._path(row["file"])):
                        continue
                    added += conn.execute(_INSERT + " ON CONFLICT (file) DO NOTHING", row).rowcount
        return added

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._trash_fd is not None:  # the next start empties this session's trash
                os.close(self._trash_fd)
                self._trash_fd = None
            self._stop.set()
            worker, self._worker = self._worker, None
            if self._pending:
                log.warning("Closing the history with %d entries not yet written; the next start adds them from "
                            "their sidecars.", len(self._pending))
                self._pending.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=5)

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ opening and recovery
    def _make_folders(self) -> None:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"Could not create the folder for the history {self.db_path}: {exc}; {_os_fix(exc)}.") from exc

    def _connect(self) -> None:
        """Open (or create) the database, moving a corrupt one aside, then reconcile it with the sidecars.

        HistoryBusy if another process holds it; StorageError for what waiting cannot cure. Under `_lock`.
        """
        fresh = not self.db_path.exists()
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise self._error("open", exc) from exc
            self._move_aside(str(exc))
            fresh = True
            try:
                conn = self._open()
            except sqlite3.Error as exc2:
                raise self._error("create", exc2) from exc2
        self._conn = conn
        self._identity = self._file_identity()
        self._reported_missing.clear()  # ids of another file
        self._waiting = None
        self._reconcile(fresh=fresh)

    def _reconcile(self, *, fresh: bool = False) -> None:
        """Index the sidecars that have no row; if the database is busy, the background thread does it later."""
        self._needs_reconcile = True
        try:
            added = self.rebuild_from_sidecars()
        except HistoryBusy:
            self._kick()
            return
        except StudioError as exc:  # the history works; what it could not restore stays on disk for later
            self._needs_reconcile = False
            log.error("Could not restore the history from the sidecars in %s: %s", self.output_dir, exc)
            return
        self._needs_reconcile = False
        if added and fresh:
            log.warning("Restored %d history entries from the sidecars in %s.", added, self.output_dir)
        elif added:
            log.warning("Added %d files of %s to the history that were written without their entry (the database "
                        "was busy or the writer stopped in between).", added, self.output_dir)

    def _open(self) -> sqlite3.Connection:
        """Connect, configure, migrate and check the database; sqlite3.DatabaseError if it is unreadable."""
        conn = sqlite3.connect(self.db_path, timeout=self._wait_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._wait_ms:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # e.g. a network drive without shared memory
                log.warning("History %s runs in %s journal mode (WAL unavailable); it still works.", self.db_path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
            problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("integrity check failed: " + "; ".join(problems[:3]))
        except BaseException:
            conn.close()
            raise
        return conn

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.db_path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _reopen_if_replaced(self) -> None:
        """If the database file open is no longer the one at `db_path` (deleted, replaced), open that one."""
        try:
            st = os.stat(self.db_path)
        except (FileNotFoundError, NotADirectoryError):
            reason = "deleted"
        except OSError:
            return  # cannot tell: carry on with the open file
        else:
            if self._identity is None or (st.st_dev, st.st_ino) == self._identity:
                return
            reason = "replaced"
        log.warning("The history %s was %s while in use; opening it again and indexing the sidecars in %s.",
                    self.db_path, reason, self.output_dir)
        old, self._conn = self._conn, None
        try:
            # Closed before a new file is made under its name: SQLite removes the old file's -wal and -shm by name.
            old.close()
        except sqlite3.Error:
            pass
        self._make_folders()
        try:
            self._connect()
        except HistoryBusy as exc:
            self._waiting = str(exc)
            self._kick()
            raise

    # ------------------------------------------------------------------ the background thread
    def _kick(self) -> None:
        """Start the background thread that opens the database and writes what waits, if it is not running."""
        with self._lock:
            if self._closed or (self._worker is not None and self._worker.is_alive()):
                return
            self._stop.clear()
            self._worker = threading.Thread(target=self._run, name="history-retry", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        delay = RETRY_FIRST_S
        while not self._stop.wait(delay):
            self._attempt()
            with self._lock:
                if self._closed or (self._conn is not None and not self._pending and not self._needs_reconcile):
                    if self._worker is threading.current_thread():
                        self._worker = None
                    return
            delay = min(delay * 2, RETRY_MAX_S)

    def _attempt(self) -> None:
        """One try at what waits: opening the database, reconciling it, writing the queued rows."""
        with self._lock:
            if self._closed:
                return
            try:
                with self._busy_wait(RETRY_WAIT_MS):
                    if self._conn is None:
                        self._connect()
                        log.warning("The history %s is free again and open.", self.db_path)
                    else:
                        self._connection()  # reopens a deleted or replaced file
                        if self._needs_reconcile:
                            self._reconcile()
                    self._write_pending()
            except HistoryBusy:
                return
            except StudioError as exc:
                if str(exc) != self._last_problem:  # said once, not at every try
                    self._last_problem = str(exc)
                    log.error("The history still cannot be written (trying again in the background): %s", exc)

    def _write_pending(self) -> None:
        for key, (path, metadata) in list(self._pending.items()):
            if not path.is_file():
                log.info("Not adding %s to the history: it was deleted while its entry waited.", path)
            else:
                try:
                    self.add(path, metadata)
                except HistoryBusy:
                    raise
                except StorageError as exc:
                    if isinstance(exc.__cause__, sqlite3.OperationalError):
                        raise  # the disk, the permissions: try again later
                    log.error("%s was written but not added to the history: %s", path, exc)
                except StudioError as exc:
                    log.error("%s was written but not added to the history: %s", path, exc)
                else:
                    log.info("Added %s to the history (it waited for the database).", path)
            self._pending.pop(key, None)

    @contextmanager
    def _busy_wait(self, ms: int) -> Iterator[None]:
        """Within the block, SQLite waits at most `ms` for another process's lock. Under `_lock`."""
        saved = self._wait_ms
        self._set_busy_timeout(ms)
        try:
            yield
        finally:
            self._set_busy_timeout(saved)

    def _set_busy_timeout(self, ms: int) -> None:
        self._wait_ms = ms
        if self._conn is not None:
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {ms:d}")
            except sqlite3.Error:
                pass

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"The history {self.db_path} has schema version {version}, newer than this Audio Studio knows "
                f"({SCHEMA_VERSION}): upgrade Audio Studio, or choose another --output-dir."
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for steps in _MIGRATIONS[version:SCHEMA_VERSION]:
                for statement in steps:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _move_aside(self, reason: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.db_path.with_name(f"{self.db_path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.db_path.with_name(f"{self.db_path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.db_path, aside)
            for suffix in ("-wal", "-shm"):  # SQLite finds a database's journal by this naming
                extra = self.db_path.with_name(self.db_path.name + suffix)
                if extra.exists():
                    os.replace(extra, aside.with_name(aside.name + suffix))
        except OSError as exc:
            raise StorageError(
                f"The history {self.db_path} is unreadable ({reason}) and could not be moved aside: {exc}; "
                f"{_os_fix(exc)}, or delete the file."
            ) from exc
        log.warning("The history %s was unreadable (%s); moved it to %s and rebuilding it from the sidecars.",
                    self.db_path, reason, aside.name)

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taken with the write lock up front (no upgrade deadlocks between processes)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error("write to", exc) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"The history {self.db_path} is closed; open a new History.")
        if self._conn is None:
            raise HistoryBusy(self._waiting or self._busy_message())
        self._reopen_if_replaced()
        return self._conn

    def _busy_message(self) -> str:
        return (f"Another process holds the history database {self.db_path} (another Audio Studio on the same "
                f"--output-dir, a `python -m studio` run or a backup tool): waiting for it in the background. "
                f"Generating goes on; finished files are saved in {self.output_dir} and appear in History once it "
                f"is free.")

    def _error(self, action: str, exc: sqlite3.Error) -> StorageError:
        if _is_busy(exc):
            return HistoryBusy(self._busy_message())
        return StorageError(f"Could not {action} the history {self.db_path}: {exc}; {self._fix(exc)}.")

    def _fix(self, exc: sqlite3.Error) -> str:
        """What to do about a SQLite error, by its cause where SQLite names one."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
            return PERMISSION_FIX
        if code == sqlite3.SQLITE_FULL:
            return SPACE_FIX
        if code == sqlite3.SQLITE_CANTOPEN:
            folder = self.db_path.parent
            if not folder.is_dir():
                return f"create the folder {folder} or choose another --output-dir"
            if not os.access(folder, os.W_OK | os.X_OK) or (
                    self.db_path.exists() and not os.access(self.db_path, os.R_OK | os.W_OK)):
                return PERMISSION_FIX
        return FIX

    def _key(self, path: Path) -> str:
        """How `path` is stored: relative (posix) inside the output directory, else absolute."""
        absolute = Path(path).expanduser().resolve()
        if absolute.is_relative_to(self.output_dir):
            return absolute.relative_to(self.output_dir).as_posix()
        return str(absolute)

    def _path(self, file: str) -> Path:
        stored = Path(file)
        return stored if stored.is_absolute() else self.output_dir / PurePosixPath(file)

    def _existence(self, *, many: bool) -> Callable[[str], bool]:
        """A test of whether a stored file exists: one stat each for a few, one directory scan for many."""
        folder = str(self.output_dir)

        def stat_each(file: str) -> bool:
            return os.path.isfile(os.path.join(folder, file))  # join keeps an absolute `file` as is

        if not many:
            return stat_each
        try:
            with os.scandir(folder) as entries:
                names = {e.name for e in entries if e.is_file()}
        except OSError:
            return stat_each
        return lambda file: stat_each(file) if "/" in file or os.sep in file else file in names

    def _report_missing(self, missing: list[tuple[int, str]]) -> None:
        with self._lock:
            new = [(i, f) for i, f in missing if i not in self._reported_missing]
            self._reported_missing.update(i for i, _ in new)
        if new:
            shown = ", ".join(f for _, f in new[:5]) + (", ..." if len(new) > 5 else "")
            log.warning("Hiding %d history entries whose audio file is gone: %s", len(new), shown)

    # ------------------------------------------------------------------ the trash
    def _session(self) -> Path:
        """This History's folder in the trash, made and locked at the first delete. Under `_lock`."""
        if self._trash_session is not None and self._trash_session.is_dir():
            return self._trash_session
        if self._trash_fd is not None:
            os.close(self._trash_fd)
            self._trash_fd = None
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        session = self.output_dir / TRASH / name
        if fcntl is None:  # Windows: the open lock file is the lock, from the moment it exists
            session.mkdir(parents=True)
            lock = os.open(session / TRASH_LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        else:  # made under a hidden name and locked before it gets its name: a start never sees it unlocked
            making = session.with_name(f".{name}")
            making.mkdir(parents=True)
            lock = os.open(making / TRASH_LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # a filesystem without advisory locks: a start may empty it; Undo then says so
            try:
                os.replace(making, session)
            except OSError:
                os.close(lock)
                raise
        self._trash_session, self._trash_fd = session, lock
        return session

    def _trash_entry(self, item_id: Any) -> Path | None:
        if isinstance(item_id, bool) or not isinstance(item_id, int) or self._trash_session is None:
            return None
        return self._trash_session / str(item_id)

    def _to_trash(self, item: HistoryItem) -> Path | None:
        """Move the item's audio and sidecar into this session's trash; the item's trash folder, or None if
        neither file is there. StorageError (with everything put back) if a file cannot be moved."""
        audio = self.path_of(item)
        files = [p for p in (audio, sidecar_path(audio)) if p.is_file() or p.is_symlink()]
        if not files:
            return None
        with self._lock:
            try:
                entry = self._session() / str(item.id)
                if os.path.lexists(entry):  # left by an undo that failed: kept aside until the next start
                    os.replace(entry, entry.with_name(f"{item.id}.{secrets.token_hex(4)}"))
                entry.mkdir()
                (entry / TRASH_ENTRY).write_text(
                    json.dumps({"id": item.id, "file": item.file, "metadata": item.metadata}, ensure_ascii=False),
                    encoding="utf-8")
            except OSError as exc:
                raise StorageError(f"Could not delete {audio} (it goes to the trash {self.output_dir / TRASH} "
                                   f"first, for Undo): {exc}; {_os_fix(exc)}.") from exc
        moved: list[Path] = []
        try:
            for path in files:
                _move(path, entry / path.name)
                moved.append(path)
        except OSError as exc:
            for path in moved:
                _move(entry / path.name, path)
            _remove_tree(entry)
            raise StorageError(f"Could not delete {path}: {exc}; {_os_fix(exc)}.") from exc
        return entry

    def _out_of_trash(self, entry: Path, file: str) -> Path:
        """Move an item's files from its trash folder back to where they were (sidecar first); the audio path."""
        audio = self._path(file)
        for path in (sidecar_path(audio), audio):  # the audio last: a reconcile meanwhile finds it whole
            held = entry / path.name
            if not os.path.lexists(held):
                continue
            if os.path.lexists(path):
                raise StorageError(f"Cannot undo: {path} exists again; the deleted file stays in {entry} until "
                                   f"the next start.")
            try:
                _move(held, path)
            except OSError as exc:
                raise StorageError(f"Could not move {held} back to {path}: {exc}; {_os_fix(exc)}.") from exc
        return audio

    def _finished_files(self, known: set[str]) -> Iterator[tuple[Path, dict]]:
        try:
            names = sorted(os.listdir(self.output_dir))
        except OSError as exc:
            log.warning("Could not scan %s for sidecars: %s", self.output_dir, exc)
            return
        present = set(names)
        for name in names:
            if name.startswith(".") or name.rpartition(".")[2].lower() not in AUDIO_EXTS:
                continue
            audio = self.output_dir / name
            if self._key(audio) in known or not audio.is_file():
                continue
            metadata = _read_sidecar(audio) if sidecar_path(audio).name in present else _read_tags(audio)
            if metadata is not None:
                yield audio, metadata


# ---------------------------------------------------------------------- rows
_INSERT = (
    "INSERT INTO generations (created, task, model, prompt, seed, settings, format, file, duration, sample_rate, "
    "elapsed_s, estimated_s, peak_bytes, metadata, search) VALUES (:created, :task, :model, :prompt, :seed, "
    ":settings, :format, :file, :duration, :sample_rate, :elapsed_s, :estimated_s, :peak_bytes, :metadata, :search)"
)

_INSERT_WITH_ID = _INSERT.replace("INSERT INTO generations (", "INSERT INTO generations (id, ").replace(
    "VALUES (", "VALUES (:id, ")


def _move(source: Path, target: Path) -> None:
    """Rename `source` to `target`; across drives (a file outside the output folder), copy then remove."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)


def _take_trash_lock(lock: Path) -> int | None | bool:
    """The lock of a trash session folder: a descriptor holding it, None if there is no lock to take (no lock
    file, or no advisory locks here and the file is gone), False if a live History holds it."""
    if fcntl is None:
        try:
            lock.unlink(missing_ok=True)  # Windows refuses while the owner has it open
        except OSError:
            return False
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except OSError:
        pass  # no advisory locks on this filesystem: nothing tells a live History's folder apart
    return fd


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("Could not remove %s from the trash: %s", path, exc)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("Could not remove %s from the trash: %s", path, exc)


def _row(metadata: Mapping, file: str, path: Path) -> dict[str, Any]:
    """The columns for one file from its metadata; InvalidInput naming the key if it is unusable."""
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"History metadata must be a dict, but is {type(metadata).__name__}.")
    task = _text(metadata, "task")
    model = _text(metadata, "model")
    _, prompt = metadata_text(metadata)
    prompt = "" if prompt is None else valid_unicode(str(prompt))
    settings = metadata.get("settings") or {}
    if not isinstance(settings, Mapping):
        raise InvalidInput(f"History metadata 'settings' must be a dict, but is {settings!r}.")
    fmt = str(metadata.get("format") or path.suffix.lstrip(".")).lower()
    return {
        "created": _created(metadata.get("created"), path),
        "task": task,
        "model": model,
        "prompt": prompt,
        "seed": _number(metadata, "seed", int, required=True),
        "settings": _json(settings),
        "format": fmt,
        "file": file,
        "duration": _number(metadata, "duration", float, required=True),
        "sample_rate": _number(metadata, "sample_rate", int, required=True),
        "elapsed_s": _number(metadata, "elapsed_s", float) or 0.0,
        "estimated_s": _number(metadata, "estimated_s", float),
        "peak_bytes": _number(metadata, "peak_bytes", int),
        "metadata": _json(metadata),
        "search": _searchable(f"{prompt}{_SEARCH_SEP}{model}"),
    }


def _item_from(row: Mapping[str, Any], item_id: int) -> HistoryItem:
    return HistoryItem(
        id=item_id, created=row["created"], task=row["task"], model=row["model"], prompt=row["prompt"],
        seed=row["seed"], settings=json.loads(row["settings"]), format=row["format"], file=row["file"],
        duration=row["duration"], sample_rate=row["sample_rate"], elapsed_s=row["elapsed_s"],
        estimated_s=row["estimated_s"], peak_bytes=row["peak_bytes"], metadata=json.loads(row["metadata"]),
    )


def _item_from_db(r: tuple) -> HistoryItem:
    row = dict(zip(_COLUMN_NAMES, r, strict=True))
    return _item_from(row, row["id"])


def _text(metadata: Mapping, key: str) -> str:
    value = metadata.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"History metadata needs '{key}' as non-empty text, but it is {value!r}.")
    return valid_unicode(value)


def _number(metadata: Mapping, key: str, kind: type, *, required: bool = False) -> Any:
    value = metadata.get(key)
    if value is None and not required:
        return None
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        number = kind(value)
        if kind is int and number != value:  # 3.7 is not a seed
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"History metadata needs '{key}' as a {kind.__name__}, but it is {value!r}.") from None
    if kind is int and not -(2**63) <= number < 2**63:
        raise InvalidInput(f"History metadata '{key}' = {value!r} does not fit in 64 bits.")
    if kind is float and not math.isfinite(number):
        return None if not required else 0.0
    return number


def _json(value: Any) -> str:
    return valid_unicode(json.dumps(value, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy
    return tolist() if callable(tolist) else str(value)


def _created(value: Any, path: Path) -> str:
    """ISO 8601 UTC to the second, so text order is time order; the file's mtime, else now, if absent."""
    when = None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            when = None
    if when is None:
        try:
            when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        except OSError:
            when = datetime.now(timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")  # naive means local time


def _where(query: str, task: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    text = _searchable(valid_unicode(str(query or "")).strip())
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if len(escaped.encode("utf-8", "surrogatepass")) < _MAX_LIKE_BYTES:
            clauses.append("search LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        else:
            clauses.append("instr(search, ?) > 0")
            params.append(text)
    if task:
        clauses.append("task = ?")
        params.append(valid_unicode(str(task)))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _searchable(text: str) -> str:
    """Case-folded, with NUL as U+FFFD: SQLite's LIKE stops reading a pattern at NUL, so "\\0" would match all."""
    return text.casefold().replace("\0", "\ufffd")


def _check_int(value: Any, name: str, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidInput(f"{name} must be a whole number {bound}, but is {value!r}.")
    return value


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def _os_fix(exc: OSError) -> str:
    """What to do about a failed file operation in the output folder, by its cause."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "create the folder or choose another --output-dir"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PERMISSION_FIX
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return SPACE_FIX
    return FIX


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    return code is None and "integrity check failed" in str(exc)


def _read_sidecar(audio: Path) -> dict | None:
    sidecar = sidecar_path(audio)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.info("Not indexing %s: unreadable sidecar (%s).", audio, exc)
        return None
    return data if isinstance(data, dict) else None


def _read_tags(audio: Path) -> dict | None:
    """Metadata from the comment tag, for a file whose writer died before renaming its sidecar into place."""
    try:
        return read_metadata(audio)
    except Exception as exc:  # noqa: BLE001 - a foreign or broken file must not stop the rebuild
        log.info("Not indexing %s: %s", audio, exc)
        return None
