"""The model catalog: a frozen ModelSpec per model, typed parameters, and the registry models/ fills."""

from __future__ import annotations

import copy
import importlib
import logging
import math
import os
import pkgutil
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from studio.errors import InvalidInput

log = logging.getLogger(__name__)

TASKS = ("music", "speech", "sfx")
TASK_LABELS = {"music": "Music", "speech": "Speech", "sfx": "Sound effects"}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
PRECISIONS = ("float32", "float16", "bfloat16", "int8")
AUTO = "auto"
# A family's preferred_dtypes key for a CPU that computes bfloat16 natively (studio.device.cpu_has_native_bf16)
CPU_NATIVE_BF16 = "cpu+bf16"
MODE = "mode"  # the setting that picks what a model does (song, repaint, cover, vary, inpaint, ...)
PRECISION_HELP = (
    "How the weights are stored and computed. auto picks the fastest that keeps quality on this machine "
    "(int8 on a CPU where the model supports it, float16 on a GPU). int8 keeps the large matrices as 8-bit "
    "integers: about 3x less weight memory and faster on a CPU, with small differences in the audio "
    "(measured figures: the README's Precision section); float32 is exact."
)
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """One generation setting with its type, default and bounds; the UI builds its control from it."""

    name: str
    kind: type  # float, int, str, bool, or Clip (an audio file: minimum and maximum bound its length in seconds)
    default: Any
    label: str
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    advanced: bool = True
    required: bool = False  # an audio input the model cannot run without
    lines: int = 1  # a text setting's box height in lines (lyrics take many)
    # The values of the model's `mode` setting this one belongs to (e.g. ("repaint",)); empty: every mode. The
    # page shows it only in those modes, and a run in another mode neither uses it nor keeps it in its metadata.
    modes: tuple[str, ...] = ()
    # For a setting with choices: (choice, what that choice does and needs), shown under the control when the
    # choice is picked, e.g. ("repaint", "Regenerates Start to End of the clip in Audio ...").
    choice_help: tuple[tuple[str, str], ...] = ()

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether this setting is used by a run with `values` (the model's settings, its `mode` among them)."""
        return not self.modes or values.get(MODE) in self.modes

    def explain(self, choice: Any) -> str:
        """What `choice` of this setting does and needs, or "" when its help says nothing of it."""
        return dict(self.choice_help).get(choice, "")

    @property
    def is_audio(self) -> bool:
        from studio.clips import Clip

        return self.kind is Clip

    def validate(self, value: Any, *, model: str = "") -> Any:
        where = f" for {model}" if model else ""
        if self.is_audio:
            return self._validate_clip(value, model)
        if value is None:
            return self.default
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise InvalidInput(f"{self.name} must be true or false{where}, but is {echo(value)}")
        if self.kind in (int, float):
            number = _to_number(value, self.kind, self.name, where)
            low = self.minimum if self.minimum is not None else -math.inf
            high = self.maximum if self.maximum is not None else math.inf
            if not low <= number <= high:
                raise InvalidInput(
                    f"{self.name} must be between {_fmt(self.minimum)} and {_fmt(self.maximum)}{where}, "
                    f"but is {_fmt(number)}: pick a value in that range"
                )
            return number
        if not isinstance(value, str):
            hint = f"one of: {', '.join(self.choices)}" if self.choices is not None else "a string"
            raise InvalidInput(f"{self.name} must be text{where}, but is {type(value).__name__}: send {hint}")
        text = clean_text(value)
        if self.choices is not None and text not in self.choices:
            raise InvalidInput(f"{self.name} {echo(text)} is not available{where}; choose one of: {', '.join(self.choices)}")
        return text


    def _validate_clip(self, value: Any, model: str) -> Any:
        """A Clip read and checked from a path (CLI), an uploaded file's payload (API, page), or a Clip."""
        from studio.clips import Clip, read_clip, too_long

        what = f"{model}'s {self.label.lower()}" if model else self.label.lower()
        if isinstance(value, str) and not value.strip():
            value = None
        if value is None:
            if self.required:
                raise InvalidInput(f"{what} is missing: {self.help[:1].lower() + self.help[1:]} Upload or record a clip")
            return None
        if isinstance(value, Clip):
            clip = value
            if self.maximum is not None and clip.seconds > self.maximum + 1e-6:
                raise too_long(what, clip.name, clip.seconds, self.maximum)
        else:
            name = None
            if isinstance(value, Mapping):  # an uploaded file as gradio hands it over: {"path", "orig_name", ...}
                name, value = value.get("orig_name"), value.get("path")
            if not isinstance(value, (str, os.PathLike)):
                raise InvalidInput(f"{what} must be an audio file, but is {type(value).__name__}: send a WAV, FLAC, "
                                   "OGG or MP3 file")
            clip = read_clip(value, name=name, what=what, max_seconds=self.maximum)
        if self.minimum is not None and clip.seconds < self.minimum - 1e-9:
            count = f" ({clip.frames} sample{'s' if clip.frames != 1 else ''})" if clip.frames < 1000 else ""
            raise InvalidInput(f"{what} {clip.name!r} is {clip.seconds:.3g} s long{count}; it takes at least "
                               f"{self.minimum:g} s: record or upload a longer clip")
        return clip


def _fmt(x: float | None) -> str:
    if x is None:
        return "any"
    return f"{x:g}" if isinstance(x, float) else str(x)


def _to_number(value: Any, kind: type, name: str, where: str) -> float | int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a number{where}, but is {echo(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number{where}, but is {echo(value)}") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number{where}, but is {echo(value)}")
    if kind is int:
        if number != int(number):
            raise InvalidInput(f"{name} must be a whole number{where}, but is {echo(value)}")
        return int(number)
    return number


@dataclass(frozen=True)
class SpeedPrior:
    """Published or measured speed: seconds = fixed_s + per_unit_s * units, before any run is calibrated."""

    fixed_s: float
    per_unit_s: float


@dataclass(frozen=True)
class ModelSpec:
    repo_id: str
    family: str
    tasks: tuple[str, ...]
    label: str
    license: str
    parameters: int
    sample_rate: int
    channels: int
    max_duration: float | None  # None: the length follows the text (speech)
    params: tuple[Param, ...]
    speed: Mapping[str, SpeedPrior]  # by device kind: "cpu", "cuda", "mps"
    unit: str  # what the speed prior counts: "token", "step", "character", ...
    description: str = ""
    voices: tuple[str, ...] = ()  # published voice presets, shown until the repo's own list is cached
    language: str | None = None
    gated: bool = False
    max_prompt_chars: int = 2000
    featured_in: tuple[str, ...] = ()  # tasks whose pickers and API default to this model
    # Where the hardware decides (Pocket TTS is the speech default on a CPU, measured faster than real time there,
    # Bark elsewhere): the device kinds (Device.kind: cpu, cuda, mps; sim is a simulated GPU) on which featured_in
    # applies; empty: on every one.
    featured_on: tuple[str, ...] = ()
    # What the model's text looks like, as the text box's placeholder while it is picked (a dialogue script's
    # tags, the cues it reads); empty: the tab's own.
    prompt_hint: str = ""
    # A model the user added (studio.user_models): where the entry came from ("--add-model", "STUDIO_ADD_MODEL",
    # or the settings file's path), and the catalog entry it copies its tasks, settings and speed from. Empty for
    # the built-in catalog.
    added_by: str = ""
    like: str = ""
    # OpenAI's voice names (alloy, ash, ...) -> this model's presets, for the OpenAI-compatible /v1/audio/speech
    # (studio.ui.openai_api); a name not listed there means the model's default voice. Empty: no presets.
    openai_voices: tuple[tuple[str, str], ...] = ()

    def weight_bytes(self, dtype: str) -> int:
        """Weight bytes from the published parameter count; exact figures come from the files (studio.weights)."""
        return self.parameters * DTYPE_BYTES[dtype]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def speed_prior(self, device_kind: str, dtype: str | None = None) -> SpeedPrior:
        """The prior for `device_kind`, or its "kind/dtype" entry (e.g. "cpu/int8") when there is one."""
        return (self.speed.get(f"{device_kind}/{dtype}") or self.speed.get(device_kind) or self.speed.get("cuda")
                or self.speed["cpu"])


def fold_languages(specs: Iterable[ModelSpec]) -> list[tuple[str | None, tuple[ModelSpec, ...]]]:
    """The models in the order given, each family of one repo per language folded into one entry where its first
    repo stands: (the repo id before the language code, e.g. "facebook/mms-tts-", the specs); any other model is
    (None, (spec,)). The CLI's table, the model picker and describe_ids all list models this way."""
    entries: list[tuple[str | None, list[ModelSpec]]] = []
    families: dict[str, list[ModelSpec]] = {}
    for spec in specs:
        if spec.language is None:
            entries.append((None, [spec]))
            continue
        stem = spec.repo_id[: -len(spec.language)]
        if stem not in families:
            families[stem] = []
            entries.append((stem, families[stem]))
        families[stem].append(spec)
    return [(stem, tuple(members)) for stem, members in entries]


def format_parameters(count: int, *, billions: bool = True) -> str:
    """A parameter count as people read it: '587M', '1.1B'; with billions=False in millions only ('1,080M')."""
    if billions and count >= 1e9:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:,.0f}M"


@dataclass(frozen=True)
class Preparation:
    """A one-time step a family takes before a model's first load (e.g. converting a checkpoint published in another
    format into the library's), sized from the files so that the estimate and the plan count it before it runs."""

    stage: str  # what the page shows while it runs, e.g. "converting, once"
    summary: str  # what the estimate line says it does, e.g. "converts the checkpoint to diffusers' format once"
    io_bytes: int  # bytes read plus bytes written: its time is these over the rate measured on this machine
    peak_bytes: int  # RAM it holds at its peak, counted as the load's peak


@dataclass(frozen=True)
class Accepts:
    """What a repo's config must say for a family to load it: `key` of `file` is one of `values`.

    e.g. Accepts("config.json", "model_type", ("vits",)), or Accepts("model_index.json", "_class_name",
    ("StableAudioPipeline",)). A dotted key reads a nested value ("model.pretransform.config.encoder.type").
    """

    file: str
    key: str
    values: tuple[str, ...]

    def read(self, config: Any) -> Any:
        """The value of `key` in a parsed config, or None when it has none."""
        value = config
        for part in self.key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    def describe(self) -> str:
        """The rule in words: "config.json's model_type 'vits'", or "... one of 'a', 'b'"."""
        values = " or ".join(repr(v) for v in self.values)
        return f"{self.file}'s {self.key} {values}"


@dataclass(frozen=True)
class Companion:
    """A repo of weights the loader reads beside the model's own, e.g. the codec a processor's files name.

    Its weights count once in a model's bytes, beside the model's own: exact from its cached files, else
    `parameters` (the published count) in float32, the dtype both codecs load in (their processors load them as
    stored and the adapters never cast them). `part` is the name `Family.components` gives it when that lists it:
    the model's own bytes computed from the parts leave that part out.
    """

    repo_id: str
    parameters: int
    part: str | None = None


@dataclass(frozen=True)
class Family:
    """What a model family provides; functions, so each adapter module reads top to bottom."""

    name: str
    load: Callable[..., Any]  # (spec, torch_device: str, dtype: str) -> LoadedModel
    work_units: Callable[[ModelSpec, "Request"], float]  # counts the unit of spec.speed
    working_bytes: Callable[[ModelSpec, "Request", int], int]  # (spec, request, dtype bytes) -> activations etc.
    list_voices: Callable[[ModelSpec], tuple[str, ...]] | None = None
    # For pipelines of separate parts (diffusers): (spec, dtype bytes) -> bytes per part, which makes
    # CPU offload possible; the loaded model then has enable_offload(torch_device, on_component).
    components: Callable[[ModelSpec, int], dict[str, int]] | None = None
    # What "auto" picks per compute kind, and what a user may choose instead (PRECISIONS).
    preferred_dtypes: Mapping[str, str] = field(
        default_factory=lambda: {"cuda": "float16", "mps": "float16", "cpu": "float32"}
    )
    precisions: tuple[str, ...] = ("float32", "float16")
    # With int8: the top-level submodules whose nn.Linear and token nn.Embedding weights become 8-bit
    # (everything else, e.g. the audio codec, keeps the float dtype).
    int8_parts: tuple[str, ...] = ()
    # The rows a step runs its Linear layers with, at which the precision probe times them (studio.precision_probe):
    # a decoder's one token, twice for guidance; a diffusion transformer's tokens over a typical run.
    probe_rows: int = 2
    # The heavy libraries its loader imports, imported first under one lock (studio.libraries).
    libraries: tuple[str, ...] = ("torch", "transformers")
    # Files of the repo its loader reads besides the configs and weights (the tokenizer's), checked in the cache
    # before and after a load: each entry a tuple of alternatives, an alternative "a + b" needing both files.
    # transformers builds a tokenizer that knows no words when they are missing, without a word of warning.
    files: tuple[tuple[str, ...], ...] = ()
    # The setting that trades quality for time (fewer is faster), named in the hint of a long estimate when the
    # model has it.
    speed_param: str | None = "steps"
    # Rules between settings that no single Param can check (e.g. an audio prompt plus the new audio must fit
    # the model's window): (spec, validated settings) -> None, raising InvalidInput with the fix.
    check: Callable[[ModelSpec, Mapping[str, Any]], None] | None = None
    # Rules on the text itself that the generic length check cannot know (e.g. a dialogue script's speaker tags, or
    # text plus a clip's transcript within the model's input): (spec, text, validated settings) -> None, raising
    # InvalidInput that names the value and the fix; run after `check`.
    check_text: Callable[[ModelSpec, str, Mapping[str, Any]], None] | None = None
    # Weights the loader reads from other repos than the model's own (e.g. a codec its processor names).
    companion_repos: tuple[Companion, ...] = ()
    # What a run will do with its inputs, in words for the estimate line ("continues the 5.0 s clip by 10 s"):
    # (spec, request) -> text, or "" when there is nothing to say.
    describe: Callable[[ModelSpec, "Request"], str] | None = None
    # A one-time preparation before the first load: (spec) -> what is left to do, None once it is done (or when
    # the model needs none); and (spec, RunContext) -> None doing it, downloading what it reads, reporting its
    # stage and progress on the context and checking it for cancel. The manager runs it before `load`.
    preparation: Callable[[ModelSpec], Preparation | None] | None = None
    prepare: Callable[[ModelSpec, Any], None] | None = None
    # The configs of the repos it can load, checked before a repo the user added is loaded (studio.user_models):
    # alternatives in order, the first whose file the repo has decides (a diffusers folder's model_index.json
    # before an original layout's config, as the family's loader looks for them). Every family declares one.
    accepts: tuple[Accepts, ...] = ()
    # Streaming: the work units (as work_units counts them) done when the run hands on its first piece of audio
    # (RunContext.audio): (spec, request) -> units, or None when this request makes its audio in one piece. A
    # family without it does not stream (a diffusion model denoises the whole clip at once). The estimate's time to
    # first audio comes from it.
    first_audio_units: Callable[[ModelSpec, "Request"], float | None] | None = None
    # Tensors the loaded model makes that its weight files do not hold (non-persistent buffers, e.g. MusicGen's
    # sinusoidal position table): (spec, floating dtype bytes) -> bytes, added to the weights planned before a first
    # load, so a first load never takes more than the plan let it (after a load the studio knows the exact figure).
    unsaved_bytes: Callable[[ModelSpec, int], int] | None = None

    def __post_init__(self) -> None:
        if (self.preparation is None) != (self.prepare is None):
            raise ValueError(f"family {self.name}: preparation and prepare come together")
        unknown = set(self.precisions) - set(PRECISIONS)
        if unknown or ("int8" in self.precisions) != bool(self.int8_parts):
            raise ValueError(f"family {self.name}: precisions {self.precisions} (int8 needs int8_parts)")
        if not set(self.preferred_dtypes.values()) <= set(self.precisions):
            raise ValueError(f"family {self.name}: preferred {dict(self.preferred_dtypes)} not in {self.precisions}")

    def precision_param(self) -> "Param | None":
        """The Precision setting every model of the family gets, when there is a choice."""
        if len(self.precisions) < 2:
            return None
        return Param("precision", str, AUTO, "Precision", PRECISION_HELP, choices=(AUTO, *self.precisions))


@dataclass(frozen=True)
class Request:
    """A validated generation request; build it with Catalog.make_request."""

    model: str
    task: str
    prompt: str
    seed: int
    params: Mapping[str, Any]
    spec_params: tuple[Param, ...] = field(default=(), compare=False, repr=False)  # the model's, for `modes`
    # The saved voices (studio.voices.VoiceUse) the request speaks in: `voice="my-voice"` filled `audio` (and
    # `transcript`) from the voice library; a result's metadata says so (studio.voices.clone_marks).
    voices: tuple[Any, ...] = ()

    def get(self, name: str) -> Any:
        return self.params[name]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "prompt": self.prompt, "seed": self.seed, **self.settings()}

    def settings(self) -> dict[str, Any]:
        """The settings as a result's metadata keeps them: an audio input by its stored copy's name; a setting of
        another mode than the run's is left out."""
        spec_params = self._spec_params()
        # What a saved voice filled is kept as the voice's name alone (its clip is under "inputs" in the metadata):
        # a past run's settings then name the voice, and reusing them asks the library for it again.
        filled = {name for use in self.voices for name in use.filled}
        return {name: _plain(value) for name, value in self.params.items()
                if name not in filled and (name not in spec_params or spec_params[name].applies(self.params))}

    def clips(self) -> dict[str, Any]:
        """The audio inputs given, by setting name."""
        from studio.clips import Clip

        spec_params = self._spec_params()
        return {name: value for name, value in self.params.items() if isinstance(value, Clip)
                and (name not in spec_params or spec_params[name].applies(self.params))}

    def _spec_params(self) -> dict[str, Param]:
        return {p.name: p for p in self.spec_params}


