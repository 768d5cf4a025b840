"""The measurements: studio vs reference per model, estimate accuracy, warm overhead, page start, catalog memory."""

from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from bench.cases import SEED, Case
from bench.clips import as_paths, readable, with_clips
from bench.measure import max_abs_difference, measure, trim_heap
from bench.stats import (
    Target,
    interleaved_order,
    median,
    median_relative_error,
    overhead,
    paired_ratio,
    relative_error,
    summarize_times,
)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent

AUTOREGRESSIVE = ("musicgen-small", "musicgen-continuation", "bark-small", "pocket-tts", "dia-1.6b", "csm-1b",
                  "vibevoice-1.5b")  # ">= 1.5x with the studio's default"
TARGETS = {
    "ratio": Target(">=", 1.0),  # reference / studio
    "ratio_autoregressive": Target(">=", 1.5),  # MusicGen and Bark, with the studio's default setting (issue 5)
    "int8_weights": Target(">=", 3.0),  # float32 weight bytes / int8 weight bytes
    "time_error": Target("<=", 0.15),
    "memory_error": Target("<=", 0.25),
    "warm_overhead": Target("<=", 0.02),
    "extend_overhead": Target("<=", 0.05),  # MusicGen's extension path over the sum of its windows (issue 13)
    "page_start_ratio": Target("<=", 1.3),
    "catalog_error": Target("<=", 0.05),  # the catalog's published-parameter bytes vs the real-size files
    "header_error": Target("<=", 0.01),  # bytes from the safetensors headers vs the loaded tensors
}


def _studio(workdir: Path, *, compile: str = "off"):
    from studio.device import CpuDevice
    from studio.estimate import Calibration
    from studio.service import Studio
    from studio.settings import Settings

    # No precision probe: it would change what "auto" runs between the bench's rounds (the bench compares
    # precisions itself, and names the one each run used). No background compile either, but in the compile
    # section: it would change the path between rounds.
    settings = Settings(output_dir=workdir, device="cpu", precision_probe=False, compile=compile)
    studio = Studio(settings, device=CpuDevice())
    studio.manager.calibration = Calibration(None)  # fresh: nothing learnt before this bench's calibration run
    return studio


def _resident_bytes(studio, repo: str) -> int:
    """The studio's own count of the loaded model's tensor bytes (its /memory row)."""
    for row in studio.manager.snapshot()["models"]:
        if row["id"] == repo:
            return int(row["bytes"] or 0)
    return 0


def _timed(fn: Callable[[], Any], *, memory: bool = False, label: str = "") -> tuple[Any, dict]:
    """Wall and CPU seconds of fn() and the load other processes put on the machine meanwhile; with `memory`,
    also the RSS growth (the heap is trimmed first and a thread samples RSS). Compared runs go without: steady
    state, as in use, and no sampler thread taking the GIL."""
    m = measure(fn, memory=memory)
    log.info("  %-34s %7.2f s wall, %7.2f s CPU, others' load %s", label, m.seconds, m.cpu_s,
             "?" if m.others_load is None else f"{m.others_load:.1f}")
    return m.value, {"wall_s": m.seconds, "cpu_s": m.cpu_s, "rss_growth_bytes": m.rss_growth,
                     "others_load": m.others_load}


