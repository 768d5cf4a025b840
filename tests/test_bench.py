"""The bench's own arithmetic, and a smoke run of `python -m bench` on a tiny model so it keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stats import (
    Slot,
    Target,
    interleaved_order,
    median,
    median_relative_error,
    overhead,
    paired_ratio,
    relative_error,
    speed_ratio,
    summarize_times,
)

ROOT = Path(__file__).resolve().parent.parent


def test_median_odd_even_and_unsorted():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4, 1, 3, 2]) == 2.5
    assert median([7]) == 7.0


def test_median_refuses_nothing_and_nan():
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        median([1.0, float("nan")])


def test_speed_ratio_is_reference_over_studio():
    assert speed_ratio(reference_s=3.0, studio_s=2.0) == pytest.approx(1.5)  # studio 1.5x as fast
    assert speed_ratio(2.0, 4.0) == pytest.approx(0.5)  # studio twice as slow
    with pytest.raises(ValueError):
        speed_ratio(1.0, 0.0)
    with pytest.raises(ValueError):
        speed_ratio(-1.0, 1.0)


def test_paired_ratio_is_the_median_of_round_ratios():
    # Round ratios 2.0, 1.0, 1.5 -> 1.5; the ratio of medians (2/2 = 1.0) would hide the pairing.
    assert paired_ratio([4.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_ratio([], [])


def test_overhead_is_studio_over_reference_minus_one():
    assert overhead(studio_s=1.02, reference_s=1.0) == pytest.approx(0.02)
    assert overhead(studio_s=0.9, reference_s=1.0) == pytest.approx(-0.1)


def test_relative_error():
    assert relative_error(predicted=115.0, actual=100.0) == pytest.approx(0.15)
    assert relative_error(85.0, 100.0) == pytest.approx(0.15)
    assert median_relative_error([(110, 100), (50, 100), (100, 100)]) == pytest.approx(0.10)
    with pytest.raises(ValueError):
        relative_error(1.0, 0.0)


def test_targets():
    assert Target(">=", 1.0).met(1.0) is True
    assert Target(">=", 1.0).met(0.99) is False
    assert Target("<=", 0.15).met(0.15) is True
    assert Target("<=", 0.15).met(0.2) is False
    assert Target("<=", 0.15).met(None) is None
    assert Target("<=", 0.02).describe("{:.0%}") == "<= 2%"


def test_interleaved_order_warms_up_then_alternates_who_goes_first():
    order = interleaved_order(3, warmup=1)
    assert order[:2] == [Slot("reference", -1, True), Slot("studio", -1, True)]
    measured = [(s.side, s.round) for s in order if not s.warmup]
    assert measured == [("reference", 0), ("studio", 0), ("studio", 1), ("reference", 1),
                        ("reference", 2), ("studio", 2)]
    assert len(interleaved_order(5, warmup=0)) == 10
    assert [s.side for s in interleaved_order(1, warmup=0, sides=("bare", "app"))] == ["bare", "app"]
    with pytest.raises(ValueError):
        interleaved_order(0)


def test_summarize_times():
    s = summarize_times([1.0, 3.0, 2.0])
    assert s == {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "spread": pytest.approx(2.0), "n": 3}


def test_report_renders_every_target(tmp_path):
    """The Markdown names each figure with its target and whether it is met."""
    from bench.report import render, summary_rows

    run = {"created": "2025-01-01T00:00:00+00:00", "mode": "quick", "ran": ["x"], "elapsed_s": 1.0, "checkpoints_s": 0}
    compare = {"ratio": 1.2, "target": ">= 1", "met": True, "cpu_ratio": 1.1, "same_output": True,
               "max_abs_difference": 0.0, "reference": {"median_s": 1.2, "n": 3}, "studio": {"median_s": 1.0, "n": 3}}
    one = {"settings": {"duration": 1.0}, "predicted_s": 1.1, "wall_s": 1.0, "time_error": 0.1, "predicted_bytes": 3e9,
           "predicted_weights_bytes": 2e9, "predicted_working_bytes": 1e9, "peak_bytes": 2.3e9, "memory_error": 0.3}
    estimate = {"runs": [one, one, one], "time_error_median": 0.1, "memory_error_median": 0.3, "time_target": "<= 0.15",
                "memory_target": "<= 0.25", "time_met": True, "memory_met": False}
    default = {**compare, "ratio": 1.4, "target": ">= 1.5", "met": False, "dtype": "int8", "same_output": False,
               "max_abs_difference": 0.02}
    weights = {"float32_bytes": 2.4e9, "default_bytes": 0.75e9, "dtype": "int8", "ratio": 3.2, "target": ">= 3",
               "met": True}
    results = {"runs": [run], "models": {"musicgen-small": {
        "mode": "quick", "created": run["created"], "what": "50 steps", "compare": compare, "estimate": estimate,
        "compare_default": default, "weights_reduction": weights,
        "calibration": {"settings": {"duration": 0.5}, "load_s": 1.0, "compute_s": 2.0}}}}
    rows = summary_rows(results)
    when = "quick, 2025-01-01T00:00"
    assert ("musicgen-small: studio speed vs reference, same settings and float32 (reference/studio)", "1.20x",
            ">= 1", "met", when) in rows
    assert ("musicgen-small: studio's default on this machine (int8) vs reference float32", "1.40x", ">= 1.5",
            "**not met**", when) in rows
    assert ("musicgen-small: weight memory float32 / int8", "3.20x", ">= 3", "met", when) in rows
    text = render(results)
    assert "| musicgen-small: memory estimate error (median of 3 lengths) | 30.0 % | <= 25 % | **not met** |" in text
    assert "| musicgen-small | int8 | 1.20 s | 1.00 s | **1.40x** | >= 1.5 | **not met** | max diff 0.02 |" in text


@pytest.mark.slow
def test_bench_quick_smoke_on_a_tiny_model(tmp_path):
    """`python -m bench --quick --only mms-tts-eng,pocket-tts --tiny` runs end to end and writes the expected keys
    (Pocket TTS: a family with a companion repo to build, precisions weighed beside its default, a real-time
    factor)."""
    out = tmp_path / "results.json"
    doc = tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STUDIO_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "mms-tts-eng,pocket-tts", "--tiny", "--cache",
         str(tmp_path / "cache"),
         "--out", str(out), "--doc", str(doc)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in ("machine", "versions", "models", "checkpoints", "catalog_memory", "runs", "mode"):
        assert key in results, key
    assert results["mode"] == "quick" and results["tiny"] is True
    assert {"cpu", "cores", "ram_bytes"} <= set(results["machine"])
    assert {"python", "torch", "transformers", "diffusers"} <= set(results["versions"])
    mms = results["models"]["mms-tts-eng"]
    compare = mms["compare"]
    from bench.cases import MMS

    assert compare["reference"]["n"] == compare["studio"]["n"] == MMS.quick.repeats
    assert compare["ratio"] > 0 and compare["same_output"] is True  # same seed, same settings: same audio
    estimate = mms["estimate"]
    assert len(estimate["runs"]) == 3
    assert {"time_error_median", "memory_error_median", "time_met", "memory_met"} <= set(estimate)
    assert {"overhead", "target", "met"} <= set(mms["warm_overhead"])
    assert "float32" in results["catalog_memory"]["mms-tts-eng"]
    pocket = results["models"]["pocket-tts"]
    assert results["checkpoints"]["eustlb/pocket-tts-audio-tokenizer"]["kind"] == "tiny"  # the companion was built
    assert pocket["compare"]["same_output"] is True and pocket["compare"]["real_time_factor"] > 0
    assert pocket["default_dtype"] == "int8" and set(pocket["compare_precisions"]) == {"bfloat16"}
    text = doc.read_text()
    assert "ratio = reference time / studio time" in text and "## Targets" in text
    assert "### Real-time factor" in text and "bfloat16:" in text


# ------------------------------------------------------------------ issue 13: MusicGen's audio in

def test_prompt_frame_cost_is_the_extra_time_per_frame_over_a_marginal_step():
    from bench.stats import prompt_frame_cost

    # 100 steps in 11 s, 20 in 3 s: 0.1 s per step, 1 s fixed. A 200-frame prompt adds 4 s: 0.02 s a frame.
    cost = prompt_frame_cost(11.0, 3.0, 15.0, steps=100, short_steps=20, frames=200)
    assert cost["marginal_step_s"] == pytest.approx(0.1)
    assert cost["per_frame_s"] == pytest.approx(0.02)
    assert cost["cost"] == pytest.approx(0.2)
    assert cost["cost_vs_average_step"] == pytest.approx(0.02 / 0.11)  # the fixed second counted into the step
    # Other jobs made the longer run no slower: no slope, no figure (rather than a negative or infinite one).
    assert prompt_frame_cost(3.0, 3.0, 5.0, steps=100, short_steps=20, frames=200)["cost"] is None
    with pytest.raises(ValueError):
        prompt_frame_cost(1.0, 1.0, 1.0, steps=20, short_steps=20, frames=10)


def test_clip_placeholders_become_whole_frame_files(tmp_path):
    import soundfile as sf

    from bench.clips import FRAME, RATE, clip_seconds, with_clips

    params = with_clips({"audio": "clip:5", "duration": 5.0, "prompt": "clip"}, tmp_path)
    assert params["duration"] == 5.0 and params["prompt"] == "clip" and clip_seconds(params["audio"]) is None
    data, rate = sf.read(params["audio"], dtype="float32")
    assert rate == RATE and data.shape == (5 * RATE,) and data.shape[0] % FRAME == 0
    assert 0.1 < float(abs(data).max()) <= 1.0
    written = Path(params["audio"]).stat().st_mtime_ns
    assert with_clips({"audio": "clip:5"}, tmp_path) == {"audio": params["audio"]}
    assert Path(params["audio"]).stat().st_mtime_ns == written  # written once


@pytest.fixture
def bench_env(tiny_cache, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    return tiny_cache


def test_continuation_case_on_the_tiny_model_samples_what_the_reference_samples(bench_env, tmp_path):
    """The case's path end to end with a 1 s clip and a few tokens: float32 studio = reference after the clip."""
    from dataclasses import replace

    from bench.cases import MUSICGEN_CONTINUATION, Mode
    from bench.runner import run_model

    small = Mode(compare={"audio": "clip:1", "duration": 0.5}, repeats=1, warmup={"audio": "clip:1", "duration": 0.5},
                 calibration={"duration": 0.5},
                 lengths=({"audio": "clip:1", "duration": 0.5}, {"audio": "clip:2", "duration": 0.5},
                          {"audio": "clip:1", "duration": 0.6}))
    out = run_model(replace(MUSICGEN_CONTINUATION, quick=small), quick=True, workdir=tmp_path)
    compare = out["compare"]
    assert compare["settings"]["audio"] == "clip:1" and compare["settings"]["precision"] == "float32"
    assert compare["compared_after_s"] == 1.0
    assert compare["same_output"] is True  # same clip, settings and seed: the reference does the same work
    assert compare["reference"]["n"] == compare["studio"]["n"] == 1
    default = out["compare_default"]
    assert default["dtype"] == "int8" and default["target"] == ">= 1.5"  # the autoregressive target applies
    assert [r["settings"]["audio"] for r in out["estimate"]["runs"]] == ["clip:1", "clip:2", "clip:1"]
    json.dumps(out, default=str)


