"""The studio as a new user meets it: `python app.py`, open the page, Generate within the first second.

The app starts a background warm-up (decide the device, import torch and transformers) shortly after the page is
served. A first request that arrives while that warm-up is importing must wait for it, not load a model against a
half-imported transformers ("cannot import name 'AutoTokenizer' from 'transformers'").

Each case is a fresh `python app.py` (about 12 s on two busy cores: page, torch + transformers, a tiny model).
Below them, the lock in studio.libraries that makes the first request wait, tested on a fake lazy module.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from tests.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
MUSIC = dict(model="facebook/musicgen-small", prompt="beat", duration=0.5, seed=1, api_name="/music")
SPEECH = dict(model="facebook/mms-tts-eng", text="hello", seed=1, api_name="/speech")
RATES = {"/music": 32000, "/speech": 16000}

# app.py's main() with the warm-up delay set first: the warm-up starts as the page is served, so the first request
# (sent the moment the server answers) always arrives while torch/transformers are being imported on another thread.
_WARM_UP_NOW = "import sys, app; app.WARM_UP_DELAY_S = 0.0; sys.exit(app.main(sys.argv[1:]))"


def _start(port: int, out: Path, log: Path, *, warm_up_now: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}  # conftest's tiny HF cache, offline
    entry = ["-c", _WARM_UP_NOW] if warm_up_now else ["app.py"]
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, *entry, "--port", str(port), "--output-dir", str(out)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> float:
    """Poll the page every 50 ms; return the seconds until the server first answered."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return time.monotonic() - began
        except urllib.error.HTTPError:  # an answer all the same
            return time.monotonic() - began
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the app did not answer HTTP in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_request(tmp_path: Path, request: dict, *, warm_up_now: bool) -> None:
    from gradio_client import Client

    port, out, log = free_port(), tmp_path / "out", tmp_path / "app.log"
    url = f"http://127.0.0.1:{port}/"
    process = _start(port, out, log, warm_up_now=warm_up_now)
    try:
        _wait_for_http(url, process, log)
        client = Client(url, verbose=False)
        try:
            try:
                path, meta = client.predict(**request)
            except Exception as error:
                raise AssertionError(f"the first request failed: {error}\n--- app log ---\n"
                                     f"{log.read_text()[-4000:]}") from None
        finally:
            client.close()
        rate = RATES[request["api_name"]]
        assert meta["model"] == request["model"] and meta["sample_rate"] == rate
        info = sf.info(path)
        assert info.samplerate == rate and info.frames > 0
    finally:
        _stop(process)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_first_music_request_while_the_default_warm_up_races(tiny_cache, tmp_path, attempt):
    # `python app.py` exactly as a user runs it: the warm-up starts WARM_UP_DELAY_S after the page is served,
    # while the request (sent at once) is on its way or already resolving the device and importing torch.
    _first_request(tmp_path, MUSIC, warm_up_now=False)


@pytest.mark.slow
@pytest.mark.parametrize("request_kwargs", [MUSIC, SPEECH], ids=["music", "speech"])
def test_first_request_while_the_warm_up_is_importing(tiny_cache, tmp_path, request_kwargs):
    # The warm-up starts as the page is served: the request always lands in the middle of its imports.
    _first_request(tmp_path, request_kwargs, warm_up_now=True)


# ---------------------------------------------------------------------------------------- studio.libraries
_FAKE = "studio_tests_fake_lazy_library"


class _LazyLibrary(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A library that imports slowly (until `release`) and, like transformers, swaps itself in sys.modules."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.imports = 0

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name == _FAKE else None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        self.imports += 1
        self.started.set()
        assert self.release.wait(30)
        lazy = types.ModuleType(module.__name__)
        lazy.__spec__, lazy.Model = module.__spec__, "the model class"
        sys.modules[module.__name__] = lazy  # what transformers' __init__ ends with (a _LazyModule)


@pytest.fixture
def fake_library(monkeypatch):
    from studio import libraries

    library = _LazyLibrary()
    monkeypatch.setattr(sys, "meta_path", [library, *sys.meta_path])
    monkeypatch.setattr(libraries, "LIBRARIES", (*libraries.LIBRARIES, _FAKE))
    monkeypatch.setitem(libraries._FIRST_USED, _FAKE, ("Model",))
    monkeypatch.setattr(libraries, "_done", set())
    sys.modules.pop(_FAKE, None)
    try:
        yield library
    finally:
        library.release.set()
        sys.modules.pop(_FAKE, None)


def test_a_second_caller_waits_for_the_import_in_progress(fake_library):
    from studio import libraries

    events: list[str] = []
    returned: dict[str, float] = {}

    def call(who: str) -> None:
        returned[who] = libraries.ensure(_FAKE)
        from studio_tests_fake_lazy_library import Model  # what a loader does next: never the half-built module

        events.append(f"{who} returned, imported={libraries.imported(_FAKE)}, Model={Model!r}")

    warm_up = threading.Thread(target=call, args=("warm-up",))
    warm_up.start()
    assert fake_library.started.wait(30)
    assert _FAKE in sys.modules and not libraries.imported(_FAKE)  # sys.modules says yes too early; imported() not
    request = threading.Thread(target=call, args=("request",))
    request.start()
    request.join(0.3)
    assert request.is_alive() and warm_up.is_alive() and events == []  # both wait for the import
    events.append("import released")
    fake_library.release.set()
    warm_up.join(30)
    request.join(30)
    assert events[0] == "import released"
    assert sorted(events[1:]) == [f"{who} returned, imported=True, Model='the model class'"
                                  for who in ("request", "warm-up")]
    assert fake_library.imports == 1
    assert returned["warm-up"] > 0.2 and returned["request"] == 0.0  # only the importer's time is reported
    assert libraries.ensure(_FAKE) == 0.0 and libraries.imported(_FAKE)


def test_only_the_heavy_libraries_are_accepted():
    from studio import libraries

    with pytest.raises(ValueError, match="numpy"):
        libraries.ensure("numpy")
    with pytest.raises(ValueError, match="numpy"):
        libraries.imported("torch", "numpy")
