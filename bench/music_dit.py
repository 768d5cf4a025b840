"""ACE-Step 1.5 XL turbo and Stable Audio 3 medium through diffusers alone: what the adapters' defaults depend on.

Measured on realistic-width random-weight builds (bench/checkpoints.py), with fewer DiT blocks than the real
models where the real depth does not fit the bench's memory share, and per-block figures extrapolated to the real
depth (the blocks are identical: same shapes, same arithmetic):

* ``steps``: time of one DiT forward (one denoising step, no guidance: both are guidance-distilled) at two depths,
  giving a fixed part and a per-block part, in float32, bfloat16 and int8 (dynamic quantization of the DiT's
  nn.Linear layers, torch.ao.quantization.quantize_dynamic, as MusicGen's and Bark's int8); the output's relative
  error vs float32 on the same inputs (what MusicGen's "teacher-forced" logit error is for a decoder);
* ``run``: a whole short generation through the pipeline (text, condition encoder, the steps, the VAE decode) in
  float32 with int8 and bfloat16 DiTs swapped in: the final latents' and the waveform's SNR vs float32 at the same seed,
  and each stage's time;
* ``offload``: diffusers' group offload (block level) vs model offload for the XL DiT: on this CPU-only machine the
  onload and offload devices are both the CPU, so no transfer happens and none can be timed; what is measured is the
  hooks' own CPU time per step, and the bytes each scheme keeps on the accelerator (what the studio's accounting of a
  simulated device sees), from the modules' sizes;
* ``sa3-window``: whether Stable Audio 3 denoises and decodes a fixed window (as Stable Audio Open's 47.55 s) or only
  the requested length.

Run: ``nice -n 10 python -m bench.music_dit [ace|sa3|offload|all] [--out bench/results.json]``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("bench.music_dit")

SECONDS = 10.0  # audio length of the step measurements (the "e.g. 10 s")
TEXT_TOKENS = 256  # ACE-Step's packed condition (prompt + lyrics + timbre) / SA3's padded T5Gemma context


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _trim() -> None:
    from bench.measure import trim_heap

    gc.collect()
    trim_heap()


def _time(fn: Callable[[], Any], repeats: int) -> tuple[Any, list[float]]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return value, times


def _interleaved(sides: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict]:
    """Each side once per round, the order rotating, so that other jobs' load falls on every side alike.

    Returns per side the wall and CPU seconds of every round and the last output; `ratio_to_first` is the median
    over rounds of (first side's time / this side's time) within the round (the bench's paired ratio).
    """
    names = list(sides)
    out = {n: {"wall": [], "cpu": [], "value": None} for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            cpu0, started = time.process_time(), time.perf_counter()
            out[n]["value"] = sides[n]()
            out[n]["wall"].append(time.perf_counter() - started)
            out[n]["cpu"].append(time.process_time() - cpu0)
    first = names[0]
    for n in names:
        out[n]["median_s"] = statistics.median(out[n]["wall"])
        out[n]["median_cpu_s"] = statistics.median(out[n]["cpu"])
        out[n]["ratio_to_first"] = statistics.median(
            a / b for a, b in zip(out[first]["wall"], out[n]["wall"]))
        out[n]["cpu_ratio_to_first"] = statistics.median(
            a / b for a, b in zip(out[first]["cpu"], out[n]["cpu"]))
    return out


def _rel(ref, out) -> float:
    import torch

    ref, out = ref.float(), out.float()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def _snr_db(ref, out) -> float:
    import torch

    ref, out = ref.float(), out.float()
    noise = torch.sum((out - ref) ** 2)
    return float(10 * torch.log10(torch.sum(ref ** 2) / noise)) if noise > 0 else float("inf")


def _bytes(module) -> int:
    from studio.weights import module_bytes

    return module_bytes([module])


def int8_linear(module):
    """The DiT's nn.Linear layers as dynamically quantized int8 (weights int8 per channel, activations per batch)."""
    import torch

    return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


# ------------------------------------------------------------------------------------ DiTs and their inputs
def ace_dit(layers: int):
    import torch
    from diffusers import AceStepTransformer1DModel

    from bench.checkpoints import ACE_XL_DIT, _seeded

    with _seeded(4700 + layers), torch.no_grad():
        return AceStepTransformer1DModel(num_hidden_layers=layers, **ACE_XL_DIT).eval()


def ace_inputs(seconds: float, dtype) -> dict:
    """One turbo step's inputs at `seconds` of audio: 25 latents a second of 64 channels, the 128 context channels
    (source latents + chunk mask), the packed condition of TEXT_TOKENS from the 2048-wide condition encoder."""
    import torch

    g = torch.Generator().manual_seed(7)
    frames = math.ceil(seconds * 25)
    return dict(hidden_states=torch.randn(1, frames, 64, generator=g).to(dtype),
                timestep=torch.full((1,), 0.7).to(dtype), timestep_r=torch.full((1,), 0.7).to(dtype),
                encoder_hidden_states=torch.randn(1, TEXT_TOKENS, 2048, generator=g).to(dtype),
                context_latents=torch.randn(1, frames, 128, generator=g).to(dtype), return_dict=False)


def sa3_dit(layers: int):
    import torch
    from diffusers import StableAudio3DiTModel

    from bench.checkpoints import SA3_DIT, _redraw_zero_weights, _seeded

    with _seeded(1450 + layers), torch.no_grad():
        dit = StableAudio3DiTModel(depth=layers, **SA3_DIT).eval()
        _redraw_zero_weights([dit], seed=1451 + layers)  # as the pipeline build: no zero pre/post convolutions
    return dit


def sa3_inputs(seconds: float, dtype) -> dict:
    """SA3's step inputs: 44100 / 4096 latents a second of 256 channels (the pipeline's ceil), the 256 padded
    T5Gemma tokens + the duration token, the 768-wide duration embedding."""
    import torch

    g = torch.Generator().manual_seed(7)
    frames = math.ceil(seconds * 44100 / 4096)
    return dict(hidden_states=torch.randn(1, 256, frames, generator=g).to(dtype),
                timestep=torch.full((1,), 0.7).to(dtype),
                encoder_hidden_states=torch.randn(1, TEXT_TOKENS + 1, 768, generator=g).to(dtype),
                global_hidden_states=torch.randn(1, 768, generator=g).to(dtype),
                encoder_attention_mask=torch.ones(1, TEXT_TOKENS + 1, dtype=torch.bool), return_dict=False)


FAMILIES = {
    "ace": {"name": "ACE-Step 1.5 XL turbo", "dit": ace_dit, "inputs": ace_inputs, "real_layers": 32,
            "blocks": lambda m: m.layers},
    "sa3": {"name": "Stable Audio 3 medium", "dit": sa3_dit, "inputs": sa3_inputs, "real_layers": 24,
            "blocks": lambda m: m.transformer_blocks},
}


def step_costs(family: str, depths: tuple[int, int] = (1, 3), rounds: int = 5) -> dict:
    """One DiT forward at two depths in float32 / bfloat16 / int8, interleaved: fixed + per-block time,
    extrapolated to the real depth; each precision's output error vs float32 on the same inputs."""
    import torch

    spec = FAMILIES[family]
    rows: dict[str, dict] = {}
    for depth in depths:
        _trim()
        fp32 = spec["dit"](depth)
        bf = copy.deepcopy(fp32).to(torch.bfloat16)
        q = int8_linear(copy.deepcopy(fp32))
        inputs32 = spec["inputs"](SECONDS, torch.float32)
        inputs16 = spec["inputs"](SECONDS, torch.bfloat16)
        with torch.inference_mode():
            for m, i in ((fp32, inputs32), (bf, inputs16), (q, inputs32)):
                m(**i)  # warm-up: first-call allocations and kernel selection
            res = _interleaved({"float32": lambda: fp32(**inputs32)[0], "bfloat16": lambda: bf(**inputs16)[0],
                                "int8": lambda: q(**inputs32)[0]}, rounds)
        ref = res["float32"]["value"]
        entry: dict[str, Any] = {"weights_fp32": _bytes(fp32)}
        for name, module in (("float32", fp32), ("bfloat16", bf), ("int8", q)):
            r = res[name]
            entry[name] = {"times": r["wall"], "cpu": r["cpu"], "median_s": r["median_s"],
                           "median_cpu_s": r["median_cpu_s"], "speed_vs_float32": r["ratio_to_first"],
                           "cpu_speed_vs_float32": r["cpu_ratio_to_first"], "weights": _bytes(module),
                           "rel_error": _rel(ref, r["value"])}
        entry["block_params"] = sum(p.numel() for p in spec["blocks"](fp32)[0].parameters())
        entry["params"] = sum(p.numel() for p in fp32.parameters())
        rows[str(depth)] = entry
        log.info("%s depth %d: fp32 %.2f s, bf16 %.2f s (x%.2f, err %.4f), int8 %.2f s (x%.2f, err %.4f)", family,
                 depth, entry["float32"]["median_s"], entry["bfloat16"]["median_s"],
                 entry["bfloat16"]["speed_vs_float32"], entry["bfloat16"]["rel_error"], entry["int8"]["median_s"],
                 entry["int8"]["speed_vs_float32"], entry["int8"]["rel_error"])
        del fp32, bf, q, ref, res
        _trim()
    lo, hi = (rows[str(d)] for d in depths)
    real = spec["real_layers"]
    out = {"depths": list(depths), "seconds": SECONDS, "text_tokens": TEXT_TOKENS, "by_depth": rows,
           "real_layers": real, "rounds": rounds}
    for dtype in ("float32", "bfloat16", "int8"):
        per_block = (hi[dtype]["median_s"] - lo[dtype]["median_s"]) / (depths[1] - depths[0])
        fixed = lo[dtype]["median_s"] - per_block * depths[0]
        out[dtype] = {"per_block_s": per_block, "fixed_s": fixed, "real_step_s": fixed + per_block * real,
                      "speed_vs_float32_at_depth": hi[dtype]["speed_vs_float32"],
                      "rel_error_at_depth": hi[dtype]["rel_error"]}
    per_block_params = hi["block_params"]
    fixed_params = hi["params"] - per_block_params * depths[1]
    out["real_params"] = fixed_params + per_block_params * real
    out["real_weights_fp32"] = out["real_params"] * 4
    out["real_weights_int8_estimate"] = _extrapolate_bytes(lo["int8"]["weights"], hi["int8"]["weights"], depths, real)
    out["real_weights_bf16"] = _extrapolate_bytes(lo["bfloat16"]["weights"], hi["bfloat16"]["weights"], depths, real)
    return out


def _extrapolate_bytes(lo: int, hi: int, depths: tuple[int, int], real: int) -> int:
    per = (hi - lo) / (depths[1] - depths[0])
    return int(lo - per * depths[0] + per * real)


# ------------------------------------------------------------------------------------ whole runs
class StageClock:
    """Wall time spent inside each named component's forward (pre/post hooks on the top-level modules)."""

    def __init__(self, parts: dict) -> None:
        self.spent: dict[str, float] = {name: 0.0 for name in parts}
        self.calls: dict[str, int] = {name: 0 for name in parts}
        self._started: dict[str, float] = {}
        self._handles = []
        for name, module in parts.items():
            self._handles.append(module.register_forward_pre_hook(lambda m, a, name=name: self._enter(name)))
            self._handles.append(module.register_forward_hook(lambda m, a, o, name=name: self._leave(name)))

    def _enter(self, name: str) -> None:
        self._started[name] = time.perf_counter()

    def _leave(self, name: str) -> None:
        self.spent[name] += time.perf_counter() - self._started.pop(name)
        self.calls[name] += 1

    def reset(self) -> None:
        for name in self.spent:
            self.spent[name], self.calls[name] = 0.0, 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _decode_timer(vae):
    """vae.decode is not forward(): wrap it to time the decode stage."""
    spent = {"decode_s": 0.0}
    original = vae.decode

    def decode(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["decode_s"] += time.perf_counter() - started

    vae.decode = decode
    return spent


def whole_run(family: str, *, dit_layers: int, seconds: float, steps: int) -> dict:
    """The minimal diffusers script's run at float32, then with the DiT swapped for int8 and bfloat16 copies:
    per-stage times, final latents' and waveform's SNR vs float32 at the same seed."""
    import torch

    from bench.checkpoints import ace_step_xl_pipeline, stable_audio_3_pipeline

    _trim()
    if family == "ace":
        pipe = ace_step_xl_pipeline(dit_layers)
        # text2music touches neither: leaving them out keeps the process under the bench's memory share.
        pipe.audio_tokenizer = pipe.audio_token_detokenizer = None
        kwargs = dict(prompt="upbeat synth pop with a catchy chorus",
                      lyrics="[verse]\nhello world this is a song\n[chorus]\nmusic every day",
                      audio_duration=seconds, num_inference_steps=steps)
        parts = {"text_encoder": pipe.text_encoder, "condition_encoder": pipe.condition_encoder,
                 "transformer": pipe.transformer}
    else:
        pipe = stable_audio_3_pipeline(dit_layers)
        kwargs = dict(prompt="rain on a tin roof", duration=seconds, num_inference_steps=steps)
        parts = {"text_encoder": pipe.text_encoder, "duration_embedder": pipe.duration_embedder,
                 "transformer": pipe.transformer}
    clock = StageClock(parts)
    decode = _decode_timer(pipe.vae)
    rss_loaded = _rss()

    def run(output_type: str):
        clock.reset()
        decode["decode_s"] = 0.0
        g = torch.Generator().manual_seed(1234)
        started = time.perf_counter()
        with torch.inference_mode():
            out = pipe(generator=g, output_type=output_type, **kwargs).audios
        return out, time.perf_counter() - started, dict(clock.spent), decode["decode_s"]

    result: dict[str, Any] = {"dit_layers": dit_layers, "seconds": seconds, "steps": steps, "rss_loaded": rss_loaded,
                              "weights": {n: _bytes(m) for n, m in pipe.components.items()
                                          if isinstance(m, torch.nn.Module)}}
    run("latent")  # warm-up
    lat32, wall, spent, _ = run("latent")
    result["latent_shape"] = list(lat32.shape)
    wave32 = _decode(pipe, family, lat32)
    audio32, wall32, spent32, dec32 = run("pt")
    result["float32"] = {"wall_s": wall32, "stages_s": spent32, "decode_s": dec32}
    fp32_dit = pipe.transformer
    # int8: only the DiT's Linear layers change (the VAE and the encoders stay float32, as the studio's int8 keeps
    # MusicGen's codec float32). bfloat16: the whole pipeline in bfloat16, as `torch_dtype=torch.bfloat16` loads it
    # (the pipeline casts its inputs to the DiT's dtype, so a bfloat16 DiT alone cannot run in a float32 pipeline).
    for name in ("int8", "bfloat16"):
        if name == "int8":
            pipe.transformer = int8_linear(copy.deepcopy(fp32_dit))
        else:
            pipe.transformer = fp32_dit
            pipe.to(torch.bfloat16)
        clock.remove()
        parts["transformer"] = pipe.transformer
        clock = StageClock(parts)
        run("latent")
        lat, wall, spent, _ = run("latent")
        wave = _decode(pipe, family, lat)
        _, wall_pt, spent_pt, dec = run("pt")
        result[name] = {"wall_s": wall_pt, "stages_s": spent_pt, "decode_s": dec,
                        "latent_snr_db": _snr_db(lat32, lat), "latent_rel_error": _rel(lat32, lat),
                        "wave_snr_db": _snr_db(wave32, wave)}
        log.info("%s run %s: latent SNR %.1f dB, waveform SNR %.1f dB, DiT %.2f s vs %.2f s, whole %.1f s vs %.1f s",
                 family, name, result[name]["latent_snr_db"], result[name]["wave_snr_db"], spent_pt["transformer"],
                 spent32["transformer"], wall_pt, wall32)
        if name == "int8":
            pipe.transformer = fp32_dit
        _trim()
    clock.remove()
    del pipe
    _trim()
    return result


def _decode(pipe, family: str, latents):
    import torch

    with torch.inference_mode():
        latents = latents.to(pipe.vae.dtype)
        if family == "ace":
            return pipe.vae.decode(latents.transpose(1, 2)).sample.float()
        return pipe.vae.decode(latents).sample.float()


def decode_costs(family: str, rounds: int = 3) -> dict:
    """The VAE's decode of 10 s of latents in float32 and bfloat16 (interleaved) and the bfloat16 waveform's SNR."""
    import torch
    from diffusers import AutoencoderOobleck, AutoencoderSAME

    from bench.checkpoints import ACE_VAE, SA3_VAE, _seeded

    _trim()
    with _seeded(48000 if family == "ace" else 44100), torch.no_grad():
        if family == "ace":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                vae = AutoencoderOobleck(**ACE_VAE).eval()
            latents = torch.randn(1, 64, math.ceil(SECONDS * 25))
        else:
            vae = AutoencoderSAME(**SA3_VAE).eval()
            latents = torch.randn(1, 256, math.ceil(SECONDS * 44100 / vae.downsampling_ratio))
    bf = copy.deepcopy(vae).to(torch.bfloat16)
    lat16 = latents.to(torch.bfloat16)
    with torch.inference_mode():
        vae.decode(latents[..., :8])
        bf.decode(lat16[..., :8])
        res = _interleaved({"float32": lambda: vae.decode(latents).sample,
                            "bfloat16": lambda: bf.decode(lat16).sample.float()}, rounds)
    out = {"seconds": SECONDS, "latents": latents.shape[-1], "weights_fp32": _bytes(vae), "rounds": rounds,
           "float32_s": res["float32"]["median_s"], "bfloat16_s": res["bfloat16"]["median_s"],
           "bfloat16_speed": res["bfloat16"]["ratio_to_first"],
           "bfloat16_cpu_speed": res["bfloat16"]["cpu_ratio_to_first"],
           "bfloat16_snr_db": _snr_db(res["float32"]["value"], res["bfloat16"]["value"]),
           "times": {k: res[k]["wall"] for k in res}}
    log.info("%s decode: float32 %.2f s, bfloat16 %.2f s (x%.2f), SNR %.1f dB", family, out["float32_s"],
             out["bfloat16_s"], out["bfloat16_speed"], out["bfloat16_snr_db"])
    del vae, bf
    _trim()
    return out


# ------------------------------------------------------------------------------------ offload
def offload(layers: int = 2, rounds: int = 5) -> dict:
    """Group offload (block level, one block per group) vs model offload on the XL DiT, both onto the CPU.

    Nothing moves (onload = offload = CPU): the difference to the plain DiT is the hooks' own work.
    """
    import torch
    from accelerate import cpu_offload_with_hook
    from diffusers.hooks import apply_group_offloading

    from bench.checkpoints import ACE_XL_LAYERS

    _trim()
    dit = ace_dit(layers)
    inputs = ace_inputs(SECONDS, torch.float32)
    block = _bytes(dit.layers[0])
    total = _bytes(dit)
    rest = total - block * layers
    out: dict[str, Any] = {"layers": layers, "block_bytes_fp32": block, "non_block_bytes_fp32": rest,
                           "real_dit_bytes_fp32": rest + block * ACE_XL_LAYERS}
    cpu = torch.device("cpu")
    # The same weights under each scheme in turn (hooks added and removed), so one copy is held.
    with torch.inference_mode():
        dit(**inputs)
        plain = lambda: dit(**inputs)  # noqa: E731
        res_plain = _interleaved({"plain": plain}, 1)  # settle

        # Model offload: accelerate's hook on the whole DiT (what enable_model_cpu_offload installs per component).
        model, hook = cpu_offload_with_hook(dit, execution_device=cpu)
        model(**inputs)
        res_model = _interleaved({"plain": plain, "model": lambda: model(**inputs)}, rounds)
        hook.remove()
    grouped = copy.deepcopy(dit)
    apply_group_offloading(grouped, onload_device=cpu, offload_device=cpu, offload_type="block_level",
                           num_blocks_per_group=1)
    with torch.inference_mode():
        grouped(**inputs)
        res_group = _interleaved({"plain": plain, "group": lambda: grouped(**inputs)}, rounds)
    del grouped
    _trim()
    out.update({
        "plain_s": res_group["plain"]["median_s"], "group_offload_s": res_group["group"]["median_s"],
        "model_offload_s": res_model["model"]["median_s"],
        "group_vs_plain": 1 / res_group["group"]["ratio_to_first"],
        "model_vs_plain": 1 / res_model["model"]["ratio_to_first"],
        "group_cpu_vs_plain": 1 / res_group["group"]["cpu_ratio_to_first"],
        "model_cpu_vs_plain": 1 / res_model["model"]["cpu_ratio_to_first"],
        "times": {"model": {k: res_model[k]["wall"] for k in ("plain", "model")},
                  "group": {k: res_group[k]["wall"] for k in ("plain", "group")}},
        "settle_s": res_plain["plain"]["median_s"],
    })
    log.info("offload: plain %.2f s, model x%.3f, group x%.3f (wall, paired)", out["plain_s"],
             out["model_vs_plain"], out["group_vs_plain"])
    del dit
    _trim()
    return out


# ------------------------------------------------------------------------------------ SA3 window
def sa3_window() -> dict:
    """The latent length SA3 denoises and decodes for several durations (a tiny-width pipeline: only shapes)."""
    import torch
    from diffusers import AutoencoderSAME

    from bench.checkpoints import stable_audio_3_pipeline

    rows = []
    pipe = stable_audio_3_pipeline(1)
    for seconds in (2.0, 10.0, 47.0, 120.0):
        with torch.inference_mode():
            lat = pipe("rain", duration=seconds, num_inference_steps=1, output_type="latent",
                       generator=torch.Generator().manual_seed(0)).audios
        rows.append({"seconds": seconds, "latents": lat.shape[-1],
                     "covers_s": lat.shape[-1] * pipe.vae.downsampling_ratio / pipe.vae.config.sampling_rate})
        if seconds >= 47:
            break  # 47 s already shows the length follows the request; longer only costs time
    hop = pipe.vae.downsampling_ratio
    # Decode of the needed latents vs one more latent (the most a crop could save): time both at 10 s.
    lat = torch.randn(1, 256, math.ceil(10 * 44100 / hop))
    with torch.inference_mode():
        pipe.vae.decode(lat[..., :8])
        _, needed = _time(lambda: pipe.vae.decode(lat).sample, 2)
    del pipe
    _trim()
    return {"hop": hop, "rows": rows, "decode_10s_s": statistics.median(needed),
            "class": AutoencoderSAME.__name__}


# ------------------------------------------------------------------------------------ entry
def machine() -> dict:
    from bench.main import machine_info

    info = machine_info()
    return {"cpu": info["cpu"], "simd": info["simd"], "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m bench.music_dit")
    parser.add_argument("what", nargs="*", default=["all"],
                        help="ace-steps, sa3-steps, ace-run, sa3-run, offload, sa3-window, or all")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--doc", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md",
                        help="the report rendered from --out after the run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    jobs = {
        "ace-steps": lambda: step_costs("ace"),
        "sa3-steps": lambda: step_costs("sa3"),
        "ace-run": lambda: whole_run("ace", dit_layers=2, seconds=SECONDS, steps=8),
        "sa3-run": lambda: whole_run("sa3", dit_layers=4, seconds=SECONDS, steps=8),
        "offload": offload,
        "ace-decode": lambda: decode_costs("ace"),
        "sa3-decode": lambda: decode_costs("sa3"),
        "sa3-window": sa3_window,
    }
    names = list(jobs) if "all" in args.what else args.what
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    section = data.setdefault("sections", {}).setdefault("music-dit", {})
    for name in names:
        started, before = time.monotonic(), machine()
        log.info("== %s (load %s)", name, before["load_average"])
        entry = jobs[name]()
        after = machine()
        entry.update(created=time.strftime("%Y-%m-%dT%H:%M", time.gmtime()), elapsed_s=time.monotonic() - started,
                     cpu=before["cpu"], simd=before["simd"], load_average_start=before["load_average"],
                     load_average_end=after["load_average"], peak_rss=_peak_rss(), threads=torch.get_num_threads())
        if name.endswith("-steps"):  # the speeds depend on the machine's load: keep every run's, with its load
            previous = section.get(name) or {}
            entry["history"] = previous.get("history", []) + ([_step_summary(previous)] if previous else [])
        section[name] = entry
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        log.info("%s done in %.0f s", name, entry["elapsed_s"])
    from bench.report import render

    args.doc.write_text(render(data))
    return 0


def _step_summary(entry: dict) -> dict:
    deep = entry["by_depth"][str(entry["depths"][1])]
    return {"created": entry.get("created"), "load_average_start": entry.get("load_average_start"),
            "load_average_end": entry.get("load_average_end"), "interleaved": "rounds" in entry,
            **{f"{d}_speed": deep[d].get("speed_vs_float32", deep["float32"]["median_s"] / deep[d]["median_s"])
               for d in ("bfloat16", "int8")},
            **{f"{d}_rel_error": deep[d].get("rel_error") for d in ("bfloat16", "int8")},
            "float32_s": deep["float32"]["median_s"]}


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    sys.exit(main())
