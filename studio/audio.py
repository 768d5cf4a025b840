"""Peak handling and encoding of generated audio to wav/flac/mp3/ogg files with metadata tags and a JSON sidecar."""

from __future__ import annotations

import errno
import json
import logging
import math
import operator
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # no advisory locks (Windows): abandoned writes are recognised by their age alone
    fcntl = None

import numpy as np
import soundfile as sf

from studio import __version__
from studio.catalog import echo, metadata_text
from studio.errors import InvalidInput, StorageError

logger = logging.getLogger(__name__)

MAX_CHANNELS = 8
TITLE_CHARS = 200
SLUG_CHARS = 32
STORAGE_FIX = "Free disk space or choose another --output-dir."
PERMISSION_FIX = "Give this user write permission on {folder}, or choose another --output-dir."
READ_ONLY_FIX = "{folder} is on a read-only file system: remount it writable, or choose another --output-dir."

# libsndfile 1.2.2 accepts only these rates for MPEG audio; anything else fails at open.
MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
# A rate outside this range is a wrong argument (e.g. a duration), not a real stream.
MIN_RATE, MAX_RATE = 1_000, 384_000


@dataclass(frozen=True)
class FormatInfo:
    """How one output format is encoded and which tags survive a write/read round trip.

    Measured with soundfile 0.14 / libsndfile 1.2.2 (see tests/test_audio.py):
    - wav (RIFF INFO): title, artist, comment, date, software, copyright, album, genre,
      tracknumber round-trip. libsndfile appends " (libsndfile-x.y.z)" to software and cuts
      it at 127 chars. If any one INFO value exceeds 2045 bytes, libsndfile silently drops
      *all* INFO tags. libsndfile stores raw UTF-8 bytes, but RIFF INFO is defined as
      ASCII/ANSI and other readers would show mojibake, so we write ASCII only.
    - flac, ogg (Vorbis comments): every tag incl. license, full UTF-8, no length limit
      met up to 70k chars.
    - mp3 (ID3v2.3 + ID3v1, written by LAME): title, artist, comment, date, album, genre,
      tracknumber round-trip; software is replaced by the LAME version string;
      copyright/license are dropped. Text is read back as latin-1 (UTF-8 comes back as
      mojibake), so we write ASCII only. date lands in TYER, which is a 4-digit year.
    - Lengths: all four formats decode to exactly the frames written, at 8-48 kHz, mono
      and stereo, with no time shift: libsndfile trims MP3 encoder delay/padding via the
      LAME Info tag and Vorbis via granule positions.
    """

    ext: str
    sf_format: str
    subtype: str
    lossy: bool
    mime: str
    unicode_tags: bool  # False: tags must be ASCII (non-ASCII is escaped)
    max_tag_bytes: int | None  # longest single tag value the container keeps
    date_format: str  # strftime pattern the container's date field expects
    max_channels: int = MAX_CHANNELS
    sample_rates: frozenset[int] | None = None  # None: any rate in [MIN_RATE, MAX_RATE]


# 24-bit PCM for wav and flac: 144 dB of range keeps quiet generations clean without
# dither, every browser and DAW plays it, and it is a third smaller than 32-bit float.
# FLAC cannot hold float anyway, so both lossless formats decode to the same samples.
FORMATS: dict[str, FormatInfo] = {
    "wav": FormatInfo("wav", "WAV", "PCM_24", False, "audio/wav", False, 2045, "%Y-%m-%d"),
    "flac": FormatInfo("flac", "FLAC", "PCM_24", False, "audio/flac", True, None, "%Y-%m-%dT%H:%M:%SZ"),
    "mp3": FormatInfo(
        "mp3", "MP3", "MPEG_LAYER_III", True, "audio/mpeg", False, None, "%Y",
        max_channels=2, sample_rates=MP3_RATES,
    ),
    "ogg": FormatInfo("ogg", "OGG", "VORBIS", True, "audio/ogg", True, None, "%Y-%m-%dT%H:%M:%SZ"),
}


def check_format(name: str) -> str:
    """Return the canonical format key for `name` ("WAV", ".flac" ...) or raise InvalidInput."""
    key = name.strip().lower().lstrip(".") if isinstance(name, str) else None
    if key not in FORMATS:
        raise InvalidInput(
            f"Output format {echo(name)} is not supported; choose one of {', '.join(FORMATS)}."
        )
    return key