def run_model(case: Case, *, quick: bool, workdir: Path, overhead_repeats: int | None = None) -> dict:
    """Reference and studio side by side on one model: warm-up, calibration, estimate lengths, compare rounds."""
    import torch

    from bench.reference import LOADERS

    mode = case.mode(quick)
    started = time.monotonic()
    out: dict[str, Any] = {
        "repo": case.repo, "mode": "quick" if quick else "full", "seed": SEED, "threads": torch.get_num_threads(),
        "what": case.what if quick or not case.what_full else case.what_full,
    }
    # 1. The reference loads its own copy, as a user's script would. A case with `borrow` (a model whose second
    #    float32 copy would not fit the bench's memory share) builds its reference pipeline later, from the modules
    #    the studio loaded in float32: the pipeline class's own code over the same tensors.
    borrow = bool(case.extra.get("borrow"))
    ref: dict[str, Any] = {}
    if not borrow:
        loaded, rec = _timed(lambda: LOADERS[case.family](case.repo), label="reference load")
        ref["run"], ref["modules"] = loaded
        out["reference_load_s"] = rec["wall_s"]
    studio = _studio(workdir / case.name)
    clips = workdir / "clips"  # "clip:S" in a case's params: an S-second audio file, passed as a user passes one
    rate = studio.catalog.get(case.repo).sample_rate

    def request(params: dict, prompt: str | None = None):
        return studio.request(None, case.repo, prompt or mode.prompt or case.prompt, seed=SEED,
                              params=with_clips(params, clips))

    def reference(req, label: str = "reference", key: str = "run") -> tuple[Any, dict]:
        return _timed(lambda: ref[key](req.prompt, as_paths(req.params), req.seed), label=label)

    def borrow_from(source, req, key: str = "run") -> None:
        with source.manager.acquire(req) as lease:
            components = borrowed_components(lease.model)
        ref[key], modules = LOADERS[case.family](case.repo, borrow=components)
        ref.setdefault("modules", modules)
        out["reference_borrowed"] = True

    def studio_run(req, memory: bool = False, label: str = "studio") -> tuple[Any, dict]:
        estimate = studio.estimate(req)
        result, record = _timed(lambda: studio.manager.run(req), memory=memory, label=label)
        record.update(predicted_s=estimate.seconds, predicted_bytes=estimate.bytes,
                      predicted_weights_bytes=estimate.weights_bytes, predicted_working_bytes=estimate.working_bytes,
                      studio_peak_bytes=result.peak_bytes, compute_s=result.compute_s, load_s=result.load_s,
                      audio_s=result.audio.duration)
        return result, record

    # 2. Warm-ups: the reference's (short), then the studio's first run, which loads and calibrates.
    def reference_warmup() -> None:
        if mode.warmup is not None:
            warm = request(mode.warmup)
            _, rec = reference(warm, "reference warm-up")
            out["reference_warmup"] = {"settings": dict(mode.warmup), **rec}

    if not borrow:
        reference_warmup()
    calib = request(mode.calibration, mode.calibration_prompt)
    _, rec = studio_run(calib, memory=True, label="studio calibration (loads)")
    out["calibration"] = {"settings": dict(mode.calibration), "prompt_chars": len(calib.prompt), **rec}
    weights = _resident_bytes(studio, case.repo)
    out["resident_weight_bytes"] = weights

    # 3. Estimate accuracy: predict, then run, at lengths the calibration has not seen.
    runs = []
    for index, params in enumerate(mode.lengths):
        prompt = mode.length_prompts[index] if mode.length_prompts else None
        req = request(params, prompt)
        _, rec = studio_run(req, memory=True, label=f"studio estimate length {index + 1}")
        rec["peak_bytes"] = rec["rss_growth_bytes"] + weights
        rec["time_error"] = relative_error(rec["predicted_s"], rec["wall_s"])
        rec["memory_error"] = relative_error(rec["predicted_bytes"], rec["peak_bytes"])
        runs.append({"settings": dict(params), "prompt_chars": len(req.prompt), **rec})
    out["estimate"] = _estimate_summary(runs)

    # 4. Studio vs reference: interleaved rounds, rotating who goes first. "studio" runs the reference's
    #    precision (float32); where the studio's default ("auto") picks another one on this machine, a second
    #    studio holding the model in that precision ("default") runs in the same rounds.
    has_precision = studio.catalog.get(case.repo).param("precision") is not None
    req = request({**mode.compare, "precision": "float32"} if has_precision else mode.compare)
    default_req = request(mode.compare)
    default_dtype = studio.estimate(default_req).dtype
    out["default_dtype"] = default_dtype
    studios = {"studio": studio}
    sides: tuple[str, ...] = ("reference", "studio")
    int8_parts = studio.catalog.family(studio.catalog.get(case.repo)).int8_parts
    if default_dtype != "float32":
        studio32 = _studio(workdir / f"{case.name}-float32")
        _timed(lambda: studio32.manager.run(request({**mode.calibration, "precision": "float32"},
                                                     mode.calibration_prompt)), label="studio float32 (loads)")
        out["float32_weight_bytes"] = _resident_bytes(studio32, case.repo)
        out["weights_reduction"] = {
            "float32_bytes": out["float32_weight_bytes"], "default_bytes": weights, "dtype": default_dtype,
            "ratio": out["float32_weight_bytes"] / weights,
            # The 3x target is for a model whose every Linear layer becomes int8 (MusicGen, Bark); a pipeline that
            # quantizes some parts (ACE-Step's DiT: its encoders and VAE stay float32) has the ratio reported only.
            "target": TARGETS["int8_weights"].describe(), "met": TARGETS["int8_weights"].met(
                out["float32_weight_bytes"] / weights) if default_dtype == "int8" and not int8_parts else None,
        }
        studios = {"studio": studio32, "default": studio}
        sides = ("reference", "studio", "default")
    # Precisions the case also weighs (a family whose `auto` the bench decides): each in a studio of its own, in
    # the same rounds, against the same float32 reference.
    weighed = [p for p in case.extra.get("precisions", ()) if p not in ("float32", default_dtype)]
    requests = {"studio": req, "default": default_req}
    for precision in weighed:
        studios[precision] = _studio(workdir / f"{case.name}-{precision}")
        requests[precision] = request({**mode.compare, "precision": precision})
        _timed(lambda: studios[precision].manager.run(request({**mode.calibration, "precision": precision},
                                                              mode.calibration_prompt)),
               label=f"studio {precision} (loads)")
        sides = (*sides, precision)
    if borrow:  # from the float32 studio: the one holding the reference's precision
        borrow_from(studios["studio"], req)
        reference_warmup()
        if "default" in studios:
            # The pipeline alone over the default studio's modules (its int8 or bfloat16 DiT): what the studio's
            # default costs over the library in the same precision, beside what it gains over float32.
            borrow_from(studios["default"], default_req, key="run_default")
            sides = (*sides, "reference_default")
    out["parameters"] = sum(p.numel() for m in ref["modules"] for p in m.parameters())
    times: dict[str, list[dict]] = {side: [] for side in sides}
    audio: dict[str, Any] = {}
    # A continuation's output starts with the clip: the studio keeps the original there, the reference has the
    # codec's rendering of it. What both sample is what comes after it, so the outputs are compared from there.
    skip = _clip_samples(req, rate)
    for slot in interleaved_order(mode.repeats, warmup=0, sides=sides):
        label = f"compare {slot.round + 1} {slot.side}"
        if slot.side in ("reference", "reference_default"):
            samples, rec = (reference(req, label) if slot.side == "reference"
                            else reference(default_req, label, key="run_default"))
            audio[slot.side] = samples[..., skip:]
        else:
            runner_studio = studios[slot.side]
            one = requests[slot.side]
            estimate = runner_studio.estimate(one)
            result, rec = _timed(lambda: runner_studio.manager.run(one), label=label)
            rec.update(predicted_s=estimate.seconds, compute_s=result.compute_s, dtype=result.dtype,
                       audio_s=result.audio.duration)
            audio[slot.side] = result.audio.samples[..., skip:]
        times[slot.side].append(rec)
    out["compare"] = _compare_summary(req, {k: times[k] for k in ("reference", "studio")},
                                      {k: audio[k] for k in ("reference", "studio") if k in audio})
    out["compare"]["compared_after_s"] = skip / rate if skip else None
    if "default" in times:
        out["compare_default"] = _compare_summary(default_req, {"reference": times["reference"],
                                                                "studio": times["default"]},
                                                  {"reference": audio["reference"], "studio": audio["default"]})
        out["compare_default"]["dtype"] = default_dtype
        out["compare_default"]["compared_after_s"] = out["compare"]["compared_after_s"]
        if "reference_default" in times:
            out["compare_default_same"] = _compare_summary(
                default_req, {"reference": times["reference_default"], "studio": times["default"]},
                {"reference": audio["reference_default"], "studio": audio["default"]})
            out["compare_default_same"]["dtype"] = default_dtype
    else:
        out["compare_default"] = {**out["compare"], "dtype": default_dtype}
    if weighed:
        out["compare_precisions"] = {
            precision: {**_compare_summary(requests[precision], {"reference": times["reference"],
                                                                 "studio": times[precision]},
                                           {"reference": audio["reference"], "studio": audio[precision]}),
                        "dtype": precision} for precision in weighed}
    for other in studios.values():  # every studio but the one measured below ("studio" when it is the default)
        if other is not studio:
            other.manager.unload_all()
    del studios
    if case.name in AUTOREGRESSIVE:
        ratio = out["compare_default"]["ratio"]
        out["compare_default"].update(target=TARGETS["ratio_autoregressive"].describe(),
                                      met=TARGETS["ratio_autoregressive"].met(ratio))

    # 5. The warm-request overhead, with more rounds (cheap models only).
    if overhead_repeats:
        times = {"reference": [], "studio": []}
        for slot in interleaved_order(overhead_repeats, warmup=0):
            label = f"overhead {slot.round + 1} {slot.side}"
            _, rec = reference(req, label) if slot.side == "reference" else studio_run(req, label=label)
            times[slot.side].append(rec)
        out["warm_overhead"] = _overhead_summary(times)

    # 6. Unload both, and check the studio really let go.
    ref.clear()
    unloaded = studio.manager.unload_all()
    gc.collect()
    trim_heap()
    out["unloaded"] = unloaded
    out["elapsed_s"] = time.monotonic() - started
    torch.set_num_threads(out["threads"])  # nothing above should change it; keep the next model's runs equal
    return out


