"""MusicGen's audio in (issue 13): the extension path's overhead over its own windows, and what a prompt frame costs.

The studio-vs-reference comparison of a continuation is an ordinary case (`musicgen-continuation` in cases.py);
the two measurements here need more than one run per side, so they are sections of their own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

from bench.cases import CONTINUATION_PROMPT, CONTINUATION_REPO, SEED, Extension, PromptCost
from bench.clips import write_clip
from bench.measure import max_abs_difference, trim_heap
from bench.reference import musicgen_steps, read_clip_at
from bench.runner import TARGETS, _studio, _timed
from bench.stats import interleaved_order, median, overhead, paired_ratio, prompt_frame_cost, summarize_times

log = logging.getLogger(__name__)


@contextlib.contextmanager
def window_geometry(geometry: tuple[float, float] | None) -> Iterator[tuple[float, float]]:
    """The product's (window, context) seconds, or `geometry` in their place while the block runs.

    A scaled geometry is the product's arithmetic with other lengths (tests/test_continuation.py does the same):
    only for the tiny smoke runs, where 30 s windows would make a CI check slow.
    """
    from models import musicgen

    saved = (musicgen.MAX_DURATION, musicgen.CONTEXT_S)
    if geometry is not None:
        musicgen.MAX_DURATION, musicgen.CONTEXT_S = geometry
    try:
        yield (musicgen.MAX_DURATION, musicgen.CONTEXT_S)
    finally:
        musicgen.MAX_DURATION, musicgen.CONTEXT_S = saved


# ------------------------------------------------------------------------------------ extension overhead
def run_windows_directly(model, tokenizer, request, windows, clip_path: str, label: str = "windows"):
    """`request`'s windows as a script would run them on a loaded MusicgenForConditionalGeneration: per window,
    one `model.generate()` on the last `prompt_s` of the music so far (whole codec frames), the new part appended.

    Only the generate() calls are timed. Returns (a timing record per window, the music, the sample at which
    each window's new part joins the music before it).
    """
    import numpy as np
    import torch

    codec = model.config.audio_encoder
    rate = codec.sampling_rate
    hop = math.prod(codec.upsampling_ratios)
    music = read_clip_at(clip_path, rate)
    inputs = tokenizer([request.prompt], padding=True, return_tensors="pt")
    top_p = request.get("top_p")
    torch.manual_seed(request.seed)
    timings, joins = [], []
    for index, window in enumerate(windows):
        frames = math.floor(window.prompt_s * rate / hop)
        prompt = np.ascontiguousarray(music[None, :, music.shape[1] - frames * hop:])
        extra = {"input_values": torch.from_numpy(prompt)} if frames else {}

        def generate():
            with torch.inference_mode():
                return model.generate(
                    **inputs, **extra, do_sample=True, max_new_tokens=musicgen_steps(window.new_s),
                    guidance_scale=request.get("guidance_scale"), temperature=request.get("temperature"),
                    top_k=request.get("top_k") or None, top_p=top_p if 0 < top_p < 1 else None)

        values, rec = _timed(generate, label=f"{label} {index + 1}/{len(windows)}")
        timings.append(rec)
        joins.append(music.shape[1])
        rendered = values[0].float().numpy()
        music = np.concatenate([music, rendered[:, frames * hop:]], axis=1) if frames else rendered
    wanted = read_clip_at(clip_path, rate).shape[1] + round(sum(w.new_s for w in windows) * rate)
    return timings, music[:, :wanted], joins


@contextlib.contextmanager
def timed_generate_calls(studio, request) -> Iterator[list[float]]:
    """While the block runs, the seconds of each `generate()` call on the studio's loaded module for `request`
    (the module's method is wrapped for the block, then unwrapped)."""
    with studio.manager.acquire(request) as lease:
        module = lease.model.model
    seconds: list[float] = []
    method = type(module).generate

    def generate(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(module, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    module.generate = generate
    try:
        yield seconds
    finally:
        del module.generate


def run_extension(ext: Extension, *, workdir: Path) -> dict:
    """A clip extended to `ext.extend_to` through the studio (`manager.run`) against the sum of the same windows
    run directly, interleaved; overhead = studio / sum(windows) - 1.

    Why the comparison is fair: both sides run the very same loaded model (the direct side borrows the studio's
    own module through a lease: same precision, weights in memory and torch threads), on the same clip samples,
    with the windows the studio plans (`plan_windows`), the same token counts, sampling arguments and seed (the
    studio adds only its per-token progress callback), so they sample the same tokens (checked: the audio after
    the last join is compared sample by sample). The
    direct side's time is its generate() calls alone: prompt encoding, prefill, sampling and decoding, the least
    the windows can cost. The studio's time is the whole `manager.run`: admission, estimate, lease, conforming
    the clip, cutting each prompt, per-token progress, the crossfaded joins and the final trim. So the ratio is
    what the extension path adds around the windows it cannot avoid.
    """
    from models import musicgen

    started = time.monotonic()
    clip_path = str(write_clip(workdir / "clips", ext.clip_s))
    studio = _studio(workdir / "musicgen-extend")
    with window_geometry(ext.geometry) as (window_s, context_s):
        req = studio.request(None, CONTINUATION_REPO, CONTINUATION_PROMPT, seed=SEED,
                             params={"audio": clip_path, "extend_to": ext.extend_to, "precision": ext.dtype})
        windows = musicgen.plan_windows(req.get("audio").seconds, ext.extend_to)
        warm = studio.request(None, CONTINUATION_REPO, CONTINUATION_PROMPT, seed=SEED,
                              params={"audio": clip_path, "duration": 0.5, "precision": ext.dtype})
        _, warmup = _timed(lambda: studio.manager.run(warm), label="studio warm-up (loads)")
        times: dict[str, list[dict]] = {"windows": [], "studio": []}
        per_window: list[list[float]] = []
        outputs: dict[str, Any] = {}
        joins: list[int] = []
        for slot in interleaved_order(ext.repeats, warmup=0, sides=("windows", "studio")):
            label = f"extend {slot.round + 1} {slot.side}"
            if slot.side == "studio":
                with timed_generate_calls(studio, req) as inside:
                    result, rec = _timed(lambda: studio.manager.run(req), label=label)
                rec.update(compute_s=result.compute_s, windows=result.audio.info.get("windows"), dtype=result.dtype,
                           generate_s=inside)
                outputs["studio"] = result.audio.samples
            else:
                with studio.manager.acquire(req) as lease:
                    adapter = lease.model
                    recs, music, joins = run_windows_directly(adapter.model, adapter.preprocess, req, windows,
                                                              clip_path, label=label)
                    del adapter
                rec = {key: sum(r[key] for r in recs) for key in ("wall_s", "cpu_s")}
                loads = [r["others_load"] for r in recs if r.get("others_load") is not None]
                rec["others_load"] = median(loads) if loads else None
                per_window.append([r["wall_s"] for r in recs])
                outputs["windows"] = music[0] if music.shape[0] == 1 else music
            times[slot.side].append(rec)
            trim_heap()
    studio_s = [r["wall_s"] for r in times["studio"]]
    windows_s = [r["wall_s"] for r in times["windows"]]
    last_join = joins[-1] if joins else 0
    diff = max_abs_difference(outputs["studio"][..., last_join:], outputs["windows"][..., last_join:])
    value = 1.0 / paired_ratio(windows_s, studio_s) - 1.0  # median over rounds of studio / sum(windows) - 1
    loads = [r["others_load"] for side in times.values() for r in side if r.get("others_load") is not None]
    out = {
        "repo": CONTINUATION_REPO, "clip_s": ext.clip_s, "extend_to": ext.extend_to, "dtype": ext.dtype,
        "window_s": window_s, "context_s": context_s, "product_geometry": ext.geometry is None,
        "windows": [{"prompt_s": w.prompt_s, "new_s": w.new_s, "steps": musicgen_steps(w.new_s)} for w in windows],
        "studio": summarize_times(studio_s), "windows_sum": summarize_times(windows_s),
        "per_window_s": per_window, "runs": times, "warmup_s": warmup["wall_s"],
        "overhead": value, "overhead_of_medians": overhead(median(studio_s), median(windows_s)),
        "overhead_cpu": 1.0 / paired_ratio([r["cpu_s"] for r in times["windows"]],
                                           [r["cpu_s"] for r in times["studio"]]) - 1.0,
        "target": TARGETS["extend_overhead"].describe("{:.0%}"), "met": TARGETS["extend_overhead"].met(value),
        # The same comparison inside each studio run: its wall time against its own generate() calls. Other jobs
        # cannot tilt it (both parts share one run), so on a busy machine it is the steadier figure.
        "outside_generate": median(r["wall_s"] / sum(r["generate_s"]) - 1.0 for r in times["studio"]),
        "max_abs_difference_after_last_join": diff, "same_output": diff == 0.0,
        "others_load_median": median(loads) if loads else None, "others_load_max": max(loads) if loads else None,
    }
    studio.manager.unload_all()
    out["elapsed_s"] = time.monotonic() - started
    return out


# ------------------------------------------------------------------------------------ prompt frame cost
def run_prompt_cost(pc: PromptCost, *, workdir: Path) -> dict:
    """Per precision and new length: continuations making `new_s` seconds after prompts of `pc.prompts_s`
    against text-only runs making the same (and a shorter one, for the marginal time of a step), interleaved,
    through the product's adapter (`generate(request, ctx)`, what the estimate's work units describe).

    Cost of a prompt frame = (prompted - text-only) / prompt frames / marginal step time: the fraction of a
    sampled step that models/musicgen.py's PROMPT_FRAME_COST stands for (work units = steps + that x frames).
    It covers encoding the prompt, the decoder's one pass over it, decoding it with the new audio, and every new
    step attending to its keys and values: that last part grows with the new length, hence several of them.
    """
    from models import musicgen
    from studio.catalog import Catalog
    from studio.run import RunContext

    started = time.monotonic()
    catalog = Catalog.discover("models")
    spec = catalog.get(CONTINUATION_REPO)
    frame_rate = 50.0  # 32 kHz / 640-sample hop (the clips are whole frames long)

    def request(duration: float, prompt_s: float | None = None):
        params = {"duration": duration}
        if prompt_s:
            params["audio"] = str(write_clip(workdir / "clips", prompt_s))
        return catalog.make_request(CONTINUATION_REPO, CONTINUATION_PROMPT, seed=SEED, params=params)

    sides = {"short": request(pc.short_s)}
    for n in pc.new_s:
        sides[f"plain {n:g} s"] = request(n)
        sides.update({f"prompt {p:g} s + {n:g} s": request(n, p) for p in pc.prompts_s})
    short_steps = musicgen_steps(pc.short_s)
    out: dict[str, Any] = {"repo": CONTINUATION_REPO, "new_s": list(pc.new_s), "short_s": pc.short_s,
                           "short_steps": short_steps, "prompts_s": list(pc.prompts_s), "repeats": pc.repeats,
                           "constant": musicgen.PROMPT_FRAME_COST, "dtypes": {}}
    for dtype in pc.dtypes:
        adapter, load = _timed(lambda: catalog.family(spec).load(spec, "cpu", dtype), label=f"load {dtype}")
        # Warm-up: the text-only path and the prompt path each once, short.
        for warm in (request(pc.short_s), request(0.5, min(pc.prompts_s))):
            _timed(lambda: adapter.generate(warm, RunContext()), label=f"{dtype} warm-up")
        times: dict[str, list[dict]] = {name: [] for name in sides}
        for slot in interleaved_order(pc.repeats, warmup=0, sides=tuple(sides)):
            _, rec = _timed(lambda: adapter.generate(sides[slot.side], RunContext()),
                            label=f"{dtype} {slot.round + 1} {slot.side}")
            times[slot.side].append(rec)
            trim_heap()
        lengths = []
        for n in pc.new_s:
            steps = musicgen_steps(n)
            plain = times[f"plain {n:g} s"]
            prompts = []
            for p in pc.prompts_s:
                rounds = [prompt_frame_cost(a["wall_s"], b["wall_s"], c["wall_s"], steps=steps,
                                            short_steps=short_steps, frames=round(p * frame_rate))
                          for a, b, c in zip(plain, times["short"], times[f"prompt {p:g} s + {n:g} s"])]
                prompts.append({
                    "prompt_s": p, "frames": round(p * frame_rate), "rounds": rounds,
                    # the median of the rounds' figures: each round's runs see the same machine load
                    **{key: _median_or_none(r[key] for r in rounds)
                       for key in ("extra_s", "per_frame_s", "cost", "cost_vs_average_step")},
                })
            plain_s = [r["wall_s"] for r in plain]
            lengths.append({
                "new_s": n, "steps": steps, "plain": summarize_times(plain_s), "step_s": median(plain_s) / steps,
                "marginal_step_s": _median_or_none(r["marginal_step_s"] for r in prompts[0]["rounds"]),
                "prompts": prompts,
            })
        loads = [r["others_load"] for side in times.values() for r in side if r.get("others_load") is not None]
        out["dtypes"][dtype] = {
            "load_s": load["wall_s"], "runs": times, "short": summarize_times([r["wall_s"] for r in times["short"]]),
            "lengths": lengths, "others_load_median": median(loads) if loads else None,
            "others_load_max": max(loads) if loads else None,
        }
        del adapter
        trim_heap()
    out["elapsed_s"] = time.monotonic() - started
    return out


def _median_or_none(values) -> float | None:
    kept = [v for v in values if v is not None]
    return median(kept) if kept else None