def make_peak_safe(samples: np.ndarray, *, ceiling_db: float = -1.0) -> tuple[np.ndarray, dict]:
    """Zero NaN/inf and scale the whole clip down so its peak is at most `ceiling_db` dBFS.

    One gain for the whole clip (no clipping, no per-sample limiting); quiet audio is never
    boosted. Returns float32 samples of the same shape and
    {"peak_in": peak of the finite input, "gain_db": applied gain (<= 0), "nonfinite": count}.
    """
    if not (math.isfinite(ceiling_db) and ceiling_db <= 0):
        raise InvalidInput(f"ceiling_db must be a finite number <= 0 dBFS, but is {ceiling_db!r}.")
    x = np.asarray(samples)
    # float32 stays float32 to spare memory; anything else goes through float64 so that
    # a huge finite value is scaled down rather than overflowing to inf on the cast.
    x = np.array(x, dtype=np.float32 if x.dtype == np.float32 else np.float64)
    bad = ~np.isfinite(x)
    nonfinite = int(bad.sum())
    if nonfinite:
        x[bad] = 0.0
        logger.warning("Replaced %d NaN/inf samples with silence.", nonfinite)
    peak = float(np.abs(x).max()) if x.size else 0.0
    ceiling = 10.0 ** (ceiling_db / 20.0)
    gain_db = 0.0
    if peak > ceiling:
        gain = ceiling / peak
        x *= gain
        gain_db = 20.0 * math.log10(gain)
        logger.info("Peak %.3f exceeds %.1f dBFS; scaled the clip by %.2f dB.", peak, ceiling_db, gain_db)
    return x.astype(np.float32, copy=False), {"peak_in": peak, "gain_db": gain_db, "nonfinite": nonfinite}


def to_frames(samples: np.ndarray) -> np.ndarray:
    """Return audio as a C-contiguous (n, channels) float32 array, the layout soundfile writes.

    Accepts (n,), (channels, n) with channels <= 8 and channels < n, or (n, channels).
    Signed integer PCM is scaled to [-1, 1).
    """
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.signedinteger):
        x = x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))
    elif not np.issubdtype(x.dtype, np.floating):
        raise InvalidInput(
            f"Audio samples must be floating point or signed integer PCM, but have dtype {x.dtype}; "
            "convert them with samples.astype('float32')."
        )
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 2:
        rows, cols = x.shape
        if rows <= MAX_CHANNELS and rows < cols:
            x = x.T
        elif not (cols <= MAX_CHANNELS and cols < rows):
            raise InvalidInput(
                f"Audio of shape {x.shape} is neither (channels, n) nor (n, channels) with at most "
                f"{MAX_CHANNELS} channels and more samples than channels; pass one clip, e.g. audio[0]."
            )
    else:
        raise InvalidInput(
            f"Audio must have 1 or 2 dimensions, but has shape {x.shape}; pass one clip, e.g. audio[0]."
        )
    if x.shape[0] == 0:
        raise InvalidInput("Audio has no samples (length 0); the model produced nothing to save.")
    return np.ascontiguousarray(x, dtype=np.float32)


