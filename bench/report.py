"""docs/benchmarks.md from results.json: machine, versions, settings, one table per section, targets met or not."""

from __future__ import annotations

from typing import Any

from bench.reference import musicgen_steps
from bench.runner import AUTOREGRESSIVE


def _s(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f} s"


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _x(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _gb(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _met(flag: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "–"}[flag]


def summary_rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    """(figure, value, target, met, when) for every target-bearing figure in the results."""
    rows = []
    models = results.get("models", {})
    for name, m in models.items():
        c = m["compare"]
        when = f"{m['mode']}, {m['created'][:16]}"
        rows.append((f"{name}: studio speed vs reference, same settings and float32 (reference/studio)",
                     _x(c["ratio"]), c["target"], _met(c["met"]), when))
        d = m.get("compare_default")
        if d is not None and (d.get("dtype") != "float32" or name in AUTOREGRESSIVE):
            rows.append((f"{name}: studio's default on this machine ({d['dtype']}) vs reference float32",
                         _x(d["ratio"]), d["target"], _met(d["met"]), when))
        same = m.get("compare_default_same")
        if same is not None:
            rows.append((f"{name}: studio's default ({same['dtype']}) vs the pipeline alone over the same "
                         f"{same['dtype']} modules", _x(same["ratio"]), same["target"], _met(same["met"]), when))
        w = m.get("weights_reduction")
        if w is not None and w.get("met") is not None:
            rows.append((f"{name}: weight memory float32 / {w['dtype']}", _x(w["ratio"]), w["target"],
                         _met(w["met"]), when))
        e = m["estimate"]
        n = len(e["runs"]) or 3
        rows.append((f"{name}: time estimate error (median of {n} length{'s' if n > 1 else ''})",
                     _pct(e["time_error_median"]), e["time_target"].replace("0.15", "15 %"), _met(e["time_met"]), when))
        rows.append((f"{name}: memory estimate error (median of {n} length{'s' if n > 1 else ''})",
                     _pct(e["memory_error_median"]),
                     e["memory_target"].replace("0.25", "25 %"), _met(e["memory_met"]), when))
        if "warm_overhead" in m:
            o = m["warm_overhead"]
            rows.append((f"{name}: warm-request overhead (studio/reference - 1)", _pct(o["overhead"]), o["target"],
                         _met(o["met"]), when))
    ext = results.get("sections", {}).get("musicgen-extend")
    if ext:
        rows.append((f"musicgen-small: extension's overhead over the sum of its windows (studio/sum - 1, "
                     f"{ext['dtype']})", _pct(ext["overhead"]), ext["target"], _met(ext["met"]), _when(ext)))
    streaming = results.get("sections", {}).get("streaming")
    for name, row in (streaming or {}).get("rows", {}).items():
        if not row.get("streams"):
            continue
        when = _when(streaming)
        rows.append((f"{name}: time to first audio / whole run ({row['what']}, {row['dtype']})",
                     _pct(row["first_share"]), row["first_target"], _met(row["first_met"]), when))
        rows.append((f"{name}: streaming's overhead on the whole run (listened / not - 1)", _pct(row["overhead"]),
                     row["overhead_target"], _met(row["overhead_met"]), when))
    auto = results.get("sections", {}).get("precision-auto")
    for section in _machines(auto):
        where = "this CPU" if section is auto else _builds_and_cpu(section)[1]
        for name, row in section.get("rows", {}).items():
            rows.append((f"{name}: auto's precision on {where} ({row['auto']}) vs the fastest measured "
                         f"({row['fastest']})", _pct(row["gap"]), row["target"], _met(row["met"]),
                         _when({**section, "created": row.get("created") or section.get("created", "")})))
    compiled = results.get("sections", {}).get("compiled")
    rows += _compiled_summary(compiled, auto)
    for section in _machines(results.get("sections", {}).get("rtf-floor")):
        where = "this CPU" if section is results["sections"]["rtf-floor"] else _builds_and_cpu(section)[1]
        floor = section["rows"].get("int8")
        if floor:
            rows.append((f"{section['repo'].split('/')[-1]}: the RTF memory bandwidth allows on {where} (int8, "
                         f"{section['bandwidth'] / 1e9:.1f} GB/s; the floor under the real-time target)",
                         f"{floor['rtf']:.2f}", "<= 1.0", _met(floor["rtf"] <= 1.0), _when(section)))
    page = results.get("sections", {}).get("page-start")
    if page:
        rows.append(("page start: studio / bare Gradio app", _x(page["ratio"]), page["target"], _met(page["met"]),
                     page["created"][:16]))
    for name, c in results.get("catalog_memory", {}).items():
        rows.append((f"{name}: catalog weight bytes vs the real-size build", _pct(c["float32"]["catalog_error"]),
                     c["catalog_target"], _met(c["catalog_met"]), "headers"))
        if c.get("header_error") is not None:
            rows.append((f"{name}: header bytes vs loaded tensors", _pct(c["header_error"], 2), c["header_target"],
                         _met(c["header_met"]), "headers + load"))
    return rows


def render(results: dict) -> str:
    out: list[str] = []
    w = out.append
    tiny = results.get("tiny")
    w("# Benchmarks\n")
    w("Generated by `python -m bench` (bench/): do not edit by hand. "
      + ("**These figures come from tiny test checkpoints (`--tiny`): they only show that the bench works.**\n"
         if tiny else "Models are realistic-size random-weight builds of the published configs, "
                      "so they do the same arithmetic as the real ones.\n"))
    w("How to read it: **ratio = reference time / studio time**, so 1.00x is a tie and above 1.00x the studio is "
      "faster. Reference = a minimal script calling transformers/diffusers directly, as their docs show; studio = "
      "`Studio(...).manager.run(request)`; same model files, settings, seed, dtype (fp32) and torch threads, in one "
      "process. Runs are interleaved, alternating who goes first each round, after warm-ups; the ratio is the "
      "median of the per-round ratios (each round's two runs see the same machine load).\n")

    w("## Machine and versions\n")
    m, v = results.get("machine", {}), results.get("versions", {})
    w("| | |\n|---|---|")
    w(f"| CPU | {m.get('cpu')} ({m.get('cores')} cores, {m.get('logical_cpus')} logical; {', '.join(m.get('simd', []))}) |")
    w(f"| RAM | {_gb(m.get('ram_bytes'))} |")
    w(f"| OS | {m.get('os')} |")
    w(f"| Python / torch / transformers / diffusers / gradio | {v.get('python')} / {v.get('torch')} / "
      f"{v.get('transformers')} / {v.get('diffusers')} / {v.get('gradio')} |")
    w(f"| torch threads | {v.get('torch_threads')} (quantized engine {v.get('quantized_engine')}) |")
    w(f"| load average at start (last run) | {_fmt_load(m.get('load_average_at_start'))} |")
    st = results.get("settings", {})
    w(f"| bench settings | {st.get('device', 'cpu')}, {st.get('dtype', 'float32')}, torch threads "
      f"{st.get('torch_threads')}, OMP_WAIT_POLICY {st.get('omp_wait_policy', '?')}, nice {st.get('nice')}"
      + (f" (session group {st['autogroup_nice']})" if st.get("autogroup_nice") is not None else "") + " |")
    w("")
    w("The machine is shared: other jobs run beside the bench and can swing a run's time several-fold. The bench "
      "therefore runs at a raised priority (`--nice`, default -10 where allowed, for the process and, where the "
      "kernel groups processes by session, for its session group, without which nice does not count against other "
      "sessions' jobs; its subprocesses inherit it) and "
      "with `OMP_WAIT_POLICY=PASSIVE` for both sides (`--omp-wait-policy`): with the library default, torch's two "
      "threads spin at every barrier, and while another process holds a core a run takes several times longer "
      "(the cpu-wait-policy rows under Prototypes). It also "
      "records for every run how many cores other processes kept busy meanwhile (\"others' load\", from "
      "/proc/stat minus the bench's own CPU time), and compares interleaved runs. Absolute times vary between "
      "bench runs; ratios are the figures to compare.\n")

    w("## Runs\n")
    w("| when (UTC) | mode | ran | wall | checkpoint build | CPU | load average at start / end (1 min) |\n"
      "|---|---|---|---|---|---|---|")
    for r in results.get("runs", []):
        cpu = f"{r['cpu']} ({', '.join(r.get('simd') or [])})" if r.get("cpu") else "not recorded"
        start, end = r.get("load_average_at_start"), r.get("load_average_at_end")
        load = f"{start[0]:.1f} / {end[0]:.1f}" if start and end else (f"{start[0]:.1f} / –" if start else "–")
        w(f"| {r['created'][:16]} | {r['mode']}{' (tiny)' if r.get('tiny') else ''} | {', '.join(r.get('ran', []))}{' (' + r['note'] + ')' if r.get('note') else ''} "
          f"| {r['elapsed_s']:.0f} s | {r.get('checkpoints_s', 0):.0f} s | {cpu} | {load} |")
    cp = results.get("checkpoints", {})
    if cp:
        total = sum(c["seconds"] for c in cp.values())
        w(f"\nCheckpoints (built once into the bench cache, `{results.get('cache')}`, then reused): first build "
          f"{total:.0f} s in all; cache size {_gb(results.get('cache_bytes'))}.\n")
        w("| repo | build | size |\n|---|---|---|")
        for repo, c in cp.items():
            w(f"| {repo} | {c['seconds']:.0f} s | {_gb(c['bytes'])} |")
        w("")

    w("## Targets\n")
    w("| figure | value | target | | measured |\n|---|---|---|---|---|")
    for row in summary_rows(results):
        w("| " + " | ".join(row) + " |")
    w("")

    w("## Studio vs reference\n")
    w("| model | work | reference (median) | studio (median) | ratio | target | | ratio of minimums | CPU-time ratio "
      "| others' load (median / max) | same audio | rounds |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, e in results.get("models", {}).items():
        c = e["compare"]
        same = "yes" if c["same_output"] else (f"max diff {c['max_abs_difference']:.2g}"
                                               if c["max_abs_difference"] is not None else "–")
        if c.get("compared_after_s"):
            same += f" (after the {c['compared_after_s']:g} s clip)"
        loads = "–" if c.get("others_load_median") is None else \
            f"{c['others_load_median']:.1f} / {c['others_load_max']:.1f} cores"
        w(f"| {name} | {e['what']} | {_s(c['reference']['median_s'])} | {_s(c['studio']['median_s'])} | "
          f"**{_x(c['ratio'])}** | {c['target']} | {_met(c['met'])} | {_x(c.get('ratio_of_minimums'))} | "
          f"{_x(c['cpu_ratio'])} | {loads} | {same} | {c['studio']['n']} ({e['mode']}) |")
    w("")
    w("Ratio: median of the per-round ratios (the figure the target is checked on). Ratio of minimums: each "
      "side's fastest run, the least disturbed by other jobs. CPU-time ratio: over the process's CPU seconds. "
      "Same audio: the last reference and studio outputs of the same seed, compared sample by sample.\n")
    if "musicgen-continuation" in results.get("models", {}):
        c = results["models"]["musicgen-continuation"]["compare"]
        clip, new = c["settings"].get("audio"), c["settings"].get("duration")
        w(f"musicgen-continuation (issue 13): the studio runs `audio=<{clip}, a 32 kHz WAV file>`, duration {new:g}; "
          "the reference reads the same file with soundfile and calls `model.generate(**processor(text=[prompt]), "
          f"input_values=<the clip>, max_new_tokens={musicgen_steps(new)}, do_sample=True, guidance_scale="
          f"{c['settings'].get('guidance_scale'):g}, top_k={c['settings'].get('top_k')})`, float32. Both "
          "outputs start with the clip (the studio keeps the original there, the reference the codec's rendering "
          "of it), so they are compared after it. The estimate lengths are continuations after a text-only "
          "calibration run, so their error shows how well `PROMPT_FRAME_COST` counts a prompt.\n")

    _render_real_time(w, results.get("models", {}))

    w("### The studio's default on this machine\n")
    picks = ", ".join(f"{name} {e['compare_default']['dtype']}" for name, e in results.get("models", {}).items()
                      if e.get("compare_default"))
    w("What a user gets without touching Precision: `auto` picks per model and hardware (in this run: "
      f"{picks}). Same rounds as above, against the same float32 reference; the "
      "audio difference is what the precision costs at the same seed (sampling diverges once one token "
      "differs, so for int8 it is the size of a different take, not of noise; the teacher-forced logit "
      "agreement is under Prototypes).\n")
    w("| model | precision | reference (median) | studio default (median) | ratio | target | | audio vs float32 "
      "reference | weights float32 -> default | |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for name, e in results.get("models", {}).items():
        d = e.get("compare_default")
        if d is None:
            continue
        wr = e.get("weights_reduction")
        weights = "–" if wr is None else f"{_gb(wr['float32_bytes'])} -> {_gb(wr['default_bytes'])} ({_x(wr['ratio'])})"
        wmet = "–" if wr is None else f"{_met(wr['met'])} (target {wr['target']})"
        same = "identical" if d["same_output"] else (f"max diff {d['max_abs_difference']:.2g}"
                                                     if d["max_abs_difference"] is not None else "–")
        w(f"| {name} | {d['dtype']} | {_s(d['reference']['median_s'])} | {_s(d['studio']['median_s'])} | "
          f"**{_x(d['ratio'])}** | {d['target']} | {_met(d['met'])} | {same} | {weights} | {wmet} |")
    w("")
    same_rows = [(name, e["compare_default_same"]) for name, e in results.get("models", {}).items()
                 if e.get("compare_default_same")]
    if same_rows:
        w("Where the reference is built from the studio's modules (the large diffusion models), a second reference "
          "is built from the default studio's modules too: the pipeline class alone over the same int8 or bfloat16 "
          "tensors, in the same rounds. The ratio is then the studio's own cost or gain at its default precision, "
          "apart from what the precision gains.\n")
        w("| model | precision | pipeline alone (median) | studio default (median) | ratio | target | | audio |")
        w("|---|---|---|---|---|---|---|---|")
        for name, d in same_rows:
            audio = "identical" if d["same_output"] else (f"max diff {d['max_abs_difference']:.2g}"
                                                          if d["max_abs_difference"] is not None else "–")
            w(f"| {name} | {d['dtype']} | {_s(d['reference']['median_s'])} | {_s(d['studio']['median_s'])} | "
              f"**{_x(d['ratio'])}** | {d['target']} | {_met(d['met'])} | {audio} |")
        w("")

    w("## Estimate accuracy\n")
    w("Each model starts from a fresh calibration. Its first studio run (which also loads it) is the calibration "
      "run; then, for three other lengths, the studio's `estimate_run` predicts and the run follows. Time: "
      "predicted seconds vs the wall time of `manager.run`. Memory: the studio's `Estimate.bytes` (weights + "
      "working memory) vs the measured peak = growth of the process's RSS during the run (sampled every 5 ms, "
      "after `malloc_trim`) + the model's resident weight bytes.\n")
    w("| model | calibration run | lengths | time error (median) | | memory error (median) | |")
    w("|---|---|---|---|---|---|---|")
    for name, e in results.get("models", {}).items():
        est, cal = e["estimate"], e["calibration"]
        lengths = ", ".join(_settings(r) for r in est["runs"])
        w(f"| {name} | {_settings(cal)}: load {_s(cal['load_s'], 1)}, compute {_s(cal['compute_s'], 1)} | {lengths} | "
          f"{_pct(est['time_error_median'])} | {_met(est['time_met'])} | {_pct(est['memory_error_median'])} | "
          f"{_met(est['memory_met'])} |")
    w("")
    w("<details><summary>Every estimate run</summary>\n")
    w("| model | settings | predicted | actual | error | predicted bytes (weights + working) | measured peak | error | "
      "studio's own peak |")
    w("|---|---|---|---|---|---|---|---|---|")
    for name, e in results.get("models", {}).items():
        for r in e["estimate"]["runs"]:
            w(f"| {name} | {_settings(r)} | {_s(r['predicted_s'])} | {_s(r['wall_s'])} | {_pct(r['time_error'])} | "
              f"{_gb(r['predicted_bytes'])} ({_gb(r['predicted_weights_bytes'])} + {_gb(r['predicted_working_bytes'])}) | "
              f"{_gb(r['peak_bytes'])} | {_pct(r['memory_error'])} | {_gb(r.get('studio_peak_bytes'))} |")
    w("\n</details>\n")

    w("## Overheads\n")
    for name, e in results.get("models", {}).items():
        if "warm_overhead" not in e:
            continue
        o = e["warm_overhead"]
        w(f"Warm request on {name} (model resident, {o['studio']['n']} interleaved rounds): reference "
          f"{_s(o['reference']['median_s'], 3)}, studio {_s(o['studio']['median_s'], 3)}; overhead "
          f"(studio/reference - 1, median of the rounds) **{_pct(o['overhead'])}** (target {o['target']}: "
          f"{_met(o['met'])}); from the medians {_pct(o['overhead_of_medians'])}; over CPU time "
          f"{_pct(o['overhead_cpu'])}.\n")
    for name, render_section in (("musicgen-extend", _render_extension), ("musicgen-prompt-cost", _render_prompt_cost),
                                 ("streaming", _render_streaming), ("precision-auto", _render_precision_auto),
                                 ("compiled", _render_compiled), ("rtf-floor", _render_rtf_floor)):
        for section in _machines(results.get("sections", {}).get(name)):
            render_section(w, section)
    page = results.get("sections", {}).get("page-start")
    if page:
        w(f"Page start (`python app.py --port P --device cpu` to the first HTTP 200 on `/`, vs a bare Gradio Blocks "
          f"app with three empty tabs launched the same way; {page['studio']['n']} interleaved rounds after a "
          f"warm-up each): studio {_s(page['studio']['median_s'])}, bare {_s(page['bare']['median_s'])}, ratio "
          f"**{_x(page['ratio'])}** (target {page['target']}: {_met(page['met'])}).\n")

    cm = results.get("catalog_memory", {})
    if cm:
        w("## Catalog memory vs the real-size builds\n")
        w("Catalog = the published parameter count (`ModelSpec.parameters`) x bytes per parameter, what the studio shows "
          "before a model is downloaded. Header = the studio's exact figure from the safetensors headers "
          "(`studio.weights`), used once the files are cached. Loaded = the tensors' bytes after loading.\n")
        w("| model | catalog params | build params | fp32 catalog | fp32 header | error | | fp16 catalog | fp16 header | "
          "loaded fp32 | header vs loaded |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, c in cm.items():
            w(f"| {name} | {c['catalog_parameters'] / 1e6:.0f}M | {c['build_parameters'] / 1e6:.1f}M | "
              f"{_gb(c['float32']['catalog_bytes'])} | {_gb(c['float32']['header_bytes'])} | "
              f"{_pct(c['float32']['catalog_error'])} | {_met(c['catalog_met'])} | {_gb(c['float16']['catalog_bytes'])} | "
              f"{_gb(c['float16']['header_bytes'])} | {_gb(c.get('loaded_bytes_float32'))} | "
              f"{_pct(c.get('header_error'), 2)} |")
        w("")

    plan = results.get("sections", {}).get("ace-xl-plan")
    if plan:
        _render_plan(w, plan)
    music = results.get("sections", {}).get("music-dit")
    if music:
        _render_music_dit(w, music)

    proto = results.get("sections", {}).get("prototypes")
    if proto:
        w("## Prototypes of product changes\n")
        w(proto.get("note", ""))
        w("")
        w("| model | change | baseline | prototype | ratio (baseline/prototype) | weights | output |")
        w("|---|---|---|---|---|---|---|")
        for row in proto.get("rows", []):
            w(f"| {row['model']} | {row['change']} | {_s(row.get('baseline_s'))} | {_s(row.get('prototype_s'))} | "
              f"{_x(row.get('ratio'))} | {row.get('weights', '–')} | {row.get('quality', '–')} |")
        for name, error in proto.get("errors", {}).items():
            w(f"\n- {name} failed: `{error[:300]}`")
        w("")

    w("## How to run\n")
    w("```\npython -m bench --quick            # mms-tts-eng, musicgen-small, audioldm2, page start, catalog check "
      "(about 6 min here once the checkpoints are built)\npython -m bench --quick --only bark-small,bark-int8   "
      "# slow models and prototypes by name\npython -m bench                    # full: every model, 5+ rounds, "
      "longer work, all prototypes (hours on 2 cores)\npython -m bench --tiny --quick --only mms-tts-eng "
      "--out /tmp/r.json   # smoke test on tiny checkpoints\n"
      "python -m bench --quick --only musicgen-continuation,musicgen-extend,musicgen-prompt-cost   # issue 13, "
      "audio in (about an hour here beside about one core of other jobs)\n"
      "nice -n 10 python -m bench.music_dit ace-steps sa3-steps ace-run sa3-run ace-decode sa3-decode offload "
      "sa3-window   # issue 14 through diffusers alone (about 30 min here; under 10 GB resident)\n"
      "python -m bench --quick --only streaming   # issue 16: first audio and streaming's overhead\n"
      "python -m bench --quick --only ace-step-xl-turbo,ace-xl-plan   # issue 14 through the studio (about 9 min); "
      "the cases ACE_STEP and STABLE_AUDIO_3 (bench/cases.py) join CASES once their adapters are on main\n```\n")
    w("The first run builds the realistic-size checkpoints into `bench/cache/` (about 1 minute, 13.8 GB, git-ignored; "
      "`--cache DIR` puts them elsewhere). Results of models not run are kept from the previous `bench/results.json`, "
      "each with its own date and mode; `--fresh` starts over.\n")

    errors = results.get("errors", {})
    if errors:
        w("## Errors\n")
        for name, text in errors.items():
            last = text.strip().splitlines()[-1] if text.strip() else ""
            w(f"- {name}: `{last[:300]}`")
        w("")
    return "\n".join(out) + "\n"


def _render_real_time(w, models: dict) -> None:
    """Real-time factor of the compared runs (seconds of compute per second of audio) and the precisions weighed."""
    rows = [(name, e) for name, e in models.items() if e["compare"].get("real_time_factor")]
    if not rows:
        return
    w("### Real-time factor\n")
    w("Seconds of the run per second of audio made, from each side's median compared run (below 1.00 is faster "
      "than real time). Where a case weighs other precisions, each ran in its own studio in the same rounds; "
      "ratio = the float32 reference's time / that studio's.\n")
    w("| model | work | float32 RTF | default | default RTF | other precisions: ratio (RTF) |\n|---|---|---|---|---|---|")
    for name, e in rows:
        d = e.get("compare_default") or {}
        others = ", ".join(f"{p}: {_x(c['ratio'])} (RTF {_num(c.get('real_time_factor'))})"
                           for p, c in (e.get("compare_precisions") or {}).items()) or "–"
        w(f"| {name} | {e['what']} | {_num(e['compare']['real_time_factor'])} | {d.get('dtype', '–')} | "
          f"{_num(d.get('real_time_factor'))} | {others} |")
    w("")


def same_machine(a: dict | None, b: dict | None) -> bool:
    """Whether two machine_info() describe one kind of CPU: the same model name and vector flags."""
    def kind(m):
        return ((m or {}).get("cpu"), tuple((m or {}).get("simd") or ()))

    return kind(a) == kind(b)


def _machines(section: dict | None) -> list[dict]:
    """A machine-bound section and the figures it keeps of other CPUs (bench.main.with_other_machines)."""
    return [section, *section.get("other_machines", [])] if section else []


def _compiled_summary(compiled: dict | None, auto: dict | None) -> list[tuple[str, str, str, str, str]]:
    """The compiled section's target rows, for each CPU it holds figures of; auto's precision is that CPU's."""
    rows = []
    for section in _machines(compiled):
        where = "" if section is compiled else f" on {_builds_and_cpu(section)[1]}"
        autos = next((a for a in _machines(auto) if same_machine(a.get("machine"), section.get("machine"))), {})
        for name, row in section.get("rows", {}).items():
            auto_name = autos.get("rows", {}).get(name, {}).get("auto", "int8")

            def when(r: dict) -> str:
                made = r.get("created") or row.get("created") or section.get("created", "")
                return _when({**section, "created": made})

            if auto_name in row["rows"] and row.get("rtf_target"):
                r = row["rows"][auto_name]
                best = min(v for v in r["rtf"].values() if v is not None)
                rows.append((f"{name}{where}: real-time factor in its auto precision ({auto_name}, "
                             f"{'compiled' if best == r['rtf'].get('compiled') else 'eager'}; {row['what']})",
                             f"{best:.2f}", row["rtf_target"], _met(best <= 1.0), when(r)))
            for precision, r in row["rows"].items():
                rows.append((f"{name}{where}: a second process's compile / a 10 s generation ({precision})",
                             _pct(r["second_compile_share"]), r["compile_target"], _met(r["compile_met"]), when(r)))
    return rows


def _row_date(row: dict, section: dict) -> str:
    """' (2025-01-01 00:00)' for a row measured by an earlier run than its section's, else ''."""
    return _earlier(row.get("created"), section, " ({})")


def _earlier(made: str | None, section: dict, form: str) -> str:
    """`form` with the date `made` in it, if a run earlier than the section's made it; else ''."""
    return form.format(made[:16].replace("T", " ")) if made and made != section.get("created") else ""


def _when(entry: dict) -> str:
    return f"{entry.get('mode', '?')}, {entry.get('created', '')[:16]}"


def _render_extension(w, ext: dict) -> None:
    windows = " + ".join(f"({x['prompt_s']:g} s heard, {x['new_s']:g} s new)" for x in ext["windows"])
    geometry = ("the product's windows" if ext.get("product_geometry")
                else "a scaled geometry (the product's arithmetic with shorter windows)")
    diff = ext.get("max_abs_difference_after_last_join")
    same = "identical" if ext.get("same_output") else ("–" if diff is None else f"max diff {diff:.2g}")
    per_window = ext.get("per_window_s") or []
    spread = ", ".join(" + ".join(f"{s:.1f}" for s in r) + " s" for r in per_window)
    loads = "–" if ext.get("others_load_median") is None else \
        f"{ext['others_load_median']:.1f} / {ext['others_load_max']:.1f} cores"
    w(f"MusicGen extension on musicgen-small ({ext['dtype']}; {ext['clip_s']:g} s clip extended to "
      f"{ext['extend_to']:g} s in {len(ext['windows'])} windows of at most {ext['window_s']:g} s hearing "
      f"{ext['context_s']:g} s, {geometry}: {windows}; {ext['studio']['n']} interleaved round"
      f"{'s' if ext['studio']['n'] > 1 else ''}): studio `manager.run` {_s(ext['studio']['median_s'])}, the same "
      f"windows' `model.generate()` calls summed {_s(ext['windows_sum']['median_s'])} (per window: {spread}); "
      f"overhead (studio/sum - 1, median of the rounds) **{_pct(ext['overhead'])}** (target {ext['target']}: "
      f"{_met(ext['met'])}); over CPU time {_pct(ext['overhead_cpu'])}; inside the studio's own runs, its "
      f"time outside its generate() calls {_pct(ext.get('outside_generate'), 2)} of them (one run holds both, so other "
      f"jobs cannot tilt it); audio after the last join: {same}; "
      f"others' load (median / max) {loads}. Both sides run the studio's own loaded model (borrowed through a "
      "lease), the studio's window plan, the same clip, sampling arguments and seed (the studio adds its per-token "
      "progress callback); the direct side times only its "
      "generate() calls (prompt encoding, prefill, sampling, decoding), the studio the whole request.\n")


def _render_streaming(w, section: dict) -> None:
    builds = "tiny checkpoints: a smoke run, the figures mean nothing" if section.get("tiny") else "realistic builds"
    w(f"Streaming ({_when(section)}; {builds}; the studio's default precision): each request run with nobody "
      "listening (`manager.run`) and read through `studio.streaming.stream` (as the page and /v1/audio/speech read "
      "it), in interleaved rounds. First audio: the first piece's arrival after the streamed run starts; overhead: "
      "the streamed run's whole time over the plain one's, paired per round; in brackets, inside the streamed runs, "
      "the adapter's own streaming work (MusicGen's windowed decodes) over the rest of the run, which other jobs on "
      "the machine cannot tilt.\n")
    w("| model | work | precision | whole, plain | whole, streamed | first audio | first / whole | overhead | "
      "pieces | same file | estimate: first audio / whole |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in section.get("rows", {}).items():
        if not row.get("streams"):
            w(f"| {name} | {row['what']} | – | – | – | {row.get('note', 'does not stream')} | – | – | – | – | – |")
            continue
        inside = "" if row.get("overhead_inside") is None else f" ({_pct(row['overhead_inside'])} inside)"
        est = row.get("estimate", {})
        guess = (f"{_s(est.get('calibrated_first_audio_s'))} / {_s(est.get('calibrated_seconds'))}"
                 if est.get("calibrated_first_audio_s") is not None else "–")
        w(f"| {name} | {row['what']} | {row['dtype']} | {_s(row['plain']['median_s'])} | "
          f"{_s(row['streamed']['median_s'])} | {_s(row['first_audio']['median_s'])} | "
          f"**{_pct(row['first_share'])}** (target {row['first_target']}: {_met(row['first_met'])}) | "
          f"**{_pct(row['overhead'])}**{inside} (target {row['overhead_target']}: {_met(row['overhead_met'])}) | "
          f"{row['pieces']} | {'yes' if row['same_output'] else 'no'} | {guess} |")
    w("")


def _builds_and_cpu(section: dict) -> tuple[str, str]:
    """A machine-bound section's heading parts: which builds it ran on, and the CPU with its vector flags."""
    builds = "tiny checkpoints: a smoke run, the figures mean nothing" if section.get("tiny") else "realistic builds"
    machine = section.get("machine") or {}
    return builds, f"{machine.get('cpu') or 'this CPU'} ({', '.join(machine.get('simd') or ()) or 'no flags read'})"


def _render_precision_auto(w, section: dict) -> None:
    builds, cpu = _builds_and_cpu(section)
    w(f"auto's precision on a CPU ({_when(section)}; {builds}; {cpu}): the precision probe (studio.precision_probe, "
      "the model's own Linear shapes at the rows its step runs them with, weights streamed from memory) against real runs of the "
      "same request in each precision it chooses among, in interleaved rounds after a warm-up each. RTF: generation "
      "seconds per second of audio (the load not counted), the median of the rounds.\n")
    w("| model | work | RTF float32 | RTF bfloat16 | RTF int8 | probe: a step's layers (f32 / bf16 / int8) | "
      "published | auto (probe) | fastest run | auto vs fastest |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    runs = {name: row for name, row in section.get("rows", {}).items() if row.get("kind") != "dit-step"}
    steps = {name: row for name, row in section.get("rows", {}).items() if row.get("kind") == "dit-step"}
    for name, row in runs.items():
        rtf = row["rtf"]
        probe = row["probe"]["seconds"]
        w(f"| {name}{_row_date(row, section)} | {row['what']} | " + " | ".join(f"{rtf[d]:.2f}" if d in rtf else "–"
                                                     for d in ("float32", "bfloat16", "int8")) + " | "
          + " / ".join(f"{1000 * probe[d]:.2f} ms" if d in probe else "–" for d in ("float32", "bfloat16", "int8"))
          + f" ({row['probe']['elapsed_s']:.1f} s) | {row['published']} | {row['auto']} | {row['fastest']} | "
          f"**{_pct(row['gap'])}** (target {row['target']}: {_met(row['met'])}) |")
    w("")
    if steps:
        w("The diffusion transformers, too large to load whole here: the probe on the realistic-width DiT's own shapes "
          "at the family's rows (its tokens over 10 s) and, as the probe did before, at a decoder's 2 rows, against one "
          "real DiT step per precision (one block at 10 s; every block is the same), interleaved rounds after a "
          "warm-up (`BENCH_PRECISION=sa3-dit,ace-dit python -m bench --quick --only precision-auto`).\n")
        w("| model | work | step float32 | step bfloat16 | step int8 | probe at its rows (f32 / bf16 / int8) | "
          "auto (probe) | fastest step | auto vs fastest | at a decoder's 2 rows, auto would be |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for name, row in steps.items():
            step, probe, old = row["step_s"], row["probe"], row["probe_at_decoder_rows"]
            w(f"| {name}{_row_date(row, section)} | {row['what']} | "
              + " | ".join(f"{step[d]:.3f} s" if d in step else "–" for d in ("float32", "bfloat16", "int8")) + " | "
              + " / ".join(f"{probe['seconds'][d]:.3f} s" if d in probe["seconds"] else "–"
                           for d in ("float32", "bfloat16", "int8"))
              + f" ({probe['rows']} rows, {probe['elapsed_s']:.1f} s) | {row['auto']} | {row['fastest']} | "
              f"**{_pct(row['gap'])}** (target {row['target']}: {_met(row['met'])}) | {old['auto']}: "
              f"{_pct(old['gap'])} slower than the fastest |")
        w("")


def _render_compiled(w, section: dict) -> None:
    builds, cpu = _builds_and_cpu(section)
    policy = section.get("omp_wait_policy", "PASSIVE")
    # Runs before the idle preparation was timed apart have no such column (their compile times include it).
    prepared = any(r.get("prepare_second_s") is not None
                   for row in section.get("rows", {}).values() for r in row["rows"].values())
    w(f"Compiled decoding ({_when(section)}; {builds}; {cpu}; OpenMP wait policy {policy}, "
      f"`python -m bench --only compiled{'' if policy == 'PASSIVE' else ' --omp-wait-policy library'}`): the decoder's "
      "per-token step under torch.compile with a static KV cache (models.compiled), against the same model eager. "
      "Each precision ran in two fresh processes sharing one compile cache: the first compiles into an empty cache "
      "(a machine's first launch), the second finds the first's artifacts on disk. In each, after an eager first run, "
      "the compile is timed as the studio's background compile does it, then the same request (same seed) runs in "
      "interleaved rounds eager / compiled; RTF = generation seconds per second of audio, the median of both "
      "processes' rounds. The studio compiles in the background while eager runs serve, so a user waits for none of "
      "these compile times unless a run starts while it compiles (then it runs eager, beside the compile)."
      + (" Between the eager first run and the compile each process prepares torch's compiler (imports Inductor, "
         "picks the CPU's vector instructions), which the studio does once idle after start-up "
         "(studio.compiling.prepare_compiler): timed apart; a compile that starts before it was done pays it too "
         "(the share in brackets)." if prepared else "") + "\n")
    w("| model | precision | RTF eager | RTF compiled | speedup | compile: first process | compile: second process "
      "| second's compile / a 10 s generation | "
      + ("second process: preparing the compiler, idle (share with it) | " if prepared else "")
      + "same audio as eager |")
    w("|---|---|---|---|---|---|---|---|---|" + ("---|" if prepared else ""))
    for name, row in section.get("rows", {}).items():
        for precision, r in row["rows"].items():
            rtf = r["rtf"]
            same = "yes" if r.get("same_audio") else f"no (max sample difference {r.get('max_sample_diff') or 0:.3g})"
            eager, compiled = (f"{rtf[k]:.2f}" if rtf.get(k) is not None else "–" for k in ("eager", "compiled"))
            when = _earlier(r.get("created") or row.get("created"), section, "; {}")
            w(f"| {name} ({row['what']}{when}) | {precision} | {eager} | {compiled} | "
              f"{_x(r['speedup']) if r.get('speedup') else '–'} | {_s(r['compile_first_s'], 1)} | "
              f"{_s(r['compile_second_s'], 1)} | **{_pct(r['second_compile_share'])}** (target "
              f"{r['compile_target']}: {_met(r['compile_met'])}) | " + (f"{_prepared(r)} | " if prepared else "")
              + f"{same} |")
    w("")


def _prepared(row: dict) -> str:
    """The second process's idle preparation of the compiler, and its compile's share with it ('–' before it was
    measured apart)."""
    if row.get("prepare_second_s") is None:
        return "–"
    return f"{_s(row['prepare_second_s'], 1)} ({_pct(row['second_share_with_prepare'])})"


def _render_rtf_floor(w, section: dict) -> None:
    _, cpu = _builds_and_cpu(section)
    w(f"The memory-bandwidth floor of {section['repo']}'s real-time factor ({_when(section)}; {cpu}; "
      "`python -m bench --only rtf-floor`, bench/rtf_floor.py): a decoder step reads each matrix it uses once, and "
      f"the KV cache (the compiled path's windows of it, on average over a {section['seconds']:g} s run), so no kernel runs a "
      f"step faster than those bytes over the memory's read bandwidth, measured here at "
      f"**{section['bandwidth'] / 1e9:.1f} GB/s** ({section['threads']} threads). The compiled section's RTF is "
      "what the studio reaches.\n")
    w("| precision | weights a step | cache a step | floor: a step | floor RTF | floor RTF, weights alone |")
    w("|---|---|---|---|---|---|")
    for precision, r in section["rows"].items():
        w(f"| {precision} | {r['weights'] / 1e6:.0f} MB | {r['cache'] / 1e6:.0f} MB | {1000 * r['step_s']:.1f} ms | "
          f"**{r['rtf']:.2f}** | {r['weights_only_rtf']:.2f} |")
    w("")


def _render_prompt_cost(w, cost: dict) -> None:
    new = " and ".join(f"{n:g} s" for n in cost["new_s"])
    w(f"Cost of an audio prompt frame on musicgen-small (`PROMPT_FRAME_COST` in models/musicgen.py, "
      f"{cost['constant']:g} when this was measured; the estimate's constants "
      f"were fitted to these figures since): continuations making {new} of new audio after a prompt vs text-only runs making "
      f"the same, through the product's adapter, guidance 3, {cost['repeats']} interleaved rounds. Cost = "
      "(prompted - text-only) / prompt frames / the marginal time of a sampled step (from the text-only run and "
      f"one of {cost['short_steps']} tokens: the slope the estimate fits); 'vs average step' divides by text-only "
      "time / steps instead. It covers encoding the prompt, the decoder's pass over it, decoding it with the new "
      "audio, and every new step attending to it (so it grows with the new length).\n")
    w("| precision | new | text-only run | marginal step | prompt | frames | extra time | per frame | cost (x step) | "
      "vs average step | others' load (median / max) |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtype, d in cost["dtypes"].items():
        loads = "–" if d.get("others_load_median") is None else \
            f"{d['others_load_median']:.1f} / {d['others_load_max']:.1f} cores"
        for n in d["lengths"]:
            step = n.get("marginal_step_s")
            for p in n["prompts"]:
                w(f"| {dtype} | {n['new_s']:g} s ({n['steps']} steps) | {_s(n['plain']['median_s'])} | "
                  f"{'–' if step is None else f'{1000 * step:.1f} ms'} | {p['prompt_s']:g} s | {p['frames']} | "
                  f"{_s(p['extra_s'])} | {1000 * p['per_frame_s']:.1f} ms | **{_num(p['cost'])}** | "
                  f"{_num(p['cost_vs_average_step'])} | {loads} |")
    w("")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _settings(record: dict) -> str:
    s = record.get("settings") or {}
    # Multi-line text (lyrics) would break the table's row: its size instead.
    parts = [f"{k}={v:g}" if isinstance(v, float) else
             f"{k}=<{v.count(chr(10)) + 1} lines, {len(v)} chars>" if isinstance(v, str) and "\n" in v else f"{k}={v}"
             for k, v in s.items()]
    if not parts and record.get("prompt_chars"):
        parts.append(f"{record['prompt_chars']} chars")
    return " ".join(parts) or "defaults"


def _fmt_load(load: Any) -> str:
    if not load:
        return "–"
    return " / ".join(f"{x:.1f}" for x in load) + " (1 / 5 / 15 min)"


def _db(x: float | None) -> str:
    return "–" if x is None else ("identical" if x == float("inf") else f"{x:.1f} dB")


FAMILY_NAMES = {"ace": "ACE-Step 1.5 XL turbo", "sa3": "Stable Audio 3 medium"}


def _render_music_dit(w, md: dict) -> None:
    """bench/music_dit.py: the two 2026 music families through diffusers alone (no studio adapter)."""
    w("## ACE-Step 1.5 and Stable Audio 3 through diffusers alone\n")
    w("`python -m bench.music_dit` (bench/music_dit.py): realistic-width random-weight builds of "
      "`ACE-Step/acestep-v15-xl-turbo-diffusers` and `stabilityai/stable-audio-3-medium` (bench/checkpoints.py), "
      "called through diffusers directly; these figures decide the adapters' defaults. **The DiTs are built with fewer "
      "blocks than the real ones** (the real XL DiT is 16.7 GB in float32, more than a bench process may hold on this "
      "shared 24 GB machine): each DiT is timed at two depths, the difference gives the time of one block (all blocks "
      "are identical), and the real depth's step is extrapolated as fixed part + real blocks x per-block time. "
      "Random weights do the real arithmetic, so times are the real models'; errors of int8/bfloat16 are measured on "
      "random weights, whose value distribution differs from trained ones (trained weights have outlier channels that "
      "int8 handles worse), so they are a lower bound to check on the real checkpoints.\n")
    _render_music_conclusions(w, md)
    steps = {f: md.get(f"{f}-steps") for f in ("ace", "sa3") if md.get(f"{f}-steps")}
    if steps:
        w("### One denoising step (one DiT forward, 10 s of audio, no guidance)\n")
        w("| model | precision | per block | fixed | step at the real depth (extrapolated) | speed vs float32 "
          "(paired, at the deeper build) | output rel. error vs float32 (one step, same inputs) | DiT weights at the "
          "real depth | CPU, load average start / end (1 min), when |")
        w("|---|---|---|---|---|---|---|---|---|")
        for f, e in steps.items():
            deep = e["by_depth"][str(e["depths"][1])]
            weights = {"float32": e["real_weights_fp32"], "bfloat16": e["real_weights_bf16"],
                       "int8": e["real_weights_int8_estimate"]}
            for dtype in ("float32", "bfloat16", "int8"):
                d = e[dtype]
                err = "–" if dtype == "float32" else f"{deep[dtype]['rel_error']:.4f}"
                w(f"| {FAMILY_NAMES[f]} ({e['real_params'] / 1e9:.2f}B DiT, {e['real_layers']} blocks; built with "
                  f"{e['depths'][0]} and {e['depths'][1]}) | {dtype} | {_s(d['per_block_s'], 3)} | "
                  f"{_s(d['fixed_s'], 3)} | **{_s(d['real_step_s'], 1)}** | "
                  f"{_x(deep[dtype]['speed_vs_float32'])} (CPU time {_x(deep[dtype]['cpu_speed_vs_float32'])}) | "
                  f"{err} | "
                  f"{_gb(weights[dtype])} | {_cpu(e)} |")
        w("")
        hist = [(f, h) for f, e in steps.items() for h in e.get("history", []) + [_step_now(e)]]
        if len(hist) > len(steps):
            w("Every step measurement so far, with the machine's load: absolute times move with it, and so do the "
              "ratios somewhat; runs that time one precision after the other (the first ones) are more exposed to "
              "a change of load mid-run than interleaved ones. The decisions above hold in every interleaved run.\n")
            w("| model | when | load average start / end (1 min) | rounds | float32 step (deeper build) | "
              "bfloat16 speed vs float32 | int8 speed vs float32 | bfloat16 error | int8 error |")
            w("|---|---|---|---|---|---|---|---|---|")
            for f, h in hist:
                ls, le = (h.get("load_average_start") or [None])[0], (h.get("load_average_end") or [None])[0]
                load = "–" if ls is None else f"{ls:.1f} / {le:.1f}"
                w(f"| {FAMILY_NAMES[f]} | {h.get('created')} | {load} | "
                  f"{'interleaved' if h.get('interleaved') else 'one side after the other'} | "
                  f"{_s(h['float32_s'])} | {_x(h['bfloat16_speed'])} | {_x(h['int8_speed'])} | "
                  f"{h['bfloat16_rel_error']:.4f} | {h['int8_rel_error']:.4f} |")
            w("")
    runs = {f: md.get(f"{f}-run") for f in ("ace", "sa3") if md.get(f"{f}-run")}
    if runs:
        w("### A whole short run: float32 vs an int8 or bfloat16 DiT\n")
        w("The minimal diffusers script's run (`pipe(prompt, ..., num_inference_steps=8, generator=seed)`) in float32, "
          "then the same run with only the DiT's Linear layers in int8 (everything else float32), then the whole pipeline "
          "in bfloat16 (`pipe.to(torch.bfloat16)`: the pipeline casts its inputs to the DiT's dtype, so a bfloat16 DiT "
          "cannot run alone in a float32 pipeline). SNR = "
          "10 log10(|float32|² / |other - float32|²) of the final latents and of their float32 decode. Stage times "
          "from forward hooks.\n")
        w("| model | DiT blocks built | steps | audio | float32: text + condition | DiT (all steps) | decode | whole run | "
          "int8 DiT: DiT time | latent SNR | waveform SNR | all bfloat16: DiT time | latent SNR | waveform SNR | CPU, "
          "load, when |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for f, r in runs.items():
            st = r["float32"]["stages_s"]
            cond = sum(v for k, v in st.items() if k != "transformer")
            i8, b16 = r["int8"], r["bfloat16"]
            # A random SAME decoder barely reads its latents (bench/checkpoints.py): its waveform SNR means nothing.
            wave = (lambda x: _db(x)) if f == "ace" else (lambda x: "–")
            w(f"| {FAMILY_NAMES[f]} | {r['dit_layers']} of {32 if f == 'ace' else 24} | {r['steps']} | "
              f"{r['seconds']:g} s ({r['latent_shape']}) | {_s(cond)} | {_s(st['transformer'])} | "
              f"{_s(r['float32']['decode_s'])} | {_s(r['float32']['wall_s'])} | {_s(i8['stages_s']['transformer'])} | "
              f"{_db(i8['latent_snr_db'])} | {wave(i8['wave_snr_db'])} | {_s(b16['stages_s']['transformer'])} | "
              f"{_db(b16['latent_snr_db'])} | {wave(b16['wave_snr_db'])} | {_cpu(r)} |")
        w("")
    decs = {f: md.get(f"{f}-decode") for f in ("ace", "sa3") if md.get(f"{f}-decode")}
    if decs:
        w("### VAE decode: float32 vs bfloat16\n")
        w("| model | VAE | latents (10 s) | float32 | bfloat16 | speed (paired) | CPU-time speed | bfloat16 waveform "
          "SNR vs float32 | CPU, load, when |")
        w("|---|---|---|---|---|---|---|---|---|")
        for f, d in decs.items():
            vae = "Oobleck, 48 kHz" if f == "ace" else "SAME-L, 44.1 kHz"
            snr = _db(d["bfloat16_snr_db"]) if f == "ace" else "– (random SAME: see above)"
            w(f"| {FAMILY_NAMES[f]} | {vae} ({_gb(d['weights_fp32'])} float32) | {d['latents']} | "
              f"{_s(d['float32_s'])} | {_s(d['bfloat16_s'])} | {_x(d['bfloat16_speed'])} | "
              f"{_x(d['bfloat16_cpu_speed'])} | {snr} | {_cpu(d)} |")
        w("")
    off = md.get("offload")
    if off:
        w("### Group offload vs model offload for the XL DiT\n")
        block, rest, real = off["block_bytes_fp32"], off["non_block_bytes_fp32"], off["real_dit_bytes_fp32"]
        w(f"What the accelerator holds (from the modules' sizes; the studio's accounting of a simulated device counts "
          f"the same): model offload (`enable_model_cpu_offload`, and the studio's own offload path) moves a whole "
          f"component at a time, so while the DiT runs the device holds all of it: **{_gb(real)}** in float32, "
          f"{_gb(real / 2)} in bfloat16, plus activations. Group offload at block level, one block per group "
          f"(`enable_group_offload(onload_device, offload_type=\"block_level\", num_blocks_per_group=1)`) holds the "
          f"DiT's non-block layers ({_gb(rest)}) and one block ({_gb(block)}) at a time, two blocks with "
          f"`use_stream=True` (the next one prefetched): **{_gb(rest + block)}-{_gb(rest + 2 * block)}** in "
          f"float32.\n")
        w(f"Hooks' own cost on this CPU ({off['layers']}-block DiT, 10 s, onload = offload = CPU so nothing moves; "
          f"{len(off['times']['group']['group'])} interleaved rounds): plain {_s(off['plain_s'])}; model offload "
          f"x{off['model_vs_plain']:.3f} wall (CPU time x{off['model_cpu_vs_plain']:.3f}); group offload "
          f"x{off['group_vs_plain']:.3f} wall (CPU time x{off['group_cpu_vs_plain']:.3f}) of the plain forward. "
          f"{_cpu(off)}.\n")
        w("Not measurable here: the transfers. Model offload moves the DiT to the device once per run (and back "
          "after); block-level group offload moves every block in and out at every step, so each step carries the "
          "whole DiT across the bus once (16.7 GB float32 / 8.3 GB bfloat16 per step; at a PCIe 4.0 x16 link's "
          "~25 GB/s that is ~0.67 s / ~0.33 s per step unless overlapped with compute by `use_stream=True`, which "
          "needs CUDA streams). On a 12 GB accelerator, model offload cannot run the XL DiT in float32 at all "
          "(16.7 GB > 12 GB) and runs it in bfloat16 with 8.3 GB resident; group offload runs either.\n")
    win = md.get("sa3-window")
    if win:
        w("### Does Stable Audio 3 decode a fixed window?\n")
        rows = ", ".join(f"{r['seconds']:g} s -> {r['latents']} latents ({r['covers_s']:.2f} s)" for r in win["rows"])
        w(f"No. The pipeline sizes the latent sequence from the request: `latent_length = ceil(duration x "
          f"sampling_rate / {win['hop']})` (diffusers 0.42.1 `pipeline_stable_audio_3.py`, step 3), denoises that and "
          f"decodes it, then trims to `int(duration x sampling_rate)` samples: measured {rows}. The most a "
          f"decode-only-what-you-need crop could drop is the one partial latent at the end (< {win['hop']} samples, "
          f"{win['hop'] / 44100 * 1000:.0f} ms of audio); a 10 s decode takes {_s(win['decode_10s_s'])} here, so the "
          f"trick that made Stable Audio Open 2.8x faster (it denoises and decodes a fixed 47.55 s window) has nothing "
          f"to remove: not adopted. {_cpu(win)}.\n")


def _render_plan(w, plan: dict) -> None:
    """bench/plan_check.py: ACE-Step XL turbo under a simulated 12 GB accelerator."""
    real, build = plan["real"], plan["build"]
    w("## ACE-Step XL turbo's plan under a 12 GB simulated budget\n")
    w(f"ACE-Step XL turbo under a {_gb(plan['real_budget'])} simulated accelerator (`STUDIO_SIMULATED_MEMORY`; "
      f"bench/plan_check.py; {plan.get('created', '')[:16]}, load {_fmt_load(plan.get('load_average'))}"
      f"{', ' + plan['note'] if plan.get('note') else ''}):\n")
    w("| what | precision | plan | fits | predicted peak on the device | weights | working | accounted peak | "
      "error | the studio's line |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for precision, e in real.items():
        w(f"| the real model (published sizes, estimate only) | {precision} | {e['placement']} | "
          f"{'yes' if e['fits'] else '**no**'} | {_gb(e['bytes'])} | {_gb(e['weights'])} | {_gb(e['working'])} | – | "
          f"– | {e['summary']} |")
    w(f"| the bench's build (2 of 32 DiT blocks) on a {_gb(build['budget'])} simulated device, run | float32 | "
      f"{build['run_placement']} | {'yes' if build['fits'] else '**no**'} | {_gb(build['predicted_bytes'])} | "
      f"{_gb(build['predicted_weights'])} | {_gb(build['predicted_working'])} | {_gb(build['accounted_peak'])} | "
      f"{_pct(build['error'])} | {build['summary']} |")
    w("")
    w("The accounted peak is the studio's own bookkeeping (the running part's bytes + the working bytes it books), so "
      "its match with the prediction says the run kept to its plan; whether the working estimate is right is the "
      "case's memory error (measured process memory). In float32 the real XL cannot run on 12 GB with the studio's "
      "model offload (its DiT alone is 16.7 GB) and the estimate says so; group offload would (about 1 GB held: "
      "see the group vs model offload section). In bfloat16 model offload fits (DiT 8.3 GB + working).\n")


def _render_music_conclusions(w, md: dict) -> None:
    """What the measurements below say for the adapters' defaults, with their figures."""
    need = ("ace-steps", "sa3-steps", "ace-run", "sa3-run", "offload")
    if not all(md.get(k) for k in need):
        return
    ace, sa3, arun, srun = md["ace-steps"], md["sa3-steps"], md["ace-run"], md["sa3-run"]

    def deep(e, dtype, key):
        return e["by_depth"][str(e["depths"][1])][dtype][key]

    dec = md.get("ace-decode")
    decode = "" if not dec else (
        f" The VAE's decode is the other large cost (10 s of audio decode in about as long as two float32 steps of "
        f"the real DiT): in bfloat16 it is {_x(dec['bfloat16_speed'])} faster at {_db(dec['bfloat16_snr_db'])} SNR, a "
        f"candidate for a bfloat16 VAE beside an int8 DiT.")
    sdec = md.get("sa3-decode")
    sa3_decode = "" if not sdec else f" (SAME-L's decode {_x(sdec['bfloat16_speed'])} faster in bfloat16)"
    w("**What this says for the adapters' CPU defaults** (details in the tables below):\n")
    w(f"- ACE-Step XL turbo: **int8 DiT** (dynamic quantization of its nn.Linear layers; encoders and VAE float32). "
      f"A step is {_x(deep(ace, 'int8', 'speed_vs_float32'))} faster than float32 (paired rounds; "
      f"{_s(ace['int8']['real_step_s'], 1)} vs {_s(ace['float32']['real_step_s'], 1)} a step at the real 32 blocks, "
      f"10 s of audio), its one-step output is {100 * deep(ace, 'int8', 'rel_error'):.2f} % off float32's, a whole "
      f"8-step run's latents are at {_db(arun['int8']['latent_snr_db'])} and its waveform at "
      f"{_db(arun['int8']['wave_snr_db'])} SNR vs float32, and the DiT's weights drop from "
      f"{_gb(ace['real_weights_fp32'])} to {_gb(ace['real_weights_int8_estimate'])}. bfloat16 is slower than int8 "
      f"({_x(deep(ace, 'bfloat16', 'speed_vs_float32'))} of float32 a step) and the whole pipeline in bfloat16 "
      f"less exact ({_db(arun['bfloat16']['latent_snr_db'])} latents, {_db(arun['bfloat16']['wave_snr_db'])} "
      f"waveform).{decode}")
    w(f"- Stable Audio 3 medium: **bfloat16, the whole pipeline**. int8 is the fastest DiT "
      f"({_x(deep(sa3, 'int8', 'speed_vs_float32'))} of float32 a step) but the least exact: "
      f"{100 * deep(sa3, 'int8', 'rel_error'):.1f} % one-step error (six times ACE-Step's), "
      f"{_db(srun['int8']['latent_snr_db'])} on a whole run's latents; bfloat16 is "
      f"{_x(deep(sa3, 'bfloat16', 'speed_vs_float32'))} of float32 a step at "
      f"{100 * deep(sa3, 'bfloat16', 'rel_error'):.1f} % one-step error and {_db(srun['bfloat16']['latent_snr_db'])} "
      f"on a whole run's latents with every part in bfloat16{sa3_decode}. The SAME-L decode is a large part of a "
      f"run: {_s(srun['float32']['decode_s'])} for 10 s in float32 here, against about "
      f"{_s(srun['steps'] * sa3['float32']['real_step_s'], 0)} for the 8 float32 steps of the real 24 blocks "
      f"(extrapolated from the step table).")
    w("- Offload for the XL DiT under a 12 GB accelerator budget: model offload holds the whole DiT while it runs "
      "(16.7 GB float32: does not fit; 8.3 GB bfloat16: fits) and moves it once a run; block-level group offload "
      "holds about 0.9-1.4 GB in float32 but moves the whole DiT across the bus every step. The hooks' own CPU cost "
      "is within this machine's noise (about 2 %) for both. So: model offload when the DiT in the run's dtype fits "
      "the budget, group offload (block level, `use_stream=True` on CUDA) only when it does not. int8 (dynamic "
      "quantization) runs on the CPU only, so it is no answer for an accelerator budget.")
    if md.get("sa3-window"):
        w("- Stable Audio 3 denoises and decodes only the requested length (no fixed window): decoding only the "
          "needed latents has nothing to remove, so it is not adopted.")
    w("- These figures were taken beside other helpers' jobs (load averages up to 9 on 2 cores, in each row): "
      "absolute seconds vary by up to 2x between runs; the paired ratios and the errors are the figures to use.\n")


def _step_now(e: dict) -> dict:
    from bench.music_dit import _step_summary

    return _step_summary(e)


def _cpu(e: dict) -> str:
    simd = ", ".join(e.get("simd") or [])
    start = (e.get("load_average_start") or [None])[0]
    end = (e.get("load_average_end") or [None])[0]
    load = "–" if start is None else f"{start:.1f} / {end:.1f}"
    return f"{e.get('cpu', '?')} ({simd}), load {load}, {e.get('created', '')}"
