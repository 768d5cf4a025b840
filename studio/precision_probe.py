"""Which precision runs a model fastest on this CPU: measured here, not assumed (issue 17, part 1).

How much int8 or bfloat16 gains over float32 depends on the processor: on one 2-core machine (AVX2) int8 MusicGen
small ran 4.2x the float32 reference, on another (AVX-512 with bf16) 1.7x, where bfloat16 was faster than float32
too. So "auto" on a CPU is what a probe measured on this machine:

- The probe times the model's own Linear shapes (those of the parts its int8 precision quantizes, where a step
  spends its time) at the rows its step runs them with, in each precision the family allows on a CPU, over enough
  copies of the weights that they stream from memory as a real step's do (one copy would sit in the cache and
  flatter the wide precisions). It runs once per model and machine, in the background after the model's first load,
  and only while no run is going: a run that starts stops it at once, and it tries again later.
- The rows are the family's (Family.probe_rows): a decoder's token, twice for guidance (2), or a diffusion
  transformer's latent tokens over a 10 s run. They decide the answer: on a CPU without native bfloat16 (AVX2) a
  bfloat16 matrix at 2 rows reads half the bytes and ran 2.4x faster than float32, at 344 rows torch's emulation
  ran it 5x slower, and a Stable Audio 3 DiT block's real step 3.6x slower; probed at 2 rows, auto ran that DiT in
  bfloat16. A decoder probes in about a second; a DiT in several (a precision already far slower than the fastest
  one measured is not timed to the end: GIVE_UP).
- Real runs refine it: once the calibration has runs of the model in two precisions, their own speeds decide.
- A user's explicit Precision always wins; without a measurement, the family's published default stands.

Results are kept in precision_probe.json beside the calibration, per machine (the CPU's name and flags, torch's
version and threads): a file copied to another machine is measured again there.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

CPU_CANDIDATES = ("float32", "bfloat16", "int8")
ROWS = 2  # a decode step's rows: one token, twice for classifier-free guidance
# Copies of the weights the probe cycles through: at least this many bytes in float32, so that a pass streams them
# from memory as a decoder step does (a server CPU's last-level cache is 32-256 MB... of which a 2-core VM sees a
# share); at most the model's own float32 size.
STREAM_BYTES = 96 * 1024**2
PASSES = 3  # timed passes per precision (after one warm-up); the median counts
LONG_PASS_S = 1.0  # a warm-up pass this long: one timed pass follows, not PASSES
# A pass that has taken GIVE_UP times the fastest precision's whole pass, and LONG_PASS_S (first calls cost
# milliseconds, never that), is cut short: that precision is not the fastest, and its pace so far is its figure.
GIVE_UP = 1.5
# What the probe measures; a file of another method (or of none: before rows were the family's) is measured again.
METHOD = 2
MIN_GAIN = 0.05  # another precision must be this much faster than the family's default to replace it


def machine() -> str:
    """What a measurement holds for: the CPU's name and vector flags, torch's version and thread count."""
    from studio.device import cpu_flags

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "vnni", "f16c", "sse4")))
    import torch

    return f"{name} | {' '.join(flags)} | torch {torch.__version__} | {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class Choice:
    """auto's precision for a model on this machine and why: 'int8: fastest here, 2.1x float32 (measured on its
    layers)'."""

    dtype: str
    speedup: float  # over float32
    source: str  # "probe" or "runs"

    def reason(self) -> str:
        how = "in its runs here" if self.source == "runs" else "measured on its layers here"
        if self.dtype == "float32":
            return f"float32: fastest on this CPU ({how})"
        return f"{self.dtype}: fastest on this CPU, {self.speedup:.1f}x float32 ({how})"


class PrecisionSpeeds:
    """The probe's measurements on this machine, by model; kept in a JSON file (None: in memory only)."""

    def __init__(self, path: Path | None = None, machine_id: str | None = None) -> None:
        self.path = path
        self._machine = machine_id
        self._lock = threading.Lock()
        self._models: dict[str, dict[str, float]] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("method") != METHOD:
                    log.info("precision probe file %s is from an older probe: precisions are measured again", path)
                elif data.get("machine") == self.machine_id():
                    self._models = {str(model): {str(d): float(s) for d, s in seconds.items()
                                                 if d in CPU_CANDIDATES and float(s) > 0}
                                    for model, seconds in dict(data.get("models") or {}).items()}
                else:
                    log.info("precision probe file %s is from another machine: precisions are measured again", path)
            except (OSError, ValueError, TypeError, AttributeError) as error:
                log.warning("ignoring unreadable precision probe file %s (%s); it is measured again", path, error)

    def machine_id(self) -> str:
        if self._machine is None:
            self._machine = machine()
        return self._machine

    def measured(self, model: str) -> dict[str, float] | None:
        with self._lock:
            found = self._models.get(model)
            return dict(found) if found else None

    def record(self, model: str, seconds: Mapping[str, float]) -> None:
        with self._lock:
            self._models[model] = {d: float(s) for d, s in seconds.items()}
            data = {"method": METHOD, "machine": self.machine_id(), "models": self._models}
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("could not keep the precision probe in %s (%s); it is measured again next time",
                        self.path, error)


