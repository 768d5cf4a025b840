"""Compiled decoding (issue 17, part 2): the real-time factor of musicgen-small in each precision, eager and through
the compiled decoder (models.compiled), and what compiling costs in a machine's first process (an empty compile
cache) and in a second one (the cache that the first left on disk). MusicGen melody is measured apart (the studio's
`auto` knows it apart: studio.compiling.PAYS): twice the layers, and the chroma and text as a prefix in its cache.

Each (model, precision) runs in two fresh Python processes sharing one compile cache, as two launches of the studio
on one machine do. In each: the model is loaded and run once eager (its first-call costs), compiled exactly as the
studio's background compile does (DecodeCompiler.warm_up, timed), then run in interleaved rounds eager / compiled
(the same request, the same seed; only the generation is timed: RunResult.compute_s).

bark-small compiles its semantic and coarse stages (the fine stage makes a few non-causal passes and stays eager);
its case speaks one 5 s chunk of a sentence (random weights run every stage to its cap). Pocket TTS, the speech model
a CPU runs in real time, compiles its backbone's step like the other newer speech models (models.compiled).

BENCH_COMPILED=name[,name] runs only those cases, BENCH_COMPILED_PRECISIONS=precision[,precision] only those
precisions (else the size's: --quick measures int8 and bfloat16); the section keeps the rows of the cases and
precisions not run from the last run, each with the date it was measured.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import Target, interleaved_order, median

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CASES = (("musicgen-small", "facebook/musicgen-small", "music", "80s pop track with bassy drums and synth",
          {"duration": 5.0}, "5 s, guidance 3"),
         ("musicgen-melody", "facebook/musicgen-melody", "music", "80s pop track with bassy drums and synth",
          {"duration": 3.0}, "3 s, the text alone, guidance 3"),
         ("bark-small", "suno/bark-small", "speech", "The morning was cold and clear, and we walked to the harbour.",
          {"max_chunk_seconds": 5.0}, "one 5 s chunk"),
         ("pocket-tts", "eustlb/pocket-tts", "speech", "The morning was cold and clear, and we walked to the harbour.",
          {}, "one sentence"))
PRECISIONS = {"quick": ("int8", "bfloat16"), "full": ("int8", "bfloat16", "float32"), "tiny": ("int8",)}
ROUNDS = {"quick": 2, "full": 3, "tiny": 1}
RTF_TARGETS = {"musicgen-small": Target("<=", 1.0)}  # real time or better on the 2-core CPU, in its auto precision
COMPILE_TARGET = Target("<=", 0.10)  # a second process's compile, as a share of a 10 s generation
TEN_S = 10.0
WORKER_TIMEOUT_S = 1800


def selected_cases() -> tuple:
    """The cases to run: BENCH_COMPILED's names if set (an unknown name is an error), else all."""
    wanted = [n.strip() for n in os.environ.get("BENCH_COMPILED", "").split(",") if n.strip()]
    unknown = sorted(set(wanted) - {name for name, *_ in CASES})
    if unknown:
        raise SystemExit(f"BENCH_COMPILED names no case {unknown}: one of {[name for name, *_ in CASES]}")
    return tuple(case for case in CASES if not wanted or case[0] in wanted)


def selected_precisions(size: str) -> tuple[str, ...]:
    """The precisions BENCH_COMPILED_PRECISIONS names (an unknown name is an error), else the size's."""
    wanted = [n.strip() for n in os.environ.get("BENCH_COMPILED_PRECISIONS", "").split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(PRECISIONS["full"]))
    if unknown:
        raise SystemExit(f"BENCH_COMPILED_PRECISIONS names {unknown}: one of {PRECISIONS['full']}")
    return tuple(p for p in PRECISIONS["full"] if p in wanted) if wanted else PRECISIONS[size]


def compiled_repos() -> list[str]:
    return [repo for _, repo, *_ in selected_cases()]


def fastest(rows: dict) -> str | None:
    """The precision whose compiled run was fastest."""
    return min((p for p in rows if rows[p]["rtf"]["compiled"]), key=lambda p: rows[p]["rtf"]["compiled"], default=None)


def merged_rows(previous: dict | None, found: dict, created: str) -> dict:
    """This run's rows, each precision's stamped `created`, over the previous section's rows (cases and precisions)
    not run now, which keep their own dates."""
    rows = {}
    for name, row in ((previous or {}).get("rows") or {}).items():
        made = row.get("created") or (previous or {}).get("created", "")
        rows[name] = {**row, "rows": {p: {"created": made, **r} for p, r in row["rows"].items()}}
    for name, row in found.items():
        fresh = {p: {**r, "created": created} for p, r in row["rows"].items()}
        precisions = {**rows.get(name, {}).get("rows", {}), **fresh}
        precisions = dict(sorted(precisions.items(), key=lambda item: PRECISIONS["full"].index(item[0])))
        rows[name] = {**row, "rows": precisions, "fastest": fastest(precisions),
                      "created": max(r["created"] for r in precisions.values())}
    return rows



