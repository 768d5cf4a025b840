"""Prototypes of product changes, measured against the studio's adapters as they are, on the same machine.

Each prototype loads the product's own adapter (models/*.py through the catalog) twice: one copy as it is
(baseline), one with the change applied from outside. Runs are interleaved like the main comparison.
Nothing here changes the product; the report says where each change would go.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from typing import Any, Callable

from bench.cases import SEED
from bench.measure import max_abs_difference, trim_heap
from bench.stats import interleaved_order, paired_ratio, median

log = logging.getLogger(__name__)

NOTE = (
    "Baseline = the product adapter as it is (`family.load(...)` then `.generate(request, RunContext())`); "
    "prototype = the same adapter with one change applied from outside. Ratio = baseline time / prototype time "
    "(above 1.00x the change is faster), median of interleaved rounds. Output vs fp32: for int8, the decoder's "
    "logits on the same random token ids (teacher-forced) — relative L2 error and top-1 agreement — and the "
    "audio's max |difference| at the same seed (sampling diverges once one token differs)."
)

PROTOTYPES = ("cpu-wait-policy", "musicgen-int8", "musicgen-prefault", "audioldm2-prefault", "audioldm2-channels-last", "bark-int8",
              "stable-audio-decode-crop")
SLOW_PROTOTYPES = ("bark-int8", "stable-audio-decode-crop")


def _adapter(repo: str, dtype: str = "float32"):
    from studio.catalog import Catalog

    catalog = Catalog.discover("models")
    spec = catalog.get(repo)
    return catalog, spec, catalog.family(spec).load(spec, "cpu", dtype)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    trim_heap()
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def _interleave(baseline: Callable[[], Any], prototype: Callable[[], Any], repeats: int) -> dict:
    times: dict[str, list[float]] = {"baseline": [], "prototype": []}
    outputs: dict[str, Any] = {}
    for slot in interleaved_order(repeats, warmup=0, sides=("baseline", "prototype")):
        outputs[slot.side], seconds = _timed(baseline if slot.side == "baseline" else prototype)
        times[slot.side].append(seconds)
    return {"baseline_s": median(times["baseline"]), "prototype_s": median(times["prototype"]),
            "ratio": paired_ratio(times["baseline"], times["prototype"]), "runs": times, "outputs": outputs}


def weight_bytes(module) -> int:
    """The studio's own count (parameters, buffers and dynamically quantized Linear layers' packed int8 weights)."""
    from studio.weights import module_bytes

    return module_bytes([module])


def _logit_agreement(reference, candidate) -> dict:
    import torch

    ref, cand = reference.float(), candidate.float()
    rel = float(torch.linalg.vector_norm(cand - ref) / torch.linalg.vector_norm(ref))
    top1 = float((ref.argmax(-1) == cand.argmax(-1)).float().mean())
    return {"logits_rel_error": rel, "top1_agreement": top1}


def _free(*objects) -> None:
    del objects
    gc.collect()
    trim_heap()


# ------------------------------------------------------------------------------------ MusicGen
def musicgen_int8(quick: bool) -> list[dict]:
    import torch

    from studio.run import RunContext

    repo = "facebook/musicgen-small"
    catalog, spec, base = _adapter(repo)
    _, _, q = _adapter(repo, "int8")  # the product's precision=int8
    params = {"duration": 0.94 if quick else 1.94}
    prompt = "80s pop track with bassy drums and synth"
    req = catalog.make_request(repo, prompt, seed=SEED, params=params)
    warm = catalog.make_request(repo, prompt, seed=SEED, params={"duration": 0.5})
    base.generate(warm, RunContext())
    q.generate(warm, RunContext())
    result = _interleave(lambda: base.generate(req, RunContext()), lambda: q.generate(req, RunContext()),
                         3 if quick else 5)
    # Output: teacher-forced logits on the same random codes, and the audio at the same seed.
    enc = base.preprocess([prompt], padding=True, return_tensors="pt")
    codes = torch.randint(0, 2048, (4, 64), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        lb = base.model(**enc, decoder_input_ids=codes).logits
        lq = q.model(**enc, decoder_input_ids=codes).logits
    quality = _logit_agreement(lb, lq)
    diff = max_abs_difference(result["outputs"]["baseline"].samples, result["outputs"]["prototype"].samples)
    fp32, int8 = weight_bytes(base.model), weight_bytes(q.model)
    dec32, dec8 = weight_bytes(base.model.decoder), weight_bytes(q.model.decoder)
    rows = [{
        "model": "musicgen-small", "change": "precision int8 (the default on a CPU): dynamic quantization of the "
        "decoder's and T5's nn.Linear, token embeddings as int8 rows + per-row scale; EnCodec float32", "baseline_s": result["baseline_s"], "prototype_s": result["prototype_s"],
        "ratio": result["ratio"], "runs": result["runs"],
        "weights": f"{fp32 / 1e9:.2f} -> {int8 / 1e9:.2f} GB ({fp32 / int8:.1f}x less; decoder {dec32 / dec8:.1f}x)",
        "weight_bytes": {"fp32": fp32, "int8": int8, "decoder_fp32": dec32, "decoder_int8": dec8},
        "quality": f"logits rel. error {quality['logits_rel_error']:.3f}, top-1 agreement "
                   f"{100 * quality['top1_agreement']:.1f} %, audio max diff {diff:.3g}",
        "quality_detail": {**quality, "audio_max_abs_difference": diff}, "settings": params,
    }]
    # Static KV cache, as transformers offers it (no torch.compile: compiling takes minutes on 2 cores).
    try:
        def static():
            inputs = base.preprocess([prompt], padding=True, return_tensors="pt")
            torch.manual_seed(SEED)
            with torch.inference_mode():
                return base.model.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=50,
                                           top_k=250, cache_implementation="static")

        def dynamic():
            inputs = base.preprocess([prompt], padding=True, return_tensors="pt")
            torch.manual_seed(SEED)
            with torch.inference_mode():
                return base.model.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=50, top_k=250)

        static()
        r = _interleave(dynamic, static, 3 if quick else 5)
        rows.append({"model": "musicgen-small", "change": "static KV cache (`cache_implementation=\"static\"`), "
                     "no compile", "baseline_s": r["baseline_s"], "prototype_s": r["prototype_s"], "ratio": r["ratio"],
                     "runs": r["runs"], "quality": "same tokens" if torch.equal(r["outputs"]["baseline"],
                                                                                r["outputs"]["prototype"]) else
                     f"audio max diff {max_abs_difference(r['outputs']['baseline'][0], r['outputs']['prototype'][0]):.3g}"})
    except Exception as error:  # not every model supports it; say so
        rows.append({"model": "musicgen-small", "change": "static KV cache (`cache_implementation=\"static\"`)",
                     "quality": f"not supported: {type(error).__name__}: {str(error)[:200]}"})
    _free(base, q)
    return rows


# ------------------------------------------------------------------------------------ Bark
def bark_int8(quick: bool) -> list[dict]:
    import torch

    from studio.run import RunContext

    repo = "suno/bark-small"
    catalog, spec, base = _adapter(repo)
    _, _, q = _adapter(repo, "int8")  # the product's precision=int8
    prompt = "Hello, my dog is cute. I need him in my life!"
    req = catalog.make_request(repo, prompt, seed=SEED, params={"max_chunk_seconds": 1.0 if quick else 2.0})
    warm = catalog.make_request(repo, prompt, seed=SEED, params={"max_chunk_seconds": 0.5})
    base.generate(warm, RunContext())
    q.generate(warm, RunContext())
    result = _interleave(lambda: base.generate(req, RunContext()), lambda: q.generate(req, RunContext()),
                         2 if quick else 3)
    ids = torch.randint(0, 10_000, (1, 256), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        quality = _logit_agreement(base.model.semantic(input_ids=ids).logits, q.model.semantic(input_ids=ids).logits)
    diff = max_abs_difference(result["outputs"]["baseline"].samples, result["outputs"]["prototype"].samples)
    fp32, int8 = weight_bytes(base.model), weight_bytes(q.model)
    row = {
        "model": "bark-small", "change": "precision int8 (the default on a CPU): dynamic quantization of the three "
        "GPTs' nn.Linear, token embeddings as int8 rows + per-row scale; EnCodec float32",
        "baseline_s": result["baseline_s"], "prototype_s": result["prototype_s"], "ratio": result["ratio"],
        "runs": result["runs"], "weights": f"{fp32 / 1e9:.2f} -> {int8 / 1e9:.2f} GB ({fp32 / int8:.1f}x less)",
        "weight_bytes": {"fp32": fp32, "int8": int8},
        "quality": f"semantic logits rel. error {quality['logits_rel_error']:.3f}, top-1 agreement "
                   f"{100 * quality['top1_agreement']:.1f} %, audio max diff {diff:.3g}",
        "quality_detail": {**quality, "audio_max_abs_difference": diff},
    }
    _free(base, q)
    return [row]


# ------------------------------------------------------------------------------------ AudioLDM2
def audioldm2_channels_last(quick: bool) -> list[dict]:
    import torch

    from studio.run import RunContext

    repo = "cvssp/audioldm2"
    from models.audioldm2 import CHANNELS_LAST_PARTS

    catalog, spec, base = _adapter(repo)
    _, _, cl = _adapter(repo)  # the product loads the UNet and VAE channels-last; the baseline undoes it
    for name in CHANNELS_LAST_PARTS:
        getattr(base.pipe, name).to(memory_format=torch.contiguous_format)
    params = {"duration": 2.56, "steps": 3} if quick else {"duration": 5.12, "steps": 10}
    req = catalog.make_request(repo, "A dog barking in the distance", seed=SEED, params=params)
    base.generate(req, RunContext())
    cl.generate(req, RunContext())
    result = _interleave(lambda: base.generate(req, RunContext()), lambda: cl.generate(req, RunContext()),
                         3 if quick else 5)
    diff = max_abs_difference(result["outputs"]["baseline"].samples, result["outputs"]["prototype"].samples)
    row = {"model": "audioldm2", "change": "UNet and VAE in channels_last memory format (adopted: the product "
           "loads them so)", "settings": params,
           "baseline_s": result["baseline_s"], "prototype_s": result["prototype_s"], "ratio": result["ratio"],
           "runs": result["runs"], "weights": "same", "quality": f"audio max diff {diff:.3g}"}
    _free(base, cl)
    return [row]


def prefault(modules) -> None:
    """Touch one element per 4 KiB page of every weight, so lazily mapped safetensors pages are read now."""
    import torch

    with torch.inference_mode():
        for module in modules:
            for t in list(module.parameters()) + list(module.buffers()):
                if t.numel() == 0:
                    continue
                flat = t.detach().reshape(-1) if t.is_contiguous() else t.detach()
                step = max(1, 4096 // t.element_size())
                (flat[::step].sum() if flat.dim() == 1 else flat.sum()).item()


def first_run_prefault(repo: str, name: str, params: dict, prompt: str) -> dict:
    """The first generation after a load, with the weights as loaded (lazily mapped) and after prefault()."""
    import psutil

    from studio.run import RunContext

    process = psutil.Process()
    out: dict[str, Any] = {}
    for variant in ("as loaded", "prefaulted"):
        trim_heap()
        (catalog, spec, model), load_s = _timed(lambda: _adapter(repo))
        rss_loaded = process.memory_info().rss
        touch_s = 0.0
        if variant == "prefaulted":
            _, touch_s = _timed(lambda: prefault(model.modules()))
        req = catalog.make_request(repo, prompt, seed=SEED, params=params)
        _, first = _timed(lambda: model.generate(req, RunContext()))
        _, second = _timed(lambda: model.generate(req, RunContext()))
        out[variant] = {"load_s": load_s, "prefault_s": touch_s, "first_s": first, "second_s": second,
                        "rss_after_load_bytes": rss_loaded}
        del model
        gc.collect()
        trim_heap()
    a, b = out["as loaded"], out["prefaulted"]
    return {
        "model": name, "change": "prefault the weights at load (touch one float per 4 KiB page of every tensor)",
        "settings": params, "baseline_s": a["first_s"], "prototype_s": b["first_s"], "ratio": a["first_s"] / b["first_s"],
        "weights": "same",
        "quality": (f"first run {a['first_s']:.1f} s -> {b['first_s']:.1f} s (steady state {a['second_s']:.1f} s); "
                    f"load {a['load_s']:.1f} s -> {b['load_s'] + b['prefault_s']:.1f} s incl. prefault; RSS after "
                    f"load {a['rss_after_load_bytes'] / 1e9:.2f} -> {b['rss_after_load_bytes'] / 1e9:.2f} GB"),
        "detail": out,
    }


def musicgen_prefault(quick: bool) -> list[dict]:
    return [first_run_prefault("facebook/musicgen-small", "musicgen-small", {"duration": 0.5},
                               "80s pop track with bassy drums and synth")]


def audioldm2_prefault(quick: bool) -> list[dict]:
    return [first_run_prefault("cvssp/audioldm2", "audioldm2", {"duration": 2.56, "steps": 3},
                               "A dog barking in the distance")]


# ------------------------------------------------------------------------------------ Stable Audio
def stable_audio_decode_crop(quick: bool) -> list[dict]:
    """Decode only the latents that cover the requested length (+ a margin), instead of the whole 47.55 s window."""
    import torch

    from models.stable_audio import DECODE_MARGIN

    repo = "stabilityai/stable-audio-open-1.0"
    catalog, spec, model = _adapter(repo)
    pipe = model.pipe
    duration = 5.0
    generator = torch.Generator().manual_seed(SEED)
    with torch.inference_mode():
        latents, denoise_s = _timed(lambda: pipe("A drum loop, 120 bpm", negative_prompt="Low quality.",
                                                 num_inference_steps=1, audio_end_in_s=duration, guidance_scale=7.0,
                                                 generator=generator, output_type="latent").audios)
        hop = math.prod(pipe.vae.config.downsampling_ratios)
        wanted = round(duration * pipe.vae.config.sampling_rate)
        full, full_s = _timed(lambda: pipe.vae.decode(latents).sample[..., :wanted])
        rows = []
        for margin in (8, DECODE_MARGIN):
            n = min(latents.shape[-1], math.ceil(wanted / hop) + margin)
            crop, crop_s = _timed(lambda: pipe.vae.decode(latents[..., :n]).sample[..., :wanted])
            diff = float((crop - full).abs().max())
            rows.append({
                "model": "stable-audio-open-1.0",
                "change": f"VAE decodes the first {n} of {latents.shape[-1]} latents ({duration:g} s + {margin} latents "
                          "margin), then crops" + (" (adopted: the product does this)" if margin == DECODE_MARGIN else ""),
                "baseline_s": denoise_s + full_s, "prototype_s": denoise_s + crop_s,
                "ratio": (denoise_s + full_s) / (denoise_s + crop_s), "weights": "same",
                "quality": f"max diff {diff:.3g} in the kept {duration:g} s (peak {float(full.abs().max()):.3g})",
                "detail": {"denoise_s": denoise_s, "decode_full_s": full_s, "decode_crop_s": crop_s,
                           "decode_ratio": full_s / crop_s, "margin_latents": margin},
            })
    _free(model, pipe)
    return rows


_BURNER = "import os, time\nos.setpriority(os.PRIO_PROCESS, 0, int(os.environ['BENCH_NICE']))\nwhile True: pass\n"


def _probe(policy: str, steps: int, rounds: int, busy: bool) -> dict:
    """One child process running bench.omp_probe; with `busy`, a busy loop at the same priority holds one core."""
    import json
    import os
    import subprocess
    import sys

    from bench.measure import _busy_cpu_seconds

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    burner = None
    if busy:  # another program using a core, as a browser or a second job would
        burner = subprocess.Popen([sys.executable, "-c", _BURNER],
                                  env={**env, "BENCH_NICE": str(os.getpriority(os.PRIO_PROCESS, 0))})
    try:
        busy0, started = _busy_cpu_seconds(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.omp_probe", str(steps), str(rounds)], env=env,
                              capture_output=True, text=True, timeout=3600, cwd=root)
        wall = time.perf_counter() - started
        busy1 = _busy_cpu_seconds()
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1000:])
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    own = sum(data["cpu_2"]) + sum(data["cpu_1"])
    data["others_load"] = max(0.0, (busy1 - busy0 - own) / wall) if busy0 is not None and busy1 is not None else None
    return data


def cpu_wait_policy(quick: bool) -> list[dict]:
    """torch's OpenMP threads under the library's default wait policy vs PASSIVE, and 1 thread, in child processes,
    on the machine as it is and with one core kept busy by another process.

    While another process holds a core, spinning threads burn their time slices waiting at barriers for a
    sibling that is not running. Children inherit the bench's priority, not its OMP_WAIT_POLICY.
    """
    rows = []
    for busy in (False, True):
        steps, rounds = (10, 2) if busy else ((20, 2) if quick else (50, 3))
        results = {policy: _probe(policy, steps, rounds, busy) for policy in ("default", "PASSIVE")}
        base = median(results["default"]["threads_2"])
        where = "one core busy with another process" if busy else "machine as it is"
        for policy, threads in (("PASSIVE", 2), ("default", 1), ("PASSIVE", 1)):
            seconds = median(results[policy][f"threads_{threads}"])
            rows.append({
                "model": "musicgen-small",
                "change": f"{where}: OMP_WAIT_POLICY={policy}, {threads} torch thread{'s' if threads > 1 else ''} "
                          "(baseline: library default policy, 2 threads)",
                "baseline_s": base, "prototype_s": seconds, "ratio": base / seconds, "weights": "same",
                "quality": f"same arithmetic; {steps} decoder steps; others' load "
                           f"{results[policy]['others_load'] or 0:.1f} cores", "detail": results,
            })
    return rows


FUNCTIONS = {
    "cpu-wait-policy": cpu_wait_policy,
    "musicgen-int8": musicgen_int8,
    "bark-int8": bark_int8,
    "audioldm2-channels-last": audioldm2_channels_last,
    "musicgen-prefault": musicgen_prefault,
    "audioldm2-prefault": audioldm2_prefault,
    "stable-audio-decode-crop": stable_audio_decode_crop,
}


def run_prototypes(*, quick: bool, names: tuple[str, ...] | None = None) -> dict:
    names = names or tuple(n for n in PROTOTYPES if not (quick and n in SLOW_PROTOTYPES))
    rows, errors = [], {}
    for name in names:
        log.info("prototype %s", name)
        started = time.monotonic()
        try:
            for row in FUNCTIONS[name](quick):
                row["prototype"] = name
                row["elapsed_s"] = time.monotonic() - started
                rows.append(row)
                log.info("%s: %s: ratio %s", name, row["change"], row.get("ratio"))
        except Exception as error:
            log.exception("prototype %s failed", name)
            errors[name] = f"{type(error).__name__}: {error}"
    return {"note": NOTE, "rows": rows, "errors": errors, "names": list(names)}
