"""Faults: out of memory while loading and generating, corrupt or incomplete model files, an interrupted download,
and the server killed mid-run; each through the served API (or the real app in a subprocess).

After each fault the studio must recover or explain with a message that names the model, the numbers and the
fix, and stay consistent: nothing claimed on the device, the model not listed as loaded, the next request served.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import ROOT
from tests.oom import loader_out_of_memory
from tests.serving import free_port as _free_port, serving

MUSIC, SPEECH, OTHER_SPEECH, FRENCH = "facebook/musicgen-small", "facebook/mms-tts-eng", "facebook/mms-tts-deu", \
    "facebook/mms-tts-fra"
GB, MB = 10**9, 10**6
NUMBER = r"\d+(\.\d+)? [kMG]?B"


def _studio(make_studio, catalog, *, device=None, loader=None):
    """A Studio over `device` (a simulated 8 GB GPU by default) whose manager loads through `loader`."""
    from studio.estimate import Calibration
    from studio.manager import PipelineManager
    from studio.service import Studio

    base = make_studio(8 * GB)
    device = device or base.device
    manager = PipelineManager(catalog, device, calibration=Calibration(base.settings.calibration_file), reserve=0,
                              loader=loader)
    return Studio(base.settings, catalog=catalog, device=device, manager=manager, history=base.history)


def _loaded(studio) -> dict[str, str]:
    return {row["id"]: row["state"] for row in studio.manager.snapshot()["models"] if row["bytes"] > 0}


def _nothing_claimed(studio) -> None:
    assert studio.manager.used_bytes() == 0 and studio.device.host_bytes() == 0


# ---------------------------------------------------------------------------------------- (a) out of memory
@pytest.mark.reliability("Faults", "OOM while generating",
                         "API /music with SimulatedDevice.fail_next = 1, then 2: the run's working memory is refused")
def test_oom_while_generating_recovers_through_the_api(make_studio, catalog, reliability):
    studio = _studio(make_studio, catalog)
    with serving(studio) as client:
        client.predict(model=SPEECH, text="an idle model to evict", api_name="/speech")
        studio.device.fail_next = 1
        path, meta = client.predict(model=MUSIC, prompt="first oom", duration=0.5, seed=1, api_name="/music")
        assert meta["recoveries"] == ["out of memory; unloaded 1 idle model(s) and retried"]
        assert meta["placement"] == "device" and sf.info(path).frames > 0
        assert _loaded(studio)[SPEECH] == "in RAM"  # evicted to RAM, not lost

        studio.device.fail_next = 2
        path, meta = client.predict(model=MUSIC, prompt="second oom", duration=0.5, seed=2, api_name="/music")
        assert meta["recoveries"] == ["out of memory; unloaded 0 idle model(s) and retried",
                                      "out of memory again; retried on the CPU"]
        assert meta["placement"] == "cpu" and meta["seed"] == 2 and sf.info(path).frames > 0
        assert studio.device.ooms == 3 and studio.device.peak <= studio.device.capacity
        assert studio.history.count() == 3
    reliability.note("1 OOM: idle model moved to RAM, retried on the device; 2 OOMs: retried on the CPU; "
                     "3 simulated OOMs survived, 3 of 3 requests served, recoveries listed in the metadata")


class _OomRuns:
    """A CPU whose next `fail` runs run out of memory (a CPU has nowhere further to fall back to)."""

    def __new__(cls, fail: int):
        from studio.device import CpuDevice

        class OomRuns(CpuDevice):
            def working(self, tag, nbytes):
                import torch

                if self.fail > 0:
                    self.fail -= 1
                    raise torch.OutOfMemoryError("simulated: no memory")
                return super().working(tag, nbytes)

        device = OomRuns()
        device.fail = fail
        return device


@pytest.mark.reliability("Faults", "OOM while generating, nowhere to fall back",
                         "API /speech on a CPU device whose next 2 runs raise torch.OutOfMemoryError (retry, then no CPU fallback left)")
def test_oom_with_nowhere_to_go_is_explained_with_numbers(make_studio, catalog, reliability):
    studio = _studio(make_studio, catalog, device=_OomRuns(2))
    with serving(studio) as client:
        with pytest.raises(Exception) as raised:
            client.predict(model=SPEECH, text="no memory", api_name="/speech")
        message = str(raised.value)
        assert re.search(rf"{SPEECH} ran out of memory generating \(estimated {NUMBER} weights \+ {NUMBER} working; "
                         rf"budget {NUMBER}, in use {NUMBER}\): shorten the request", message), message
        assert studio.device.fail == 0  # tried twice: after evicting idle models, then it explains
        assert _loaded(studio) == {SPEECH: "on device"}  # loaded, idle, usable again
        path, meta = client.predict(model=SPEECH, text="memory again", api_name="/speech")
        assert meta["recoveries"] == [] and Path(path).exists()
    reliability.note(f"message: {message.strip()[:220]}")
    reliability.note("2 OOMs explained, then the next request served by the same loaded model")


@pytest.mark.reliability("Faults", "OOM while loading, recovered",
                         "API /music with an idle model resident; the first load raises torch.OutOfMemoryError "
                         "(memory taken by another program meanwhile)")
def test_oom_while_loading_evicts_and_retries(make_studio, catalog, reliability):
    calls = []

    def loader_racing_another_program(spec, torch_device, dtype):
        import torch

        calls.append(spec.repo_id)
        if calls == [SPEECH, MUSIC]:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory while loading")
        return catalog.family(spec).load(spec, torch_device, dtype)

    studio = _studio(make_studio, catalog, loader=loader_racing_another_program)
    with serving(studio) as client:
        client.predict(model=SPEECH, text="an idle model", api_name="/speech")
        path, meta = client.predict(model=MUSIC, prompt="after an oom", duration=0.5, seed=5, api_name="/music")
    assert calls == [SPEECH, MUSIC, MUSIC]  # failed once, retried once
    assert meta["placement"] == "device" and meta["seed"] == 5 and sf.info(path).frames > 0
    # The user is told, not only the log: the metadata's "Recovered" row.
    assert meta["recoveries"] == ["out of memory loading; unloaded 1 idle model(s) and loaded again"]
    assert _loaded(studio) == {SPEECH: "in RAM", MUSIC: "on device"}  # the ladder moved the idle model out first
    assert studio.device.peak <= studio.device.capacity
    reliability.note("1 OOM at load: the idle model moved to RAM, the load retried on the device and served")


@pytest.mark.reliability("Faults", "OOM while loading, nowhere to fall back",
                         "the loader raises torch.OutOfMemoryError on the device, on the retry and on the CPU")
def test_oom_while_loading_everywhere_is_explained_and_leaves_nothing_claimed(make_studio, catalog, reliability):
    loader = loader_out_of_memory(catalog, 3, "simulated: no memory while loading")
    studio = _studio(make_studio, catalog, loader=loader)
    with serving(studio) as client:
        with pytest.raises(Exception) as raised:
            client.predict(model=SPEECH, text="no memory", api_name="/speech")
        message = str(raised.value)
        assert re.search(rf"{SPEECH} does not fit in RAM either \({NUMBER} of weights\): close other programs", message)
        assert _loaded(studio) == {} and studio.manager.state_of(SPEECH) == "on disk"
        _nothing_claimed(studio)
        path, meta = client.predict(model=SPEECH, text="memory again", api_name="/speech")
        assert meta["placement"] == "device" and Path(path).exists()
    reliability.note(f"message: {message.strip()[:200]}")
    reliability.note("3 OOMs at load (device, retry, CPU); 0 bytes left claimed; the next request served")


# ---------------------------------------------------------------------------------------- (b) corrupt files
def _snapshot(hf_home: Path, repo_id: str) -> Path:
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    return repo / "snapshots" / (repo / "refs" / "main").read_text().strip()


@contextlib.contextmanager
def _broken(hf_home: Path, repo_id: str, tmp_path: Path):
    """The repo's cached snapshot, to break inside the block; put back as it was afterwards (the cache is shared)."""
    snapshot = _snapshot(hf_home, repo_id)
    backup = tmp_path / f"backup-{repo_id.replace('/', '--')}"
    shutil.copytree(snapshot, backup)
    try:
        yield snapshot
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(backup, snapshot)


