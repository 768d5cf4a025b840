"""Test set-up: a temporary Hugging Face cache of tiny random checkpoints under the real repo ids, offline.

The environment is set at import, before anything imports huggingface_hub (which reads HF_HOME once),
so the product code and every subprocess the tests start find the tiny models exactly where real
ones would be.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.reliability"]

_HF_HOME = Path(tempfile.mkdtemp(prefix="studio-tests-hf-"))
# test.sh runs the suite in two pytest sessions (and pytest-xdist runs the first in two processes): the first to build
# the tiny checkpoints leaves a copy here for the others, which copy it instead of building them again.
_TINY_TEMPLATE = os.environ.get("STUDIO_TESTS_TINY_CACHE")
# A developer's switch for the tests themselves, read by a skip marker (tests/test_compiled.py): kept.
_SKIP_INDUCTOR = os.environ.get("STUDIO_SKIP_INDUCTOR")
for _var in [v for v in os.environ if v.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "STUDIO_"))]:
    del os.environ[_var]
if _SKIP_INDUCTOR is not None:
    os.environ["STUDIO_SKIP_INDUCTOR"] = _SKIP_INDUCTOR
os.environ["HF_HOME"] = str(_HF_HOME)
# The precision probe would change "auto" under the tests after a model's first CPU load: on only where a test asks
# (tests/test_precision_probe.py).
os.environ["STUDIO_PRECISION_PROBE"] = "0"
# Likewise the background compile of decoders (minutes of the CPU per model): on where tests/test_compiled.py asks.
os.environ["STUDIO_COMPILE"] = "off"
# The tiny checkpoints' operations are too small to gain from a second thread (it only adds the threads' hand-offs),
# and the browser tests need a core for the browser while a tiny model runs: torch computes on one thread here, in
# this process and in the CLI and app processes the tests start (measured: 4-6 % less time; the bench measures speed).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    """HF_HOME holding every tiny checkpoint (built once per session)."""
    from tests.tiny_models import make_tiny_cache

    template = Path(_TINY_TEMPLATE) if _TINY_TEMPLATE else None
    if template is not None and (template / "complete").is_file():
        shutil.copytree(template / "hub", _HF_HOME / "hub", symlinks=True, dirs_exist_ok=True)
        return _HF_HOME
    make_tiny_cache(_HF_HOME)
    if template is not None:
        _leave_template(template)
    return _HF_HOME


def _leave_template(template: Path) -> None:
    """Copy the tiny cache into `template` for the sessions after this one, unless another process is doing so."""
    import fcntl

    template.mkdir(parents=True, exist_ok=True)
    with open(template / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another test process is copying its own: the same files
            return
        if not (template / "complete").is_file():
            shutil.copytree(_HF_HOME / "hub", template / "hub", symlinks=True, dirs_exist_ok=True)
            (template / "complete").touch()


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(_HF_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (`-n 2 --dist loadgroup`, as test.sh runs the tests that drive no browser) each test module
    stays on one worker: its module-scoped servers, CLI runs and studios are set up once."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def catalog():
    from studio.catalog import Catalog

    return Catalog.discover("models")


@pytest.fixture
def make_studio(tmp_path, catalog, tiny_cache):
    """Build a Studio on the CPU or on a simulated device with a byte budget, writing into tmp_path."""
    from studio.device import CpuDevice, SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings

    def make(simulated: int | None = None, *, reserve: int = 0, budget: int | None = None, **kwargs):
        settings = Settings(output_dir=tmp_path / "out", memory_reserve=reserve, memory_budget=budget,
                            simulated_memory=simulated)
        device = SimulatedDevice(simulated, **kwargs) if simulated is not None else CpuDevice()
        return Studio(settings, catalog=catalog, device=device)

    return make


def cpu_studio(catalog, tmp_path_factory):
    """A Studio on the CPU over the session's tiny cache, for a module-scoped `studio` fixture."""
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    return Studio(Settings(output_dir=tmp_path_factory.mktemp("out"), memory_reserve=0), catalog=catalog,
                  device=CpuDevice())