def test_extension_overhead_on_the_tiny_model_runs_the_studios_windows(bench_env, tmp_path):
    from bench.cases import EXTENSION
    from bench.continuation import run_extension
    from models import musicgen

    saved = (musicgen.MAX_DURATION, musicgen.CONTEXT_S)
    out = run_extension(EXTENSION["tiny"], workdir=tmp_path)
    assert (musicgen.MAX_DURATION, musicgen.CONTEXT_S) == saved  # the scaled geometry is put back
    assert [(w["prompt_s"], w["new_s"]) for w in out["windows"]] == [(1.0, 2.0), (1.0, 2.0)]
    assert out["product_geometry"] is False and out["window_s"] == 3.0
    studio_run = out["runs"]["studio"][0]
    assert studio_run["windows"] == 2 and len(studio_run["generate_s"]) == 2  # its own generate() calls, timed
    assert out["outside_generate"] == pytest.approx(studio_run["wall_s"] / sum(studio_run["generate_s"]) - 1)
    assert out["same_output"] is True  # both sides sample the same tokens: the times are of the same work
    per_window = out["per_window_s"][0]
    assert len(per_window) == 2 and sum(per_window) == pytest.approx(out["windows_sum"]["median_s"])
    assert out["overhead"] == pytest.approx(out["studio"]["median_s"] / out["windows_sum"]["median_s"] - 1)
    assert out["target"] == "<= 5%" and out["met"] in (True, False)


