"""Memory and time estimates for a run, calibrated from past runs and kept across restarts."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from studio.catalog import ModelSpec, SpeedPrior
from studio.settings import format_bytes

log = logging.getLogger(__name__)

# Loading = building modules + reading the files + copying to the device: a fixed cost plus 4 ms per MB
# (250 MB/s), until loads on this machine are measured. Units are megabytes.
LOAD_PRIOR = SpeedPrior(0.5, 0.004)
LOAD_PRIOR_FIRST = SpeedPrior(2.0, 0.004)  # the first load in a process also imports the model's code
# A one-time preparation (converting a checkpoint): a fixed cost plus 2 ms per megabyte read or written (500 MB/s),
# until preparations on this machine are measured. Measured: converting the realistic-size Stable Audio 3 medium
# (10.4 GB read and written, the source in the page cache as after a download) took 22-35 s on the 2-core test
# machine, 1.1-1.7 ms per MB; a cold disk is slower.
PREPARE_PRIOR = SpeedPrior(2.0, 0.002)
DEFAULT_IMPORT_SECONDS = 4.0  # importing torch + transformers, when nothing has imported them yet
MAX_POINTS = 32
LONG_RUN_S = 600.0  # an estimate above this says how to make the run quicker
OFFLOAD_BANDWIDTH = 10e9  # bytes per second host -> device (PCIe 4 x16 in practice), until offload runs are measured


@dataclass(frozen=True)
class Estimate:
    model: str
    seconds: float
    bytes: int  # device bytes the run needs at its peak: weights on the device + working memory
    fits: bool  # runs within the budget (possibly after evicting `evicts`, possibly with offload)
    evicts: tuple[str, ...]
    weights_bytes: int
    working_bytes: int
    load_seconds: float
    compute_seconds: float
    placement: str  # "device", "offload" (weights in RAM, parts moved in turn) or "cpu"
    resident: bool  # already on the device
    cached: bool  # files already in the HF cache
    budget_bytes: int
    dtype: str
    device: str | None = None  # the device the run uses, named when the studio has more than one
    faster: str | None = None  # the model's setting that makes a run quicker (fewer steps), for a long estimate
    reserve_bytes: int = 0  # set when the memory reserve alone takes all of the device's memory (budget 0)
    work: str = ""  # what the run does with its inputs ("continues the 5.0 s clip by 10 s: 15 s in all")
    prepares: str = ""  # the one-time preparation the load does first ("converts the checkpoint ... once")
    prepare_seconds: float = 0.0  # its share of load_seconds
    fits_in: str = ""  # a run that fits nowhere: the model's precision that would (set by the manager)
    # Seconds until the first piece of audio can be heard (load included) for a run that streams; None: it does not.
    first_audio_seconds: float | None = None
    # Why auto chose `dtype` when it was measured on this CPU ('int8: fastest on this CPU, 2.1x float32 (...)'); "":
    # chosen by the user, or the family's published default.
    dtype_reason: str = ""
    # The decoder's path for a family that compiles ("compiled decoder", "eager while the decoder compiles"); "" for
    # the others, and for a model not loaded yet. (Not "path": the API's clients take a dict with a "path" for a file.)
    decoder: str = ""

    def summary(self, *, first_audio: bool = False) -> str:
        """One line for people: 'about 24 s · needs 2.3 GB of 7.6 GB · float16 · will unload suno/bark-small'.

        The precision is named unless it is float32: it changes both figures, and "auto" decides it per machine.
        `first_audio`: a run that streams also says when it is first heard ('about 24 s · first audio in about 5 s').
        """
        parts = [f"about {format_seconds(self.seconds)}"]
        if first_audio and self.first_audio_seconds is not None:
            parts.append(f"first audio in about {format_seconds(self.first_audio_seconds)}")
        if self.work:
            parts.insert(0, self.work)
        reserve = (f"the reserve ({_reserve_text(self.reserve_bytes)}) takes all of this device's memory: "
                   "lower --memory-reserve") if self.reserve_bytes and not self.budget_bytes else None
        if not self.fits:
            fix = reserve or (f"choose Precision {self.fits_in}, which fits" if self.fits_in
                              else "unload pinned models or raise --memory-budget")
            return f"does not fit in {self.dtype}: needs {format_bytes(self.bytes)} of " \
                   f"{format_bytes(self.budget_bytes)}; {fix}"

        if self.placement == "device":
            parts.append(f"needs {format_bytes(self.bytes)} of {format_bytes(self.budget_bytes)}")
        elif self.placement == "offload":
            parts.insert(0, f"does not fit whole ({format_bytes(self.weights_bytes + self.working_bytes)} "
                            f"of {format_bytes(self.budget_bytes)}): runs with CPU offload")
        else:
            parts.insert(0, f"does not fit the device ({format_bytes(self.weights_bytes + self.working_bytes)} "
                            f"of {format_bytes(self.budget_bytes)}): runs on the CPU")
        if self.device is not None and self.placement != "cpu":
            parts.append(f"on {self.device}")
        if self.dtype_reason:
            parts.append(self.dtype_reason)
        elif self.dtype != "float32":
            parts.append(self.dtype)
        if self.decoder:
            parts.append(self.decoder)
        if not self.cached:
            parts.append(f"downloads {format_bytes(self.weights_bytes)} first")
        elif not self.resident:
            parts.append(f"loads in ~{format_seconds(self.load_seconds - self.prepare_seconds)}")
        if self.prepares:
            parts.append(f"{self.prepares} (~{format_seconds(self.prepare_seconds)})")
        if self.evicts:
            parts.append("will unload " + ", ".join(self.evicts))
        if reserve:
            parts.append(reserve)
        if self.seconds > LONG_RUN_S:
            quicker = f"fewer {self.faster.replace('_', ' ')} or a faster model" if self.faster else "a faster model"
            parts.append(f"a long run: {quicker} would be quicker")
        return " · ".join(parts)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["evicts"] = list(self.evicts)
        data["summary"] = self.summary()
        return data


def _reserve_text(nbytes: int) -> str:
    """The reserve as people set it: '512 MiB' for whole mebibytes (the default), else decimal."""
    return f"{nbytes // 2**20} MiB" if nbytes % 2**20 == 0 and nbytes < 2**40 else format_bytes(nbytes)


def format_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} min {rest:02d} s" if minutes < 10 else f"{minutes} min"
    return f"{seconds / 3600:.1f} h"


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares seconds = a + b * units with a, b >= 0; None when the units never vary."""
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx <= 1e-12 * max(1.0, mean_x**2):
        return None
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    a = mean_y - b * mean_x
    if b < 0:
        return None
    if a < 0:  # through the origin instead
        b = sum(x * y for x, y in points) / max(sum(x * x for x, _ in points), 1e-12)
        a = 0.0
    return a, b


