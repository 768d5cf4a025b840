"""Streaming (issue 16): time to first audio against the whole run, and what listening costs the run.

Per model, on the realistic builds and in the studio's default precision: a warm-up run (loads), then interleaved
rounds of the same request run twice, once with nobody listening (`manager.run` with a plain RunContext) and once
read through `studio.streaming.stream` (a RunContext carrying on_audio, as the page and /v1/audio/speech run it).
Time to first audio is the first Piece's arrival after the streamed run starts; overhead is the streamed run's
whole time over the plain one's, paired per round. A family without `first_audio_units` hands on no pieces: its
row says "does not stream" and nothing is run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cases import SEED
from bench.runner import _studio
from bench.stats import interleaved_order, median, paired_ratio, summarize_times
from bench.stats import Target

log = logging.getLogger(__name__)

SIX_SENTENCES = ("The morning was cold and clear. We walked down to the harbour before the shops opened. A few "
                 "boats were already heading out past the lighthouse. My sister pointed at a seal on the rocks. "
                 "It watched us for a while and then slipped into the water. We bought warm bread on the way home.")
TARGETS = {"speech": Target("<=", 0.25), "music": Target("<=", 0.35), "overhead": Target("<=", 0.05)}


@dataclass(frozen=True)
class StreamCase:
    name: str
    repo: str
    task: str
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)
    what: str = ""


STREAM_CASES = (
    # Random weights never sample Bark's end of speech: each sentence runs to its cap, 1 s (Bark small is some 20x
    # slower than real time on a 2-core CPU: five runs of six 2 s sentences would take 20 minutes).
    StreamCase("bark-small", "suno/bark-small", "speech", SIX_SENTENCES, {"max_chunk_seconds": 1.0},
               "six sentences, 1 s each (the cap: random weights never end a sentence)"),
    StreamCase("mms-tts-eng", "facebook/mms-tts-eng", "speech", SIX_SENTENCES, {}, "six sentences"),
    StreamCase("pocket-tts", "eustlb/pocket-tts", "speech", SIX_SENTENCES, {}, "six sentences"),
    StreamCase("musicgen-small", "facebook/musicgen-small", "music", "80s pop track with bassy drums and synth",
               {"duration": 10.0}, "10 s, guidance 3"),
)
ROUNDS = {"quick": 2, "full": 3, "tiny": 1}


def streams(repo: str) -> bool:
    """Whether the repo's family hands on pieces (declares first_audio_units)."""
    from studio.catalog import Catalog
    from studio.ui.live import streams as family_streams

    catalog = Catalog.discover("models")
    return family_streams(catalog.family(catalog.get(repo)))


def streaming_repos() -> list[str]:
    """The repos the section runs (checkpoints to build): those whose family streams, with their companions."""
    from studio.catalog import Catalog

    catalog = Catalog.discover("models")
    repos: list[str] = []
    for case in STREAM_CASES:
        if streams(case.repo):
            repos += [case.repo, *(c.repo_id for c in catalog.family(catalog.get(case.repo)).companion_repos)]
    return list(dict.fromkeys(repos))


def _streamed(studio, request) -> tuple[Any, dict]:
    """One run read through studio.streaming.stream: (result, {wall_s, first_s, pieces, streamed_s})."""
    from studio.run import RunContext
    from studio.streaming import Done, Piece, stream

    started = time.perf_counter()
    first, pieces, seconds, result = None, 0, 0.0, None
    for item in stream(lambda on_audio: studio.manager.run(request, RunContext(on_audio=on_audio))):
        if isinstance(item, Piece):
            if first is None:
                first = time.perf_counter() - started
            pieces += 1
            seconds += item.seconds
        elif isinstance(item, Done):
            result = item.value
    # The adapter's own count of its streaming work (MusicGen's windowed decodes), when it keeps one: inside one
    # run, so other jobs on the machine cannot tilt it as they can the plain-vs-streamed pair.
    decode_s = result.audio.info.get("stream_decode_s")
    return result, {"wall_s": time.perf_counter() - started, "first_s": first, "pieces": pieces,
                    "streamed_s": seconds, "decode_s": decode_s}