def test_prompt_cost_on_the_tiny_model_reports_each_prompt(bench_env, tmp_path):
    from bench.cases import PROMPT_COST
    from bench.continuation import run_prompt_cost
    from models.musicgen import PROMPT_FRAME_COST

    out = run_prompt_cost(PROMPT_COST["tiny"], workdir=tmp_path)
    assert out["constant"] == PROMPT_FRAME_COST and out["short_steps"] == 28
    (length,) = out["dtypes"]["int8"]["lengths"]
    (prompt,) = length["prompts"]
    assert length["new_s"] == 1.0 and length["steps"] == 53
    assert prompt["prompt_s"] == 1.0 and prompt["frames"] == 50 and len(prompt["rounds"]) == 1
    assert set(out["dtypes"]["int8"]["runs"]) == {"short", "plain 1 s", "prompt 1 s + 1 s"}


def test_report_renders_the_audio_in_sections():
    from bench.report import render, summary_rows

    ext = {"created": "2025-01-01T00:00:00+00:00", "mode": "quick", "dtype": "int8", "clip_s": 5.0, "extend_to": 50.0,
           "window_s": 30.0, "context_s": 10.0, "product_geometry": True,
           "windows": [{"prompt_s": 5.0, "new_s": 25.0}, {"prompt_s": 10.0, "new_s": 20.0}],
           "studio": {"median_s": 102.0, "n": 1}, "windows_sum": {"median_s": 100.0, "n": 1},
           "per_window_s": [[55.0, 45.0]], "overhead": 0.02, "overhead_cpu": 0.01, "outside_generate": 0.004,
           "target": "<= 5%", "met": True,
           "same_output": True, "max_abs_difference_after_last_join": 0.0, "others_load_median": 0.1,
           "others_load_max": 0.2}
    cost = {"constant": 0.05, "short_steps": 53, "new_s": [5.0], "repeats": 3, "dtypes": {"int8": {
        "others_load_median": 0.0, "others_load_max": 0.1, "lengths": [{
            "new_s": 5.0, "steps": 253, "plain": {"median_s": 20.0}, "marginal_step_s": 0.075,
            "prompts": [{"prompt_s": 5.0, "frames": 250, "extra_s": 4.5, "per_frame_s": 0.018, "cost": 0.24,
                         "cost_vs_average_step": 0.228}]}]}}}
    results = {"runs": [], "models": {}, "sections": {"musicgen-extend": ext, "musicgen-prompt-cost": cost}}
    assert ("musicgen-small: extension's overhead over the sum of its windows (studio/sum - 1, int8)", "2.0 %",
            "<= 5%", "met", "quick, 2025-01-01T00:00") in summary_rows(results)
    text = render(results)
    assert "(5 s heard, 25 s new) + (10 s heard, 20 s new)" in text and "**2.0 %**" in text
    assert "outside its generate() calls 0.40 % of them" in text
    assert "| int8 | 5 s (253 steps) | 20.00 s | 75.0 ms | 5 s | 250 | 4.50 s | 18.0 ms | **0.240** | 0.228 |" in text