def _plain(value: Any) -> Any:
    from studio.clips import Clip

    return (value.stored or value.name) if isinstance(value, Clip) else value


class Catalog:
    """The registry of models; families register specs, everything else reads."""

    def __init__(self) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._families: dict[str, Family] = {}
        # The saved voices (studio.voices.VoiceLibrary) `voice` may name besides a model's presets; None: presets only.
        self.library: Any = None

    def with_voice_library(self, library: Any) -> "Catalog":
        """This catalog (the same models) whose requests and voice lists also know the saved voices of `library`:
        each Studio has its own, for its output folder."""
        view = copy.copy(self)
        view.library = library
        return view

    def register(self, family: Family, specs: Iterable[ModelSpec]) -> None:
        self._families[family.name] = family
        precision = family.precision_param()
        for spec in specs:
            if spec.family != family.name:
                raise ValueError(f"{spec.repo_id} names family {spec.family!r}, registered under {family.name!r}")
            if precision is not None and spec.param("precision") is None:
                spec = replace(spec, params=(*spec.params, precision))
            if spec.param("voice") is None and can_clone(spec):  # a saved voice is picked as any voice is
                spec = replace(spec, params=(SAVED_VOICE_PARAM, *spec.params))
            if spec.repo_id in self._specs:
                raise ValueError(f"{spec.repo_id} is registered twice")
            self._specs[spec.repo_id] = spec

    @classmethod
    def discover(cls, package: str = "models") -> "Catalog":
        """Import every module of `package` that defines FAMILY and SPECS (light imports only)."""
        catalog = cls()
        pkg = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{package}.{info.name}")
            if hasattr(module, "FAMILY") and hasattr(module, "SPECS"):
                catalog.register(module.FAMILY, module.SPECS)
        return catalog

    def __contains__(self, repo_id: object) -> bool:
        return repo_id in self._specs

    def __iter__(self):
        return iter(self._specs.values())

    def ids(self, task: str | None = None) -> list[str]:
        return [s.repo_id for s in self._specs.values() if task is None or task in s.tasks]

    def for_task(self, task: str, device_kind: str | None = None) -> list[ModelSpec]:
        """The task's models, the featured one (the default choice) first: one featured for this hardware
        (`device_kind`, ModelSpec.featured_on) before one featured everywhere."""
        def rank(spec: ModelSpec) -> int:
            if task not in spec.featured_in:
                return 2
            if not spec.featured_on:
                return 1
            return 0 if device_kind in spec.featured_on else 2

        return sorted((s for s in self._specs.values() if task in s.tasks), key=rank)

    def get(self, repo_id: Any, task: str | None = None) -> ModelSpec:
        spec = self._specs.get(repo_id) if isinstance(repo_id, str) else None
        if spec is None or (task is not None and task not in spec.tasks):
            kind = f"{TASK_LABELS.get(task, task).lower()} " if task else ""
            if not self.ids(task):
                raise InvalidInput(f"there are no {kind}models in the catalog yet; model {echo(repo_id)} is not one")
            raise InvalidInput(
                f"model {echo(repo_id)} is not a {kind}model in the catalog; choose one of: {self.describe_ids(task)}"
            )
        return spec

    def describe_ids(self, task: str | None = None) -> str:
        """Every choice, with one-repo-per-language families folded into their pattern (facebook/mms-tts-ISO)."""
        names = []
        for stem, specs in fold_languages(s for s in self._specs.values() if task is None or task in s.tasks):
            if stem is None:
                names.append(specs[0].repo_id)
            else:
                names.append(f"{stem}ISO (ISO one of {', '.join(s.language for s in specs)})")
        return ", ".join(names)

    def family(self, spec: ModelSpec) -> Family:
        return self._families[spec.family]

    def families(self) -> list[Family]:
        """Every family registered, in the order registered."""
        return list(self._families.values())

    def voices(self, spec: ModelSpec) -> tuple[str, ...]:
        """The model's preset voices."""
        family = self.family(spec)
        if family.list_voices is None:
            return ()
        return family.list_voices(spec) or spec.voices

    def saved_voices(self, spec: ModelSpec) -> tuple[str, ...]:
        """The saved voices (studio.voices) `spec` can speak in: all that are usable, for a model that clones."""
        if self.library is None or not can_clone(spec):
            return ()
        return tuple(self.library.names())

    def make_request(
        self,
        model: Any,
        prompt: Any,
        *,
        task: str | None = None,
        seed: Any = None,
        params: Mapping[str, Any] | None = None,
        random_seed: Callable[[], int] | None = None,
    ) -> Request:
        """Validate everything a user can send; errors name the value, the rule and the fix."""
        spec = self.get(model, task)
        task = task or spec.tasks[0]
        text = _check_prompt(prompt, spec, task)
        params = dict(params or {})
        used: tuple[Any, ...] = ()
        if self.library is not None and can_clone(spec):  # a saved voice becomes the clip (and transcript) it holds
            params, used = self.library.apply(spec, params, self.voices(spec))
        unknown = sorted(set(params) - {p.name for p in spec.params})
        if unknown:
            names = ", ".join(p.name for p in spec.params)
            raise InvalidInput(f"{spec.repo_id} has no setting {echo(unknown[0])}; its settings are: {names}")
        values = {p.name: p.validate(params.get(p.name), model=spec.repo_id) for p in spec.params}
        family = self.family(spec)
        if family.check is not None:
            family.check(spec, values)
        if family.check_text is not None:
            family.check_text(spec, text, values)
        # A voice name that filled nothing is a preset of the model's or a mistake, for speaker 1 (`voice`) and for
        # speaker k (`voice_k`, in the modes it belongs to: a Dialogue setting is not read in Single voice).
        filled = {u.speaker for u in used}
        for param in spec.params:
            speaker = voice_speaker(param.name)
            value = values.get(param.name)
            if speaker is not None and value not in (None, "") and speaker not in filled and param.applies(values):
                self._unknown_voice(spec, value, param.name)
        return Request(model=spec.repo_id, task=task, prompt=text, seed=_check_seed(seed, random_seed), params=values,
                       spec_params=spec.params, voices=used)

    def _unknown_voice(self, spec: ModelSpec, voice: Any, name: str = "voice") -> None:
        """Refuse `voice` (the value of the setting `name`), which is neither a preset of `spec` nor a saved voice it
        can use, naming the choices."""
        voices = self.voices(spec)
        if voice in voices:
            return
        saved = self.saved_voices(spec)
        if self.library is not None and not can_clone(spec) and self.library.find(voice) is not None:
            cloners = ", ".join(s.label for s in self if can_clone(s))
            raise InvalidInput(f"{name} {echo(voice)} is a saved voice, and {spec.repo_id} cannot clone voices: use it "
                               f"with a model that can ({cloners}), or choose one of: {', '.join(voices)}")
        choices = [*voices, *(f"{voice_name} (saved)" for voice_name in saved)]
        if choices:
            raise InvalidInput(f"{name} {echo(voice)} is not a voice of {spec.repo_id}; choose one of: "
                               f"{', '.join(choices)}")
        raise InvalidInput(f"{name} {echo(voice)} is not a saved voice, and {spec.repo_id} has no preset voices: "
                           "save the voice first (Speech tab, Voice library; or `python -m studio voices save NAME "
                           f"--audio FILE --consent`), or leave {name} empty")