def choose(seconds: Mapping[str, float] | None, candidates: Iterable[str], default: str, *,
           source: str = "probe") -> Choice | None:
    """The fastest of `candidates` by `seconds` (per precision, less is faster); `default` (the family's published
    choice) stays unless another is at least MIN_GAIN faster. None without float32's and the default's figures."""
    if not seconds:
        return None
    known = {d: s for d, s in seconds.items() if d in candidates and s > 0}
    if "float32" not in known or default not in known:
        return None
    best = min(known, key=known.get)
    if best != default and known[best] > known[default] * (1.0 - MIN_GAIN):
        best = default
    return Choice(best, known["float32"] / known[best], source)


def layer_shapes(roots: Iterable[Any], parts: Iterable[str]) -> dict[tuple[int, int], int]:
    """(in, out) features of every Linear in the `parts` of the loaded modules `roots` (any precision: a packed int8
    Linear keeps its features), with how many there are. All Linears of `roots` when none of `parts` is there."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    def linears(module) -> Iterable[tuple[int, int]]:
        for layer in module.modules():
            if isinstance(layer, (torch.nn.Linear, Int8Linear)):
                yield layer.in_features, layer.out_features

    roots = list(roots)
    found = [getattr(root, part) for root in roots for part in parts if isinstance(getattr(root, part, None),
                                                                                  torch.nn.Module)]
    shapes: dict[tuple[int, int], int] = {}
    for module in found or roots:
        for shape in linears(module):
            shapes[shape] = shapes.get(shape, 0) + 1
    return shapes


def _copies(shapes: Mapping[tuple[int, int], int], stream_bytes: int = STREAM_BYTES) -> int:
    """Copies of one layer of each shape the probe cycles through: stream_bytes of float32, at most the model's."""
    one_set = sum(inp * out for inp, out in shapes) * 4
    return max(1, min(sum(shapes.values()), -(-stream_bytes // max(one_set, 1))))


def probe_bytes(shapes: Mapping[tuple[int, int], int], rows: int = ROWS) -> int:
    """RAM the probe holds at most: its float32 copies and one other precision's (no more than as much again), and
    each layer's input and output at `rows` rows."""
    return 2 * _copies(shapes) * sum(inp * out for inp, out in shapes) * 4 + rows * sum(i + o for i, o in shapes) * 4


class Stopped(Exception):
    """A run started: the probe gives way."""


def probe(shapes: Mapping[tuple[int, int], int], candidates: Iterable[str] = CPU_CANDIDATES, *, rows: int = ROWS,
          stop: Callable[[], bool] = lambda: False, stream_bytes: int = STREAM_BYTES) -> dict[str, float]:
    """Seconds of one step's Linear work (every shape times its count, at `rows` rows) in each candidate precision
    on this CPU. Raises Stopped as soon as `stop()` says so (checked between layers)."""
    import torch

    from models.common import _int8_linear_class

    if not shapes:
        return {}
    total = sum(inp * out * count for (inp, out), count in shapes.items())
    copies = _copies(shapes, stream_bytes)
    generator = torch.Generator().manual_seed(0)
    base = [[torch.nn.Linear(inp, out) for inp, out in shapes] for _ in range(copies)]
    for layers in base:
        for layer in layers:
            with torch.no_grad():
                layer.weight.normal_(0.0, 0.02, generator=generator)
    seconds: dict[str, float] = {}
    with torch.inference_mode():
        for dtype in candidates:
            if stop():
                raise Stopped
            if dtype == "int8":
                int8 = _int8_linear_class()
                sets = [[int8.from_float(layer) for layer in layers] for layers in base]
                inputs = [torch.randn(rows, inp, generator=generator) for inp, _ in shapes]
            else:
                torch_dtype = getattr(torch, dtype)
                sets = [[torch.nn.Linear(inp, out, dtype=torch_dtype) for inp, out in shapes] for _ in base]
                for made, layers in zip(sets, base):
                    for new, old in zip(made, layers):
                        new.weight.copy_(old.weight)
                        new.bias.copy_(old.bias)
                inputs = [torch.randn(rows, inp, generator=generator).to(torch_dtype) for inp, _ in shapes]
            sizes = [inp * out for inp, out in shapes]
            fastest = min(seconds.values(), default=None)  # of one step; a pass is copies x sum(sizes) weights
            limit = max(LONG_PASS_S, GIVE_UP * fastest / total * copies * sum(sizes)) if fastest is not None else None
            seconds[dtype] = _per_weight(sets, inputs, sizes, limit, stop) * total
            del sets
    return seconds


def _per_weight(sets, inputs, sizes: list[int], limit: float | None, stop: Callable[[], bool]) -> float:
    """Seconds per weight of passes over `sets` (a warm-up, then PASSES, or one after a long warm-up; the median).
    A pass that runs past `limit` seconds is cut short, and its pace so far is the answer."""
    timed = []
    passes = PASSES + 1  # the first warms the kernels up
    while len(timed) < passes:
        done = 0
        started = time.perf_counter()
        for layers in sets:
            for layer, x, size in zip(layers, inputs, sizes):
                layer(x)
                done += size
                if stop():  # a DiT's layer at its rows takes a tenth of a second; a decoder's, microseconds
                    raise Stopped
                if limit is not None and time.perf_counter() - started > limit:
                    return (time.perf_counter() - started) / done  # already far slower than the fastest: no more
        timed.append((time.perf_counter() - started) / done)
        if len(timed) == 1 and timed[0] * done > LONG_PASS_S:
            passes = 2
    rest = sorted(timed[1:])
    return rest[len(rest) // 2]
