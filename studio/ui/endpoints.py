"""What the page and the named API call: generate, estimate, memory; StudioError becomes gr.Error here, once.

The API functions are built from the catalog: each task's endpoint takes the fixed arguments of the
contract (model, prompt or text, duration or voice, seed), then every other setting any of the task's
models has, then `format`. A setting not given is None, which means "the model's default".
"""

# No `from __future__ import annotations` here: gr.api reads these functions' annotations as types.
import functools
import html
import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import gradio as gr
from gradio.data_classes import FileData

from studio.audio import FORMATS
from studio.device import expected_device_kind
from studio.catalog import TASK_LABELS, ModelSpec, text_key
from studio.errors import InvalidInput, StudioError
from studio.estimate import Estimate
from studio.service import Generation, Studio
from studio.ui.live import LiveRelay, streams
from studio.ui.runs import ProgressBridge, RunRegistry, gradio_event_cancelled
from studio.ui.text import sentence

log = logging.getLogger(__name__)

# The arguments each task's endpoint (/music, /speech, /sfx) names itself besides its words (text_key); a model's
# other settings follow them.
LENGTH_ARG = {"music": ("duration", float), "speech": ("voice", str), "sfx": ("duration", float)}
RESERVED = {"model", "prompt", "text", "seed", "format", "request"}
# Requests per device that wait in the studio's own queue (a worker thread each), where the page says how long.
WAITING_PER_DEVICE = 7
NO_MODELS = {
    "sfx": "No sound-effect models are installed yet: they arrive with the diffusion families (AudioLDM2, Stable Audio Open).",
}


def user_errors(fn: Callable) -> Callable:
    """The one boundary where a StudioError becomes a message in the browser or the API client."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StudioError as error:
            log.info("refused: %s", error)
            # gr.Error renders HTML in the page; user text (a model name, a prompt) must stay text.
            raise gr.Error(html.escape(sentence(str(error)), quote=False), print_exception=False) from error

    return wrapper


def session_of(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "") if request is not None else ""


def task_settings(specs: list[ModelSpec]) -> list[tuple[str, type]]:
    """Every setting name the task's models have, in first-seen order, with the type of its first use (an audio
    input as FileData: the client uploads the file, gradio_client's handle_file("riff.wav"))."""
    seen: dict[str, type] = {}
    for spec in specs:
        for param in spec.params:
            seen.setdefault(param.name, FileData if param.is_audio else param.kind)
    return list(seen.items())


