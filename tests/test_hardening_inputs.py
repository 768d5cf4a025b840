"""Bad input through every entry point: the named API (gradio_client against one served app), the CLI
(`python -m studio generate` in a subprocess) and the page's handlers (Endpoints, as the tabs call them).

Every case must end in one clear message naming the value and the fix, leave the server answering, serve
the next good request, and lose nothing generated before: files, their sidecars and their history rows.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import run_studio
from tests.serving import serving

ROOT = Path(__file__).resolve().parent.parent
MUSIC, SPEECH, SFX, BARK = "facebook/musicgen-small", "facebook/mms-tts-eng", "cvssp/audioldm2", "suno/bark-small"
GB = 10**9
TEXT_ARG = {"music": "prompt", "speech": "text", "sfx": "prompt"}
FAST = {"music": {"duration": 0.5}, "sfx": {"duration": 1, "steps": 2}, "speech": {}}
CLI_TIMEOUT_S = 120


@dataclass
class Served:
    studio: Any
    client: Any
    endpoints: Any
    keeper: Path  # generated before any bad input; must outlive every case
    keeper_id: int

    def files(self) -> set[str]:
        return {p.name for p in Path(self.studio.settings.output_dir).iterdir() if p.is_file()}

    def history_ids(self) -> set[int]:
        return {item.id for item in self.studio.history.list("", limit=1000)}


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalog, tiny_cache):
    """One app for the module: a simulated 8 GB GPU, output in a temporary folder, one clip made up front."""
    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings
    from studio.ui.endpoints import Endpoints

    settings = Settings(output_dir=tmp_path_factory.mktemp("hardening") / "out", memory_reserve=0)
    studio = Studio(settings, catalog=catalog, device=SimulatedDevice(8 * GB))
    with serving(studio) as client:
        path, meta = client.predict(model=SPEECH, text="keep me safe", seed=1, api_name="/speech")
        keeper = Path(settings.output_dir) / meta["file"]
        assert keeper.is_file() and Path(path).is_file()
        yield Served(studio, client, Endpoints(studio), keeper, meta["history_id"])


@contextlib.contextmanager
def nothing_lost(served: Served, reliability, *, new_files: int = 0):
    """Around a bad request: afterwards the server answers, the next good request is served, and every file
    and history row from before is still there (`new_files` files may be added by the case itself)."""
    files, rows = served.files(), served.history_ids()
    yield
    assert served.client.predict(api_name="/memory")["device"], "the server stopped answering"
    assert files <= served.files(), f"files were lost: {files - served.files()}"
    assert rows <= served.history_ids(), "history rows were lost"
    assert served.keeper.is_file() and served.keeper.with_name(served.keeper.name + ".json").is_file()
    assert served.studio.history.get(served.keeper_id) is not None
    path, meta = served.client.predict(model=SPEECH, text="the next one", seed=2, api_name="/speech")
    assert Path(path).is_file() and meta["model"] == SPEECH
    added = served.files() - files - {meta["file"], meta["file"] + ".json"}
    assert len(added) <= new_files, f"the bad request left files behind: {sorted(added)}"
    reliability.note("next request served; earlier files and history rows intact")


def _contains_all(message: str, fragments: tuple[str, ...]) -> None:
    lowered = message.lower()
    missing = [f for f in fragments if f.lower() not in lowered]
    assert not missing, f"the message {message!r} lacks {missing}"


# ---------------------------------------------------------------------- the matrix of refused values

@dataclass(frozen=True)
class Bad:
    """A request every entry point must refuse, with the fragments its message must contain (value, rule, fix)."""

    case: str
    task: str
    model: str
    text: str
    expect: tuple[str, ...]
    params: dict = field(default_factory=dict)
    seed: Any = -1
    fmt: str = "wav"
    cli: bool = True  # the CLI takes this value too
    cli_expect: tuple[str, ...] | None = None  # when the CLI's wording differs (it sees text, not numbers)
    api_params: dict | None = None  # what the API client sends instead (JSON has no NaN or infinity)
    api_refuses: str | None = None  # gradio_client itself refuses the call, naming this argument

    def api_kwargs(self) -> dict:
        params = self.params if self.api_params is None else self.api_params
        return {"model": self.model, TEXT_ARG[self.task]: self.text, "seed": self.seed, "format": self.fmt,
                **params, "api_name": f"/{self.task}"}

    def cli_args(self) -> list[str]:
        args = ["--model", self.model, "--prompt", self.text, "--format", self.fmt]
        if self.seed != -1:
            args += ["--seed", str(self.seed)]
        for name, value in self.params.items():
            if name in ("duration", "voice"):
                args += [f"--{name}", str(value)]
            else:
                args += ["--set", f"{name}={value}"]
        return args


CHOICES = "choose one of"
RANGE = "pick a value in that range"
BAD = [
    Bad("empty prompt", "music", MUSIC, "", ("prompt is empty", "describe what you want to hear"), FAST["music"]),
    Bad("whitespace-only prompt", "music", MUSIC, " \t\n  ", ("prompt is empty", "describe"), FAST["music"]),
    Bad("empty text to speak", "speech", SPEECH, "", ("text is empty", "describe")),
    Bad("100,000-character prompt", "music", MUSIC, "la " * 33_333 + "a", ("100,000 characters", "at most 2,000",
                                                                             "shorten it"), FAST["music"]),
    Bad("duration 0", "music", MUSIC, "lofi", ("duration", "between 0.5 and 30", "is 0", RANGE), {"duration": 0}),
    Bad("duration negative", "music", MUSIC, "lofi", ("duration", "is -3", RANGE), {"duration": -3}),
    Bad("duration NaN", "music", MUSIC, "lofi", ("duration", "nan", "finite number"), {"duration": math.nan},
        api_params={"duration": "NaN"}),
    Bad("duration infinity", "music", MUSIC, "lofi", ("duration", "inf", "finite number"), {"duration": math.inf},
        api_params={"duration": "Infinity"}),
    Bad("duration above the model's maximum", "music", MUSIC, "lofi", ("duration", "31", "between 0.5 and 30", RANGE),
        {"duration": 31}),
    Bad("duration not a number", "music", MUSIC, "lofi", ("duration", "ten", "must be a number"),
        {"duration": "ten"}),
    Bad("duration for a speech model", "speech", SPEECH, "hi", (SPEECH, "duration"), {"duration": 3},
        api_refuses="duration"),
    Bad("seed negative (other than -1)", "speech", SPEECH, "hi", ("seed", "-2", "-1 for a random one"), seed=-2),
    Bad("seed huge", "speech", SPEECH, "hi", ("seed", str(2**70), "between 0 and 4294967295"), seed=2**70),
    Bad("seed not a number", "speech", SPEECH, "hi", ("seed", "abc", "must be a number"), seed="abc"),
    Bad("sfx steps 0", "sfx", SFX, "glass", ("steps", "is 0", "between 1 and 500", RANGE), {"steps": 0}),
    Bad("sfx steps huge", "sfx", SFX, "glass", ("steps", "1000000000", "between 1 and 500"), {"steps": 10**9}),
    Bad("sfx guidance negative", "sfx", SFX, "glass", ("guidance_scale", "-1", "between 1 and 15", RANGE),
        {"guidance_scale": -1, "steps": 2}),
    Bad("unknown setting", "music", MUSIC, "lofi", ("no setting", "temprature", "its settings are"),
        {"temprature": 1}, api_refuses="temprature"),
    Bad("unknown model", "music", "nope/unknown", "lofi", ("nope/unknown", CHOICES, MUSIC)),
    Bad("model id '../../etc/passwd'", "music", "../../etc/passwd", "lofi", ("../../etc/passwd", CHOICES, MUSIC)),
    Bad("model id '/etc/passwd'", "music", "/etc/passwd", "lofi", ("/etc/passwd", CHOICES, MUSIC)),
    Bad("model id 'facebook//musicgen-small'", "music", "facebook//musicgen-small", "lofi",
        ("facebook//musicgen-small", CHOICES)),
    Bad("model id 'facebook/../facebook/musicgen-small'", "music", "facebook/../facebook/musicgen-small", "lofi",
        ("facebook/../facebook/musicgen-small", CHOICES)),
    Bad("speech model on the music endpoint", "music", SPEECH, "lofi", (SPEECH, "not a music model", CHOICES),
        cli=False),
    Bad("unknown Bark voice", "speech", BARK, "hello", ("v9/zz_speaker_0", "not a voice of suno/bark-small", CHOICES),
        {"voice": "v9/zz_speaker_0"}),
    Bad("unknown MMS language facebook/mms-tts-xyz", "speech", "facebook/mms-tts-xyz", "hello",
        ("facebook/mms-tts-xyz", "mms-tts-iso", "eng")),
    Bad("unknown format", "speech", SPEECH, "hi", ("aiff", "wav, flac, mp3, ogg"), fmt="aiff"),
    Bad("format shaped like a path", "speech", SPEECH, "hi", ("../x", "wav, flac, mp3, ogg"), fmt="../x"),
]


def _case_param(case: Bad):
    return pytest.param(case, id=case.case, marks=pytest.mark.reliability(
        "Bad input", case.case, "API /" + case.task + ", page handler" + (", CLI" if case.cli else "")))


# The CLI cases are separate processes of ~0.3 s each (they stop before torch is imported): all start together.
_cli_pool = ThreadPoolExecutor(max_workers=2)
_cli_runs: dict[str, Any] = {}
_cli_lock = threading.Lock()


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


def _run_cli(args: list[str], workdir: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_studio(["generate", *args], cwd=ROOT, env=env, timeout=CLI_TIMEOUT_S)


def _cli(case: Bad, workdir: Path) -> subprocess.CompletedProcess:
    with _cli_lock:
        if not _cli_runs:
            for other in BAD:
                if other.cli:
                    slug = "".join(c if c.isalnum() else "-" for c in other.case)
                    out = workdir / f"{slug}.{other.fmt if other.fmt.isalnum() else 'wav'}"
                    _cli_runs[other.case] = (out, _cli_pool.submit(
                        _run_cli, [*other.cli_args(), "--out", str(out), "--output-dir", str(workdir / "outputs")],
                        workdir))
    out, future = _cli_runs[case.case]
    proc = future.result(timeout=CLI_TIMEOUT_S)
    assert not out.exists(), "a refused CLI run wrote its --out file"
    return proc


@pytest.mark.parametrize("case", [_case_param(c) for c in BAD])
def test_bad_value_is_refused_clearly_everywhere(case: Bad, served, cli_dir, reliability):
    import gradio as gr
    from gradio_client.exceptions import AppError

    from studio.errors import StudioError
    from studio.ui.endpoints import user_errors

    with nothing_lost(served, reliability):
        if case.api_refuses:  # the endpoint has no such argument: the client says so before sending anything
            with pytest.raises(TypeError) as api_error:
                served.client.predict(**case.api_kwargs())
            _contains_all(str(api_error.value), (case.api_refuses, "not a valid key-word argument", "view API"))
        else:
            with pytest.raises(AppError) as api_error:
                served.client.predict(**case.api_kwargs())
            _contains_all(str(api_error.value), case.expect)

        with pytest.raises(gr.Error) as page_error:  # what the tab's Generate shows
            user_errors(served.endpoints.generate)(case.task, case.model, case.text, seed=case.seed,
                                                   params=case.params, fmt=case.fmt)
        assert isinstance(page_error.value.__cause__, StudioError)
        _contains_all(str(page_error.value.__cause__), case.expect)
    reliability.note(f"message: {str(api_error.value)[:160]}")

    if case.cli:
        proc = _cli(case, cli_dir)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
        assert proc.stdout == ""
        _contains_all(lines[0], case.cli_expect or case.expect)
        reliability.note("CLI exit 2 with one line on stderr")


# ---------------------------------------------------------------------- values that may succeed

ODD_TEXT = [
    ("control characters", SPEECH, "speech", "bell\x07 null\x00 escape\x1b[31m red\x7f done", "bell null escape[31m red done"),
    ("emoji", SPEECH, "speech", "Good morning 🎵🔥 friends", "Good morning 🎵🔥 friends"),
    ("right-to-left text", MUSIC, "music", "שלום עולם مرحبا بالعالم drum loop", "שלום עולם مرحبا بالعالم drum loop"),
]


@pytest.mark.parametrize("name, model, task, text, stored", [
    pytest.param(*row, id=row[0], marks=pytest.mark.reliability(
        "Bad input", f"{row[0]} in the prompt", f"API /{row[2]}, page handler, CLI")) for row in ODD_TEXT])
def test_unusual_text_is_served_and_stored_intact(name, model, task, text, stored, served, cli_dir, reliability):
    """Printable text (emoji, RTL) is kept exactly; control characters are dropped (they cannot be spoken)."""
    from studio.audio import read_metadata

    with nothing_lost(served, reliability, new_files=4):
        path, meta = served.client.predict(model=model, **{TEXT_ARG[task]: text}, **FAST[task], seed=3,
                                           api_name=f"/{task}")
        assert meta[TEXT_ARG[task]] == stored
        assert served.studio.history.get(meta["history_id"]).prompt == stored
        assert read_metadata(Path(served.studio.settings.output_dir) / meta["file"])[TEXT_ARG[task]] == stored
        assert "\x00" not in meta["file"] and "/" not in meta["file"]

        result = served.endpoints.generate(task, model, text, seed=4, params=FAST[task])
        assert result.metadata[TEXT_ARG[task]] == stored
        assert served.studio.history.get(result.history_id).prompt == stored

    out = cli_dir / f"odd-{task}-{len(text)}.wav"
    args = ["--model", model, "--prompt", text, "--seed", "5", "--out", str(out)]
    if "\x00" in text:  # argv cannot carry NUL: the CLI gets the rest of the control characters
        args[3] = text.replace("\x00", "")
    if task == "music":
        args += ["--duration", "0.5"]
    proc = _run_cli([*args, "--output-dir", str(cli_dir / "outputs")], cli_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)[TEXT_ARG[task]] == stored and out.is_file()
    reliability.note(f"stored as {stored!r} in the metadata, the sidecar and the history; CLI too")


@pytest.mark.reliability("Bad input", "seed -1 (random) is valid", "API /speech, page handler")
def test_seed_minus_one_picks_a_random_seed(served, reliability):
    with nothing_lost(served, reliability, new_files=4):
        _, meta = served.client.predict(model=SPEECH, text="random seed", seed=-1, api_name="/speech")
        assert 0 <= meta["seed"] <= 2**32 - 1
        result = served.endpoints.generate("speech", SPEECH, "random seed", seed=-1)
        assert 0 <= result.metadata["seed"] <= 2**32 - 1
    reliability.note(f"seed -1 became {meta['seed']} and {result.metadata['seed']}")


# ---------------------------------------------------------------------- settings: memory budget, output folder

@pytest.mark.reliability("Bad input", "malformed --memory-budget", "CLI flag, app.py flag and STUDIO_MEMORY_BUDGET, "
                                                                   "Settings")
@pytest.mark.parametrize("value", ["lots", "-1GB", "6XB", "nan", "0"])
def test_malformed_memory_budget_is_refused(value, cli_dir, reliability):
    from studio.errors import InvalidInput
    from studio.settings import parse_settings

    out = cli_dir / f"budget-{abs(hash(value))}.wav"
    proc = _run_cli(["--model", SPEECH, "--prompt", "hi", f"--memory-budget={value}", "--out", str(out)], cli_dir)
    assert proc.returncode == 2 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    _contains_all(lines[0], ("--memory-budget", "6GB"))
    assert value in lines[0] or f"'{value}'" in lines[0]

    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    app = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env={**env, "STUDIO_MEMORY_BUDGET": value},
                         capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    assert app.returncode == 2, app.stderr[-2000:]
    _contains_all(app.stderr, ("STUDIO_MEMORY_BUDGET", value, "6GB"))

    with pytest.raises(InvalidInput, match="6GB"):
        parse_settings([f"--memory-budget={value}"], env={})
    reliability.note(f"{value!r}: {lines[0]}")


def _blocked_dir(tmp_path: Path) -> Path:
    """A folder that cannot be created: its parent is a regular file (works as root, where chmod does not)."""
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a folder\n")
    return blocker / "outputs"


@pytest.mark.reliability("Bad input", "output folder not writable", "CLI --output-dir, Studio (app start), "
                                                                   "API with a read-only folder")
def test_unwritable_output_folder_is_a_clear_error(tmp_path, served, catalog, reliability):
    from studio.errors import StorageError
    from studio.service import Studio
    from studio.settings import Settings

    blocked = _blocked_dir(tmp_path)
    proc = _run_cli(["--model", SPEECH, "--prompt", "hi", "--out", str(tmp_path / "x.wav"),
                     "--output-dir", str(blocked)], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    _contains_all(lines[0], (str(blocked), "--output-dir"))
    assert not (tmp_path / "x.wav").exists()
    reliability.note(f"CLI: {lines[0][:160]}")

    with pytest.raises(StorageError) as error:
        Studio(Settings(output_dir=blocked), catalog=catalog)
    _contains_all(str(error.value), (str(blocked), "--output-dir"))

    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    app = subprocess.run([sys.executable, "app.py", "--output-dir", str(blocked)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    assert app.returncode == 2 and "Traceback" not in app.stderr, app.stderr[-2000:]
    _contains_all(app.stderr, (str(blocked), "--output-dir"))

    if os.geteuid() == 0:
        reliability.note("API variant (chmod a-w on the served folder) not run: root ignores file modes")
        return
    folder = Path(served.studio.settings.output_dir)
    with nothing_lost(served, reliability):
        folder.chmod(0o555)
        try:
            with pytest.raises(Exception, match="--output-dir"):
                served.client.predict(model=SPEECH, text="read only", api_name="/speech")
        finally:
            folder.chmod(0o755)


@pytest.mark.reliability("Bad input", "disk full while writing (ENOSPC)", "API /speech and page handler with the "
                                                                         "encoder write failing")
def test_full_disk_is_clear_and_leaves_nothing_behind(served, monkeypatch, reliability):
    import gradio as gr

    import studio.audio as audio
    from studio.errors import StorageError
    from studio.ui.endpoints import user_errors

    def full_disk(tmp, *args, **kwargs):
        tmp.write_bytes(b"RIFF partial")  # a few bytes land before the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    count = served.studio.history.count("")
    with nothing_lost(served, reliability):
        monkeypatch.setattr(audio, "_encode", full_disk)
        try:
            with pytest.raises(Exception) as api_error:
                served.client.predict(model=SPEECH, text="disk full", seed=6, api_name="/speech")
            with pytest.raises(gr.Error) as page_error:
                user_errors(served.endpoints.generate)("speech", SPEECH, "disk full", seed=6)
        finally:
            monkeypatch.undo()
        for message in (str(api_error.value), str(page_error.value.__cause__)):
            _contains_all(message, ("no space left", "free disk space", "--output-dir"))
        assert isinstance(page_error.value.__cause__, StorageError)
        assert not [p for p in served.files() if "disk-full" in p or ".tmp" in p or p.startswith(".")], served.files()
        assert served.studio.history.count("") == count
        assert served.studio.history.count("disk full") == 0
    reliability.note(f"message: {str(api_error.value)[:160]}; no partial file, history unchanged")


# ---------------------------------------------------------------------- cancel and unload at the wrong time

def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.reliability("Bad input", "cancel when nothing runs", "page handler (Endpoints.cancel), API job.cancel() "
                                                                  "of a finished job")
def test_cancel_with_nothing_running_is_harmless(served, reliability):
    with nothing_lost(served, reliability, new_files=2):
        assert served.endpoints.cancel("no-such-session:music") == 0
        job = served.client.submit(model=SPEECH, text="done soon", api_name="/speech")
        path, _ = job.result(timeout=60)
        assert Path(path).is_file()
        job.cancel()  # finished: nothing to cancel, no error (gradio_client answers True all the same)
        assert served.endpoints.cancel("no-such-session:music") == 0
    reliability.note("Endpoints.cancel returned 0; job.cancel() of a finished job raised nothing")


@pytest.mark.reliability("Bad input", "cancel twice", "page handler (Endpoints.cancel) and API job.cancel() twice "
                                                      "during a long run")
def test_cancel_twice_stops_the_run_once(served, reliability):
    from studio.errors import Cancelled

    manager = served.studio.manager
    with nothing_lost(served, reliability, new_files=2):
        served.endpoints.generate("music", MUSIC, "warm up", seed=1, params={"duration": 0.5})  # loaded: starts at once
        outcome: dict[str, Any] = {}

        def long_run() -> None:
            try:
                served.endpoints.generate("music", MUSIC, "a very long drone", seed=1, params={"duration": 30},
                                          session="twice:music")
            except Exception as error:  # the thread reports back to the test
                outcome["error"] = error

        worker = threading.Thread(target=long_run)
        worker.start()
        assert _wait_for(lambda: manager.state_of(MUSIC) == "in use")
        assert served.endpoints.cancel("twice:music") == 1
        second = served.endpoints.cancel("twice:music")
        assert second in (0, 1)
        worker.join(timeout=60)
        assert not worker.is_alive() and isinstance(outcome.get("error"), Cancelled)
        assert served.endpoints.cancel("twice:music") == 0
        assert _wait_for(lambda: manager.state_of(MUSIC) == "on device")

        job = served.client.submit(model=MUSIC, prompt="another long drone", duration=30, api_name="/music")
        assert _wait_for(lambda: manager.state_of(MUSIC) == "in use")
        assert job.cancel() is True
        job.cancel()  # again: no error
        assert _wait_for(lambda: manager.state_of(MUSIC) == "on device")
        assert not [p for p in served.files() if "long-drone" in p]
    reliability.note("first cancel stopped the run (Cancelled), the second was a no-op; model back to idle")


@pytest.mark.reliability("Bad input", "unload a model while it generates", "memory panel handler (Endpoints.unload, "
                                                                           "unload_all, unload_message) during an API run")
def test_unload_while_generating_is_deferred(served, reliability):
    from studio.ui.text import unload_message

    manager = served.studio.manager
    with nothing_lost(served, reliability, new_files=4):
        served.client.predict(model=MUSIC, prompt="warm up", duration=0.5, api_name="/music")
        job = served.client.submit(model=MUSIC, prompt="steady pulse", duration=4, seed=9, api_name="/music")
        assert _wait_for(lambda: manager.state_of(MUSIC) == "in use")
        assert served.endpoints.unload(MUSIC) == "deferred"
        outcome = served.endpoints.unload_all()
        assert outcome.get(MUSIC) == "deferred"
        message = unload_message({MUSIC: "deferred"})
        assert MUSIC in message and "after the current run" in message
        assert manager.state_of(MUSIC) == "in use"  # the run keeps its model
        path, meta = job.result(timeout=120)
        assert Path(path).is_file() and meta["duration"] == pytest.approx(4, abs=0.05)
        assert _wait_for(lambda: manager.state_of(MUSIC) not in ("in use", "on device"))
        assert served.endpoints.unload("nope/unknown") == "not loaded"
    reliability.note(f"unload during the run: 'deferred' ({message}); the run finished, then the model was unloaded")


# ---------------------------------------------------------------------- long values, non-text text, seed -1

LONG = "x" * 100_000
SHORT_MESSAGE = 500  # characters: a refused 100,000-character value must not come back whole
NUMBER, CHOICE = ("must be a number",), ("choose one of",)
# (task, model, field, fragments of the message besides the field's name); every field that echoes what it is given.
LONG_FIELDS = [
    ("music", MUSIC, "duration", NUMBER), ("music", MUSIC, "guidance_scale", NUMBER),
    ("music", MUSIC, "temperature", NUMBER), ("music", MUSIC, "top_k", NUMBER), ("music", MUSIC, "top_p", NUMBER),
    ("music", MUSIC, "precision", CHOICE), ("speech", SPEECH, "speaking_rate", NUMBER),
    ("speech", SPEECH, "noise_scale", NUMBER), ("sfx", SFX, "steps", NUMBER), ("sfx", SFX, "waveforms", NUMBER),
    ("sfx", SFX, "guidance_scale", NUMBER), ("sfx", SFX, "scheduler", CHOICE), ("sfx", SFX, "precision", CHOICE),
    ("speech", BARK, "text_temperature", NUMBER), ("speech", BARK, "max_chunk_seconds", NUMBER),
    ("speech", BARK, "voice", CHOICE), ("speech", SPEECH, "seed", NUMBER),
    ("speech", SPEECH, "format", ("wav, flac, mp3, ogg",)), ("music", MUSIC, "model", CHOICE),
]


def _long_request(task: str, model: str, name: str) -> tuple[dict, dict]:
    """(API keyword arguments, page handler keyword arguments) with `name` set to the 100,000-character value."""
    api = {"model": model, TEXT_ARG[task]: "hi", **{k: v for k, v in FAST[task].items() if k != name}}
    page = {"task": task, "model": model, "prompt": "hi", "seed": -1, "fmt": "wav",
            "params": {k: v for k, v in FAST[task].items() if k != name}}
    if name in ("model", "seed"):
        page[name] = LONG
    elif name == "format":
        page["fmt"] = LONG
    else:
        page["params"][name] = LONG
    api[name] = LONG
    return api, page


@pytest.mark.parametrize("task, model, name, expect", [
    pytest.param(*row, id=f"{row[2]} ({row[1]})", marks=pytest.mark.reliability(
        "Bad input", f"100,000-character {row[2]} ({row[1]})", f"API /{row[0]}, page handler"))
    for row in LONG_FIELDS])
def test_a_huge_value_is_echoed_clipped(task, model, name, expect, served, reliability):
    """The message names the field and the fix, and quotes at most the start of what was sent (not 100 kB)."""
    import gradio as gr
    from gradio_client.exceptions import AppError

    from studio.ui.endpoints import user_errors

    api, page = _long_request(task, model, name)
    with pytest.raises(AppError) as api_error:
        served.client.predict(**api, api_name=f"/{task}")
    with pytest.raises(gr.Error) as page_error:
        user_errors(served.endpoints.generate)(page.pop("task"), page.pop("model"), page.pop("prompt"), **page)
    for message in (str(api_error.value), str(page_error.value.__cause__)):
        assert len(message) < SHORT_MESSAGE, f"{len(message):,} characters: {message[:300]}…"
        _contains_all(message, (name if name != "format" else "format", "xxxxxxxx", *expect))
    assert served.client.predict(api_name="/memory")["device"]
    reliability.note(f"{len(str(api_error.value))} characters: {str(api_error.value)[:160]}")


@pytest.mark.reliability("Bad input", "100,000-character values on the command line",
                         "CLI --duration, --seed, --format, --set precision=, --set temperature=, "
                         "--set without =, --out")
def test_a_huge_value_is_echoed_clipped_by_the_cli(cli_dir, reliability):
    cases = {
        "duration": (["--duration", LONG], ("duration", "must be a number")),
        "seed": (["--seed", LONG], ("seed", "must be a number")),
        "format": (["--format", LONG], ("format", "wav, flac, mp3, ogg")),
        "precision": (["--set", f"precision={LONG}"], ("precision", "choose one of")),
        "temperature": (["--set", f"temperature={LONG}"], ("temperature", "must be a number")),
        "set": (["--set", LONG], ("--set", "NAME=VALUE")),
        "out": (["--out", str(cli_dir / LONG[:4000] / "x.wav")], ("--out", "choose another")),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(_run_cli, ["--model", MUSIC, "--prompt", "hi", "--out",
                                             str(cli_dir / f"long-{name}.wav"), *args], cli_dir)
                for name, (args, _) in cases.items()}
        for name, (_, expect) in cases.items():
            proc = runs[name].result(timeout=CLI_TIMEOUT_S)
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert len(proc.stderr) < SHORT_MESSAGE, f"{name}: {len(proc.stderr):,} characters on stderr"
            _contains_all(proc.stderr, expect)
            assert not (cli_dir / f"long-{name}.wav").exists()
    reliability.note("exit 2, one short line on stderr for each")


NOT_TEXT = [("negative_prompt", [1, 2]), ("negative_prompt", {"a": 1}), ("negative_prompt", True),
            ("negative_prompt", 3), ("scheduler", ["DDIM"]), ("precision", False)]


@pytest.mark.parametrize("name, value", [
    pytest.param(name, value, id=f"{name}={value!r}", marks=pytest.mark.reliability(
        "Bad input", f"sfx {name} {value!r} (not text)", "API /sfx, page handler")) for name, value in NOT_TEXT])
def test_a_text_setting_refuses_what_is_not_text(name, value, served, reliability):
    import gradio as gr
    from gradio_client.exceptions import AppError

    from studio.ui.endpoints import user_errors

    expect = (name, "must be text", type(value).__name__)
    with pytest.raises(AppError) as api_error:
        served.client.predict(model=SFX, prompt="glass", **FAST["sfx"], **{name: value}, api_name="/sfx")
    _contains_all(str(api_error.value), expect)
    with pytest.raises(gr.Error) as page_error:
        user_errors(served.endpoints.generate)("sfx", SFX, "glass", seed=1, params={**FAST["sfx"], name: value})
    _contains_all(str(page_error.value.__cause__), expect)
    assert served.client.predict(api_name="/memory")["device"]
    reliability.note(f"message: {str(api_error.value)[:160]}")


def _call_raw(served: Served, task: str, **given: Any) -> dict:
    """POST /gradio_api/call/<task> with JSON escaped as ASCII (\\ud800 as such: gradio_client cannot send a lone
    surrogate) and read the event stream; returns the metadata of the result, or raises AssertionError with the
    error event's message."""
    import inspect

    import httpx

    signature = inspect.signature(served.endpoints.api_generate(task))
    values = signature.bind_partial(**given)
    values.apply_defaults()
    data = [values.arguments[name] for name in signature.parameters if name != "request"]
    url = served.client.src.rstrip("/")
    with httpx.Client(base_url=url, timeout=120) as http:
        posted = http.post(f"/gradio_api/call/{task}", content=json.dumps({"data": data}, ensure_ascii=True),
                           headers={"content-type": "application/json"})
        assert posted.status_code == 200, posted.text
        stream = http.get(f"/gradio_api/call/{task}/{posted.json()['event_id']}").text
    event = data_line = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data_line = line.split(":", 1)[1].strip()
        if event in ("complete", "error") and data_line is not None:
            break
    assert event == "complete", f"{event}: {data_line!r}"
    return json.loads(data_line)[1]