def test_music_dit_interleaves_sides_and_pairs_each_round(monkeypatch):
    import types

    import bench.music_dit as md

    # A fake clock (no real timing, no flake): each call advances it by its side's cost ("slow" twice "fast") times a
    # load that grows call by call, so whoever goes second in a round is penalised; rotating who goes first
    # cancels that drift and the median of the paired ratios is 0.5 (0.25, 0.75, 0.375, 0.625 by round).
    now = {"t": 0.0}
    monkeypatch.setattr(md, "time", types.SimpleNamespace(perf_counter=lambda: now["t"],
                                                          process_time=lambda: now["t"]))
    calls: list[str] = []

    def side(name: str, cost: float):
        def run():
            calls.append(name)
            now["t"] += cost * (1 + len(calls) // 2)  # later rounds run on a busier machine
            return name
        return run

    out = md._interleaved({"fast": side("fast", 1.0), "slow": side("slow", 2.0)}, 4)
    assert calls == ["fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast"]  # who goes first rotates
    assert out["fast"]["ratio_to_first"] == 1.0
    assert out["slow"]["value"] == "slow" and len(out["slow"]["wall"]) == 4
    assert out["slow"]["ratio_to_first"] == 0.5


def test_music_dit_snr_and_relative_error():
    import torch

    from bench.music_dit import _rel, _snr_db

    ref = torch.ones(1000)
    assert _snr_db(ref, ref) == float("inf")
    assert abs(_snr_db(ref, ref * 1.1) - 20.0) < 1e-4  # error 0.1 of the signal's amplitude: 20 dB
    assert abs(_rel(ref, ref * 1.01) - 0.01) < 1e-6


def test_report_renders_the_music_dit_section():
    from bench.report import render

    def dtype_row(speed, err):
        return {"speed_vs_float32": speed, "cpu_speed_vs_float32": speed, "rel_error": err, "median_s": 1.0}

    def steps(real_layers):
        return {"depths": [1, 3], "real_layers": real_layers, "real_params": 4.17e9, "real_weights_fp32": 16.68e9,
                "real_weights_bf16": 8.34e9, "real_weights_int8_estimate": 4.18e9, "created": "2026-11-29T20:25",
                "cpu": "AMD EPYC", "simd": ["avx512_bf16"], "load_average_start": [1.0, 1, 1],
                "load_average_end": [2.0, 1, 1],
                "by_depth": {"3": {"float32": dtype_row(1.0, 0.0), "bfloat16": dtype_row(2.5, 0.0067),
                                   "int8": dtype_row(4.5, 0.0052)}},
                "float32": {"per_block_s": 0.7, "fixed_s": 0.1, "real_step_s": 22.5},
                "bfloat16": {"per_block_s": 0.3, "fixed_s": 0.1, "real_step_s": 9.7},
                "int8": {"per_block_s": 0.18, "fixed_s": 0.0, "real_step_s": 5.8}}

    def run():
        return {"dit_layers": 2, "steps": 8, "seconds": 10.0, "latent_shape": [1, 250, 64],
                "float32": {"stages_s": {"text_encoder": 0.5, "transformer": 4.0}, "decode_s": 17.0, "wall_s": 22.0},
                "int8": {"stages_s": {"transformer": 1.0}, "latent_snr_db": 45.5, "wave_snr_db": 52.9},
                "bfloat16": {"stages_s": {"transformer": 2.0}, "latent_snr_db": 35.6, "wave_snr_db": 39.7}}

    md = {"ace-steps": steps(32), "sa3-steps": steps(24), "ace-run": run(), "sa3-run": run(),
          "offload": {"block_bytes_fp32": 5.09e8, "non_block_bytes_fp32": 3.99e8, "real_dit_bytes_fp32": 16.68e9,
                      "layers": 2, "plain_s": 1.8, "model_vs_plain": 1.01, "model_cpu_vs_plain": 1.0,
                      "group_vs_plain": 1.02, "group_cpu_vs_plain": 1.01, "times": {"group": {"group": [1] * 5}}},
          "sa3-window": {"hop": 4096, "rows": [{"seconds": 10.0, "latents": 108, "covers_s": 10.03}],
                         "decode_10s_s": 35.0}}
    text = render({"runs": [], "models": {}, "sections": {"music-dit": md}})
    assert "**int8 DiT**" in text and "4.50x faster than float32" in text and "45.5 dB" in text
    assert "| int8 | 0.180 s | 0.000 s | **5.8 s** | 4.50x (CPU time 4.50x) | 0.0052 | 4.18 GB |" in text
    assert "10 s -> 108 latents (10.03 s)" in text and "not adopted" in text
    assert "**16.68 GB** in float32" in text and "908 MB-1.42 GB" in text


def test_report_renders_the_streaming_section_and_models_that_do_not_stream_yet():
    from bench.report import render, summary_rows

    music = {"streams": True, "what": "10 s, guidance 3", "dtype": "int8", "plain": {"median_s": 40.0},
             "streamed": {"median_s": 41.0}, "first_audio": {"median_s": 5.0}, "first_share": 0.122,
             "first_target": "<= 35%", "first_met": True, "overhead": 0.025, "overhead_inside": 0.031,
             "overhead_target": "<= 5%", "overhead_met": True, "pieces": 6, "same_output": True,
             "estimate": {"calibrated_first_audio_s": 4.5, "calibrated_seconds": 39.0}}
    section = {"created": "2025-01-01T00:00:00+00:00", "mode": "quick", "tiny": False,
               "rows": {"mms-tts-eng": {"streams": False, "what": "six sentences", "note": "does not stream"},
                        "musicgen-small": music}}
    results = {"runs": [], "models": {}, "sections": {"streaming": section}}
    rows = summary_rows(results)
    assert ("musicgen-small: time to first audio / whole run (10 s, guidance 3, int8)", "12.2 %", "<= 35%", "met",
            "quick, 2025-01-01T00:00") in rows
    assert not any(r[0].startswith("mms-tts-eng") for r in rows)  # nothing measured, no target row
    text = render(results)
    assert "| mms-tts-eng | six sentences | – | – | – | does not stream |" in text
    assert "**2.5 %** (3.1 % inside) (target <= 5%: met) | 6 | yes | 4.50 s / 39.00 s |" in text


def test_the_streaming_section_builds_each_streaming_model_with_its_companions():
    from bench.streaming import STREAM_CASES, streaming_repos

    repos = streaming_repos()
    assert [case.repo for case in STREAM_CASES if case.repo in repos] == [case.repo for case in STREAM_CASES]
    assert "eustlb/pocket-tts-audio-tokenizer" in repos  # Pocket TTS's codec, a repo of its own


def test_report_renders_auto_precision_against_the_fastest_run():
    from bench.report import render, summary_rows

    row = {"what": "5 s, guidance 3", "published": "int8", "auto": "int8", "fastest": "int8", "gap": 0.0,
           "target": "<= 5%", "met": True, "rtf": {"float32": 4.1, "bfloat16": 3.2, "int8": 1.9},
           "probe": {"seconds": {"float32": 0.0123, "bfloat16": 0.0081, "int8": 0.0042}, "elapsed_s": 1.3}}
    section = {"created": "2025-01-01T00:00:00+00:00", "mode": "quick", "tiny": False,
               "machine": {"cpu": "AMD EPYC", "simd": ["avx2", "avx512_bf16"]}, "rows": {"musicgen-small": row}}
    results = {"runs": [], "models": {}, "sections": {"precision-auto": section}}
    assert ("musicgen-small: auto's precision on this CPU (int8) vs the fastest measured (int8)", "0.0 %", "<= 5%",
            "met", "quick, 2025-01-01T00:00") in summary_rows(results)
    text = render(results)
    assert "AMD EPYC (avx2, avx512_bf16)" in text
    assert ("| musicgen-small | 5 s, guidance 3 | 4.10 | 3.20 | 1.90 | 12.30 ms / 8.10 ms / 4.20 ms (1.3 s) | int8 | "
            "int8 | int8 | **0.0 %** (target <= 5%: met) |") in text


def test_report_renders_the_diffusion_transformers_probe_against_their_real_steps(monkeypatch):
    from bench.precision_auto import merged, precision_repos, selected
    from bench.report import render, summary_rows

    music = {"what": "5 s, guidance 3", "published": "int8", "auto": "int8", "fastest": "int8", "gap": 0.0,
             "target": "<= 5%", "met": True, "rtf": {"float32": 4.1, "bfloat16": 3.2, "int8": 1.9},
             "probe": {"seconds": {"float32": 0.0123, "bfloat16": 0.0081, "int8": 0.0042}, "elapsed_s": 1.3}}
    dit = {"kind": "dit-step", "what": "one Stable Audio 3 medium DiT block, a 10 s step", "published": "float32",
           "auto": "float32", "fastest": "float32", "gap": 0.0, "target": "<= 5%", "met": True,
           "step_s": {"float32": 0.355, "bfloat16": 1.272},
           "probe": {"rows": 344, "seconds": {"float32": 0.8587, "bfloat16": 3.8064}, "elapsed_s": 6.8},
           "probe_at_decoder_rows": {"rows": 2, "auto": "bfloat16", "gap": 1.272 / 0.355 - 1}}
    earlier = {"created": "2025-01-01T00:00:00+00:00", "rows": {"musicgen-small": music}}
    # A run of the DiT case alone (BENCH_PRECISION) keeps the other rows measured on this CPU, each dated.
    rows = merged(earlier, {"sa3-dit": dit}, "2025-02-02T00:00:00+00:00")
    assert list(rows) == ["musicgen-small", "sa3-dit"]
    assert rows["musicgen-small"]["created"].startswith("2025-01-01") and rows["sa3-dit"]["created"] \
        .startswith("2025-02-02")
    section = {"created": "2025-02-02T00:00:00+00:00", "mode": "quick", "tiny": False,
               "machine": {"cpu": "AMD EPYC", "simd": ["avx2"]}, "rows": rows}
    results = {"runs": [], "models": {}, "sections": {"precision-auto": section}}
    text = render(results)
    assert "| musicgen-small (2025-01-01 00:00) | 5 s, guidance 3 | 4.10 | 3.20 | 1.90 |" in text
    assert ("| sa3-dit | one Stable Audio 3 medium DiT block, a 10 s step | 0.355 s | 1.272 s | – | "
            "0.859 s / 3.806 s / – (344 rows, 6.8 s) | float32 | float32 | **0.0 %** (target <= 5%: met) | "
            "bfloat16: 258.3 % slower than the fastest |") in text
    assert ("sa3-dit: auto's precision on this CPU (float32) vs the fastest measured (float32)", "0.0 %", "<= 5%",
            "met", "quick, 2025-02-02T00:00") in summary_rows(results)
    assert ("musicgen-small: auto's precision on this CPU (int8) vs the fastest measured (int8)", "0.0 %", "<= 5%",
            "met", "quick, 2025-01-01T00:00") in summary_rows(results)
    monkeypatch.setenv("BENCH_PRECISION", "sa3-dit")
    assert selected() == {"sa3-dit"} and precision_repos() == []  # a DiT case builds its block itself
    monkeypatch.setenv("BENCH_PRECISION", "sa3")
    with pytest.raises(SystemExit, match="sa3"):
        selected()


def test_report_renders_eager_against_compiled_with_the_compile_times():
    from bench.report import render, summary_rows

    int8 = {"rtf": {"eager": 1.8, "compiled": 1.55}, "speedup": 1.8 / 1.55, "compile_first_s": 70.1,
            "compile_second_s": 14.7, "second_compile_share": 14.7 / 15.5, "compile_target": "<= 10%",
            "compile_met": False, "same_audio": False, "max_sample_diff": 0.0123, "compiled": True}
    section = {"created": "2025-01-01T00:00:00+00:00", "mode": "quick", "tiny": False,
               "machine": {"cpu": "AMD EPYC", "simd": ["avx2"]},
               "rows": {"musicgen-small": {"what": "5 s, guidance 3", "rows": {"int8": int8}, "rtf_target": "<= 1.0"}}}
    results = {"runs": [], "models": {}, "sections": {"compiled": section}}
    rows = summary_rows(results)
    assert ("musicgen-small: real-time factor in its auto precision (int8, compiled; 5 s, guidance 3)", "1.55",
            "<= 1.0", "**not met**", "quick, 2025-01-01T00:00") in rows
    assert ("musicgen-small: a second process's compile / a 10 s generation (int8)", "94.8 %", "<= 10%",
            "**not met**", "quick, 2025-01-01T00:00") in rows
    text = render(results)
    assert "AMD EPYC (avx2)" in text
    assert ("| musicgen-small (5 s, guidance 3) | int8 | 1.80 | 1.55 | 1.16x | 70.1 s | 14.7 s | **94.8 %** (target "
            "<= 10%: **not met**) | no (max sample difference 0.0123) |") in text  # no idle preparation timed apart
    int8.update(prepare_second_s=1.8, second_share_with_prepare=(14.7 + 1.8) / 15.5)
    assert "**not met**) | 1.8 s (106.5 %) | no (max sample difference 0.0123) |" in render(results)
    del int8["prepare_second_s"], int8["second_share_with_prepare"]
    # A case measured in an earlier run keeps its row, dated; a case without an RTF target has no RTF summary row.
    from bench.compiled import merged_rows

    bark_int8 = {**int8, "rtf": {"eager": 7.0, "compiled": 6.0}, "speedup": 7 / 6}
    bark = {"what": "one 5 s chunk", "rows": {"int8": bark_int8}, "rtf_target": None}
    section["rows"] = merged_rows(section, {"bark-small": bark}, "2025-02-02T00:00:00+00:00")
    section["created"] = "2025-02-02T00:00:00+00:00"
    assert "| musicgen-small (5 s, guidance 3; 2025-01-01 00:00) | int8 | 1.80 | 1.55 |" in render(results)
    assert "| bark-small (one 5 s chunk) | int8 | 7.00 | 6.00 | 1.17x |" in render(results)
    rows = summary_rows(results)
    assert not any(row[0].startswith("bark-small: real-time factor") for row in rows)
    assert ("musicgen-small: a second process's compile / a 10 s generation (int8)", "94.8 %", "<= 10%",
            "**not met**", "quick, 2025-01-01T00:00") in rows
    # A precision measured alone (BENCH_COMPILED_PRECISIONS) joins its case; the case's other precisions keep theirs.
    float32 = {**int8, "rtf": {"eager": 4.0, "compiled": 3.5}, "speedup": 4 / 3.5}
    musicgen = {**section["rows"]["musicgen-small"], "rows": {"float32": float32}}
    section["rows"] = merged_rows(section, {"musicgen-small": musicgen}, "2025-03-03T00:00:00+00:00")
    section["created"] = "2025-03-03T00:00:00+00:00"
    text = render(results)
    assert "| musicgen-small (5 s, guidance 3; 2025-01-01 00:00) | int8 | 1.80 | 1.55 |" in text
    assert "| musicgen-small (5 s, guidance 3) | float32 | 4.00 | 3.50 | 1.14x |" in text
    assert "| bark-small (one 5 s chunk; 2025-02-02 00:00) | int8 | 7.00 | 6.00 | 1.17x |" in text
    assert list(section["rows"]["musicgen-small"]["rows"]) == ["int8", "float32"]
    assert section["rows"]["musicgen-small"]["fastest"] == "int8"
    assert ("musicgen-small: a second process's compile / a 10 s generation (int8)", "94.8 %", "<= 10%",
            "**not met**", "quick, 2025-01-01T00:00") in summary_rows(results)


def test_the_rtf_floor_counts_a_steps_bytes_and_renders_against_the_target():
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    from bench.report import render, summary_rows
    from bench.rtf_floor import step_bytes

    config = MusicgenConfig(text_encoder=T5Config(d_model=8).to_dict(),
                            audio_encoder=EncodecConfig(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4]).to_dict(),
                            decoder=MusicgenDecoderConfig(hidden_size=64, num_hidden_layers=2, ffn_dim=256,
                                                          num_codebooks=4, vocab_size=128).to_dict())
    need = step_bytes(config, "int8", seconds=1.0)
    # 2 layers x (self-attention 4, cross query and output 2: 64 x 64 each; feed-forward 2 x 64 x 256) + 4 heads,
    # one byte each; the cache: 2 layers x keys and values x 2 rows (guidance) x 64 x (the average window + 12 text
    # tokens), float32. The 54 steps after the start token (50 frames, 4 delays) sit at positions 1-54: windows of
    # 16 for positions 1-15, 32 for 16-31, 48 for 32-47, 64 for 48-54.
    window = (15 * 16 + 16 * 32 + 16 * 48 + 7 * 64) / 54
    assert need["frame_rate"] == 50
    assert need["weights"] == 2 * (6 * 64 * 64 + 2 * 64 * 256) + 4 * 64 * 128
    assert need["cache"] == round(2 * 2 * 2 * 64 * (window + 12) * 4)
    assert abs(step_bytes(config, "bfloat16", seconds=1.0)["cache"] - need["cache"] / 2) <= 1
    row = {"weights": 360_710_144, "cache": 104_988_672, "frame_rate": 50, "step_s": 0.031, "rtf": 1.55,
           "weights_only_rtf": 1.2}
    section = {"repo": "facebook/musicgen-small", "seconds": 5.0, "bandwidth": 15e9, "threads": 2,
               "rows": {"int8": row}, "created": "2025-01-01T00:00:00+00:00", "mode": "quick", "tiny": False,
               "machine": {"cpu": "AMD EPYC", "simd": ["avx2"]}}
    results = {"runs": [], "models": {}, "sections": {"rtf-floor": section}}
    text = render(results)
    assert "measured here at **15.0 GB/s** (2 threads)" in text
    assert "| int8 | 361 MB | 105 MB | 31.0 ms | **1.55** | 1.20 |" in text
    assert ("musicgen-small: the RTF memory bandwidth allows on this CPU (int8, 15.0 GB/s; the floor under the "
            "real-time target)", "1.55", "<= 1.0", "**not met**", "quick, 2025-01-01T00:00") in summary_rows(results)