def borrowed_components(adapter) -> dict[str, Any]:
    """What a reference builds itself from when it borrows a loaded model: a diffusers pipeline's components, or a
    transformers model and its processor (models.common.OneModuleModel's `model` and `preprocess`)."""
    pipe = getattr(adapter, "pipe", None)
    if pipe is not None:
        return dict(pipe.components)
    return {"model": adapter.model, "processor": adapter.preprocess}


def real_time_factor(times: dict, audio_s: float | None) -> float | None:
    """Seconds of compute per second of audio (below 1 is faster than real time), from the median run."""
    return times["median_s"] / audio_s if audio_s else None


def _estimate_summary(runs: list[dict]) -> dict:
    time_error = median_relative_error((r["predicted_s"], r["wall_s"]) for r in runs)
    memory_error = median_relative_error((r["predicted_bytes"], r["peak_bytes"]) for r in runs)
    return {
        "runs": runs,
        "time_error_median": time_error,
        "memory_error_median": memory_error,
        "time_target": TARGETS["time_error"].describe(), "time_met": TARGETS["time_error"].met(time_error),
        "memory_target": TARGETS["memory_error"].describe(), "memory_met": TARGETS["memory_error"].met(memory_error),
    }


def _compare_summary(req, times: dict[str, list[dict]], audio: dict) -> dict:
    ref = [r["wall_s"] for r in times["reference"]]
    stu = [r["wall_s"] for r in times["studio"]]
    ratio = paired_ratio(ref, stu)
    loads = [r["others_load"] for side in times.values() for r in side if r.get("others_load") is not None]
    cpu_ratio = paired_ratio([r["cpu_s"] for r in times["reference"]], [r["cpu_s"] for r in times["studio"]])
    diff = max_abs_difference(audio.get("reference"), audio.get("studio")) if len(audio) == 2 else None
    predicted = [(r["predicted_s"], r["wall_s"]) for r in times["studio"] if "predicted_s" in r]
    return {
        "settings": readable(req.params), "prompt": req.prompt,
        "reference": {**summarize_times(ref), "runs": times["reference"]},
        "studio": {**summarize_times(stu), "runs": times["studio"]},
        "ratio": ratio, "ratio_of_medians": median(ref) / median(stu), "ratio_of_minimums": min(ref) / min(stu),
        "cpu_ratio": cpu_ratio, "others_load_median": median(loads) if loads else None,
        "others_load_max": max(loads) if loads else None,
        "target": TARGETS["ratio"].describe(), "met": TARGETS["ratio"].met(ratio),
        "max_abs_difference": diff, "same_output": diff is not None and diff == 0.0,
        "estimate_time_error_median": median_relative_error(predicted) if predicted else None,
        "real_time_factor": real_time_factor(summarize_times(stu), median(
            [r["audio_s"] for r in times["studio"] if r.get("audio_s")] or [0.0])),
    }


