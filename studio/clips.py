"""Audio a user brings as input: read and checked with soundfile, conformed to a model's rate and channels, stored once.

A clip is read whole into float32 (clips are short: the longest a model takes is minutes) and checked here, so a
model never sees a damaged one: every refusal names the file, what is wrong with it and what to do. Resampling
is scipy's polyphase filter (the same the studio uses elsewhere), never a hand-written one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from studio.errors import InvalidInput, StorageError

log = logging.getLogger(__name__)

INPUTS_DIR = "inputs"  # under the output folder: every clip used as an input, stored once by content
READABLE = ("wav", "flac", "ogg", "mp3")  # what the page offers; anything libsndfile reads is accepted
MAX_CHANNELS = 2  # models take mono or stereo; a surround file would be folded blindly
# What a user may hand in at all, whatever the model: longer clips are refused from the header, before decoding.
MAX_SECONDS = 300.0
# The biggest upload the longest accepted clip needs: MAX_SECONDS of 48 kHz stereo 32-bit float WAV (the richest
# format a browser recording or a DAW export uses), plus room for its header. The page refuses larger uploads.
UPLOAD_RATE, UPLOAD_CHANNELS, UPLOAD_SAMPLE_BYTES = 48_000, 2, 4
MAX_UPLOAD_BYTES = int(MAX_SECONDS * UPLOAD_RATE * UPLOAD_CHANNELS * UPLOAD_SAMPLE_BYTES) + 1_000_000
CACHED_CLIPS = 4  # decoded clips kept for the estimates a page asks for while the user edits other settings


@dataclass(frozen=True, eq=False)
class Clip:
    """A decoded, checked audio clip: the samples as the file holds them and where they came from."""

    samples: np.ndarray  # float32, (channels, frames), finite
    sample_rate: int
    name: str  # the file's name as the user knows it (an upload's original name)
    path: Path  # where it was read from; the stored copy once stored
    digest: str  # sha256 of the file's bytes: the stored copy is named by it, so a clip is stored once
    stored: str | None = None  # the stored copy, relative to the output folder ("inputs/<digest>.wav")

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / float(self.sample_rate)

    def conformed(self, sample_rate: int, channels: int) -> np.ndarray:
        """A new float32 (channels, frames) array at `sample_rate`: stereo folded to mono by averaging, mono duplicated to
        stereo, resampled with scipy's polyphase filter (an integer ratio, exact for every common rate)."""
        samples = self.samples
        if channels == 1 and samples.shape[0] > 1:
            samples = samples.mean(axis=0, keepdims=True)
        elif samples.shape[0] == 1 and channels > 1:
            samples = np.repeat(samples, channels, axis=0)
        elif samples.shape[0] != channels:
            raise InvalidInput(f"{self.name} has {samples.shape[0]} channels and the model takes {channels}")
        if sample_rate != self.sample_rate:
            from scipy.signal import resample_poly

            g = math.gcd(int(sample_rate), int(self.sample_rate))
            samples = resample_poly(samples, sample_rate // g, self.sample_rate // g, axis=1)
        return np.array(samples, dtype=np.float32, order="C")  # the caller's own copy: the clip's is read-only

    def describe(self) -> dict[str, Any]:
        """What a result's metadata says of the clip it was made from."""
        return {"file": self.stored or self.name, "name": self.name, "duration": round(self.seconds, 4),
                "sample_rate": self.sample_rate, "channels": self.channels}

    def __repr__(self) -> str:  # never the samples
        return f"Clip({self.name!r}, {self.seconds:.2f} s, {self.sample_rate} Hz, {self.channels} ch)"


def read_clip(path: str | os.PathLike, *, name: str | None = None, what: str = "the audio clip",
              max_seconds: float | None = None) -> Clip:
    """Read and check the audio file at `path`; InvalidInput names the file, the problem and the fix.

    `name` is the file's name as the user knows it (an upload arrives under a temporary one); `what` says what
    the clip is for, in messages ("facebook/musicgen-small's audio to continue"); a clip longer than
    `max_seconds` is refused from its header, before it is decoded.
    """
    path = Path(path)
    shown = repr(name or path.name)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InvalidInput(f"{what} {shown} does not exist: upload or name an audio file") from None
    except OSError as error:
        raise InvalidInput(f"{what} {shown} cannot be read ({error.strerror}): check the file") from None
    if not path.is_file():
        raise InvalidInput(f"{what} {shown} is not a file: name an audio file (WAV, FLAC, OGG or MP3)")
    if stat.st_size == 0:
        raise InvalidInput(f"{what} {shown} is empty (0 bytes): it holds no audio; record or upload a clip")
    limit = min(max_seconds, MAX_SECONDS) if max_seconds is not None else MAX_SECONDS
    clip = _read_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, name or path.name, what, limit)
    return clip