# Runs through a compiled decoder (models.compiled) are learnt apart from eager ones; until one is measured, the
# estimate is the eager one times this: musicgen-small in int8 on a 2-core AMD EPYC (AVX2) ran 1.29x faster compiled
# once a step's attention read only the written part of the cache (1.15x before, there and on an AVX-512 one;
# docs/benchmarks.md, "Compiled decoding").
COMPILED = "+compiled"
COMPILED_PRIOR = 0.78


class TimeEstimator:
    """Seconds a run will take, from the calibration: loading (bytes over measured bandwidth) plus compute
    (a fixed cost plus a cost per unit of work, fitted per model, hardware and precision)."""

    def __init__(self, calibration: "Calibration") -> None:
        self.calibration = calibration

    @staticmethod
    def speed_kind(compute_kind: str, placement: str) -> str:
        """Calibration key part: offload runs are slower than whole-model runs on the same hardware."""
        return f"{compute_kind}+offload" if placement == "offload" else compute_kind

    def compute_seconds(self, spec: ModelSpec, units: float, *, compute_kind: str, placement: str, dtype: str,
                        weights: int, compiled: bool = False) -> float:
        key = Calibration.key(spec.repo_id, self.speed_kind(compute_kind, placement), dtype)
        seconds = self.calibration.compute_seconds(key, units, spec.speed_prior(compute_kind, dtype))
        if placement == "offload" and not self.calibration.has_runs(key):
            seconds += weights / OFFLOAD_BANDWIDTH  # until measured: every component crosses to the device once
        if compiled:  # the compiled decoder's own runs, once there are some; until then the eager time, scaled
            compiled_key = key + COMPILED
            if self.calibration.has_runs(compiled_key):
                return self.calibration.compute_seconds(compiled_key, units, spec.speed_prior(compute_kind, dtype))
            seconds *= COMPILED_PRIOR
        return seconds

    def load_seconds(self, device_kind: str, weights: int, *, first_in_process: bool, importing: bool) -> float:
        seconds = self.calibration.load_seconds(device_kind, weights, first_in_process=first_in_process)
        return seconds + (self.calibration.import_seconds() if importing else 0.0)

    def record_run(self, spec: ModelSpec, units: float, seconds: float, *, compute_kind: str, placement: str,
                   dtype: str, compiled: bool = False) -> None:
        key = Calibration.key(spec.repo_id, self.speed_kind(compute_kind, placement), dtype)
        self.calibration.record_run(key + COMPILED if compiled else key, units, seconds)

    def prepare_seconds(self, family: str, io_bytes: int) -> float:
        """A family's one-time preparation of `io_bytes` read plus written (see catalog.Preparation)."""
        return self.calibration.compute_seconds(f"prepare|{family}", io_bytes / 1e6, PREPARE_PRIOR)

    def record_preparation(self, family: str, io_bytes: int, seconds: float) -> None:
        self.calibration.record_run(f"prepare|{family}", io_bytes / 1e6, seconds)