def _clip_samples(req, rate: int) -> int:
    """Samples of the request's audio prompt at the output `rate` (0 without one)."""
    from studio.clips import Clip

    clip = req.params.get("audio")
    return round(clip.seconds * rate) if isinstance(clip, Clip) else 0


def _overhead_summary(times: dict[str, list[dict]]) -> dict:
    ref = [r["wall_s"] for r in times["reference"]]
    stu = [r["wall_s"] for r in times["studio"]]
    value = overhead(median(stu), median(ref))
    paired = 1.0 / paired_ratio(ref, stu) - 1.0
    cpu = 1.0 / paired_ratio([r["cpu_s"] for r in times["reference"]], [r["cpu_s"] for r in times["studio"]]) - 1.0
    return {
        "reference": summarize_times(ref), "studio": summarize_times(stu),
        "overhead": paired, "overhead_of_medians": value, "overhead_cpu": cpu,
        "target": TARGETS["warm_overhead"].describe("{:.0%}"), "met": TARGETS["warm_overhead"].met(paired),
    }


# ------------------------------------------------------------------------------------ page start
_BARE_APP = """
import sys
import gradio as gr

with gr.Blocks(title="bare") as demo:
    with gr.Tabs():
        for name in ("Music", "Speech", "Sound effects"):
            with gr.Tab(name):
                pass
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time_to_first_200(cmd: list[str], port: int, env: dict, timeout: float = 180.0) -> float:
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"{cmd} exited with {proc.returncode} before serving: {err}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{cmd} served nothing on {url} within {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_page_start(repeats: int, *, warmup: int = 1) -> dict:
    """`python app.py --port P --device cpu` to the first HTTP 200 on /, against a bare three-tab Blocks app."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(_BARE_APP)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        env.update(GRADIO_ANALYTICS_ENABLED="False", STUDIO_OUTPUT_DIR=str(Path(tmp) / "out"), PYTHONUNBUFFERED="1")
        times: dict[str, list[float]] = {"bare": [], "studio": []}
        warm: dict[str, list[float]] = {"bare": [], "studio": []}
        for slot in interleaved_order(repeats, warmup=warmup, sides=("bare", "studio")):
            port = _free_port()
            if slot.side == "studio":
                cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", "cpu"]
            else:
                cmd = [sys.executable, str(bare), str(port)]
            seconds = _time_to_first_200(cmd, port, env)
            (warm if slot.warmup else times)[slot.side].append(seconds)
    ratio = 1.0 / paired_ratio(times["bare"], times["studio"])  # studio / bare
    return {
        "bare": summarize_times(times["bare"]), "studio": summarize_times(times["studio"]),
        "bare_runs_s": times["bare"], "studio_runs_s": times["studio"], "warmup_s": warm,
        "ratio": ratio, "target": TARGETS["page_start_ratio"].describe(),
        "met": TARGETS["page_start_ratio"].met(ratio), "elapsed_s": time.monotonic() - started,
    }