@functools.lru_cache(maxsize=CACHED_CLIPS)
def _read_cached(path: str, size: int, mtime_ns: int, name: str, what: str, limit: float) -> Clip:
    import soundfile as sf

    shown = repr(name)
    unreadable = (f"{what} {shown} is not audio the studio can read: save it as WAV, FLAC, OGG or MP3 "
                  "(e.g. `ffmpeg -i in.m4a out.wav`)")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise InvalidInput(unreadable) from None
    if info.channels > MAX_CHANNELS:
        raise InvalidInput(
            f"{what} {shown} has {info.channels} channels; the studio takes mono or stereo clips: mix it down "
            f"to stereo first (e.g. `ffmpeg -i in.wav -ac 2 stereo.wav`)")
    if info.samplerate <= 0:
        raise InvalidInput(unreadable)
    if info.frames > 0 and info.frames / info.samplerate > limit + 1e-6:
        raise too_long(what, name, info.frames / info.samplerate, limit)
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        raise InvalidInput(f"{what} {shown} is damaged or cut short ({_reason(error)}): export or record it "
                           "again") from None
    if data.shape[0] == 0:
        raise InvalidInput(f"{what} {shown} holds no samples (0 s of audio): record or upload a longer clip")
    if 0 < data.shape[0] < info.frames and info.format in ("FLAC", "OGG", "MP3", "MPEG"):
        # libsndfile stops quietly at the end of a cut-short compressed stream; its header knew the length
        raise InvalidInput(f"{what} {shown} is cut short: its header promises {info.frames / rate:.2f} s, but only "
                           f"{data.shape[0] / rate:.2f} s could be read; export or copy it again")
    if data.shape[0] / rate > limit + 1e-6:
        raise too_long(what, name, data.shape[0] / rate, limit)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InvalidInput(f"{what} {shown} holds {bad:,} sample{'s' if bad != 1 else ''} that are not numbers (NaN or infinite): the file "
                           "is damaged; export it again from its source")
    samples = np.ascontiguousarray(data.T)
    samples.setflags(write=False)  # shared by the cache: nobody edits it in place
    return Clip(samples=samples, sample_rate=int(rate), name=name, path=Path(path), digest=digest.hexdigest())


def too_long(what: str, name: str, seconds: float, limit: float) -> InvalidInput:
    return InvalidInput(
        f"{what} {name!r} is {seconds:.1f} s long; it takes at most {limit:g} s: trim it to {limit:g} s or less "
        f"(the scissors under the waveform on the page, or e.g. `ffmpeg -i in.wav -t {limit:g} out.wav`)")


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    for prefix in ("Error opening ", "Error : ", "Error: "):
        text = text.removeprefix(prefix)
    return text.strip().rstrip(".")[:120]


def store_clip(clip: Clip, output_dir: Path) -> Clip:
    """The clip with a copy of its file kept under `output_dir`/inputs, named by its content: the same clip used
    by many runs is stored once, and a result's metadata names its copy, which History's Reuse brings back."""
    folder = Path(output_dir).expanduser() / INPUTS_DIR
    ext = Path(clip.name).suffix.lower().lstrip(".")
    if ext not in READABLE:
        ext = _format_ext(clip.path)
    target = folder / f"{clip.digest[:32]}.{ext}"
    relative = f"{INPUTS_DIR}/{target.name}"
    try:
        if clip.path.resolve() != target.resolve() and not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{target.name}.{secrets.token_hex(4)}.part"
            try:
                with open(clip.path, "rb") as source, open(temporary, "xb") as copy:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        copy.write(block)
                    copy.flush()
                    os.fsync(copy.fileno())
                os.replace(temporary, target)  # two runs storing the same clip write the same bytes
            finally:
                temporary.unlink(missing_ok=True)
    except OSError as error:
        from studio.audio import storage_fix

        raise StorageError(f"could not keep a copy of the input {clip.name!r} in {folder}: "
                           f"{error.strerror or error}; {storage_fix(error, folder)}") from None
    return replace(clip, path=target, stored=relative)


def _format_ext(path: Path) -> str:
    import soundfile as sf

    try:
        kind = sf.info(str(path)).format
    except Exception:
        return "wav"
    return {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "MPEG": "mp3"}.get(kind, "wav")


def stored_path(output_dir: Path, stored: str) -> Path | None:
    """The file a result's metadata names as its input ("inputs/<digest>.wav"), if it is still there and inside
    the inputs folder; None otherwise (a name from elsewhere is never followed out of it)."""
    folder = (Path(output_dir).expanduser() / INPUTS_DIR).resolve()
    if not isinstance(stored, str) or not stored.startswith(f"{INPUTS_DIR}/"):
        return None
    path = (folder / stored.removeprefix(f"{INPUTS_DIR}/")).resolve()
    return path if path.parent == folder and path.is_file() else None
