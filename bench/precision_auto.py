"""auto on a CPU, measured (issue 17, part 1): is the precision probe's choice the fastest on this machine?

Per model, on the realistic builds: the probe (studio.precision_probe) on the loaded model's own Linear shapes, then
real runs of the same request in each precision it chooses among (a warm-up run each, then interleaved rounds; each
run reloads the model in its precision, and only the generation is timed: RunResult.compute_s). The real-time factor
is generation seconds per second of audio. Target: auto's choice within 5 % of the fastest measured precision.

The diffusion transformers (Stable Audio 3, ACE-Step) are too large to load whole here (bench.music_dit): for them the
probe runs on the realistic-width DiT's own shapes at the family's rows (Family.probe_rows), and again at a decoder's
2 rows (the probe before it took the family's rows), against one real DiT step at 10 s in each precision (one block:
every block is the same, so the ranking is the real depth's), interleaved rounds after a warm-up.

BENCH_PRECISION=name[,name] runs only those cases; the rows of the others (measured on this CPU) stay, each dated.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bench.runner import _studio
from bench.stats import Target, interleaved_order, median, summarize_times

log = logging.getLogger(__name__)

TARGET = Target("<=", 0.05)
CASES = (
    ("musicgen-small", "facebook/musicgen-small", "music", "80s pop track with bassy drums and synth",
     {"duration": 5.0}, "5 s, guidance 3"),
    # Random weights run every sentence to its cap (1 s): two sentences, two chunks.
    ("bark-small", "suno/bark-small", "speech", "The morning was cold and clear. We walked down to the harbour.",
     {"max_chunk_seconds": 1.0}, "two sentences, 1 s each (the cap)"),
)
DIT_CASES = (("sa3-dit", "stabilityai/stable-audio-3-medium", "sa3"),
             ("ace-dit", "ACE-Step/acestep-v15-xl-turbo-diffusers", "ace"))
ROUNDS = {"quick": 2, "full": 3, "tiny": 1}
DIT_ROUNDS = {"quick": 3, "full": 5, "tiny": 1}


def selected() -> set[str]:
    """The cases BENCH_PRECISION names (an unknown name is an error), else all."""
    import os

    names = {name for name, *_ in CASES} | {name for name, *_ in DIT_CASES}
    wanted = {n.strip() for n in os.environ.get("BENCH_PRECISION", "").split(",") if n.strip()}
    if wanted - names:
        raise SystemExit(f"BENCH_PRECISION names no case {sorted(wanted - names)}: one of {sorted(names)}")
    return wanted or names


def merged(previous_here: dict | None, found: dict, created: str) -> dict:
    """This run's rows, each dated, with the rows of the cases it did not run from the last run on this CPU."""
    rows = {name: {**row, "created": row.get("created") or (previous_here or {}).get("created")}
            for name, row in ((previous_here or {}).get("rows") or {}).items()}
    rows.update({name: {**row, "created": created} for name, row in found.items()})
    return rows


def precision_repos() -> list[str]:
    """The realistic builds the selected cases load (the DiT cases build their block in the process)."""
    wanted = selected()
    return [repo for name, repo, *_ in CASES if name in wanted]


def run_case(name: str, repo: str, task: str, prompt: str, params: dict, what: str, *, rounds: int,
             workdir: Path) -> dict:
    from studio.precision_probe import PrecisionSpeeds, choose, layer_shapes, probe
    from studio.run import RunContext

    started = time.monotonic()
    studio = _studio(workdir / name)
    manager = studio.manager
    spec = studio.catalog.get(repo)
    candidates = manager.sizer.probe_candidates(spec)
    published = manager.sizer.published_dtype(spec, "cpu")
    requests = {d: studio.request(task, repo, prompt, seed=1, params={**params, "precision": d}) for d in candidates}
    warm = {d: manager.run(requests[d], RunContext()) for d in candidates}  # loads; first-call costs
    entry = manager._entries[repo]  # the model as loaded last: its shapes are the same in any precision
    shapes = layer_shapes(entry.model.modules(), studio.catalog.family(spec).int8_parts)
    probe_started = time.monotonic()
    probed = probe(shapes, candidates)
    probe_s = time.monotonic() - probe_started
    speeds = PrecisionSpeeds(None, "bench")
    speeds.record(repo, probed)
    auto = choose(probed, candidates, published)
    runs: dict[str, list[dict[str, Any]]] = {d: [] for d in candidates}
    for slot in interleaved_order(rounds, warmup=0, sides=candidates):
        result = manager.run(requests[slot.side], RunContext())
        seconds = result.audio.duration
        runs[slot.side].append({"compute_s": result.compute_s, "audio_s": seconds, "rtf": result.compute_s / seconds,
                                "dtype": result.dtype})
        log.info("  precision %s round %d %-8s generation %6.2f s for %.1f s of audio (RTF %.2f)", name,
                 slot.round + 1, slot.side, result.compute_s, seconds, result.compute_s / seconds)
    rtf = {d: median(r["rtf"] for r in rs) for d, rs in runs.items()}
    fastest = min(rtf, key=rtf.get)
    chosen = auto.dtype if auto is not None else published
    gap = rtf[chosen] / rtf[fastest] - 1.0
    manager.unload_all()
    return {
        "repo": repo, "what": what, "candidates": list(candidates), "published": published, "rounds": rounds,
        "runs": runs, "rtf": rtf, "compute": {d: summarize_times([r["compute_s"] for r in rs]) for d, rs in runs.items()},
        "warm_rtf": {d: w.compute_s / w.audio.duration for d, w in warm.items()},
        "probe": {"seconds": probed, "elapsed_s": probe_s, "shapes": len(shapes),
                  "layers": sum(shapes.values())},
        "auto": chosen, "auto_reason": auto.reason() if auto is not None else "not measured", "fastest": fastest,
        "gap": gap, "target": TARGET.describe("{:.0%}"), "met": TARGET.met(gap),
        "published_gap": rtf[published] / rtf[fastest] - 1.0, "elapsed_s": time.monotonic() - started,
    }