def _plain(studio, request) -> tuple[Any, dict]:
    """One run nobody listens to, in the same kind of thread as a streamed one (studio.streaming.WORKERS): the
    product runs both off the main thread, and a run's speed differs between a fresh thread and a warm one."""
    from studio.run import RunContext
    from studio.streaming import WORKERS

    started = time.perf_counter()
    result = WORKERS.submit(studio.manager.run, request, RunContext()).result()
    return result, {"wall_s": time.perf_counter() - started}


def run_case(case: StreamCase, *, rounds: int, workdir: Path) -> dict:
    import numpy as np

    started = time.monotonic()
    out: dict[str, Any] = {"repo": case.repo, "task": case.task, "what": case.what}
    if not streams(case.repo):
        out.update(streams=False, note="does not stream")
        return out
    studio = _studio(workdir / case.name)
    request = studio.request(case.task, case.repo, case.prompt, seed=SEED, params=dict(case.params))
    estimate = studio.manager.estimate_run(request)
    _plain(studio, request)  # loads, and calibrates the estimate the second figure below is read from
    calibrated = studio.manager.estimate_run(request)
    runs: dict[str, list[dict]] = {"plain": [], "streamed": []}
    finals: dict[str, Any] = {}
    for slot in interleaved_order(rounds, warmup=0, sides=("plain", "streamed")):
        result, rec = (_plain if slot.side == "plain" else _streamed)(studio, request)
        rec["dtype"] = result.dtype
        log.info("  streaming %s round %d %-8s %6.2f s%s", case.name, slot.round + 1, slot.side, rec["wall_s"],
                 f", first audio {rec['first_s']:.2f} s in {rec['pieces']} pieces" if rec.get("first_s") else "")
        runs[slot.side].append(rec)
        finals[slot.side] = result.audio.samples
    whole = [r["wall_s"] for r in runs["streamed"]]
    firsts = [r["first_s"] for r in runs["streamed"]]
    share = median(f / w for f, w in zip(firsts, whole))
    overhead = 1.0 / paired_ratio([r["wall_s"] for r in runs["plain"]], whole) - 1.0
    inside = [r["decode_s"] / (r["wall_s"] - r["decode_s"]) for r in runs["streamed"] if r.get("decode_s") is not None]
    target = TARGETS[case.task]
    out.update(
        streams=True, dtype=runs["plain"][0]["dtype"], rounds=rounds, runs=runs,
        plain=summarize_times([r["wall_s"] for r in runs["plain"]]), streamed=summarize_times(whole),
        first_audio=summarize_times(firsts), first_share=share, first_target=target.describe("{:.0%}"),
        first_met=target.met(share), overhead=overhead, overhead_target=TARGETS["overhead"].describe("{:.0%}"),
        overhead_met=TARGETS["overhead"].met(overhead), overhead_inside=median(inside) if inside else None,
        pieces=runs["streamed"][-1]["pieces"],
        same_output=bool(np.array_equal(finals["plain"], finals["streamed"])),
        estimate={"first_audio_s": estimate.first_audio_seconds, "seconds": estimate.seconds,
                  "calibrated_first_audio_s": calibrated.first_audio_seconds,
                  "calibrated_seconds": calibrated.seconds},
    )
    studio.manager.unload_all()
    out["elapsed_s"] = time.monotonic() - started
    return out


def run_streaming(*, size: str, workdir: Path, names: list[str] | None = None) -> dict:
    """Every StreamCase (or those named): {"rows": {name: entry}, "errors": {name: text}}."""
    import traceback

    rows, errors = {}, {}
    for case in STREAM_CASES:
        if names and case.name not in names:
            continue
        log.info("== streaming: %s", case.name)
        try:
            rows[case.name] = run_case(case, rounds=ROUNDS[size], workdir=workdir)
        except Exception as error:  # one model failing must not lose the others' figures
            log.error("streaming %s failed: %s", case.name, error)
            errors[case.name] = "".join(traceback.format_exception(error))[-4000:]
    return {"rows": rows, "errors": errors}