def _truncate(snapshot: Path) -> None:
    weights = snapshot / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _garbage_header(snapshot: Path) -> None:
    weights = snapshot / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:64] = b"\xff" * 8 + b"not json at all, just noise" + b"\x00" * 29
    weights.write_bytes(bytes(data))


def _no_config(snapshot: Path) -> None:
    (snapshot / "config.json").unlink()


CORRUPTIONS = {
    "truncated safetensors": (_truncate, r"corrupt or incomplete .*delete them .*download again"),
    "safetensors with a garbage header": (_garbage_header, r"corrupt or incomplete .*delete them .*download again"),
    "missing config.json": (_no_config, r"not in the Hugging Face cache .*(run once online|hf download)"),
}


@pytest.mark.parametrize("kind", [
    pytest.param(kind, marks=pytest.mark.reliability(
        "Faults", f"model files: {kind}", f"{SPEECH}'s cached snapshot broken in place, API /speech; then another "
                                          "model, then the same model once the files are restored"))
    for kind in CORRUPTIONS
])
def test_corrupt_model_files_are_explained_and_leave_the_manager_clean(kind, make_studio, catalog, tiny_cache,
                                                                       tmp_path, reliability):
    corrupt, expected = CORRUPTIONS[kind]
    studio = _studio(make_studio, catalog)
    with serving(studio) as client:
        with _broken(tiny_cache, SPEECH, tmp_path) as snapshot:
            corrupt(snapshot)
            with pytest.raises(Exception) as raised:
                client.predict(model=SPEECH, text="broken files", api_name="/speech")
            message = str(raised.value)
            assert SPEECH in message and re.search(expected, message), message
            assert "Traceback" not in message
            assert SPEECH not in _loaded(studio)
            assert studio.manager.state_of(SPEECH) in ("on disk", "not downloaded")
            _nothing_claimed(studio)
            path, meta = client.predict(model=OTHER_SPEECH, text="Guten Morgen", api_name="/speech")
            assert meta["model"] == OTHER_SPEECH and Path(path).exists()
        path, meta = client.predict(model=SPEECH, text="repaired", api_name="/speech")
        assert meta["model"] == SPEECH and sf.info(path).frames > 0
        assert studio.manager.used_bytes() == sum(row["bytes"] for row in studio.manager.snapshot()["models"]
                                                  if row["placement"] == "device")
    reliability.note(f"message: {message.strip()[:240]}")
    reliability.note("0 bytes left claimed, model not listed as loaded; another model served; the same model "
                     "served once its files were restored")


