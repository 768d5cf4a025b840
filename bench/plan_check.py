"""A model's plan under a simulated accelerator budget: the plan's predicted peak vs the peak the studio accounts.

Issue 14 asks it for ACE-Step's XL turbo under 12 GB. Two parts:

* the real model, estimate only: a child process with an empty HF cache (so the studio sizes the model from its
  published parameter counts, as before a download) and ``STUDIO_SIMULATED_MEMORY=12GB``: placement, predicted
  peak and whether it fits, per precision;
* the bench's build (fewer DiT blocks), run: a simulated device whose budget puts the build in the same situation
  (too big to hold whole, its largest part fits: offload), the estimate's bytes vs the device's accounted peak.

The accounted peak is the studio's own bookkeeping (each part's header bytes while it runs + the working bytes it
books at the estimate), so equality checks that the run does what the plan said, not the working-memory estimate
itself: that one is checked against the process's measured memory by the model's case (its memory error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, tempfile
from pathlib import Path
from studio.device import SimulatedDevice
from studio.service import Studio
from studio.settings import Settings
repo, prompt, params, budget = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
studio = Studio(Settings(output_dir=Path(tempfile.mkdtemp()), memory_reserve=0, precision_probe=False, compile="off"), device=SimulatedDevice(budget))
out = {}
for precision in ("float32", "bfloat16"):
    e = studio.estimate(studio.request(None, repo, prompt, seed=1234, params={**params, "precision": precision}))
    out[precision] = {"placement": e.placement, "fits": e.fits, "bytes": e.bytes, "weights": e.weights_bytes,
                      "working": e.working_bytes, "budget": e.budget_bytes, "dtype": e.dtype, "summary": e.summary()}
print(json.dumps(out))
"""


def real_size_estimate(repo: str, prompt: str, params: dict, budget: int) -> dict:
    """The studio's plan for the real model (published sizes: nothing cached) on a `budget`-byte accelerator."""
    with tempfile.TemporaryDirectory(prefix="bench-empty-hf-") as empty:
        env = {**os.environ, "HF_HOME": empty, "HF_HUB_OFFLINE": "1"}
        env.pop("STUDIO_SIMULATED_MEMORY", None)
        proc = subprocess.run([sys.executable, "-c", _CHILD, repo, prompt, json.dumps(params), str(budget)],
                              env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_run(repo: str, prompt: str, params: dict, budget: int, workdir: Path) -> dict:
    """The bench's build run on a `budget`-byte simulated accelerator: estimate vs accounted peak."""
    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings

    from bench.measure import measure

    studio = Studio(Settings(output_dir=workdir, memory_reserve=0, precision_probe=False, compile="off"), device=SimulatedDevice(budget))
    req = studio.request(None, repo, prompt, seed=1234, params={**params, "precision": "float32"})
    estimate = studio.estimate(req)
    m = measure(lambda: studio.manager.run(req), memory=False)
    result = m.value
    out: dict[str, Any] = {
        "budget": budget, "placement": estimate.placement, "fits": estimate.fits,
        "predicted_bytes": estimate.bytes, "predicted_weights": estimate.weights_bytes,
        "predicted_working": estimate.working_bytes, "accounted_peak": result.peak_bytes,
        "run_placement": result.placement, "wall_s": m.seconds, "summary": estimate.summary(),
    }
    out["error"] = (abs(out["predicted_bytes"] - out["accounted_peak"]) / out["accounted_peak"]
                    if out["accounted_peak"] else None)
    studio.manager.unload_all()
    return out


def run_plan_check(repo: str, prompt: str, params: dict, *, real_budget: int, build_budget: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        return {"repo": repo, "settings": params, "real": real_size_estimate(repo, prompt, params, real_budget),
                "real_budget": real_budget, "build": build_run(repo, prompt, params, build_budget, Path(tmp))}
