"""One bench run: pick the cases, build checkpoints once, measure, merge with earlier results, write JSON and Markdown."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench.report import same_machine
from typing import Any

log = logging.getLogger("bench")

SCHEMA = 1
QUICK_LIMIT_S = 600.0


def with_other_machines(previous: dict | None, section: dict) -> dict:
    """A machine-bound section (its figures hold for one CPU) with the latest figures of each other CPU the bench ran
    on before (`other_machines`): a run on another machine no longer wipes them."""
    earlier = [] if previous is None else [*previous.get("other_machines", []),
                                           {k: v for k, v in previous.items() if k != "other_machines"}]
    kept: list[dict] = []
    for entry in reversed(earlier):  # the latest of each machine first
        if not same_machine(entry.get("machine"), section.get("machine")) and \
                not any(same_machine(entry.get("machine"), k.get("machine")) for k in kept):
            kept.append(entry)
    return {**section, "other_machines": kept[::-1]} if kept else section


def machine_info() -> dict:
    import platform

    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f" {f}" in flags]
    load = None
    try:
        import os

        load = os.getloadavg()
    except (OSError, AttributeError):
        pass
    return {
        "cpu": model, "cores": psutil.cpu_count(logical=False), "logical_cpus": psutil.cpu_count(),
        "simd": simd, "ram_bytes": psutil.virtual_memory().total, "os": platform.platform(),
        "load_average_at_start": load,
    }


def versions() -> dict:
    import platform

    import diffusers
    import gradio
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "diffusers": diffusers.__version__, "gradio": gradio.__version__,
            "torch_threads": torch.get_num_threads(), "quantized_engine": torch.backends.quantized.engine}


def select(args: argparse.Namespace):
    from bench.cases import CASES, SECTIONS
    from bench.prototypes import PROTOTYPES

    if args.only is not None:
        cases = [c for c in CASES if c.name in args.only]
        sections = [s for s in SECTIONS if s in args.only]
        prototypes = tuple(n for n in PROTOTYPES if n in args.only)
        if prototypes and "prototypes" not in sections:
            sections.append("prototypes")
    else:
        cases = [c for c in CASES if not (args.quick and c.slow)]
        # The MusicGen extension and prompt-cost sections take 10-20 minutes on 2 cores: full runs, or by name.
        sections = ["page-start"] + ([] if args.quick else [s for s in SECTIONS if s != "page-start"])
        prototypes = ()
    return cases, sections, prototypes or None


def run(args: argparse.Namespace) -> int:
    import torch

    from bench import report
    from bench.cases import CASES, CONTINUATION_REPO
    from bench.checkpoints import PUBLISHED_PARAMETERS, ensure_checkpoints, recorded_builds
    from bench.runner import catalog_memory, run_model, run_page_start

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    cases, sections, prototype_names = select(args)
    mode = "quick" if args.quick else "full"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results: dict[str, Any] = {
        "schema": SCHEMA, "created": now, "mode": mode, "tiny": args.tiny, "only": args.only,
        "machine": machine_info(), "versions": versions(), "cache": str(args.cache),
        "settings": {"nice": getattr(args, "effective_nice", None),
                     "autogroup_nice": getattr(args, "autogroup_nice", None), "torch_threads": torch.get_num_threads(),
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "library default"),
                     "dtype": "float32", "device": "cpu"},
        "models": {}, "sections": {}, "catalog_memory": {}, "errors": {},
    }
    results["ran"] = [c.name for c in cases] + sections
    log.info("bench %s%s: %s %s", mode, " (tiny)" if args.tiny else "", [c.name for c in cases], sections)

    # 1. Checkpoints, built once per cache. Without --only every model is built: the catalog check reads them all.
    picked = cases if args.only is not None or args.tiny else CASES
    repos = [repo for c in picked for repo in (c.repo, *companion_repos(c))]
    if {"musicgen-extend", "musicgen-prompt-cost"} & set(sections):
        repos.append(CONTINUATION_REPO)
    if "ace-xl-plan" in sections:
        from bench.cases import ACE_PLAN

        repos.append(ACE_PLAN["repo"])
    if "streaming" in sections:
        from bench.streaming import streaming_repos

        repos += streaming_repos()  # only the models that stream: the others' rows are not run
    if "precision-auto" in sections:
        from bench.precision_auto import precision_repos

        repos += precision_repos()
    if "compiled" in sections:
        from bench.compiled import compiled_repos

        repos += compiled_repos()
    repos = list(dict.fromkeys(repos))  # two cases of one model build it once
    build_started = time.monotonic()
    built = ensure_checkpoints(args.cache / "hf", repos, tiny=args.tiny)
    results["checkpoints"] = {**recorded_builds(args.cache / "hf", tiny=args.tiny), **built}
    results["checkpoints_s"] = time.monotonic() - build_started
    results["cache_bytes"] = _dir_bytes(args.cache / "hf")

    # 2. Per model: reference vs studio, estimates, overhead.
    with tempfile.TemporaryDirectory(prefix="bench-studio-") as tmp:
        for case in cases:
            log.info("== %s (%s)", case.name, mode)
            repeats = case.extra.get("overhead_repeats", {}).get(mode)
            if repeats and args.tiny:
                repeats = 3  # a smoke test: the figures mean nothing with tiny models
            try:
                entry = run_model(case, quick=args.quick, workdir=Path(tmp), overhead_repeats=repeats)
                entry["created"] = now
                entry["tiny"] = args.tiny
                results["models"][case.name] = entry
                log.info("%s: ratio %.2fx (reference %.2f s, studio %.2f s) in %.0f s", case.name,
                         entry["compare"]["ratio"], entry["compare"]["reference"]["median_s"],
                         entry["compare"]["studio"]["median_s"], entry["elapsed_s"])
            except Exception as error:  # one model failing must not lose the others' figures
                log.error("%s failed: %s", case.name, error)
                results["errors"][case.name] = "".join(traceback.format_exception(error))[-4000:]

    # 3. Page start.
    if "page-start" in sections:
        log.info("== page start")
        try:
            entry = run_page_start(3 if args.quick else 5)
            entry["created"] = now
            results["sections"]["page-start"] = entry
            log.info("page start: studio %.1f s, bare %.1f s, ratio %.2f", entry["studio"]["median_s"],
                     entry["bare"]["median_s"], entry["ratio"])
        except Exception as error:
            log.error("page start failed: %s", error)
            results["errors"]["page-start"] = "".join(traceback.format_exception(error))[-4000:]

    # 4. MusicGen's audio in: the extension path's overhead, the cost of a prompt frame.
    size = "tiny" if args.tiny else mode
    for name in ("musicgen-extend", "musicgen-prompt-cost"):
        if name not in sections:
            continue
        from bench.cases import EXTENSION, PROMPT_COST
        from bench.continuation import run_extension, run_prompt_cost

        log.info("== %s (%s)", name, size)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-continuation-") as tmp:
                entry = (run_extension(EXTENSION[size], workdir=Path(tmp)) if name == "musicgen-extend"
                         else run_prompt_cost(PROMPT_COST[size], workdir=Path(tmp)))
            entry.update(created=now, mode=mode, tiny=args.tiny)
            results["sections"][name] = entry
        except Exception as error:
            log.error("%s failed: %s", name, error)
            results["errors"][name] = "".join(traceback.format_exception(error))[-4000:]

    # 4b. ACE-Step XL turbo's plan under a simulated 12 GB accelerator (issue 14).
    if "ace-xl-plan" in sections:
        from bench.cases import ACE_PLAN
        from bench.plan_check import run_plan_check

        log.info("== ace-xl-plan")
        try:
            entry = run_plan_check(ACE_PLAN["repo"], ACE_PLAN["prompt"], ACE_PLAN["params"],
                                   real_budget=ACE_PLAN["real_budget"], build_budget=ACE_PLAN["build_budget"])
            entry.update(created=now, load_average=_load_average())
            results["sections"]["ace-xl-plan"] = entry
        except Exception as error:
            log.error("ace-xl-plan failed: %s", error)
            results["errors"]["ace-xl-plan"] = "".join(traceback.format_exception(error))[-4000:]

    # 4c. Streaming (issue 16): time to first audio vs the whole run, and listening's overhead.
    if "streaming" in sections:
        from bench.streaming import run_streaming

        log.info("== streaming (%s)", size)
        with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
            found = run_streaming(size=size, workdir=Path(tmp))
        results["sections"]["streaming"] = {"rows": found["rows"], "created": now, "mode": mode, "tiny": args.tiny}
        if found["errors"]:  # under the section's name, so that a later run of it clears them
            results["errors"]["streaming"] = "\n".join(f"{name}: {text}" for name, text in found["errors"].items())

    # 4d. auto on a CPU (issue 17): the precision probe's choice against real runs in each precision.
    if "precision-auto" in sections:
        from bench.precision_auto import merged, run_precision_auto

        log.info("== precision-auto (%s)", size)
        with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
            found = run_precision_auto(size=size, workdir=Path(tmp))
        previous, here, machine = _previous_section(args, "precision-auto")
        section = {"rows": merged(here, found["rows"], now), "created": now, "mode": mode, "tiny": args.tiny,
                   "machine": machine}
        results["sections"]["precision-auto"] = with_other_machines(previous, section)
        if found["errors"]:
            results["errors"]["precision-auto"] = "\n".join(f"{n}: {t}" for n, t in found["errors"].items())

    # 4e. Compiled decoding (issue 17): eager vs compiled per precision, compile time in a first and second process.
    if "compiled" in sections:
        from bench.compiled import merged_rows, run_compiled

        log.info("== compiled (%s)", size)
        with tempfile.TemporaryDirectory(prefix="bench-compiled-") as tmp:
            found = run_compiled(size=size, workdir=Path(tmp))
        previous, here, machine = _previous_section(args, "compiled")
        section = {"rows": merged_rows(here, found["rows"], now), "created": now, "mode": mode, "tiny": args.tiny,
                   "machine": machine, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "library default")}
        results["sections"]["compiled"] = with_other_machines(previous, section)
        if found["errors"]:
            results["errors"]["compiled"] = "\n".join(f"{n}: {t}" for n, t in found["errors"].items())

    # 4f. The memory-bandwidth floor of musicgen-small's RTF on this machine (seconds: bytes and a bandwidth).
    if "rtf-floor" in sections:
        from bench.rtf_floor import run_rtf_floor

        log.info("== rtf-floor")
        try:
            section = {**run_rtf_floor(), "created": now, "mode": mode, "tiny": args.tiny, "machine": machine_info()}
            previous = _load_previous(args).get("sections", {}).get("rtf-floor")
            results["sections"]["rtf-floor"] = with_other_machines(previous, section)
        except Exception as error:
            log.error("rtf-floor failed: %s", error)
            results["errors"]["rtf-floor"] = "".join(traceback.format_exception(error))[-4000:]

    # 5. Prototypes of product changes.
    if "prototypes" in sections:
        from bench.prototypes import run_prototypes

        log.info("== prototypes")
        try:
            found = run_prototypes(quick=args.quick, names=prototype_names)
            results["sections"]["prototypes"] = _merge_prototypes(_load_previous(args), found, now)
        except Exception as error:
            log.error("prototypes failed: %s", error)
            results["errors"]["prototypes"] = "".join(traceback.format_exception(error))[-4000:]

    # 6. Catalog memory vs the builds (headers only: cheap), for every model whose build is in the cache.
    previous = _load_previous(args)
    checked: set[str] = set()
    for case in CASES:
        if case.repo in checked:  # a second case of the same model (musicgen-continuation): one row per model
            continue
        if case.repo not in results["checkpoints"] and not (args.cache / "hf" / "hub" /
                                                            f"models--{case.repo.replace('/', '--')}").exists():
            continue
        if case.repo not in PUBLISHED_PARAMETERS:  # built with fewer DiT blocks than the real model: bench.music_dit
            continue  # compares the parameters extrapolated to the real depth instead
        checked.add(case.repo)
        ran = next((entry for c in CASES if c.repo == case.repo for entry in
                    (results["models"].get(c.name), previous.get("models", {}).get(c.name)) if entry), {})
        # The header figure is float32's: compare it with the float32 load (the default may be int8).
        loaded = ran.get("float32_weight_bytes") or (ran.get("resident_weight_bytes")
                                                     if ran.get("default_dtype", "float32") == "float32" else None)
        try:
            results["catalog_memory"][case.name] = {"repo": case.repo, **catalog_memory(
                case.repo, PUBLISHED_PARAMETERS[case.repo], loaded)}
        except Exception as error:
            results["errors"][f"catalog:{case.name}"] = repr(error)

    results["elapsed_s"] = time.monotonic() - started
    results["quick_limit_s"] = QUICK_LIMIT_S if args.quick else None
    results["runs"] = [{
        "created": now, "mode": mode, "tiny": args.tiny, "ran": results["ran"], "elapsed_s": results["elapsed_s"],
        "checkpoints_s": results["checkpoints_s"],
        "load_average_at_start": results["machine"].get("load_average_at_start"),
        "load_average_at_end": _load_average(), "cpu": results["machine"].get("cpu"),
        "simd": results["machine"].get("simd"),
    }]
    merged = results if args.fresh else _merge(previous, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=2, default=_json_default) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(report.render(merged))
    log.info("wrote %s and %s in %.0f s", args.out, args.doc, results["elapsed_s"])
    return 1 if results["errors"] else 0


def companion_repos(case) -> tuple[str, ...]:
    """Repos the case's family loads beside its own (a codec its processor names): built with it."""
    from studio.catalog import Catalog

    catalog = Catalog.discover("models")
    return tuple(companion.repo_id for companion in catalog.family(catalog.get(case.repo)).companion_repos)


