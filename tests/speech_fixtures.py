"""Fixtures the speech families' test modules share; a module takes one by importing its name.

`one_thread` (autouse where imported): tiny models are all thread hand-offs, and on this 2-core machine under load
one thread ran a tiny Dia step in 5.6 ms where two took 100 ms (measured); restored after the module.
`cpu_studio` (tests.conftest): a Studio on the CPU over the session's tiny cache.
`start_cli(repo, prompt, out)`: the CLI's generate in a process of its own, one thread, started early so that it
runs beside a module's in-process tests; the caller waits for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cpu_studio  # noqa: F401 (re-exported for the speech modules)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def start_cli(repo: str, prompt: str, out: Path, seed: int = 7) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    return subprocess.Popen([sys.executable, "-m", "studio", "generate", "--model", repo, "--prompt", prompt,
                             "--seed", str(seed), "--out", str(out), "--output-dir", str(out.parent / "outputs")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