class Calibration:
    """Per (model, device, dtype) observations of compute time, and per device the load bandwidth."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._runs: dict[str, list[tuple[float, float]]] = {}
        self._import_seconds = DEFAULT_IMPORT_SECONDS
        self._weights: dict[str, int] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                log.warning("ignoring unreadable calibration file %s (%s); estimates start from published figures",
                            path, error)
                return
            self._runs, self._import_seconds, self._weights, dropped = validated(data)
            if dropped:  # one warning for the whole file: what was dropped, and that the rest is used
                shown = "; ".join(dropped[:5]) + (f"; and {len(dropped) - 5} more" if len(dropped) > 5 else "")
                log.warning("calibration file %s: dropped %d bad entr%s (%s); estimates for those start from "
                            "published figures", path, len(dropped), "y" if len(dropped) == 1 else "ies", shown)

    @staticmethod
    def key(model: str, device_kind: str, dtype: str) -> str:
        return f"{model}|{device_kind}|{dtype}"

    def compute_seconds(self, key: str, units: float, prior: SpeedPrior) -> float:
        with self._lock:
            points = list(self._runs.get(key, ()))
        guess = prior.fixed_s + prior.per_unit_s * units
        line = fit_line(points)
        if line is not None:
            a, b = line
            return _sane(a + b * units, guess)
        if points:  # one length seen so far: keep the prior's shape, take the measured scale
            scale = sum(y / max(prior.fixed_s + prior.per_unit_s * x, 1e-9) for x, y in points) / len(points)
            return _sane(guess * scale, guess)
        return guess

    def has_runs(self, key: str) -> bool:
        with self._lock:
            return bool(self._runs.get(key))

    def record_run(self, key: str, units: float, seconds: float) -> None:
        if not (_number(units, MAX_UNITS) and _number(seconds, MAX_SECONDS)):
            log.warning("not recording a run of %s with %r units in %r s: not a sane measurement", key, units, seconds)
            return
        with self._lock:
            points = self._runs.setdefault(key, [])
            points.append((float(units), float(seconds)))
            del points[:-MAX_POINTS]
        self._save()

    def forget_runs(self, key: str) -> None:
        with self._lock:
            self._runs.pop(key, None)
        self._save()

    def load_seconds(self, device_kind: str, nbytes: int, *, first_in_process: bool) -> float:
        """Loading = a fixed cost (building modules; the first load in a process also imports model code)
        plus bytes over bandwidth, fitted from past loads on this device like compute time."""
        key = f"load|{device_kind}|{'first' if first_in_process else 'warm'}"
        prior = LOAD_PRIOR_FIRST if first_in_process else LOAD_PRIOR
        return self.compute_seconds(key, nbytes / 1e6, prior)

    def record_load(self, device_kind: str, nbytes: int, seconds: float, *, first_in_process: bool) -> None:
        key = f"load|{device_kind}|{'first' if first_in_process else 'warm'}"
        self.record_run(key, nbytes / 1e6, seconds)

    def import_seconds(self) -> float:
        with self._lock:
            return self._import_seconds

    def record_import(self, seconds: float) -> None:
        if not _number(seconds, MAX_SECONDS):
            return
        with self._lock:
            self._import_seconds = float(seconds)
        self._save()

    def known_weights(self, model: str, dtype: str) -> int | None:
        """Bytes the model's tensors took when it was last loaded in `dtype` (non-persistent buffers included)."""
        with self._lock:
            return self._weights.get(f"{model}|{dtype}")

    def record_weights(self, model: str, dtype: str, nbytes: int) -> None:
        if not _weight(nbytes):
            return
        with self._lock:
            changed = self._weights.get(f"{model}|{dtype}") != nbytes
            self._weights[f"{model}|{dtype}"] = int(nbytes)
        if changed:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {"runs": self._runs, "import_seconds": self._import_seconds, "weights": self._weights}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".calibration-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, allow_nan=False)  # strict JSON: what is read back is what was measured
            os.replace(tmp, self.path)
        except (OSError, ValueError) as error:
            log.warning("could not save calibration to %s: %s", self.path, error)


