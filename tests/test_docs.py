"""The README tells the truth: its catalog table is the one the catalog generates."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_catalog_table_is_current(tmp_path):
    # An empty cache, so the figures are the published ones, as a new user sees them.
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    table = subprocess.run([sys.executable, "-m", "studio", "models", "--markdown"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- catalog:start.*?-->\n(.*?)\n<!-- catalog:end -->", readme, re.S)
    assert block, "README lost its catalog markers"
    assert block.group(1).strip() == table, "README's model table is stale: paste `python -m studio models --markdown`"


def test_readme_names_every_flag():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for flag in ("--host", "--port", "--share", "--auth", "--device", "--memory-budget", "--memory-reserve",
                 "--output-dir", "--mcp"):
        assert f"`{flag}" in readme, flag
        assert "STUDIO_" + flag[2:].upper().replace("-", "_") in readme


def test_catalog_table_cpu_column_is_what_the_manager_plans_on_a_cpu(catalog, tiny_cache):
    # The same sizes the manager plans with "auto" on a CPU (int8 for MusicGen and Bark), here from the tiny files.
    from studio.__main__ import catalog_rows
    from studio.device import CpuDevice
    from studio.manager import PipelineManager
    from studio.settings import format_bytes

    manager = PipelineManager(catalog, CpuDevice(), reserve=0)
    rows = {row["repo"]: row for row in catalog_rows(catalog)}
    dtypes = {}
    for repo, row in rows.items():
        if repo not in [spec.repo_id for spec in catalog]:
            continue  # MMS languages folded into one row
        estimate = manager.estimate_run(catalog.make_request(repo, "example", seed=0))
        short = {"float32": "fp32", "int8": "int8", "bfloat16": "bf16"}[estimate.dtype]
        figure = f"{format_bytes(estimate.weights_bytes + estimate.working_bytes)} ({short})"
        # Where auto's pick depends on the CPU (bfloat16 where it is native), the row gives both figures.
        assert figure in row["cpu"].split("; ")[0] + " " + row["cpu"].split("; ")[-1], repo
        dtypes[repo] = estimate.dtype
    assert dtypes["facebook/musicgen-small"] == dtypes["suno/bark-small"] == "int8"
    assert dtypes["cvssp/audioldm2"] == "float32"
    assert "with native bf16" in rows["stabilityai/stable-audio-3-medium"]["cpu"]