def run_dit_case(name: str, repo: str, family_key: str, *, rounds: int) -> dict:
    import copy

    import torch

    from bench import music_dit
    from studio.catalog import Catalog
    from studio.precision_probe import ROWS, choose, layer_shapes, probe
    from studio.sizer import Sizer

    started = time.monotonic()
    catalog = Catalog.discover()
    spec = catalog.get(repo)
    family = catalog.family(spec)
    sizer = Sizer(catalog, None, None)
    candidates = sizer.probe_candidates(spec)
    published = sizer.published_dtype(spec, "cpu")
    built = music_dit.FAMILIES[family_key]
    fp32 = built["dit"](1)
    shapes = layer_shapes([fp32], family.int8_parts)
    probes = {}
    for label, rows in (("family", family.probe_rows), ("decoder", ROWS)):
        probe_started = time.monotonic()
        seconds = probe(shapes, candidates, rows=rows)
        auto = choose(seconds, candidates, published)
        probes[label] = {"rows": rows, "seconds": seconds, "elapsed_s": time.monotonic() - probe_started,
                         "auto": auto.dtype if auto is not None else published,
                         "reason": auto.reason() if auto is not None else "not measured"}
        log.info("  %s probe at %d rows (%.1f s): %s -> %s", name, rows, probes[label]["elapsed_s"],
                 {d: round(s, 4) for d, s in seconds.items()}, probes[label]["auto"])
    modules = {"float32": fp32}
    if "bfloat16" in candidates:
        modules["bfloat16"] = copy.deepcopy(fp32).to(torch.bfloat16)
    if "int8" in candidates:
        modules["int8"] = music_dit.int8_linear(copy.deepcopy(fp32))
    inputs = {d: built["inputs"](music_dit.SECONDS, torch.bfloat16 if d == "bfloat16" else torch.float32)
              for d in modules}
    with torch.inference_mode():
        for d, module in modules.items():
            module(**inputs[d])  # warm-up: first-call allocations and kernel selection
        timed = music_dit._interleaved({d: (lambda d=d: modules[d](**inputs[d])[0]) for d in modules}, rounds)
    step = {d: timed[d]["median_s"] for d in modules}
    fastest = min(step, key=step.get)
    chosen = probes["family"]["auto"]
    gap = step[chosen] / step[fastest] - 1.0
    decoder_gap = step[probes["decoder"]["auto"]] / step[fastest] - 1.0
    return {
        "kind": "dit-step", "repo": repo, "what": f"one {built['name']} DiT block, a {music_dit.SECONDS:.0f} s step",
        "candidates": list(candidates), "published": published, "rounds": rounds,
        "step_s": step, "times": {d: timed[d]["wall"] for d in modules},
        "probe": {**probes["family"], "shapes": len(shapes), "layers": sum(shapes.values())},
        "probe_at_decoder_rows": {**probes["decoder"], "gap": decoder_gap},
        "auto": chosen, "auto_reason": probes["family"]["reason"], "fastest": fastest, "gap": gap,
        "target": TARGET.describe("{:.0%}"), "met": TARGET.met(gap),
        "published_gap": step[published] / step[fastest] - 1.0, "elapsed_s": time.monotonic() - started,
    }


def run_precision_auto(*, size: str, workdir: Path) -> dict:
    import traceback

    rows, errors = {}, {}
    wanted = selected()
    jobs = [(name, lambda c=case: run_case(*c, rounds=ROUNDS[size], workdir=workdir))
            for case in CASES for name in [case[0]] if name in wanted]
    jobs += [(name, lambda c=case: run_dit_case(*c, rounds=DIT_ROUNDS[size]))
             for case in DIT_CASES for name in [case[0]] if name in wanted and size != "tiny"]
    for name, job in jobs:
        log.info("== precision-auto: %s", name)
        try:
            rows[name] = job()
        except Exception as error:  # one model failing must not lose the other's figures
            log.error("precision-auto %s failed: %s", name, error)
            errors[name] = "".join(traceback.format_exception(error))[-4000:]
    return {"rows": rows, "errors": errors}