# What a calibration file may hold: measurements, so finite, not negative, and within what a machine can do.
MAX_SECONDS = 1e7  # about four months: no run or load takes longer
MAX_UNITS = 1e12  # units of work (tokens, steps, characters, megabytes loaded)
MAX_WEIGHT_BYTES = 10**14  # 100 TB of weights: far beyond any model here


def _number(value: object, upper: float) -> bool:
    """A finite real number in [0, upper] (bool is not a number here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= upper)


def _weight(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 < value < MAX_WEIGHT_BYTES


def _sane(seconds: float, fallback: float) -> float:
    """A fitted figure if it is finite and not negative, else the prior's (itself finite for finite units)."""
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS * 10 else fallback


def validated(data: object) -> tuple[dict[str, list[tuple[float, float]]], float, dict[str, int], list[str]]:
    """The usable parts of a calibration file's JSON: (runs, import seconds, weights, what was dropped and why).

    The schema: {"runs": {key: [[units, seconds], ...]}, "import_seconds": seconds, "weights": {key: bytes}}, every
    part optional. Whatever does not fit is dropped entry by entry (a bad point, a bad weight), so one broken entry
    costs only its own model's calibration.
    """
    dropped: list[str] = []
    runs: dict[str, list[tuple[float, float]]] = {}
    weights: dict[str, int] = {}
    import_seconds = DEFAULT_IMPORT_SECONDS
    if not isinstance(data, dict):
        return runs, import_seconds, weights, [f"the file holds {_kind(data)}, not an object"]
    raw_runs = data.get("runs", {})
    if not isinstance(raw_runs, dict):
        dropped.append(f"'runs' is {_kind(raw_runs)}, not an object")
        raw_runs = {}
    for key, points in raw_runs.items():
        if not isinstance(points, list):
            dropped.append(f"runs {key!r}: {_kind(points)}, not a list of points")
            continue
        good = []
        for point in points:
            if isinstance(point, list) and len(point) == 2 and _number(point[0], MAX_UNITS) \
                    and _number(point[1], MAX_SECONDS):
                good.append((float(point[0]), float(point[1])))
            else:
                dropped.append(f"runs {key!r}: point {_short(point)} is not [units, seconds] >= 0")
        if good:
            runs[key] = good[-MAX_POINTS:]
    if "import_seconds" in data:
        if _number(data["import_seconds"], MAX_SECONDS):
            import_seconds = float(data["import_seconds"])
        else:
            dropped.append(f"import_seconds {_short(data['import_seconds'])} is not seconds >= 0")
    raw_weights = data.get("weights", {})
    if not isinstance(raw_weights, dict):
        dropped.append(f"'weights' is {_kind(raw_weights)}, not an object")
        raw_weights = {}
    for key, value in raw_weights.items():
        if _weight(value):
            weights[key] = int(value)
        else:
            dropped.append(f"weights {key!r}: {_short(value)} is not a byte count in (0, {MAX_WEIGHT_BYTES:.0e})")
    return runs, import_seconds, weights, dropped


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    """The JSON name of a value's type."""
    if value is None:
        return "null"
    names = {bool: "a boolean", dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