def _load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def _merge_prototypes(previous: dict, found: dict, now: str) -> dict:
    """Rows of prototypes run now replace their earlier rows; rows of prototypes not run now are kept."""
    for row in found["rows"]:
        row["created"] = now
    old = previous.get("sections", {}).get("prototypes", {})
    ran = set(found["names"])
    rows = [r for r in old.get("rows", []) if r.get("prototype") not in ran] + found["rows"]
    errors = {k: v for k, v in old.get("errors", {}).items() if k not in ran} | found["errors"]
    return {"created": now, "note": found["note"], "rows": rows, "errors": errors}


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:
        pass
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _previous_section(args: argparse.Namespace, name: str) -> tuple[dict | None, dict | None, dict]:
    """The results file's section `name`; this machine's figures in it (merged with this run's rows), None if it
    has none; and this machine."""
    previous = _load_previous(args).get("sections", {}).get(name)
    machine = machine_info()
    return previous, this_machines(previous, machine), machine


def this_machines(section: dict | None, machine: dict) -> dict | None:
    """`machine`'s figures in a machine-bound section: the section itself, or the entry it keeps of `machine`
    among its other CPUs' (a run on an AVX-512 machine after one on an AVX2 machine finds the AVX-512 rows there)."""
    if not section:
        return None
    return next((entry for entry in [section, *section.get("other_machines", [])]
                 if same_machine(entry.get("machine"), machine)), None)


def _load_previous(args: argparse.Namespace) -> dict:
    if args.fresh or not args.out.exists():
        return {}
    try:
        data = json.loads(args.out.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("schema") != SCHEMA or bool(data.get("tiny")) != bool(args.tiny):
        return {}
    return data


def _merge(previous: dict, current: dict) -> dict:
    """Entries measured now replace earlier ones; earlier entries of models and sections not run now are kept
    (each says when and in which mode it was measured)."""
    if not previous:
        return current
    merged = dict(current)
    for key in ("models", "sections", "catalog_memory", "checkpoints"):
        merged[key] = {**previous.get(key, {}), **current.get(key, {})}
    ran = set(current.get("ran", []))
    kept = {k: v for k, v in previous.get("errors", {}).items() if k.removeprefix("catalog:") not in ran}
    merged["errors"] = {**kept, **current.get("errors", {})}
    merged["runs"] = previous.get("runs", []) + current["runs"]
    return merged
