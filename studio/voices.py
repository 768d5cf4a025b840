"""The voice library: voices saved under a name in the output folder, and what `voice="my-voice"` means for a run.

A saved voice is a folder `<output-dir>/voices/<name>/` holding the clip (`voice.wav`, at the clip's own rate) and
`voice.json` (name, transcript, length, rate, when it was made, the file it came from, and the user's confirmation
that they may clone it). The folder is the record: the studio keeps no other index, so a voice copied into the
folder by hand, or saved by the CLI while the page runs, is listed at the next look. A folder that cannot be used
(its clip or its JSON missing or damaged) is listed as broken with the reason; using it is refused with the fix.

A speech model can clone when it has a Clip setting named `audio` (the multi-speaker convention: speaker k >= 2 has
`audio_k`, with `transcript` / `transcript_k` where the model wants the words said in the clip). A saved voice given
as `voice` (speaker k: `voice_k`) fills those settings (`voice_params`), and every result made from a cloned voice
says so in its metadata (`clone_marks`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from studio.catalog import MODE, ModelSpec, can_clone, echo, speaker_of  # noqa: F401 (can_clone: the library's rule)
from studio.errors import InvalidInput, StorageError

log = logging.getLogger(__name__)

VOICES_DIR = "voices"  # under the output folder
CLIP_FILE = "voice.wav"
INFO_FILE = "voice.json"
MAX_NAME = 40
# Letters (any script), digits, space, '-' and '_': a name that is also a safe folder name on every system.
_NAME = re.compile(r"[^\W_]|[ _-]")
# Folder names Windows refuses whatever their case (a library copied to a Windows machine must still open).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
CONSENT_TEXT = "I have the right to use this voice and its owner agreed to it being cloned"
CONSENT_FIX = ("confirm you have the right to use this voice: tick \"" + CONSENT_TEXT + "\" (the CLI's --consent, "
               "the API's consent=true)")
# A clip shorter than this holds hardly a voice (every cloning model asks at least 1 s); a longer one than the
# longest any model takes could never be used. Each model checks its own bounds again when the voice is used.
MIN_SECONDS = 1.0
MAX_SECONDS = 60.0
STALE_PART_S = 600.0  # a half-written folder (".<name>.<hex>.part") older than this was left by a killed save
SAVE_HINT = "save one in the Speech tab's Voice library or with `python -m studio voices save NAME --audio FILE --consent`"


def speaker_params(speaker: int) -> tuple[str, str, str]:
    """The settings of speaker `speaker` (1-based): (voice, audio, transcript); speaker k >= 2 has `voice_k`,
    `audio_k` and `transcript_k` (the multi-speaker convention)."""
    if speaker < 1:
        raise ValueError(f"speakers count from 1, not {speaker}")
    suffix = "" if speaker == 1 else f"_{speaker}"
    return f"voice{suffix}", f"audio{suffix}", f"transcript{suffix}"


@dataclass(frozen=True)
class SavedVoice:
    """One folder of the library, as read from disk; `problem` says why it cannot be used ("" when it can)."""

    name: str
    folder: Path
    transcript: str = ""
    seconds: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    created: str = ""
    source: str = ""  # the file it was saved from (an upload's or a recording's name)
    consent: Mapping[str, Any] | None = None  # {"text", "confirmed", "via"}
    problem: str = ""

    @property
    def broken(self) -> bool:
        return bool(self.problem)

    @property
    def clip_path(self) -> Path:
        return self.folder / CLIP_FILE

    def to_dict(self) -> dict[str, Any]:
        """As the API and `voices list --json` give it."""
        return {"name": self.name, "transcript": self.transcript, "seconds": round(self.seconds, 3),
                "sample_rate": self.sample_rate, "channels": self.channels, "created": self.created,
                "source": self.source, "consent": dict(self.consent) if self.consent else None,
                "broken": self.problem or None}


@dataclass(frozen=True)
class VoiceUse:
    """A saved voice a request speaks with: which speaker, which voice, its confirmation, the settings it filled."""

    speaker: int
    name: str
    consent: Mapping[str, Any] | None
    filled: tuple[str, ...] = field(default=())  # the request's settings the voice set (audio, transcript)


class VoiceLibrary:
    """The saved voices of one output folder. Safe to share between threads; other processes may change the folder
    at any time (every read goes to the disk)."""

    def __init__(self, output_dir: Path, catalog: Any = None) -> None:
        self.folder = Path(output_dir).expanduser() / VOICES_DIR
        self.catalog = catalog  # for the preset names a saved voice may not take (None: no such check)
        self._lock = threading.RLock()
        self._remove_stale_parts()

    # ------------------------------------------------------------------ reading
    def list(self) -> list[SavedVoice]:
        """Every voice folder, usable or broken, by name (case-insensitive)."""
        try:
            entries = [e for e in os.scandir(self.folder) if not e.name.startswith(".")]
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StorageError(f"the voice library {self.folder} cannot be read ({error.strerror}): check its "
                               "permissions, or choose another --output-dir") from None
        voices = [self._read(Path(e.path)) for e in entries if e.is_dir(follow_symlinks=False)]
        return sorted(voices, key=lambda v: v.name.casefold())

    def names(self) -> list[str]:
        """The voices that can be used, by name."""
        return [v.name for v in self.list() if not v.broken]

    def find(self, name: Any) -> SavedVoice | None:
        """The voice called `name` (any case), usable or broken; None when there is none."""
        if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name.strip() in (".", ".."):
            return None
        key = name.strip().casefold()
        if len(key) <= MAX_NAME and all(_NAME.fullmatch(ch) for ch in key):  # a name a voice can have: its folder
            exact = self.folder / name.strip()
            try:
                if exact.is_dir():
                    return self._read(exact)
            except OSError:
                return None
        return next((v for v in self.list() if v.name.casefold() == key), None)

    def get(self, name: Any) -> SavedVoice:
        """The usable voice called `name`; InvalidInput naming the voice and the fix otherwise."""
        voice = self.find(name)
        if voice is None:
            saved = self.names()
            listed = f"saved voices: {', '.join(saved)}" if saved else "no voices are saved yet"
            raise InvalidInput(f"there is no saved voice {echo(name)} ({listed}): pick one of them, or {SAVE_HINT}")
        if voice.broken:
            raise InvalidInput(f"the saved voice {voice.name!r} cannot be used: {voice.problem}; delete it and save "
                               "it again (Speech tab, Voice library; or `python -m studio voices delete "
                               f"{_quoted(voice.name)}`)")
        return voice

    def clip(self, voice: SavedVoice, *, what: str = "the saved voice"):
        """The voice's clip, read and checked (studio.clips); a clip changed or deleted under the studio since it
        was listed is refused with the fix."""
        from studio.clips import read_clip

        try:
            return read_clip(voice.clip_path, name=f"{voice.name}.wav", what=what)
        except InvalidInput as error:
            raise InvalidInput(f"the saved voice {voice.name!r} cannot be used: {error}; or delete the voice and "
                               "save it again") from None

    def _read(self, folder: Path) -> SavedVoice:
        name = folder.name
        try:
            info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return SavedVoice(name, folder, problem=f"its {INFO_FILE} is missing")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return SavedVoice(name, folder, problem=f"its {INFO_FILE} is damaged ({_reason(error)})")
        if not isinstance(info, dict):
            return SavedVoice(name, folder, problem=f"its {INFO_FILE} holds no voice description")
        transcript = info.get("transcript") if isinstance(info.get("transcript"), str) else ""
        consent = info.get("consent") if isinstance(info.get("consent"), dict) else None
        voice = SavedVoice(name, folder, transcript=transcript, created=str(info.get("created") or ""),
                           source=str(info.get("source") or ""), consent=consent)
        if consent is None or not consent.get("confirmed"):
            return _with(voice, problem="it holds no confirmation that its owner agreed to its cloning")
        import soundfile as sf

        if not (folder / CLIP_FILE).is_file():  # libsndfile says "System error" of a missing file
            return _with(voice, problem=f"its clip {CLIP_FILE} is missing (deleted from {folder}?)")
        try:
            head = sf.info(str(folder / CLIP_FILE))
        except Exception as error:  # libsndfile's errors are RuntimeError subclasses; a folder as clip: OSError
            return _with(voice, problem=f"its clip {CLIP_FILE} is not readable audio ({_reason(error)})")
        if head.frames <= 0 or head.samplerate <= 0:
            return _with(voice, problem=f"its clip {CLIP_FILE} holds no audio")
        return _with(voice, seconds=head.frames / head.samplerate, sample_rate=int(head.samplerate),
                     channels=int(head.channels))

    # ------------------------------------------------------------------ changing
    def save(self, name: Any, clip: Any, transcript: Any = "", consent: Any = False, *, via: str = "page") -> SavedVoice:
        """Save `clip` (a studio.clips.Clip) as the voice `name`, with the words said in it; `consent` must be True
        (the user confirmed CONSENT_TEXT). Written into a hidden folder, then renamed into place: a save killed
        midway leaves nothing listed."""
        if consent is not True:
            raise InvalidInput(f"the voice {echo(name)} was not saved: {CONSENT_FIX}")
        with self._lock:
            name = self.check_name(name)
            transcript = _check_transcript(transcript)
            if clip is None:
                raise InvalidInput(f"the voice {name!r} has no clip: upload or record a clip of the voice "
                                   f"({MIN_SECONDS:g} to {MAX_SECONDS:g} s), then save")
            if not MIN_SECONDS - 1e-9 <= clip.seconds <= MAX_SECONDS + 1e-6:
                raise InvalidInput(f"the clip {clip.name!r} is {clip.seconds:.1f} s long; a saved voice takes "
                                   f"{MIN_SECONDS:g} to {MAX_SECONDS:g} s (5-10 s of clean speech work best): "
                                   "record or trim it to that length")
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            info = {"name": name, "transcript": transcript, "seconds": round(clip.seconds, 4),
                    "sample_rate": clip.sample_rate, "channels": clip.channels, "created": now,
                    "source": clip.name, "consent": {"text": CONSENT_TEXT, "confirmed": now, "via": via}}
            part = self.folder / f".{secrets.token_hex(6)}.part"
            try:
                part.mkdir(parents=True)
                _write_clip(clip, part / CLIP_FILE)
                _write_json(part / INFO_FILE, info)
                os.rename(part, self.folder / name)  # fails if the name appeared meanwhile: nothing is replaced
            except OSError as error:
                shutil.rmtree(part, ignore_errors=True)
                if (self.folder / name).exists():
                    raise InvalidInput(f"a saved voice is already called {name!r}: choose another name") from None
                raise self._storage(error, f"could not save the voice {name!r}") from None
            log.info("saved the voice %r (%.1f s) in %s", name, clip.seconds, self.folder)
            return self._read(self.folder / name)

    def delete(self, name: Any) -> SavedVoice:
        """Remove the voice `name` (usable or broken): renamed aside first, so it disappears at once."""
        with self._lock:
            voice = self._existing(name)
            aside = self.folder / f".{secrets.token_hex(6)}.part"
            try:
                os.rename(voice.folder, aside)
            except FileNotFoundError:
                raise InvalidInput(f"the saved voice {voice.name!r} is gone already (deleted by another process)") \
                    from None
            except OSError as error:
                raise self._storage(error, f"could not delete the voice {voice.name!r}") from None
            shutil.rmtree(aside, ignore_errors=True)
            log.info("deleted the voice %r", voice.name)
            return voice

    def rename(self, old: Any, new: Any) -> SavedVoice:
        """Give the voice `old` the name `new` (a change of case only is a rename too)."""
        with self._lock:
            voice = self._existing(old)
            new = self.check_name(new, renaming=voice)
            if new == voice.name:
                return voice
            target = self.folder / new
            try:
                if voice.name.casefold() == new.casefold():  # a case-insensitive file system sees one folder
                    step = self.folder / f".{secrets.token_hex(6)}.part"
                    os.rename(voice.folder, step)
                    os.rename(step, target)
                else:
                    os.rename(voice.folder, target)
            except OSError as error:
                if target.exists() and voice.name.casefold() != new.casefold():
                    raise InvalidInput(f"a saved voice is already called {new!r}: choose another name") from None
                raise self._storage(error, f"could not rename the voice {voice.name!r}") from None
            try:  # the name in voice.json follows; the folder's name is the voice's name either way
                info = json.loads((target / INFO_FILE).read_text(encoding="utf-8"))
                if isinstance(info, dict):
                    _write_json(target / INFO_FILE, {**info, "name": new})
            except (OSError, ValueError):
                pass  # a broken voice stays broken under its new name, with its reason
            log.info("renamed the voice %r to %r", voice.name, new)
            return self._read(target)

    def check_name(self, name: Any, *, renaming: SavedVoice | None = None) -> str:
        """`name` as a voice is saved under, or InvalidInput naming the value, the rule and the fix."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("the voice needs a name: type one (1 to 40 letters, digits, spaces, '-' or '_')")
        name = " ".join(name.split())
        if len(name) > MAX_NAME:
            raise InvalidInput(f"the voice name {echo(name)} has {len(name)} characters; a name takes at most "
                               f"{MAX_NAME}: shorten it")
        bad = sorted({ch for ch in name if not _NAME.fullmatch(ch)})
        if bad:
            shown = " ".join(repr(ch) for ch in bad[:5])
            raise InvalidInput(f"the voice name {echo(name)} has {shown}: a name takes letters, digits, spaces, '-' "
                               "and '_' only; leave the others out")
        if name.casefold() in _RESERVED:
            raise InvalidInput(f"the voice name {name!r} is a device name on Windows, where the folder could not be "
                               "opened: choose another name")
        preset = self._preset_owner(name)
        if preset is not None:
            raise InvalidInput(f"the voice name {name!r} is a preset voice of {preset}, so voice={name!r} would be "
                               "ambiguous: choose another name")
        same = next((v for v in self.list() if v.name.casefold() == name.casefold()), None)
        if same is not None and (renaming is None or same.folder != renaming.folder):
            raise InvalidInput(f"a saved voice is already called {same.name!r} (names are compared without case): "
                               f"choose another name, or delete or rename {same.name!r} first")
        return name

    def _existing(self, name: Any) -> SavedVoice:
        voice = self.find(name)
        if voice is None:
            saved = [v.name for v in self.list()]
            listed = f"saved voices: {', '.join(saved)}" if saved else "no voices are saved yet"
            raise InvalidInput(f"there is no saved voice {echo(name)} ({listed}): check the name")
        return voice

    def _preset_owner(self, name: str) -> str | None:
        """The model that has a preset voice called `name` (any case), if one does."""
        if self.catalog is None:
            return None
        key = name.casefold()
        for spec in self.catalog:
            presets = {*spec.voices, *self.catalog.voices(spec)}
            if any(p.casefold() == key for p in presets):
                return spec.repo_id
        return None

    def _storage(self, error: OSError, doing: str) -> StorageError:
        from studio.audio import storage_fix

        return StorageError(f"{doing} in {self.folder}: {error.strerror or error}; {storage_fix(error, self.folder)}")

    def _remove_stale_parts(self) -> None:
        """Folders of saves and deletes killed midway (hidden, so never listed), once they are surely abandoned."""
        try:
            entries = [e for e in os.scandir(self.folder) if e.name.startswith(".") and e.name.endswith(".part")]
        except OSError:
            return
        for entry in entries:
            try:
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_PART_S:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue

    # ------------------------------------------------------------------ using
    def voice_params(self, spec: ModelSpec, name: Any, speaker: int = 1) -> tuple[dict[str, Any], VoiceUse]:
        """The settings of `spec` that the saved voice `name` fills for speaker `speaker`: its clip as `audio`
        (`audio_k`), its transcript as `transcript` (`transcript_k`) where the model has that setting; and what
        the result's metadata says of it. Refuses a voice the model cannot use, with the fix."""
        _, audio_name, transcript_name = speaker_params(speaker)
        audio = spec.param(audio_name)
        voice = self.get(name)
        if audio is None or not audio.is_audio or not can_clone(spec):
            raise InvalidInput(f"{spec.repo_id} cannot speak in a saved voice for speaker {speaker} (it has no "
                               f"{audio_name} clip to clone): pick {_cloners(self.catalog)}")
        what = f"{spec.repo_id}'s {audio.label.lower()}"
        try:
            clip = audio.validate(self.clip(voice, what=what), model=spec.repo_id)
        except InvalidInput as error:
            if str(error).startswith("the saved voice"):
                raise
            raise InvalidInput(f"the saved voice {voice.name!r} does not suit {spec.repo_id}: {error}; or save a "
                               "clip that fits as another voice") from None
        params: dict[str, Any] = {audio_name: clip}
        if spec.param(transcript_name) is not None:
            if not voice.transcript.strip():
                raise InvalidInput(f"the saved voice {voice.name!r} has no transcript, and {spec.repo_id} needs the "
                                   "words said in its clip: save the voice again with its transcript, under another "
                                   "name or after deleting this one; or give the clip as audio and its transcript")
            params[transcript_name] = voice.transcript
        return params, VoiceUse(speaker, voice.name, voice.consent, tuple(params))

    def apply(self, spec: ModelSpec, params: Mapping[str, Any], presets: tuple[str, ...] = ()
              ) -> tuple[dict[str, Any], tuple[VoiceUse, ...]]:
        """`params` with every saved voice named in `voice` / `voice_k` (that is not one of `presets`, the
        model's own) turned into the settings it fills (voice_params); and the voices used. A clip or a transcript
        given beside a saved voice is refused: say which of the two to drop. A Voice setting of other modes than
        the request's (`voice_2` of Dialogue in Single voice) is left as it is: the run does not read it."""
        params = dict(params)
        uses = []
        mode_param = spec.param(MODE)
        mode = params.get(MODE) if mode_param is None or params.get(MODE) not in (None, "") else mode_param.default
        for param in spec.params:
            speaker = speaker_of(param.name)
            value = params.get(param.name)
            if speaker is None or not param.name.startswith("voice") or not isinstance(value, str):
                continue
            if not param.applies({MODE: mode}):  # e.g. voice_2 in Single voice: not a setting of the run
                continue
            if not value.strip() or value.strip() in presets or self.find(value) is None:
                continue
            _, audio_name, transcript_name = speaker_params(speaker)
            given = params.get(audio_name)
            if given is not None and not (isinstance(given, str) and not given.strip()):
                raise InvalidInput(f"{param.name} {echo(value)} is a saved voice, and {audio_name} is a clip as well: "
                                   f"give one of them: drop {audio_name} to speak in the saved voice, or pick a "
                                   f"preset (or none) in {param.name} to clone the clip")
            filled, use = self.voice_params(spec, value, speaker)
            typed = params.get(transcript_name)
            if transcript_name in filled and isinstance(typed, str) and typed.strip() \
                    and typed.strip() != filled[transcript_name].strip():
                raise InvalidInput(f"{param.name} {echo(value)} is a saved voice with its own transcript, and "
                                   f"{transcript_name} {echo(typed)} is given as well: clear {transcript_name} (the "
                                   "saved voice's is used), or give the clip as audio with this transcript")
            params.update(filled)
            params[param.name] = use.name  # as saved (the name may have been typed in another case)
            uses.append(use)
        return params, tuple(uses)