def worker(repo: str, task: str, prompt: str, params: dict, precision: str, rounds: int, out: Path) -> None:
    """In a fresh process (`python -m bench.compiled`): eager first run, compile, interleaved rounds; JSON to `out`."""
    import numpy as np

    from bench.runner import _studio
    from studio.compiling import CompilePolicy, default_cache_dir
    from studio.run import RunContext

    with tempfile.TemporaryDirectory(prefix="bench-compiled-") as tmp:
        studio = _studio(Path(tmp))
        manager = studio.manager
        request = studio.request(task, repo, prompt, seed=3, params={**params, "precision": precision})
        policy = CompilePolicy(mode="on", cache_dir=Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir()))
        started = time.monotonic()
        first = manager.run(request, RunContext())
        load_and_first_s = time.monotonic() - started
        model = manager._entries[repo].model
        # What the studio does once idle after start-up (PipelineManager._prepare_compiler), timed apart from the
        # compile: here after the load, which imported Dynamo already (as transformers' model modules do), so this is
        # what a compile that starts unprepared would pay on top of its own time.
        prepare_s = policy.prepare("cpu")
        started = time.monotonic()
        compiled_ok = model.compile_decoder(policy, "cpu", lambda text: studio.request(task, repo, text, seed=0))
        compile_s = time.monotonic() - started
        compiler = model.compiler
        result = {"repo": repo, "precision": precision, "first_eager_s": first.compute_s,
                  "load_and_first_s": load_and_first_s, "prepare_s": prepare_s, "compile_s": compile_s,
                  "compiled": compiled_ok,
                  "reason": getattr(compiler, "reason", ""), "runs": {"eager": [], "compiled": []}}
        samples = {}
        if compiled_ok:
            for slot in interleaved_order(rounds, warmup=0, sides=("eager", "compiled")):
                model.compiler = compiler if slot.side == "compiled" else None
                run = manager.run(request, RunContext())
                samples.setdefault(slot.side, run.audio.samples)
                result["runs"][slot.side].append({"compute_s": run.compute_s, "audio_s": run.audio.duration,
                                                  "rtf": run.compute_s / run.audio.duration})
                log.info("  compiled %s %s round %d %-8s generation %6.2f s for %.1f s (RTF %.2f)", repo, precision,
                         slot.round + 1, slot.side, run.compute_s, run.audio.duration,
                         run.compute_s / run.audio.duration)
            a, b = (np.asarray(samples[s], dtype=np.float32) for s in ("eager", "compiled"))
            n = min(a.shape[-1], b.shape[-1])
            result["max_sample_diff"] = float(np.abs(a[..., :n] - b[..., :n]).max()) if n else None
            result["same_audio"] = bool(a.shape == b.shape and np.array_equal(a, b))
        out.write_text(json.dumps(result), encoding="utf-8")


def _launch(repo, task, prompt, params, precision, rounds, cache_dir: Path, out: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    argv = [sys.executable, "-m", "bench.compiled", json.dumps([repo, task, prompt, params, precision, rounds,
                                                                str(out)])]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                          check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"the worker for {repo} in {precision} failed ({done.returncode}): {done.stderr[-3000:]}")
    found = json.loads(out.read_text(encoding="utf-8"))
    found["process_s"] = time.monotonic() - started
    return found


def run_case(name, repo, task, prompt, params, what, *, size: str, workdir: Path) -> dict:
    rows = {}
    for precision in selected_precisions(size):
        cache = workdir / f"{name}-{precision}-compile-cache"  # empty: this machine's first process
        processes = []
        for index in (1, 2):
            log.info("== compiled %s %s: process %d (%s compile cache)", name, precision, index,
                     "an empty" if index == 1 else "the first process's")
            processes.append(_launch(repo, task, prompt, params, precision, ROUNDS[size], cache,
                                     workdir / f"{name}-{precision}-{index}.json"))
        runs = {side: [r for p in processes for r in p["runs"][side]] for side in ("eager", "compiled")}
        rtf = {side: median(r["rtf"] for r in rs) if rs else None for side, rs in runs.items()}
        compiled_ok = all(p["compiled"] for p in processes)
        second = processes[1]["compile_s"]
        ten_s = rtf["compiled"] * TEN_S if rtf["compiled"] else None
        share = second / ten_s if ten_s else None
        rows[precision] = {
            "rtf": rtf, "runs": runs, "speedup": rtf["eager"] / rtf["compiled"] if rtf["compiled"] else None,
            "compile_first_s": processes[0]["compile_s"], "compile_second_s": second, "compiled": compiled_ok,
            "prepare_second_s": processes[1]["prepare_s"],
            "second_share_with_prepare": (second + processes[1]["prepare_s"]) / ten_s if ten_s else None,
            "reason": next((p["reason"] for p in processes if p["reason"]), ""),
            "ten_s_generation_s": ten_s, "second_compile_share": share,
            "compile_target": COMPILE_TARGET.describe("{:.0%}"), "compile_met": COMPILE_TARGET.met(share),
            "same_audio": all(p.get("same_audio") for p in processes),
            "max_sample_diff": max((p.get("max_sample_diff") or 0.0) for p in processes),
            "process_s": [p["process_s"] for p in processes],
        }
    return {"repo": repo, "what": what, "rows": rows, "fastest": fastest(rows),
            "rtf_target": RTF_TARGETS[name].describe("{:.1f}") if name in RTF_TARGETS else None}


def run_compiled(*, size: str, workdir: Path) -> dict:
    import traceback

    found, errors = {}, {}
    for name, repo, task, prompt, params, what in selected_cases():
        try:
            found[name] = run_case(name, repo, task, prompt, params, what, size=size, workdir=workdir)
        except Exception as error:
            log.error("compiled %s failed: %s", name, error)
            errors[name] = "".join(traceback.format_exception(error))[-4000:]
    return {"rows": found, "errors": errors}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = json.loads(sys.argv[1])  # the environment (HF_HOME, offline, threads' policy, nice) is the bench's own
    worker(*args[:6], Path(args[6]))