def can_clone(spec: ModelSpec) -> bool:
    """Whether `spec` speaks in a voice cloned from a clip: a speech model with a Clip setting named `audio` (the
    voice library's saved voices are for these; see studio.voices)."""
    param = spec.param("audio")
    return "speech" in spec.tasks and param is not None and param.is_audio


def speaker_of(name: str, kinds: tuple[str, ...] = ("voice", "audio", "transcript")) -> int | None:
    """The speaker a setting of one of `kinds` belongs to: 1 for `audio`, k for `audio_k` (the multi-speaker
    convention); None for any other setting."""
    found = re.fullmatch(rf"(?:{'|'.join(kinds)})(?:_(\d+))?", name)
    if found is None:
        return None
    return int(found.group(1)) if found.group(1) else 1


def voice_speaker(name: str) -> int | None:
    """The speaker a Voice setting speaks for: 1 for `voice`, k for `voice_k`; None for any other setting."""
    return speaker_of(name, ("voice",))


def saved_voice_param(speaker: int = 1, *, modes: tuple[str, ...] = ()) -> Param:
    """The Voice setting of speaker `speaker` for a model that clones from clips and has no presets of its own: a
    saved voice (studio.voices) that fills speaker k's clip (`audio` / `audio_k`) and its transcript, or none."""
    if speaker == 1:
        return Param("voice", str, "", "Voice", "A voice saved in the Voice library (below): it fills the clip to "
                     "clone and its transcript. Empty: the clip given here, or none.", advanced=False, modes=modes)
    return Param(f"voice_{speaker}", str, "", f"Saved voice of Speaker {speaker}",
                 f"A voice saved in the Voice library for Speaker {speaker}'s lines: it fills Speaker {speaker}'s clip "
                 "(and its transcript). Empty: the clip given here, or none.", advanced=False, modes=modes)