def slugify(text: str, max_chars: int = SLUG_CHARS) -> str:
    """ASCII [a-z0-9-] slug of `text`: NFKD-normalised, non-ASCII dropped, at most `max_chars`."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_chars].rstrip("-")


def output_path(
    out_dir: Path,
    *,
    task: str,
    model_id: str,
    seed: int,
    prompt: str,
    ext: str,
    now: datetime | None = None,
) -> Path:
    """Create and return a new, empty file named like 20261123-234501-music-musicgen-small-s42-lofi-beat-3f9a1c.wav.

    The file is created exclusively, so concurrent callers never get the same path; the
    name is built only from slugs, digits and hex, so it never holds a separator, '..' or
    a control character whatever the prompt is. Creates `out_dir` if needed.
    """
    ext = FORMATS[check_format(ext)].ext
    try:
        seed = operator.index(seed)
    except TypeError:
        raise InvalidInput(f"seed must be an integer, but is {seed!r}.") from None
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    parts = [stamp, slugify(task), slugify(str(model_id).rsplit("/", 1)[-1]), f"s{seed}", slugify(prompt)]
    stem = "-".join(p for p in parts if p)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            path = out_dir / f"{stem}-{secrets.token_hex(3)}.{ext}"
            try:
                with open(path, "x"):
                    return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise _storage_error(out_dir, exc) from exc
    raise StorageError(f"Could not find a free file name in {out_dir} after 100 tries. {STORAGE_FIX}")


def write_audio(path: Path, samples: np.ndarray, sample_rate: int, fmt: str, metadata: Mapping[str, Any]) -> Path:
    """Write `samples` to `path` as `fmt` with tags, plus the sidecar `<path>.json`; return `path`.

    Samples are made peak-safe (-1 dBFS) first. Tags: title = metadata "prompt" or "text"
    (first 200 chars), artist = "model" (or "model_id"), software = "Audio Studio <version>",
    date = "created" (ISO) or now, comment = the whole metadata as compact JSON. WAV and MP3
    tags are ASCII (non-ASCII escaped: the comment is json.dumps(ensure_ascii=True), so it
    still round-trips exactly); a WAV comment over 2045 bytes has its longest strings
    shortened and carries "_truncated": true. Control characters in title/artist become
    spaces; lone surrogates (not valid Unicode) become U+FFFD everywhere, sidecar included.
    See FormatInfo for what each format keeps.

    Both files are written to hidden temporaries in the same directory, flushed to disk and
    renamed into place, so a crash never leaves a partial file under the final name. On
    failure nothing new is left behind (an empty placeholder from output_path is removed too).
    MP3 needs one of the MPEG rates (8-48 kHz) and at most 2 channels: other input raises
    InvalidInput rather than being resampled or downmixed behind the user's back.
    """
    info = FORMATS[check_format(fmt)]
    sample_rate = _check_rate(sample_rate, info)
    frames = to_frames(samples)
    if frames.shape[1] > info.max_channels:
        raise InvalidInput(
            f"{info.ext} holds at most {info.max_channels} channels, but the audio has {frames.shape[1]}; "
            "choose wav, flac or ogg, or mix down to stereo."
        )
    frames, _ = make_peak_safe(frames)
    comment_json = _metadata_json(metadata, ensure_ascii=not info.unicode_tags)
    tags = _tags(info, metadata, comment_json)

    path = Path(path)
    sidecar = sidecar_path(path)
    tmp_audio = _temp_name(path)
    tmp_side = _temp_name(sidecar)
    renamed = False
    # Every file of a write in progress is locked (fcntl.flock) until it is renamed into place, so a start-up in
    # another process sharing the folder (remove_abandoned_writes) can tell this write from one killed midway.
    held: list[int] = []
    try:
        placeholder = _lock_existing(path)  # output_path's empty reservation, if it is one
        if placeholder is not None:
            held.append(placeholder)
        held.append(_create_locked(tmp_audio))
        _encode(tmp_audio, frames, sample_rate, info, tags, held[-1])
        text = json.dumps(_jsonable(metadata), ensure_ascii=False, indent=2) + "\n"
        held.append(_create_locked(tmp_side))
        _write_all(held[-1], text.encode("utf-8"))
        os.replace(tmp_audio, path)
        renamed = True
        os.replace(tmp_side, sidecar)
    except (OSError, sf.LibsndfileError) as exc:
        _remove_quietly(tmp_audio, tmp_side)
        if renamed or _is_empty_file(path):
            _remove_quietly(path)
        raise _storage_error(path, exc) from exc
    except BaseException:
        _remove_quietly(tmp_audio, tmp_side)
        raise
    finally:
        for fd in held:
            os.close(fd)  # releases its lock
    logger.info("Wrote %s (%s, %d Hz, %d ch, %d frames).", path, info.ext, sample_rate, *frames.shape[::-1])
    return path


def read_metadata(path: Path) -> dict:
    """Return the metadata of an audio file: from its `<file>.json` sidecar, else its comment tag."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if sidecar.exists():
        try:
            return json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable sidecar %s (%s); reading the comment tag instead.", sidecar, exc)
    try:
        with sf.SoundFile(path) as f:
            comment = f.comment
    except (OSError, sf.LibsndfileError) as exc:
        raise StorageError(
            f"Could not read metadata from {path}: {exc}. Check that the file exists and is a wav/flac/mp3/ogg file."
        ) from exc
    try:
        data = json.loads(comment)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise StorageError(
            f"{path} has no Audio Studio metadata (no {sidecar.name} and no JSON comment tag); "
            "only files written by Audio Studio carry it."
        )
    return data


# --- helpers -----------------------------------------------------------------------------


def _check_rate(sample_rate: int, info: FormatInfo) -> int:
    try:
        rate = operator.index(sample_rate)
    except TypeError:
        raise InvalidInput(f"sample_rate must be an integer number of Hz, but is {sample_rate!r}.") from None
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidInput(f"sample_rate must be between {MIN_RATE} and {MAX_RATE} Hz, but is {rate}.")
    if info.sample_rates is not None and rate not in info.sample_rates:
        rates = ", ".join(str(r) for r in sorted(info.sample_rates))
        raise InvalidInput(
            f"{info.ext} cannot be written at {rate} Hz; it supports {rates} Hz. Choose wav, flac or ogg instead."
        )
    return rate


