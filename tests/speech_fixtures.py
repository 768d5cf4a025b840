"""Fixtures the speech families' test modules share; a module takes one by importing its name.

`one_thread` (autouse where imported): tiny models are all thread hand-offs, and on this 2-core machine under load
one thread ran a tiny Dia step in 5.6 ms where two took 100 ms (measured); restored after the module.
`cpu_studio` (tests.conftest): a Studio on the CPU over the session's tiny cache.
`start_cli(repo, prompt, out)`: the CLI's generate in a process of its own, one thread, started early so that it
runs beside a module's in-process tests; the caller waits for it. `cli_run_fixture(repo, prompt, name)` makes the
module-scoped fixture that starts it, and `cli_samples(cli_run, repo, rate)` waits for it and checks what it said.
`two_voices(folder, seconds, rate)`: two clips that differ (a 220 Hz tone and a noise burst) for cloning tests;
`write_clips(folder, params, lengths, rate)`: the bad-input tests' clips of given lengths in place of their names.
`run_with_reports(studio, request)`: a run through the manager, with every progress report it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from studio.run import RunContext
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


def cli_run_fixture(repo: str, prompt: str, name: str):
    """A module-scoped fixture `cli_run` -> (process, out path): the CLI speaking `prompt` with `repo` into `name`,
    started first so that its process runs beside the module's in-process tests (their `studio` depends on it)."""

    @pytest.fixture(scope="module")
    def cli_run(tiny_cache, tmp_path_factory):
        out = tmp_path_factory.mktemp("cli") / name
        proc = start_cli(repo, prompt, out)
        yield proc, out
        if proc.poll() is None:
            proc.kill()

    return cli_run


def cli_samples(cli_run, repo: str, rate: int) -> np.ndarray:
    """Wait for the CLI run; it succeeded and printed the model and its rate; the samples it wrote at that rate."""
    proc, out = cli_run
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    metadata = json.loads(stdout)
    assert metadata["model"] == repo and metadata["sample_rate"] == rate
    samples, written = soundfile.read(out)
    assert written == rate
    return samples


def two_voices(folder: Path, seconds: float, rate: int) -> list[str]:
    """Two voice clips that differ, as paths: a 220 Hz tone ('tone.wav') and a noise burst ('noise.wav')."""
    t = np.arange(round(seconds * rate)) / rate
    tone = (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    paths = []
    for name, samples in (("tone.wav", tone), ("noise.wav", noise)):
        soundfile.write(folder / name, samples, rate)
        paths.append(str(folder / name))
    return paths


def write_clips(folder: Path, params: dict, lengths: dict[str, float], rate: int) -> dict:
    """`params` with each clip setting (audio, audio_2, ...) that names a length in `lengths` replaced by the path of
    a clip that long (a constant 0.1, '<name>.wav' in `folder`)."""
    written = dict(params)
    for name, value in params.items():
        if name.startswith("audio") and value in lengths:
            path = folder / f"{value}.wav"
            soundfile.write(path, np.full(round(lengths[value] * rate), 0.1, np.float32), rate)
            written[name] = str(path)
    return written


def run_with_reports(studio, request) -> tuple:
    """(result, [(done, total), ...]): `request` run through the studio's manager, every progress report kept."""
    reports: list[tuple[int, int]] = []
    result = studio.manager.run(request, RunContext(on_progress=lambda done, total: reports.append((done, total))))
    return result, reports
