"""auto on a CPU, measured (issue 17, part 1): is the precision probe's choice the fastest on this machine?

Per model, on the realistic builds: the probe (studio.precision_probe) on the loaded model's own Linear shapes, then
real runs of the same request in each precision it chooses among (a warm-up run each, then interleaved rounds; each
run reloads the model in its precision, and only the generation is timed: RunResult.compute_s). The real-time factor
is generation seconds per second of audio. Target: auto's choice within 5 % of the fastest measured precision.
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
ROUNDS = {"quick": 2, "full": 3, "tiny": 1}


def precision_repos() -> list[str]:
    return [repo for _, repo, *_ in CASES]


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


def run_precision_auto(*, size: str, workdir: Path) -> dict:
    import traceback

    rows, errors = {}, {}
    for name, repo, task, prompt, params, what in CASES:
        log.info("== precision-auto: %s", name)
        try:
            rows[name] = run_case(name, repo, task, prompt, params, what, rounds=ROUNDS[size], workdir=workdir)
        except Exception as error:  # one model failing must not lose the other's figures
            log.error("precision-auto %s failed: %s", name, error)
            errors[name] = "".join(traceback.format_exception(error))[-4000:]
    return {"rows": rows, "errors": errors}