def clone_marks(request: Any) -> dict[str, Any]:
    """What a result's metadata says of the voices a speech request cloned: `voice_cloned`, and for speaker 1 (or
    the first speaker cloned) `voice` (the saved voice's name, None for a clip given for this run), `voice_source`
    ("library" or "clip") and `voice_consent` (the saved confirmation; None for a clip given for this run, which
    the studio does not ask about); `cloned_voices` lists every speaker's. Empty for a request that clones none."""
    if getattr(request, "task", None) != "speech":
        return {}
    used = {use.speaker: use for use in getattr(request, "voices", ())}
    clips = request.clips()
    cloned = []
    for name in sorted(clips, key=lambda n: speaker_of(n) or 0):
        speaker = speaker_of(name)
        if speaker is None or not name.startswith("audio"):
            continue
        use = used.get(speaker)
        clip = clips[name]
        cloned.append({"speaker": speaker, "voice": use.name if use else None,
                       "source": "library" if use else "clip",
                       "consent": dict(use.consent) if use and use.consent else None,
                       "clip": clip.stored or clip.name})
    if not cloned:
        return {}
    first = cloned[0]
    return {"voice_cloned": True, "voice": first["voice"], "voice_source": first["source"],
            "voice_consent": first["consent"], "cloned_voices": cloned}