# ------------------------------------------------------------------------------------ catalog memory
def catalog_memory(repo: str, published_parameters: int, loaded_bytes: int | None) -> dict:
    """The catalog's weight bytes (published parameters x dtype) and the studio's header figure vs the build."""
    from studio.catalog import Catalog
    from studio.weights import cached_snapshot, cached_weight_bytes, read_header

    spec = Catalog.discover("models").get(repo)
    snapshot = cached_snapshot(repo)
    files = sorted(snapshot.rglob("*.safetensors")) if snapshot else []
    params = sum(_numel(e["shape"]) for f in files for e in read_header(f).values())
    out: dict[str, Any] = {"catalog_parameters": spec.parameters, "published_parameters": published_parameters,
                           "build_parameters": params}
    for dtype, size in (("float32", 4), ("float16", 2)):
        header = cached_weight_bytes(repo, size)
        catalog = spec.weight_bytes(dtype)
        out[dtype] = {"catalog_bytes": catalog, "header_bytes": header,
                      "catalog_error": relative_error(catalog, header) if header else None}
    out["loaded_bytes_float32"] = loaded_bytes
    out["header_error"] = (relative_error(out["float32"]["header_bytes"], loaded_bytes)
                           if loaded_bytes and out["float32"]["header_bytes"] else None)
    error = out["float32"]["catalog_error"]
    out["catalog_target"] = TARGETS["catalog_error"].describe("{:.0%}")
    out["catalog_met"] = TARGETS["catalog_error"].met(error)
    out["header_target"] = TARGETS["header_error"].describe("{:.0%}")
    out["header_met"] = TARGETS["header_error"].met(out["header_error"])
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