# The Voice setting a model that clones gets when it has no preset voices of its own (Dia): a saved voice or none.
SAVED_VOICE_PARAM = saved_voice_param(1)


def text_key(task: str | None) -> str:
    """What a task calls the words it is given: "text" for speech (words to speak), else "prompt".

    The one name for them in messages, in the API's arguments and in a result's metadata.
    """
    return "text" if task == "speech" else "prompt"


def metadata_text(metadata: Mapping[str, Any]) -> tuple[str, Any]:
    """(key, words) of a result's metadata, which keeps its words under its task's text_key."""
    key = "text" if "text" in metadata else "prompt"
    return key, metadata.get(key, "")


ECHO_CHARS = 80


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """What a user sent, as an error message quotes it: its repr, with at most `limit` characters of it.

    Every message that repeats user input goes through here, so a 100,000-character value comes back as its
    start and an ellipsis, never whole. Text is cut before it is quoted, so the quotes stay balanced.
    """
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[:limit] + "…")
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"a {type(value).__name__} too long to show"
    return text if len(text) <= limit else text[:limit] + "…"


def clean_text(text: str) -> str:
    """Text fit for a model: control characters (but newline and tab) and lone surrogates dropped, ends stripped.

    The prompt and every other text setting (negative_prompt, a voice, a choice) are cleaned here. Lone surrogates
    are not valid Unicode (they cannot be written as UTF-8) and, like control characters, are not printable.
    """
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable()).strip()


