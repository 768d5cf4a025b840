"""What a request costs in bytes, and which precision "auto" picks: the one home of both.

The CLI's models table, the README's, the estimate and the plan all ask here. Weight bytes are exact
from the cached safetensors headers (or from the loaded tensors, remembered by the calibration), else
from the catalog's parameter count.
"""

from __future__ import annotations

from studio.catalog import AUTO, CPU_NATIVE_BF16, DTYPE_BYTES, Catalog, Companion, ModelSpec, Request
from studio import device
from studio.estimate import Calibration
from studio.planner import Sizes
from studio.precision_probe import CPU_CANDIDATES, Choice, PrecisionSpeeds, choose
from studio.weights import cached_weight_bytes, float_bytes, planned_weight_bytes


class Sizer:
    def __init__(self, catalog: Catalog, calibration: Calibration | None = None,
                 speeds: PrecisionSpeeds | None = None) -> None:
        self.catalog = catalog
        self.calibration = calibration or Calibration(None)
        self.speeds = speeds  # what the precision probe measured on this CPU (None: the published defaults)

    def dtype(self, spec: ModelSpec, compute_kind: str, precision: str = AUTO) -> str:
        """The precision a run uses: the one asked for, or what "auto" picks for the hardware doing the work (on a
        CPU, the fastest measured here once measured: auto_choice)."""
        if precision != AUTO:
            return precision
        if compute_kind == "cpu":
            choice = self.auto_choice(spec)
            if choice is not None:
                return choice.dtype
        return self.published_dtype(spec, compute_kind)

    def published_dtype(self, spec: ModelSpec, compute_kind: str) -> str:
        """The family's own choice for the hardware, before anything is measured."""
        preferred = self.catalog.family(spec).preferred_dtypes
        if compute_kind == "cpu" and CPU_NATIVE_BF16 in preferred and device.cpu_has_native_bf16():
            return preferred[CPU_NATIVE_BF16]
        return preferred.get(compute_kind, "float32")

    def probe_candidates(self, spec: ModelSpec) -> tuple[str, ...]:
        """The precisions auto chooses among on a CPU by measurement: the family's (their cost in the audio measured
        by the bench) that a CPU runs natively. Fewer than two: nothing to measure."""
        allowed = self.catalog.family(spec).precisions
        return tuple(d for d in CPU_CANDIDATES if d in allowed)

    def auto_choice(self, spec: ModelSpec) -> Choice | None:
        """auto's precision on this CPU and why, once measured: by the model's own runs here in two precisions or
        more (the calibration), else by the probe (studio.precision_probe). None: not measured (yet)."""
        candidates = self.probe_candidates(spec)
        if self.speeds is None or len(candidates) < 2:
            return None
        default = self.published_dtype(spec, "cpu")
        prior_units = 100.0  # any fixed amount of work: the fitted lines compare at it
        ran = {d: self.calibration.compute_seconds(Calibration.key(spec.repo_id, "cpu", d), prior_units,
                                                   spec.speed_prior("cpu", d))
               for d in candidates if self.calibration.has_runs(Calibration.key(spec.repo_id, "cpu", d))}
        by_runs = choose(ran, candidates, default, source="runs") if len(ran) >= 2 else None
        return by_runs or choose(self.speeds.measured(spec.repo_id), candidates, default)

    def sizes(self, spec: ModelSpec, request: Request, compute_kind: str, *,
              loaded: tuple[str, int] | None = None) -> Sizes:
        """Bytes of running `request` on `compute_kind` ("cpu", "cuda", "mps") in the request's precision.

        `loaded` is (dtype, bytes) of the model as it is loaded now, the exact figure when the dtype matches.
        """
        family = self.catalog.family(spec)
        dtype = self.dtype(spec, compute_kind, requested_precision(request))
        floating = float_bytes(dtype, compute_kind)
        weights = self.weights(spec, dtype, compute_kind, loaded=loaded)
        load_peak = 0
        if dtype == "int8" and compute_kind == "cpu":  # loads float32, then quantizes
            load_peak = self.weights(spec, "float32", compute_kind)
        if compute_kind == "cpu":  # a one-time preparation before the load holds RAM: the CPU's memory here
            load_peak = max(load_peak, preparation_peak(family, spec))
        largest = None
        if family.components is not None:
            largest = max(family.components(spec, DTYPE_BYTES[dtype]).values(), default=weights)
        return Sizes(dtype=dtype, weights=weights, working=family.working_bytes(spec, request, floating),
                     load_peak=load_peak, largest_part=largest)

    def weights(self, spec: ModelSpec, dtype: str, compute_kind: str, *, loaded: tuple[str, int] | None = None) -> int:
        if loaded is not None and loaded[0] == dtype:
            return loaded[1]
        measured = self.calibration.known_weights(spec.repo_id, weights_label(dtype, compute_kind))
        if measured is not None:
            return measured
        family = self.catalog.family(spec)
        # The model's own weights, then each companion repo's once. A pipeline of parts: components at one byte a
        # parameter are the parts' parameter counts, less the parts that are companions (counted below).
        companion_parts = {companion.part for companion in family.companion_repos}
        floating = float_bytes(dtype, compute_kind)
        part_bytes = None
        if family.components is not None:
            def part_bytes() -> dict[str, int]:
                # Each part's bytes at its int8 size when it is an int8 part, else at the floating size the family
                # gives it (a part the loader keeps float32 whatever the precision, e.g. a codec, says so itself).
                int8, float_ = family.components(spec, 1), family.components(spec, floating)
                return {name: int8[name] if name in family.int8_parts else float_[name] for name in int8
                        if name not in companion_parts}
        own = planned_weight_bytes(spec, dtype, floating, family.int8_parts, part_bytes)
        unsaved = family.unsaved_bytes(spec, floating) if family.unsaved_bytes is not None else 0
        return own + unsaved + sum(companion_weight_bytes(companion) for companion in family.companion_repos)


def companion_weight_bytes(companion: Companion) -> int:
    """A companion repo's weights, kept float32 in every precision: exact once cached, else as published."""
    exact = cached_weight_bytes(companion.repo_id, 4)
    return exact if exact is not None else companion.parameters * 4


def preparation_peak(family, spec: ModelSpec) -> int:
    """RAM the family's one-time preparation of `spec` holds at its peak; 0 when there is none left to do."""
    preparation = family.preparation(spec) if family.preparation is not None else None
    return preparation.peak_bytes if preparation is not None else 0


def weights_label(dtype: str, compute_kind: str) -> str:
    """Calibration key for loaded weight bytes: int8 models differ in size on the CPU and on CUDA."""
    return f"int8/{compute_kind}" if dtype == "int8" else dtype


def requested_precision(request: Request | None) -> str:
    """The precision a request asks for: a model's Precision setting, "auto" when it has none or none is given."""
    return request.params.get("precision", AUTO) if request is not None else AUTO