def test_the_compiled_bench_runs_the_precisions_asked_for(monkeypatch):
    from bench.compiled import selected_precisions

    assert selected_precisions("quick") == ("int8", "bfloat16")
    monkeypatch.setenv("BENCH_COMPILED_PRECISIONS", "float32, int8")
    assert selected_precisions("quick") == ("int8", "float32")
    monkeypatch.setenv("BENCH_COMPILED_PRECISIONS", "int4")
    with pytest.raises(SystemExit, match="int4"):
        selected_precisions("quick")


def test_a_run_on_another_cpu_keeps_the_figures_of_the_ones_before():
    from bench.main import with_other_machines
    from bench.report import render, summary_rows

    avx512 = {"cpu": "AMD EPYC", "simd": ["avx2", "avx512f", "avx512_bf16"]}
    avx2 = {"cpu": "AMD EPYC", "simd": ["avx2"]}

    def auto_section(machine, created, rtf_int8):
        row = {"what": "5 s", "published": "int8", "auto": "int8", "fastest": "int8", "gap": 0.0, "target": "<= 5%",
               "met": True, "rtf": {"float32": 4.0, "bfloat16": 3.0, "int8": rtf_int8},
               "probe": {"seconds": {"float32": 0.01, "bfloat16": 0.008, "int8": 0.004}, "elapsed_s": 1.0}}
        return {"created": created, "mode": "quick", "tiny": False, "machine": machine,
                "rows": {"musicgen-small": row}}

    first = with_other_machines(None, auto_section(avx512, "2025-01-01T00:00:00+00:00", 1.9))
    assert "other_machines" not in first
    second = with_other_machines(first, auto_section(avx2, "2025-02-02T00:00:00+00:00", 2.5))
    assert [m["machine"] for m in second["other_machines"]] == [avx512]
    # The same CPU again replaces its own figures and keeps the other's.
    third = with_other_machines(second, auto_section(avx2, "2025-03-03T00:00:00+00:00", 2.4))
    assert [m["machine"] for m in third["other_machines"]] == [avx512]
    # Back on the first CPU: its earlier figures are found among the others' and merged with the new run's.
    from bench.main import this_machines

    assert this_machines(third, avx512)["created"] == "2025-01-01T00:00:00+00:00"
    assert this_machines(third, avx2) is third and this_machines(None, avx2) is None
    assert this_machines(third, {"cpu": "Intel Xeon", "simd": ["avx2"]}) is None
    text = render({"runs": [], "models": {}, "sections": {"precision-auto": third}})
    assert "AMD EPYC (avx2)" in text
    assert "AMD EPYC (avx2, avx512f, avx512_bf16)" in text
    assert "| 4.00 | 3.00 | 2.40 |" in text and "| 4.00 | 3.00 | 1.90 |" in text
    rows = summary_rows({"runs": [], "models": {}, "sections": {"precision-auto": third}})
    assert [row[0] for row in rows] == [
        "musicgen-small: auto's precision on this CPU (int8) vs the fastest measured (int8)",
        "musicgen-small: auto's precision on AMD EPYC (avx2, avx512f, avx512_bf16) (int8) vs the fastest measured "
        "(int8)"]
