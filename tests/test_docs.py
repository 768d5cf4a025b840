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