def _cloners(catalog: Any) -> str:
    names = [spec.label for spec in catalog if can_clone(spec)] if catalog is not None else []
    return f"a model that clones ({', '.join(names)})" if names else "a model that clones voices"


def _check_transcript(transcript: Any) -> str:
    from studio.catalog import clean_text

    if transcript is None:
        return ""
    if not isinstance(transcript, str):
        raise InvalidInput(f"the transcript must be text, but is {type(transcript).__name__}: send the words said "
                           "in the clip")
    text = clean_text(transcript)
    if len(text) > 2000:
        raise InvalidInput(f"the transcript has {len(text):,} characters; a voice's takes at most 2,000 (a clip of "
                           "a minute holds far fewer words): give the words said in the clip only")
    return text


def _write_clip(clip: Any, path: Path) -> None:
    """The clip as WAV at its own rate: 16-bit where its source was 16-bit (exact), else 32-bit float (exact for
    every decoded sample: studio.clips decodes to float32)."""
    import soundfile as sf

    try:
        subtype = sf.info(str(clip.path)).subtype
    except Exception:
        subtype = ""
    with open(path, "wb") as stream:
        sf.write(stream, clip.samples.T, clip.sample_rate, format="WAV",
                 subtype="PCM_16" if subtype == "PCM_16" else "FLOAT")
        stream.flush()
        os.fsync(stream.fileno())


def _write_json(path: Path, info: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(info, stream, ensure_ascii=False, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _with(voice: SavedVoice, **changes: Any) -> SavedVoice:
    from dataclasses import replace

    return replace(voice, **changes)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:120]


def _quoted(name: str) -> str:
    return f'"{name}"' if " " in name else name
