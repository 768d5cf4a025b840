"""The bench's arithmetic: medians, speed ratios, relative errors, overheads, target checks and run order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence


def median(values: Iterable[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count); raises on no values."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("median of no values")
    if any(math.isnan(v) for v in ordered):
        raise ValueError("median of values that include NaN")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def speed_ratio(reference_s: float, studio_s: float) -> float:
    """reference time / studio time: 1.0 is a tie, above 1.0 the studio is faster (1.5 = 1.5x as fast)."""
    if reference_s <= 0 or studio_s <= 0:
        raise ValueError(f"times must be positive, got reference {reference_s} and studio {studio_s}")
    return reference_s / studio_s


def paired_ratio(reference: Sequence[float], studio: Sequence[float]) -> float:
    """The median of the per-round ratios of interleaved runs (round i: reference[i] against studio[i]).

    Pairing cancels slow drift of a shared machine (both runs of a round see the same load) better
    than the ratio of the two medians.
    """
    if len(reference) != len(studio) or not reference:
        raise ValueError(f"need the same, non-zero number of runs, got {len(reference)} and {len(studio)}")
    return median(speed_ratio(r, s) for r, s in zip(reference, studio))


def overhead(studio_s: float, reference_s: float) -> float:
    """How much longer the studio takes: studio / reference - 1 (0.02 = 2 % slower; negative = faster)."""
    return 1.0 / speed_ratio(reference_s, studio_s) - 1.0


def relative_error(predicted: float, actual: float) -> float:
    """|predicted - actual| / actual."""
    if actual <= 0:
        raise ValueError(f"actual must be positive, got {actual}")
    return abs(predicted - actual) / actual


def median_relative_error(pairs: Iterable[tuple[float, float]]) -> float:
    """Median of |predicted - actual| / actual over (predicted, actual) pairs."""
    return median(relative_error(p, a) for p, a in pairs)


@dataclass(frozen=True)
class Target:
    """A figure's goal: `value op threshold`, e.g. ratio >= 1.0 or error <= 0.15."""

    op: str  # ">=" or "<="
    threshold: float

    def met(self, value: float | None) -> bool | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<=":
            return value <= self.threshold
        raise ValueError(f"unknown comparison {self.op!r}")

    def describe(self, fmt: str = "{:g}") -> str:
        return f"{self.op} {fmt.format(self.threshold)}"


@dataclass(frozen=True)
class Slot:
    """One run in the interleaved schedule."""

    side: str  # "reference" or "studio"
    round: int  # 0-based round among the measured ones; -1 for warm-up
    warmup: bool


def interleaved_order(repeats: int, *, warmup: int = 1, sides: tuple[str, ...] = ("reference", "studio")) -> list[Slot]:
    """Warm-up runs of each side, then `repeats` rounds of one run per side, rotating who goes first.

    Rotating (AB BA ..., or ABC BCA CAB ... for three sides) keeps a steady drift (a machine warming up,
    another job starting) from always favouring the side that runs later.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    order = [Slot(side, -1, True) for _ in range(warmup) for side in sides]
    for index in range(repeats):
        shift = index % len(sides)
        order.extend(Slot(side, index, False) for side in (*sides[shift:], *sides[:shift]))
    return order


def summarize_times(times: Sequence[float]) -> dict:
    """Median, min, max and the spread (max/min - 1) of a list of seconds."""
    if not times:
        raise ValueError("no times")
    low, high = min(times), max(times)
    return {"median_s": median(times), "min_s": low, "max_s": high, "spread": high / low - 1 if low > 0 else None,
            "n": len(times)}


def prompt_frame_cost(plain_s: float, short_s: float, prompted_s: float, *, steps: int, short_steps: int,
                      frames: int) -> dict:
    """What one prompt frame costs, as a fraction of a sampled step, from one round of three runs.

    plain_s: `steps` new tokens from text alone; short_s: `short_steps` from text alone; prompted_s: `steps`
    new tokens after a `frames`-frame audio prompt. A step's marginal time is (plain - short) / (steps -
    short_steps), the slope the studio's estimate fits (seconds = fixed + per unit x units);
    cost = (prompted - plain) / frames / that. cost_vs_average_step divides by plain / steps instead (a step
    with its share of the run's fixed costs): the two differ by how much of a run is fixed.
    """
    if steps <= short_steps or frames <= 0 or plain_s <= 0:
        raise ValueError(f"need steps > short_steps, frames > 0 and a positive time, got {steps}, {short_steps}, "
                         f"{frames}, {plain_s}")
    marginal = (plain_s - short_s) / (steps - short_steps)
    per_frame = (prompted_s - plain_s) / frames
    return {"extra_s": prompted_s - plain_s, "per_frame_s": per_frame, "marginal_step_s": marginal,
            # None when other jobs made the longer run no slower than the shorter one: no slope to divide by
            "cost": per_frame / marginal if marginal > 0 else None,
            "cost_vs_average_step": per_frame / (plain_s / steps)}