def _check_prompt(prompt: Any, spec: ModelSpec, task: str) -> str:
    what = text_key(task)
    if not isinstance(prompt, str):
        raise InvalidInput(f"the {what} must be text, but is {type(prompt).__name__}")
    # Control characters other than newline and tab can't be spoken or tokenized meaningfully.
    text = clean_text(prompt)
    if not text:
        raise InvalidInput(f"the {what} is empty: describe what you want to hear")
    if len(text) > spec.max_prompt_chars:
        raise InvalidInput(
            f"the {what} has {len(text):,} characters; {spec.repo_id} takes at most {spec.max_prompt_chars:,}: shorten it"
        )
    return text


def _check_seed(seed: Any, random_seed: Callable[[], int] | None) -> int:
    """A seed in [0, MAX_SEED]; nothing, blank text or -1 (a number or text such as " -1 ") picks a random one."""
    blank = seed is None or (isinstance(seed, str) and not seed.strip())
    value = None if blank else _to_number(seed, int, "seed", "")
    if value is None or value == -1:
        if random_seed is None:
            import secrets

            return secrets.randbelow(MAX_SEED + 1)
        return random_seed()
    if not 0 <= value <= MAX_SEED:
        raise InvalidInput(f"seed must be between 0 and {MAX_SEED} (or -1 for a random one), but is {echo(seed)}")
    return value


def duration_param(maximum: float, default: float, *, minimum: float = 0.5, step: float = 0.5,
                   help: str = "Length of the clip in seconds.") -> Param:
    return Param(
        "duration", float, default, "Duration (s)", help,
        minimum=minimum, maximum=maximum, step=step, advanced=False,
    )