def _jsonable(value: Any) -> Any:
    """Return `value` with numpy scalars/arrays, paths and datetimes turned into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return valid_unicode(value)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    raise InvalidInput(
        f"Metadata value {value!r} of type {type(value).__name__} cannot be stored as JSON; "
        "use str, int, float, bool, list or dict."
    )


def valid_unicode(text: str) -> str:
    """`text` with lone surrogates (not encodable as UTF-8) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _tag_text(text: str) -> str:
    """`text` fit for a C-string tag: valid Unicode, control characters (incl. NUL) as spaces."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in valid_unicode(text))


def _metadata_json(metadata: Mapping[str, Any], *, ensure_ascii: bool) -> str:
    return json.dumps(_jsonable(metadata), ensure_ascii=ensure_ascii, separators=(",", ":"))


def _fit_comment(metadata: Mapping[str, Any], limit: int) -> str:
    """Compact ASCII JSON of `metadata`, its longest strings halved until it fits in `limit` bytes."""
    data = dict(_jsonable(metadata))
    data["_truncated"] = True
    while True:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
        if len(text) <= limit:
            return text
        longest = max((k for k, v in data.items() if isinstance(v, str)), key=lambda k: len(data[k]), default=None)
        if longest is None or len(data[longest]) <= 8:
            return json.dumps({"_truncated": True})
        data[longest] = data[longest][: len(data[longest]) // 2] + "..."


def _ascii(text: str) -> str:
    """ASCII form of `text` for tags that cannot hold UTF-8: accents dropped, the rest escaped."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.encode("ascii", "backslashreplace").decode("ascii")


def _tag_date(metadata: Mapping[str, Any]) -> datetime:
    created = metadata.get("created")
    if isinstance(created, datetime):
        return created
    if isinstance(created, str):
        try:
            return datetime.fromisoformat(created)
        except ValueError:
            pass
    return datetime.now(timezone.utc)


def _tags(info: FormatInfo, metadata: Mapping[str, Any], comment_json: str) -> dict[str, str]:
    title = str(metadata_text(metadata)[1] or "")
    if len(title) > TITLE_CHARS:
        title = title[: TITLE_CHARS - 1].rstrip() + "…"
    when = _tag_date(metadata)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    tags = {
        "title": _tag_text(title),
        "artist": _tag_text(str(metadata.get("model") or metadata.get("model_id") or "")),
        "software": f"Audio Studio {__version__}",
        "date": when.strftime(info.date_format),
        "comment": comment_json,
    }
    if not info.unicode_tags:
        tags = {k: _ascii(v) for k, v in tags.items()}
    if info.max_tag_bytes is not None:
        if len(tags["comment"]) > info.max_tag_bytes:
            tags["comment"] = _fit_comment(metadata, info.max_tag_bytes)
        tags = {k: v[: info.max_tag_bytes] for k, v in tags.items()}
    return {k: v for k, v in tags.items() if v}


def _encode(tmp: Path, frames: np.ndarray, sample_rate: int, info: FormatInfo, tags: Mapping[str, str],
            fd: int) -> None:
    """Encode `frames` into the new, empty file `tmp`, open as `fd` (the caller closes it), and fsync it."""
    # closefd=False: the caller keeps the descriptor (and the lock on it) until the file is renamed into place.
    with sf.SoundFile(
        fd, "w", sample_rate, frames.shape[1], info.subtype, format=info.sf_format, closefd=False
    ) as out:
        for name, value in tags.items():  # tags must precede the audio (Vorbis/ID3 headers)
            setattr(out, name, value)
        out.write(frames)
    os.fsync(fd)
    # libsndfile reports most write failures, but check that what landed decodes as written.
    got = sf.info(str(tmp))
    if (got.frames, got.samplerate, got.channels) != (frames.shape[0], sample_rate, frames.shape[1]):
        raise OSError(
            errno.EIO,
            f"encoder wrote {got.frames} frames at {got.samplerate} Hz x {got.channels} ch, "
            f"expected {frames.shape[0]} at {sample_rate} Hz x {frames.shape[1]}",
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _create_locked(path: Path) -> int:
    """Create `path` exclusively (umask permissions) and lock it; the descriptor, whose closing releases the lock."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file just made by us: nobody else can hold it
        except OSError:
            pass  # a filesystem without locks: the clean-up at start falls back to the file's age
    return fd


def _open_existing(path: Path) -> int:
    """A read-only descriptor of `path`, to take its lock: it never follows a symlink and never blocks."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))


def _lock_existing(path: Path) -> int | None:
    """A locked descriptor of the existing file `path` (output_path's placeholder), or None if there is none."""
    if fcntl is None:
        return None
    try:
        fd = _open_existing(path)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)  # held elsewhere, or no locks here: the write itself does not need it
        return None
    return fd