# ---------------------------------------------------------------------------------------- (c) interrupted download
def _interrupt_download(snapshot: Path) -> Path:
    """What huggingface_hub leaves when a download of the weights stops midway: the small files in place, the
    weights only as a partial `blobs/<etag>.incomplete`, not yet linked into the snapshot."""
    weights = snapshot / "model.safetensors"
    data = weights.read_bytes()
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(exist_ok=True)
    partial = blobs / ("0" * 64 + ".incomplete")
    partial.write_bytes(data[: len(data) // 3])
    weights.unlink()
    return partial


@pytest.mark.reliability("Faults", "interrupted download, retried",
                         f"{FRENCH}: weights only as blobs/<etag>.incomplete (a third of the bytes), offline; "
                         "API /speech, then the same request with the files complete")
def test_an_interrupted_download_is_explained_and_a_retry_with_the_files_succeeds(make_studio, catalog, tiny_cache,
                                                                                  tmp_path, reliability):
    studio = _studio(make_studio, catalog)
    with serving(studio) as client:
        with _broken(tiny_cache, FRENCH, tmp_path) as snapshot:
            partial = _interrupt_download(snapshot)
            with pytest.raises(Exception) as raised:
                client.predict(model=FRENCH, text="bonjour", api_name="/speech")
            message = str(raised.value)
            assert FRENCH in message and re.search(r"corrupt or incomplete .*delete them .*download again", message), message
            assert FRENCH not in _loaded(studio)
            _nothing_claimed(studio)
            shutil.rmtree(partial.parent)
        path, meta = client.predict(model=FRENCH, text="bonjour", api_name="/speech")
        assert meta["model"] == FRENCH and sf.info(path).frames > 0
    reliability.note(f"message: {message.strip()[:220]}")
    reliability.note("0 bytes claimed after the failure; the retry with the files complete served")


@pytest.mark.reliability("Faults", "interrupted download shown as downloaded",
                         "state of a repo whose weights are only a blobs/*.incomplete file (/memory, /estimate)")
def test_a_partial_download_is_not_shown_as_downloaded(make_studio, catalog, tiny_cache, tmp_path, reliability):
    studio = _studio(make_studio, catalog)
    with _broken(tiny_cache, FRENCH, tmp_path) as snapshot:
        _interrupt_download(snapshot)
        reliability.note(f"state shown: {studio.manager.state_of(FRENCH)!r}; "
                         f"estimate cached={studio.estimate(studio.request('speech', FRENCH, 'bonjour')).cached}")
        assert studio.manager.state_of(FRENCH) == "not downloaded"
        assert not studio.estimate(studio.request("speech", FRENCH, "bonjour")).cached


class _Hub(http.server.BaseHTTPRequestHandler):
    """Serves one file the way the Hub's /resolve/ does, honouring Range; records the ranges asked for.

    With `drop_after` set, the first GET sends that many bytes of the body and then closes the connection.
    """

    body = b""
    drop_after: int | None = None
    ranges: list[str] = []

    def _head(self, status: int, length: int, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", '"' + "b" * 64 + '"')
        self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._head(200, len(self.body))

    def do_GET(self) -> None:
        asked = self.headers.get("Range")
        type(self).ranges.append(asked or "")
        start = int(re.match(r"bytes=(\d+)-", asked).group(1)) if asked else 0
        if start:
            self._head(206, len(self.body) - start,
                       {"Content-Range": f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"})
        else:
            self._head(200, len(self.body))
        if type(self).drop_after is not None:
            self.wfile.write(self.body[start:type(self).drop_after])
            type(self).drop_after = None
            self.close_connection = True  # the connection drops mid-file
            return
        self.wfile.write(self.body[start:])

    def log_message(self, *args) -> None:
        pass


def _download(hf_home: Path, body: bytes, drop_after: int | None) -> tuple[bytes, list[str]]:
    """huggingface_hub.hf_hub_download (what from_pretrained calls) from a fake Hub, in a fresh process."""
    _Hub.body, _Hub.drop_after, _Hub.ranges = body, drop_after, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    script = "from huggingface_hub import hf_hub_download; print(hf_hub_download('org/partial', 'model.safetensors'))"
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-2000:]
    return Path(done.stdout.strip().splitlines()[-1]).read_bytes(), list(_Hub.ranges)


@pytest.mark.reliability("Faults", "interrupted download resumes",
                         "a fake Hub on localhost (HF_ENDPOINT) drops the connection at 40 % of a 30 MiB file; then a "
                         "partial blobs/<etag>.incomplete left by a killed process; huggingface_hub.hf_hub_download "
                         "(what the loaders' from_pretrained uses) in a subprocess")
def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, reliability):
    # The studio has no download code of its own that could defeat huggingface_hub's resume: every download is
    # from_pretrained or huggingface_hub's own hf_hub_download / snapshot_download (Stable Audio 3's original files,
    # models/sa3_convert.py), which resume as tested below.
    product = [p for d in ("studio", "models") for p in (ROOT / d).rglob("*.py")]
    own = [str(p.relative_to(ROOT)) for p in product
           if re.search(r"\b(import requests|import httpx|urllib\.request|http\.client)\b", p.read_text(encoding="utf-8"))]
    assert own == [], own
    body = os.urandom(30 * 2**20)  # huggingface_hub keeps what it received in whole 10 MiB chunks

    # A connection dropped mid-file: huggingface_hub asks for the rest only.
    got, ranges = _download(tmp_path / "dropped", body, drop_after=12 * 2**20)
    assert got == body and len(ranges) == 2 and ranges[0] == "", ranges
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
    assert 0 < resumed_at <= 12 * 2**20

    # A partial file left by a process killed mid-download: huggingface_hub 2.x downloads into a per-process
    # temporary and does not reuse an old `<etag>.incomplete`, so the retry starts over (and still completes).
    hf_home = tmp_path / "killed"
    blobs = hf_home / "hub" / "models--org--partial" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("b" * 64 + ".incomplete")).write_bytes(body[:12 * 2**20])
    got, restarted = _download(hf_home, body, drop_after=None)
    assert got == body and restarted == [""], restarted
    reliability.note(f"connection dropped at 12 MiB of 30 MiB: huggingface_hub resumed with {ranges[1]!r} and "
                     "completed; "
                     "no download code of the studio's own (studio/, models/ checked)")
    reliability.note("a partial .incomplete left by a killed process is not reused by huggingface_hub "
                     f"{_hub_version()}: the retry downloads the whole file again and completes")


def _hub_version() -> str:
    import huggingface_hub

    return huggingface_hub.__version__


# ---------------------------------------------------------------------------------------- (d) kill -9 mid-run
def _start_app(port: int, out: Path, hf_home: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--device", "cpu",
                                 "--output-dir", str(out)], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _connect(port: int, process: subprocess.Popen, log: Path):
    from gradio_client import Client

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:
            time.sleep(0.5)
    raise AssertionError(f"the app did not come up in 120 s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.reliability("Faults", "server killed (SIGKILL) mid-run, restarted",
                         "python app.py in a subprocess: 3 good runs, a 30 s musicgen run killed with kill -9 while "
                         "generating (plus leftovers of a write killed midway), restart on the same --output-dir")
def test_kill_during_a_run_then_restart_keeps_the_history_whole(tiny_cache, tmp_path, reliability):
    from gradio_client.utils import Status

    from studio.history import History

    out, log = tmp_path / "out", tmp_path / "app.log"
    port = _free_port()
    process = _start_app(port, out, tiny_cache, log)
    try:
        client = _connect(port, process, log)
        finished = []
        for kwargs in ({"model": SPEECH, "text": "first words", "seed": 11, "api_name": "/speech"},
                       {"model": MUSIC, "prompt": "short tune", "duration": 0.5, "seed": 12, "api_name": "/music"},
                       {"model": SPEECH, "text": "last words", "seed": 13, "api_name": "/speech"}):
            path, meta = client.predict(**kwargs)
            finished.append(meta["file"])
        long_run = client.submit(model=MUSIC, prompt="a very long drone", duration=30, seed=14, api_name="/music")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = long_run.status()
            if status.code == Status.PROGRESS and status.progress_data:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the long run never reported progress: {long_run.status()}")
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        with contextlib.suppress(Exception):
            client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # What a kill while saving would leave (the run above died while generating, before any file existed):
    # write_audio's hidden temporaries and output_path's empty placeholder. One whose lock a live process holds is
    # another process's write in progress and must stay.
    old = time.time() - 3600
    leftovers = [out / ".20260101-000000-music-x.wav.0123abcd.part", out / ".20260101-000000-music-x.wav.json.89abcdef.part",
                 out / "20260101-000000-music-musicgen-small-s9-x-abcdef.wav"]
    for path in leftovers:
        path.write_bytes(b"partial" if path.name.endswith(".part") else b"")
        os.utime(path, (old, old))
    in_progress = out / ".20260101-000001-music-y.wav.fedcba98.part"
    writer = _hold_lock(in_progress)  # another process's write in progress: it holds the file's lock

    process = _start_app(port, out, tiny_cache, log)
    try:
        client = _connect(port, process, log)
        with sqlite3.connect(out / "history.sqlite3") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with History(out / "history.sqlite3", out) as history:
            listed = [item.file for item in history.list()]
        assert sorted(listed) == sorted(finished)
        for name in finished:
            assert sf.info(str(out / name)).frames > 0 and (out / (name + ".json")).exists()
        assert not any("very-long-drone" in p.name for p in out.iterdir())  # the interrupted run left no file
        assert [p for p in leftovers if p.exists()] == []
        assert in_progress.exists()
        path, meta = client.predict(model=SPEECH, text="after the restart", seed=15, api_name="/speech")
        assert meta["history_id"] is not None and Path(path).exists()
        client.close()
    finally:
        _stop(process)
        _release(writer)
    reliability.note(f"{len(finished)} finished files present and listed after kill -9 and restart; "
                     "integrity_check ok; the interrupted run not listed and left no file; 3 leftovers of a write "
                     "killed midway removed at start, a temporary locked by another live writer kept; next request "
                     "served")


# ---------------------------------------------------------------------------------------- (e) leftovers and locks
HOLDER = r"""
import fcntl, os, sys, time
fds = []
for name in sys.argv[1:]:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what write_audio holds while it writes
    fds.append(fd)
print("holding", flush=True)
time.sleep(600)
"""


def _hold_lock(*paths: Path) -> subprocess.Popen:
    """A live process writing `paths`: it created them and holds their locks until it is stopped."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, paths)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def _release(holder: subprocess.Popen) -> None:
    if holder.poll() is None:
        holder.kill()
    holder.wait(timeout=30)


def _age(seconds: float, *paths: Path) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks (fcntl) only; Windows keeps the age rule")
@pytest.mark.reliability("Faults", "leftovers of a killed write, younger than 60 s",
                         "hidden .part temporaries and a 0-byte placeholder 10 s old in the output folder at start, "
                         "next to ones a live second process holds locked (a write in progress)")
def test_leftovers_of_a_killed_write_go_at_start_unless_a_live_writer_holds_them(make_studio, tmp_path, reliability):
    from studio.audio import remove_abandoned_writes

    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".20260101-000000-speech-x.wav.0123abcd.part", out / ".20260101-000000-speech-x.wav.json.89abcdef.part",
             out / "20260101-000000-speech-mms-tts-eng-s1-x-abcdef.wav"]
    for path in stale:
        path.write_bytes(b"partial" if path.name.endswith(".part") else b"")
    live = [out / ".20260101-000001-speech-y.wav.fedcba98.part", out / "20260101-000001-speech-mms-tts-eng-s2-y-123456.wav"]
    writer = _hold_lock(*live)
    try:
        _age(10, *stale, *live)  # younger than the old 60 s rule, older than a lock takes to be taken
        studio = make_studio()  # the start cleans up
        assert [p.name for p in stale if p.exists()] == []
        assert all(p.exists() for p in live)
        generation = studio.generate(studio.request(None, SPEECH, "next to a live writer", seed=3))
        assert generation.path.is_file() and all(p.exists() for p in live)
    finally:
        _release(writer)
    _age(10, *live)
    assert sorted(remove_abandoned_writes(out)) == sorted(live)  # its writer is gone: the next start removes them
    reliability.note("3 leftovers 10 s old removed at start; a .part and a placeholder locked by a live second "
                     "process kept (and a generation beside them served); removed once that process was gone")


@pytest.mark.reliability("Faults", "history locked by another process when the app starts",
                         "python app.py in a subprocess while another process holds history.sqlite3 in exclusive "
                         "locking mode; API /speech meanwhile; then the lock is released")
def test_the_app_starts_and_serves_while_another_process_holds_the_history(tiny_cache, tmp_path, reliability):
    from studio.history import History

    out, log = tmp_path / "out", tmp_path / "app.log"
    History(out / "history.sqlite3", out).close()
    db = out / "history.sqlite3"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT OR IGNORE INTO forgotten (file) VALUES ('held')")
    holder.execute("COMMIT")  # the lock stays until the connection closes
    port = _free_port()
    process = _start_app(port, out, tiny_cache, log)
    try:
        client = _connect(port, process, log)  # the app did not exit
        said = [line for line in log.read_text().splitlines() if "Another process holds the history" in line]
        assert said, log.read_text()[-3000:]
        path, meta = client.predict(model=SPEECH, text="served while locked", seed=4, api_name="/speech")
        assert Path(path).exists() and meta["history_id"] is None
        holder.close()

        def listed() -> list[str]:
            conn = sqlite3.connect(db)  # read the file as another process would; no History, which would reconcile
            try:
                return [f for (f,) in conn.execute("SELECT file FROM generations")]
            except sqlite3.OperationalError:
                return []
            finally:
                conn.close()

        deadline = time.monotonic() + 30
        while listed() != [meta["file"]] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed() == [meta["file"]], log.read_text()[-3000:]
        path, meta = client.predict(model=SPEECH, text="after the release", seed=5, api_name="/speech")
        assert meta["history_id"] is not None
        client.close()
    finally:
        holder.close()
        _stop(process)
    reliability.note(f"the app served; console: {said[0][:170]}")
    reliability.note("the generation made meanwhile had history_id None and its row appeared once the lock was "
                     "released, without a restart; the next one was recorded at once")


# ---------------------------------------------------------------------------------------- (f) files missing or not JSON
def _folder(hf_home: Path, repo_id: str) -> str:
    return str(hf_home / "hub" / f"models--{repo_id.replace('/', '--')}")


def _assert_repair_hint(message: str, hf_home: Path, repo_id: str) -> None:
    assert f"hf download {repo_id} --force-download" in message, message
    assert _folder(hf_home, repo_id) in message, message  # the folder to delete, named
    assert "Traceback" not in message


def _load_refused(make_studio, repo_id: str, precision: str | None = None) -> str:
    """Load `repo_id` through the manager on the CPU; returns the refusal, after checking nothing is left claimed."""
    from studio.errors import ModelUnavailable

    studio = make_studio()
    params = {"precision": precision} if precision else {}
    request = studio.request(None, repo_id, "upbeat electronic dance", seed=1, params=params)
    with pytest.raises(ModelUnavailable) as raised:
        with studio.manager.acquire(request):
            pass
    assert studio.manager.state_of(repo_id) in ("on disk", "not downloaded")
    _nothing_claimed(studio)
    return str(raised.value)


BARK = "suno/bark-small"
STABLE_AUDIO, AUDIOLDM2 = "stabilityai/stable-audio-open-1.0", "cvssp/audioldm2"
# (repo, files deleted from its cached snapshot, the file the message must name, precision)
MISSING_TOKENIZER = {
    "musicgen without tokenizer.json": (MUSIC, ("tokenizer.json",), "tokenizer.json", "float32"),
    # Without spiece.model either, transformers builds a T5 tokenizer of special tokens only, without a word.
    "musicgen without tokenizer.json and spiece.model": (MUSIC, ("tokenizer.json", "spiece.model"), "tokenizer.json",
                                                        "float32"),
    "bark without tokenizer.json and vocab.txt": (BARK, ("tokenizer.json", "vocab.txt"), "vocab.txt", "float32"),
    "MMS-TTS without vocab.json": (SPEECH, ("vocab.json",), "vocab.json", None),
    "stable audio without tokenizer/tokenizer.json": (STABLE_AUDIO, ("tokenizer/tokenizer.json", "tokenizer/spiece.model"),
                                                      "tokenizer/tokenizer.json", None),
    "audioldm2 without tokenizer_2/tokenizer.json": (AUDIOLDM2, ("tokenizer_2/tokenizer.json", "tokenizer_2/spiece.model"),
                                                     "tokenizer_2/tokenizer.json", None),
}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.reliability(
        "Faults", f"model files: {case}", "the files deleted from the cached snapshot (restored after), offline; a "
                                          "load through the manager"))
    for case in MISSING_TOKENIZER
])
def test_a_missing_tokenizer_file_is_named_with_the_fix(case, make_studio, tiny_cache, tmp_path, reliability):
    repo_id, deleted, named, precision = MISSING_TOKENIZER[case]
    with _broken(tiny_cache, repo_id, tmp_path) as snapshot:
        for name in deleted:
            (snapshot / name).unlink()
        message = _load_refused(make_studio, repo_id, precision)
    assert repo_id in message and named in message and "missing" in message, message
    _assert_repair_hint(message, tiny_cache, repo_id)
    reliability.note(f"message: {message[:260]}")


@pytest.mark.reliability("Faults", "model files: a tokenizer that knows no words",
                         f"{BARK}'s vocab.txt cut to its 5 special tokens and tokenizer.json deleted: every file "
                         "present, the tokenizer built from them has no word; then the files restored")
def test_a_tokenizer_without_words_is_refused_and_the_repaired_files_load(make_studio, tiny_cache, tmp_path,
                                                                         reliability):
    with _broken(tiny_cache, BARK, tmp_path) as snapshot:
        (snapshot / "tokenizer.json").unlink()
        (snapshot / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
        message = _load_refused(make_studio, BARK, "float32")
    assert BARK in message and "vocab.txt" in message and "unknown" in message, message
    _assert_repair_hint(message, tiny_cache, BARK)
    studio = make_studio()
    with studio.manager.acquire(studio.request(None, BARK, "hello", seed=1, params={"precision": "float32"})) as lease:
        assert len(lease.model.preprocess.tokenizer) > 100  # the restored files load
    reliability.note(f"message: {message[:260]}")
    reliability.note("nothing left claimed; with the files restored the same model loads")


def _not_json(snapshot: Path, name: str) -> None:
    (snapshot / name).write_text('{"model_type": "cut short', encoding="utf-8")


# (repo, the file made not JSON, precision)
NOT_JSON = {
    "config.json": (SPEECH, "config.json", None),
    "a diffusers component's config.json": (STABLE_AUDIO, "transformer/config.json", None),
    "tokenizer_config.json": (MUSIC, "tokenizer_config.json", "float32"),  # the error names no file
}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.reliability(
        "Faults", f"model files: {case} not JSON", "the file overwritten with text cut short (restored after), "
                                                   "offline; a load through the manager"))
    for case in NOT_JSON
])
def test_a_json_file_that_does_not_parse_is_named_with_the_fix(case, make_studio, tiny_cache, tmp_path, reliability):
    repo_id, name, precision = NOT_JSON[case]
    with _broken(tiny_cache, repo_id, tmp_path) as snapshot:
        _not_json(snapshot, name)
        message = _load_refused(make_studio, repo_id, precision)
    assert repo_id in message and name in message and "not valid JSON" in message, message
    _assert_repair_hint(message, tiny_cache, repo_id)
    reliability.note(f"message: {message[:260]}")