@pytest.mark.reliability("Bad input", "lone surrogate and control characters in the negative prompt",
                         "API /sfx (raw HTTP: JSON \\ud800), page handler")
def test_the_negative_prompt_is_cleaned_like_the_prompt(served, reliability):
    with nothing_lost(served, reliability, new_files=10):
        for value, stored in (("\ud800", ""), ("soft\ud800 hiss\x07", "soft hiss"), ("  \x00 ", "")):
            meta = _call_raw(served, "sfx", model=SFX, prompt="glass", negative_prompt=value, seed=1, **FAST["sfx"])
            assert meta["settings"]["negative_prompt"] == stored, meta
        meta = _call_raw(served, "sfx", model=SFX, prompt="glass\ud800 shatter", seed=1, **FAST["sfx"])
        assert meta["prompt"] == "glass shatter"  # the prompt's own cleaning, which the negative prompt now shares
        result = served.endpoints.generate("sfx", SFX, "glass", seed=1,
                                           params={**FAST["sfx"], "negative_prompt": "\ud800quiet\x1b"})
        assert result.metadata["settings"]["negative_prompt"] == "quiet"
    reliability.note("surrogates and control characters dropped, as in the prompt; the run is served")


@pytest.mark.reliability("Bad input", "seed '-1' as text (random)", "API /speech, page handler")
@pytest.mark.parametrize("seed", ["-1", " -1 ", -1.0])
def test_seed_minus_one_as_text_picks_a_random_seed(seed, served, reliability):
    _, meta = served.client.predict(model=SPEECH, text="random seed", seed=seed, api_name="/speech")
    assert 0 <= meta["seed"] <= 2**32 - 1
    result = served.endpoints.generate("speech", SPEECH, "random seed", seed=seed)
    assert 0 <= result.metadata["seed"] <= 2**32 - 1
    reliability.note(f"seed {seed!r} became {meta['seed']} and {result.metadata['seed']}")


@pytest.mark.reliability("Bad input", "--seed -1 on the command line (random)", "CLI --seed -1 and --seed=-1")
def test_cli_seed_minus_one_picks_a_random_seed(cli_dir, reliability):
    forms = {"separate": ["--seed", "-1"], "joined": ["--seed=-1"]}
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(_run_cli, ["--model", SPEECH, "--prompt", "hi", *args, "--out",
                                             str(cli_dir / f"seed-{name}.wav"), "--output-dir",
                                             str(cli_dir / "outputs")], cli_dir)
                for name, args in forms.items()}
        seeds = {}
        for name in forms:
            proc = runs[name].result(timeout=CLI_TIMEOUT_S)
            assert proc.returncode == 0, proc.stderr[-2000:]
            seeds[name] = json.loads(proc.stdout)["seed"]
            assert 0 <= seeds[name] <= 2**32 - 1 and (cli_dir / f"seed-{name}.wav").is_file()
    reliability.note(f"random seeds {seeds}")