def sidecar_path(path: Path) -> Path:
    """Where the metadata of the audio file `path` is kept: `<file>.json` beside it."""
    return path.with_name(path.name + ".json")


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")


_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.part$")  # what _temp_name makes
ABANDONED_AFTER_S = 60.0  # without advisory locks, a leftover this old is taken as abandoned
WRITE_GRACE_S = 2.0  # younger than this, an unlocked file may be a write that has not taken its lock yet


def remove_abandoned_writes(out_dir: Path, *, older_than_s: float = ABANDONED_AFTER_S) -> list[Path]:
    """Remove what writes killed midway left in `out_dir` (top level); return the paths removed. Called at start.

    That is the hidden temporaries of write_audio and the empty placeholders of output_path whose audio never
    arrived (no sidecar). Several processes may share the folder (the page, a `python -m studio` run), so a
    write in progress must stay: every writer holds an advisory lock (fcntl.flock) on its files until they are
    renamed into place, and a file goes only if its lock can be taken (its writer is gone) and it is older than
    WRITE_GRACE_S (the moment between creating a file and locking it). Where there are no advisory locks
    (Windows, or a filesystem without them), only files untouched for `older_than_s` go.
    """
    exts = {info.ext for info in FORMATS.values()}
    now = datetime.now().timestamp()
    removed = []
    try:
        entries = list(os.scandir(out_dir))
    except FileNotFoundError:
        return removed
    except OSError as exc:
        logger.warning("Could not scan %s for abandoned writes: %s", out_dir, exc)
        return removed
    names = {entry.name for entry in entries}
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        temp = _TEMP_RE.match(entry.name) is not None
        placeholder = (stat.st_size == 0 and entry.name.rpartition(".")[2].lower() in exts
                       and sidecar_path(Path(entry.path)).name not in names)
        if not (temp or placeholder):
            continue
        path = Path(entry.path)
        if _remove_if_abandoned(path, stat.st_mtime, now, older_than_s, placeholder=placeholder):
            removed.append(path)
    if removed:
        logger.warning("Removed %d file(s) left by interrupted writes in %s: %s", len(removed), out_dir,
                       ", ".join(p.name for p in removed[:5]) + (", ..." if len(removed) > 5 else ""))
    return removed


def _remove_if_abandoned(path: Path, mtime: float, now: float, older_than_s: float, *, placeholder: bool) -> bool:
    """Remove `path` if no live writer holds it (see remove_abandoned_writes); True if it is gone now."""
    if fcntl is None:
        if mtime >= now - older_than_s:
            return False
        _remove_quietly(path)
        return not path.exists()
    if mtime > now - WRITE_GRACE_S:
        return False
    try:
        fd = _open_existing(path)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        except OSError:
            if mtime >= now - older_than_s:  # no locks on this filesystem: its age decides
                return False
        # Under the lock: still the same file (not renamed over by a write that just finished), still unfinished.
        held, current = os.fstat(fd), os.lstat(path)
        if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
            return False
        if placeholder and (current.st_size != 0 or sidecar_path(path).exists()):
            return False
        _remove_quietly(path)
        return not path.exists()
    except OSError:
        return False
    finally:
        os.close(fd)


def _is_empty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def _remove_quietly(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing there to remove
        except OSError as exc:
            logger.warning("Could not remove %s: %s", p, exc)


def _storage_error(path: Path, exc: BaseException) -> StorageError:
    """StorageError naming `path`, the OS reason and the fix."""
    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
        reason = exc.strerror or str(exc)
        reason = f"{reason} ({code})" if code else reason
    else:
        # libsndfile reports a failed write(2), e.g. a full disk, as code 2 with no text and no errno.
        detail = (getattr(exc, "error_string", "") or "the system refused the write").rstrip(".")
        reason = f"{detail} (libsndfile error {getattr(exc, 'code', '?')}){_free_space(path)}"
    return StorageError(f"Could not write {path}: {reason}. {storage_fix(exc, path.parent)}")


def storage_fix(exc: BaseException, folder: Path) -> str:
    """What to do about `exc`, a failed write in `folder`, by its cause: a missing folder, permission, or space."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return f"Create the folder {folder} or choose another one."
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return PERMISSION_FIX.format(folder=folder)
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return READ_ONLY_FIX.format(folder=folder)
    return STORAGE_FIX


def _free_space(path: Path) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    return f"; {free / 1e6:.1f} MB free on that drive"