def uploaded_file(name: str, value: Any, readable: list[Path]) -> Any:
    """An audio argument of the API as the studio may read it: a file gradio received as an upload (or one of
    the `readable` folders: the output folder's copies, which the page hands back). Any other path is refused,
    whatever the client claims: the API never reads a file the caller did not send."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"{name} must be an uploaded audio file, but is {type(value).__name__}: send it with "
                           "gradio_client's handle_file(\"clip.wav\")")
    from gradio.utils import get_upload_folder, is_in_or_equal

    if not any(is_in_or_equal(path, folder) for folder in [Path(get_upload_folder()), *readable]):
        raise InvalidInput(f"{name} names a file the studio did not receive ({Path(path).name!r}): upload the file "
                           "itself (gradio_client's handle_file(\"clip.wav\")); the studio reads no other paths")
    return value


class Endpoints:
    """The studio seen from the web: one generation core shared by the page and the API."""

    def __init__(self, studio: Studio, runs: RunRegistry | None = None) -> None:
        self.studio = studio
        self.runs = runs or RunRegistry()
        self.live = LiveRelay()  # the page's runs' pieces on their way to its live player

    def streams(self, spec: ModelSpec) -> bool:
        """Whether runs of `spec` hand their audio on piece by piece as they are made."""
        return streams(self.studio.catalog.family(spec))

    def specs(self, task: str) -> list[ModelSpec]:
        devices = self.studio.devices
        kind = devices[0].kind if devices.resolved else expected_device_kind(self.studio.settings)
        return self.studio.catalog.for_task(task, kind)

    def _check_task(self, task: str) -> None:
        if not self.specs(task):
            raise InvalidInput(NO_MODELS.get(task, f"No {TASK_LABELS.get(task, task).lower()} models are installed."))

    # -------------------------------------------------------------- the shared core
    def generate(self, task: str, model: Any, prompt: Any, *, seed: Any = -1, params: Mapping[str, Any] | None = None,
                 fmt: str = "wav", session: str = "", progress: Callable[..., Any] = lambda *a, **k: None,
                 on_audio: Callable[[Any, int], None] | None = None,
                 metadata: Mapping[str, Any] | None = None) -> Generation:
        """Validate, run and save one generation; stops at the next step when the session's Cancel is pressed
        or when Gradio drops the event (the page's Cancel, an API client's job.cancel()). `on_audio` hears each
        finished piece of the output as the adapter hands it on (RunContext.on_audio); `metadata` is added to the
        result's (where the request came from)."""
        self._check_task(task)
        request = self.studio.request(task, model, prompt, seed=seed, params=params)
        estimated = self.studio.estimate(request)
        with self.runs.track(session) as cancel, \
                ProgressBridge(cancel, progress, estimate=estimated, cancelled=gradio_event_cancelled(),
                               waiting=lambda queued: self.runs.set_waiting(cancel, queued),
                               on_audio=on_audio) as bridge:
            return self.studio.generate(request, fmt=fmt, ctx=bridge.context, metadata=metadata)

    def estimate(self, task: str | None, model: Any, prompt: Any, params: Mapping[str, Any] | None = None) -> Estimate:
        if task is not None:
            self._check_task(task)
        spec = self.studio.catalog.get(model, task)
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            if "speech" in spec.tasks:
                raise InvalidInput("type the text to speak first: the length of speech, and so its cost, follows the text")
            prompt = "music" if "music" in spec.tasks else "sound"  # the prompt does not change a music or sound estimate
        return self.studio.estimate(self.studio.request(task, spec.repo_id, prompt, seed=0, params=params))

    def run_slots(self) -> int:
        """Generation requests Gradio's queue lets into the studio at once: per device, the one running and up to
        WAITING_PER_DEVICE waiting for it in the manager (which tells each how many runs are ahead and how long
        they take, shown as 'Waiting for the device: 1 run ahead, about 15 s'). Beyond those, requests wait in
        Gradio's queue. The manager runs one generation per device whatever this number is."""
        return self.studio.run_slots() * (1 + WAITING_PER_DEVICE)

    def memory(self) -> dict:
        return self.studio.manager.snapshot()

    def unload(self, model_id: str) -> str:
        """'unloaded', 'deferred' (in use: after the current run) or 'not loaded'; it also unpins."""
        return self.studio.manager.unload(model_id)

    def unload_all(self) -> dict[str, str]:
        """Per model: as unload, or 'pinned' for a loaded pinned model, which stays."""
        return self.studio.manager.unload_all()

    def pin(self, model_id: str, pinned: bool) -> str:
        """'pinned', 'pinned once loaded' (not loaded now) or 'unpinned'."""
        return self.studio.manager.pin(model_id, pinned)

    def label(self, model_id: str) -> str:
        """The catalog's name for a model (as the panel shows it); the id itself for one not in the catalog."""
        try:
            return self.studio.catalog.get(model_id).label
        except StudioError:
            return model_id

    def cancel(self, session: str) -> int:
        return self.runs.cancel(session)

    @property
    def history(self) -> Any:
        """The studio's history store (studio.history.History), or None where it is not available."""
        return getattr(self.studio, "history", None)

    # -------------------------------------------------------------- the History tab (history store required)
    def history_page(self, query: str, task: str | None, limit: int) -> tuple[list[Any], int]:
        """The newest `limit` items matching `query` and `task`, and how many match in all."""
        return self.history.list(query, task=task, limit=limit), self.history.count(query, task=task)

    def history_item(self, item_id: Any) -> Any:
        """The item with this id, or None."""
        return self.history.get(item_id) if isinstance(item_id, int) and not isinstance(item_id, bool) else None

    def history_file(self, item: Any) -> Any:
        """The item's audio file as a path string the page may serve (inside the output folder), or None."""
        output_dir = Path(self.studio.settings.output_dir).expanduser().resolve()
        path = Path(self.history.path_of(item)).resolve()
        if not path.is_file():
            return None
        return str(path) if path.is_relative_to(output_dir) else None  # the only folder the server serves

    def history_delete(self, item_id: int) -> tuple[Any, bool]:
        """Delete an item, its file into the trash: (the item deleted or None if it was gone, whether Undo can
        bring it back)."""
        item = self.history_item(item_id)
        if item is None or not self.history.delete(item.id):
            return None, False
        return item, self.history.in_trash(item.id)

    def history_undo(self, item_id: int) -> Any:
        """Bring a deleted item back from the trash; the item listed again, or None if there is nothing to undo."""
        return self.history.undo_delete(item_id)

    # -------------------------------------------------------------- files a result or a past run names
    @property
    def output_dir(self) -> Path:
        return Path(self.studio.settings.output_dir).expanduser().resolve()

    def result_file(self, metadata: Mapping[str, Any] | None) -> str | None:
        """The audio file of a result (its metadata's "file", in the output folder), if it is still there."""
        name = (metadata or {}).get("file")
        if not isinstance(name, str) or not name or Path(name).name != name:
            return None
        path = self.output_dir / name
        return str(path) if path.is_file() else None

    def input_file(self, value: Any) -> str | None:
        """The file an audio setting names: a past run's stored clip ("inputs/<digest>.wav", see studio.clips) or a
        file in the output folder (a result used as input); None when it is gone or is anything else."""
        from studio.clips import stored_path

        if isinstance(value, str) and value.startswith("inputs/"):
            path = stored_path(self.output_dir, value)
            return str(path) if path is not None else None
        if isinstance(value, (str, Path)) and str(value):
            path = Path(value).resolve()
            return str(path) if path.is_file() and path.is_relative_to(self.output_dir) else None
        return None

    def audio_tasks(self) -> set[str]:
        """The tasks with a model that takes an audio input: their tabs have one."""
        return {task for spec in self.studio.catalog for task in spec.tasks if any(p.is_audio for p in spec.params)}

    def model_labels(self) -> dict[str, str]:
        """Model id -> the name the page shows."""
        return {spec.repo_id: spec.label for spec in self.studio.catalog}

    # -------------------------------------------------------------- the named API
    def _settings(self, given: Mapping[str, Any], audio_names: set[str]) -> dict[str, Any]:
        """The settings an API call gave (None: not given), its audio files checked to be uploads."""
        readable = [Path(self.studio.settings.output_dir).expanduser().resolve()]
        return {name: uploaded_file(name, value, readable) if name in audio_names else value
                for name, value in given.items() if value is not None}

    def api_generate(self, task: str) -> Callable:
        """`/music`, `/speech` or `/sfx`: keyword arguments in, (audio file, metadata dict) out."""
        specs = self.specs(task)
        text_arg = text_key(task)
        length_arg, length_type = LENGTH_ARG[task]
        extras = [(name, kind) for name, kind in task_settings(specs) if name not in RESERVED and name != length_arg]
        audio_names = {name for name, kind in extras if kind is FileData}
        P = inspect.Parameter
        params = [
            P("model", P.POSITIONAL_OR_KEYWORD, default=specs[0].repo_id if specs else "", annotation=str),
            P(text_arg, P.POSITIONAL_OR_KEYWORD, default="", annotation=str),
            P(length_arg, P.POSITIONAL_OR_KEYWORD, default=None, annotation=length_type | None),
            P("seed", P.POSITIONAL_OR_KEYWORD, default=-1, annotation=int),
            *[P(name, P.POSITIONAL_OR_KEYWORD, default=None, annotation=kind | None) for name, kind in extras],
            P("format", P.POSITIONAL_OR_KEYWORD, default="wav", annotation=str),
            P("request", P.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
        ]
        signature = inspect.Signature(params, return_annotation=tuple[FileData, dict])

        def endpoint(*args: Any, **kwargs: Any) -> tuple[FileData, dict]:
            values = signature.bind(*args, **kwargs)
            values.apply_defaults()
            given = dict(values.arguments)
            request = given.pop("request")
            model, text, seed, fmt = given.pop("model"), given.pop(text_arg), given.pop("seed"), given.pop("format")
            settings = self._settings(given, audio_names)
            # gr.api takes no Progress parameter; one made here still reports to the client's job status.
            result = self.generate(task, model, text, seed=seed, params=settings, fmt=fmt,
                                   session=session_of(request), progress=gr.Progress())
            return FileData(path=str(result.path)), result.metadata

        endpoint.__signature__ = signature  # type: ignore[attr-defined]
        endpoint.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not P.empty}
        endpoint.__annotations__["return"] = tuple[FileData, dict]
        endpoint.__name__ = task
        endpoint.__doc__ = (
            f"Generate {TASK_LABELS[task].lower()}. Returns the audio file and its metadata. "
            f"Settings left out take the model's default; seed -1 picks a random one; format is one of "
            f"{', '.join(FORMATS)}."
        )
        return user_errors(endpoint)

    def api_estimate(self) -> Callable:
        """`/estimate`: model, duration or text (or prompt), and any other setting -> the numbers the page shows."""
        default = next(iter(self.specs("music") or list(self.studio.catalog)), None)
        extras = [(name, kind) for name, kind in task_settings(list(self.studio.catalog))
                  if name not in RESERVED and name != "duration"]
        audio_names = {name for name, kind in extras if kind is FileData}
        P = inspect.Parameter
        params = [
            P("model", P.POSITIONAL_OR_KEYWORD, default=default.repo_id if default else "", annotation=str),
            P("duration", P.POSITIONAL_OR_KEYWORD, default=None, annotation=float | None),
            P("text", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
            P("prompt", P.POSITIONAL_OR_KEYWORD, default=None, annotation=str | None),
            *[P(name, P.POSITIONAL_OR_KEYWORD, default=None, annotation=kind | None) for name, kind in extras],
        ]
        signature = inspect.Signature(params, return_annotation=dict)

        def estimate(*args: Any, **kwargs: Any) -> dict:
            values = signature.bind(*args, **kwargs)
            values.apply_defaults()
            given = dict(values.arguments)
            model, text, prompt = given.pop("model"), given.pop("text"), given.pop("prompt")
            settings = self._settings(given, audio_names)
            return self.estimate(None, model, text if text is not None else prompt, settings).to_dict()

        estimate.__signature__ = signature  # type: ignore[attr-defined]
        estimate.__annotations__ = {p.name: p.annotation for p in params}
        estimate.__annotations__["return"] = dict
        estimate.__name__ = "estimate"
        estimate.__doc__ = ("Memory and time a run would need, and which models it would unload, without loading "
                            "anything. Settings left out take the model's default, as in /music, /speech and /sfx.")
        return user_errors(estimate)

    def api_memory(self) -> Callable:
        def memory() -> dict:
            """The device, used, budget and total bytes, and one row per model with its state and size."""
            return self.memory()

        return memory

    # -------------------------------------------------------------- the voice library (studio.voices)
    def voices(self) -> list[Any]:
        """Every saved voice, usable or broken (SavedVoice), by name."""
        return self.studio.voices.list()

    def voice_save(self, audio: Any, name: Any, transcript: Any = "", consent: Any = False, *,
                   via: str = "page") -> Any:
        """Save an uploaded or recorded clip as a voice; refusals (no consent, a bad name, a bad clip) name the
        value and the fix. The consent is checked first: nothing is read without it."""
        from studio.clips import read_clip
        from studio.voices import CONSENT_FIX, MAX_SECONDS

        if consent is not True:
            raise InvalidInput(f"the voice {name!r} was not saved: {CONSENT_FIX}" if isinstance(name, str) and
                               name.strip() else f"the voice was not saved: {CONSENT_FIX}")
        self.studio.voices.check_name(name)  # before the clip is read: a bad name is the quicker fix
        value = uploaded_file("audio", audio, [self.output_dir])
        if value is None:
            raise InvalidInput("there is no clip to save: upload or record the voice (1 to 60 s of one speaker), "
                               "then save")
        original = value.get("orig_name") if isinstance(value, Mapping) else None
        path = value.get("path") if isinstance(value, Mapping) else value
        clip = read_clip(path, name=original or Path(path).name, what="the voice clip", max_seconds=MAX_SECONDS)
        return self.studio.voices.save(name, clip, transcript, consent=True, via=via)

    def voice_delete(self, name: Any) -> Any:
        return self.studio.voices.delete(name)

    def voice_rename(self, name: Any, new_name: Any) -> Any:
        return self.studio.voices.rename(name, new_name)

    def voice_file(self, name: Any) -> str | None:
        """The clip of the saved voice `name`, to play on the page; None when it has none."""
        voice = self.studio.voices.find(name)
        return str(voice.clip_path) if voice is not None and voice.clip_path.is_file() else None

    def api_voices(self) -> Callable:
        def voices() -> list:
            """The saved voices: name, transcript, seconds, sample_rate, created, source, consent, and broken (why a
            voice cannot be used, or null). Use one with /speech's voice="name" on a model that clones."""
            return [voice.to_dict() for voice in self.voices()]

        return user_errors(voices)

    def api_voice_save(self) -> Callable:
        def voice_save(audio: FileData, name: str, transcript: str = "", consent: bool = False) -> dict:
            """Save the clip `audio` (gradio_client's handle_file("me.wav"), 1 to 60 s of one speaker) as the voice
            `name` (1-40 letters, digits, spaces, '-' or '_'), with the words said in it (`transcript`; Dia needs
            them). consent=true confirms: "I have the right to use this voice and its owner agreed to it being
            cloned"; without it nothing is saved. Returns the voice as /voices lists it."""
            return self.voice_save(audio, name, transcript, consent, via="api").to_dict()

        return user_errors(voice_save)

    def api_voice_delete(self) -> Callable:
        def voice_delete(name: str) -> dict:
            """Delete the saved voice `name` (any case). Returns the voice deleted."""
            return self.voice_delete(name).to_dict()

        return user_errors(voice_delete)

    def api_voice_rename(self) -> Callable:
        def voice_rename(name: str, new_name: str) -> dict:
            """Rename the saved voice `name` to `new_name`. Returns the voice under its new name."""
            return self.voice_rename(name, new_name).to_dict()

        return user_errors(voice_rename)
