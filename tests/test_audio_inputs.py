"""Bad audio input through every entry point: the named API (/music with gradio_client's handle_file, against one
served app), the page's Generate handler (studio.ui.tab.on_generate) and the CLI (`--audio FILE`).

Each bad clip must end in one message naming the file, what is wrong with it and what to do; the server stays up,
serves the next good request, keeps every earlier result in History and never stores the refused clip. Clips at
unusual rates are taken and resampled. The files are made once for the module; one app serves every case, and
its model is loaded once.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.serving import serving
from tests.test_cli import Case, CliRunner, _check_refused

MUSIC, MELODY = "facebook/musicgen-small", "facebook/musicgen-melody"
RATE, HOP = 32000, 640  # MusicGen's output rate and one EnCodec frame at it
TONE_HZ = 220.0
RIFF_S = 1.0  # every good clip here is this long; a good run adds NEW_S to it
NEW_S = 0.5
GB = 10**9
CPU = ("--device", "cpu")  # the CLI then refuses before torch is imported (see tests/test_cli.py)


# ---------------------------------------------------------------------- the files

def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.4 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1)


def _write_clips(folder: Path) -> dict[str, Path]:
    """Every clip the module uses, by file name: the bad ones and the good ones."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "zero-length.wav", np.zeros((0, 1), np.float32), 32000)  # a WAV header and no frames
    sf.write(folder / "one-sample.wav", np.full((1, 1), 0.3, np.float32), 44100)
    sf.write(folder / "too-long.wav", _tone(301, 8000), 8000, subtype="PCM_16")  # MusicGen takes up to 300 s
    (folder / "notes.wav").write_text("my lyrics, not audio\n" * 40)
    sf.write(folder / "whole.flac", _tone(3, 44100), 44100)
    whole = (folder / "whole.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(whole[: len(whole) // 2])  # a download or copy cut off halfway
    broken = _tone(RIFF_S, 32000)
    broken[100], broken[200], broken[300] = np.nan, np.inf, -np.inf
    sf.write(folder / "nan.wav", broken, 32000, subtype="FLOAT")
    sf.write(folder / "silence.wav", np.zeros((32000, 1), np.float32), 32000)
    sf.write(folder / "seven-channels.wav", _tone(RIFF_S, 48000, channels=7), 48000)
    for rate in (8000, 44100, 192000):
        sf.write(folder / f"tone-{rate // 1000}k.wav", _tone(RIFF_S, rate), rate)
    (folder / "riff.wav").write_bytes((folder / "tone-44k.wav").read_bytes())
    return {path.name: path for path in folder.iterdir()}


@dataclass(frozen=True)
class BadClip:
    """A clip every entry point must refuse, with the fragments its message must hold (the file, the problem,
    the fix)."""

    case: str
    file: str
    expect: tuple[str, ...]
    model: str = MUSIC

    @property
    def id(self) -> str:
        return "audio-" + self.file.rsplit(".", 1)[0]


BAD = [
    BadClip("empty audio file (0 bytes)", "empty.wav", ("'empty.wav'", "is empty (0 bytes)", "upload a clip")),
    BadClip("zero-length clip (a WAV header, no samples)", "zero-length.wav",
            ("'zero-length.wav'", "holds no samples", "upload a longer clip")),
    BadClip("clip of one sample", "one-sample.wav",
            ("'one-sample.wav'", "(1 sample)", "at least 0.5 s", "upload a longer clip")),
    BadClip("clip longer than the model takes (301 s)", "too-long.wav",
            ("'too-long.wav'", "301.0 s long", "at most 300 s", "trim it to 300 s")),
    BadClip("text file named .wav", "notes.wav", ("'notes.wav'", "is not audio", "save it as WAV, FLAC, OGG or MP3")),
    BadClip("truncated FLAC", "truncated.flac", ("'truncated.flac'", "damaged or cut short", "export or record it")),
    BadClip("NaN and infinite samples (float WAV)", "nan.wav",
            ("'nan.wav'", "3 samples", "NaN or infinite", "export it again")),
    BadClip("7-channel file", "seven-channels.wav",
            ("'seven-channels.wav'", "7 channels", "mono or stereo", "mix it down")),
    BadClip("digital silence as a melody (MusicGen melody)", "silence.wav", ("silent",), model=MELODY),
]
ODD_RATES = [8000, 192000]


def _cli_bad(clip: BadClip, clips: dict[str, Path]) -> Case:
    return Case(clip.id, ("--model", clip.model, "--prompt", "lofi", "--audio", str(clips[clip.file]),
                          "--duration", str(NEW_S), *CPU))


def _cli_rate(rate: int, clips: dict[str, Path]) -> Case:
    return Case(f"audio-rate-{rate}", ("--model", MUSIC, "--prompt", "lofi", "--seed", "4",
                                       "--audio", str(clips[f"tone-{rate // 1000}k.wav"]), "--duration", str(NEW_S)))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    return _write_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def cli(clips, tiny_cache, tmp_path_factory):
    """Every CLI run of the module, started at once in the background (the refusals first: they take a second)."""
    runner = CliRunner(tmp_path_factory.mktemp("cli"))
    for clip in BAD:
        runner.start(_cli_bad(clip, clips))
    for rate in ODD_RATES:
        runner.start(_cli_rate(rate, clips))
    yield runner
    runner.close()


# ---------------------------------------------------------------------- one served app, its page handler

@dataclass
class Served:
    studio: Any
    client: Any
    tab: Any  # the Music tab's TabHandle, for its Generate handler
    riff: Path
    keeper: dict  # the metadata of a continuation made before any bad input; it must outlive every case

    @property
    def output_dir(self) -> Path:
        return Path(self.studio.settings.output_dir)

    def files(self) -> set[str]:
        return {p.name for p in self.output_dir.iterdir() if p.is_file()}

    def stored_inputs(self) -> set[str]:
        folder = self.output_dir / "inputs"
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()

    def history_ids(self) -> set[int]:
        return {item.id for item in self.studio.history.list("", limit=1000)}

    def page_values(self, model: str, audio: Any, **settings: Any) -> dict:
        """What the Music tab's Generate sends: the model, prompt, seed, format and every control's value."""
        ui = self.tab.ui
        given = {"audio": audio, "duration": NEW_S, **settings}
        values = {ui.model: model, ui.language: None, ui.prompt: "lofi", ui.seed: 1, ui.fmt: "wav"}
        values.update({control.component: given.get(control.name) for control in self.tab.plan})
        return values


@pytest.fixture(scope="module")
def served(clips, catalog, tiny_cache, tmp_path_factory):
    """The app on a free port over a simulated 8 GB GPU, and the page's Music tab over the same studio."""
    import gradio as gr
    from gradio_client import handle_file

    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    settings = Settings(output_dir=tmp_path_factory.mktemp("audio-inputs") / "out", memory_reserve=0)
    studio = Studio(settings, catalog=catalog, device=SimulatedDevice(8 * GB))
    with gr.Blocks() as page, gr.Tabs():
        tab = build_tab(page, "music", Endpoints(studio))
    with serving(studio) as client:
        _, keeper = client.predict(api_name="/music", model=MUSIC, prompt="keep me", audio=handle_file(clips["riff.wav"]),
                                   duration=NEW_S, seed=1)
        yield Served(studio, client, tab, clips["riff.wav"], keeper)


def _samples(path: str | Path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return samples[:, 0], rate


def _check_continuation(path: str | Path, clip_s: float = RIFF_S) -> np.ndarray:
    """The file holds the clip, then NEW_S of new music, at 32 kHz (to within one codec frame)."""
    samples, rate = _samples(path)
    assert rate == RATE
    assert abs(samples.size - round((clip_s + NEW_S) * RATE)) <= HOP, samples.size
    return samples


def _pitch(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency of `samples`, in Hz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


@contextlib.contextmanager
def nothing_lost(served: Served, reliability):
    """Around a refused request: the server answers, the next good request (a continuation) is served, every
    earlier file and History row is still there, and the refused clip was not stored."""
    from gradio_client import handle_file

    files, rows, inputs = served.files(), served.history_ids(), served.stored_inputs()
    yield
    assert served.client.predict(api_name="/memory")["device"], "the server stopped answering"
    assert files <= served.files(), f"files were lost: {files - served.files()}"
    assert rows <= served.history_ids(), "History rows were lost"
    assert served.studio.history.get(served.keeper["history_id"]) is not None
    assert served.stored_inputs() == inputs, "a refused clip was kept in the inputs folder"
    path, meta = served.client.predict(api_name="/music", model=MUSIC, prompt="the next one",
                                       audio=handle_file(served.riff), duration=NEW_S, seed=2)
    _check_continuation(path)
    assert served.files() - files == {meta["file"], meta["file"] + ".json"}, "the refused request left files"
    reliability.note("next request (a continuation) served; earlier files and History rows intact; "
                     "nothing stored from the refused clip")


def _contains_all(message: str, fragments: tuple[str, ...]) -> None:
    missing = [f for f in fragments if f.lower() not in message.lower()]
    assert not missing, f"the message {message!r} lacks {missing}"


def _melody_takes_audio(catalog) -> bool:
    return catalog.get(MELODY).param("audio") is not None


# ---------------------------------------------------------------------- bad clips, everywhere

@pytest.mark.parametrize("clip", [
    pytest.param(c, id=c.id, marks=pytest.mark.reliability("Bad input", c.case, "API /music, page handler, CLI"))
    for c in BAD])
def test_a_bad_clip_is_refused_clearly_everywhere(clip: BadClip, served, cli, clips, catalog, reliability):
    import gradio as gr
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from studio.errors import StudioError
    from studio.ui.tab import on_generate

    if clip.model == MELODY and not _melody_takes_audio(catalog):
        pytest.xfail("facebook/musicgen-melody has no audio input yet (models/musicgen.py wires models/chroma.py "
                     "into it)")
    path = clips[clip.file]
    with nothing_lost(served, reliability):
        with pytest.raises(AppError) as api_error:
            served.client.predict(api_name="/music", model=clip.model, prompt="lofi", audio=handle_file(path),
                                  duration=NEW_S)
        _contains_all(str(api_error.value), clip.expect)

        with pytest.raises(gr.Error) as page_error:  # what the tab's Generate shows in its toast
            on_generate(served.tab, served.page_values(clip.model, str(path)), None)
        assert isinstance(page_error.value.__cause__, StudioError)
        _contains_all(page_error.value.message, clip.expect)
        reliability.note(f"message: {api_error.value}")

    run = cli(_cli_bad(clip, clips))
    assert run.returncode == 2, run.stderr[-2000:]
    line = _check_refused(run, [])
    _contains_all(line, clip.expect)
    reliability.note("CLI: exit 2, one error line, nothing written")


# ---------------------------------------------------------------------- unusual rates are taken

@pytest.mark.parametrize("rate", [
    pytest.param(r, id=f"{r // 1000}kHz", marks=pytest.mark.reliability(
        "Bad input", f"{r // 1000} kHz clip (accepted, resampled to 32 kHz)", "API /music, page handler, CLI"))
    for r in ODD_RATES])
def test_a_clip_at_an_unusual_rate_is_resampled(rate: int, served, cli, clips, reliability):
    """The result is the clip then the new music, at the model's rate, and the clip keeps its pitch (a rate read
    wrong would move the 220 Hz tone by the ratio of the rates)."""
    from gradio_client import handle_file

    from studio.ui.tab import on_generate

    path = clips[f"tone-{rate // 1000}k.wav"]
    results = {"API": served.client.predict(api_name="/music", model=MUSIC, prompt="lofi", audio=handle_file(path),
                                            duration=NEW_S, seed=3)}
    page = on_generate(served.tab, served.page_values(MUSIC, str(path)), None)
    results["page"] = (page[served.tab.ui.audio]["value"], page[served.tab.ui.last])
    run = cli(_cli_rate(rate, clips))
    results["CLI"] = (run.out, run.metadata())

    for where, (out, meta) in results.items():
        samples = _check_continuation(out)
        assert meta["inputs"]["audio"]["sample_rate"] == rate and meta["inputs"]["audio"]["name"] == path.name, where
        assert meta["sample_rate"] == RATE
        assert _pitch(samples[: int(0.8 * RATE)], RATE) == pytest.approx(TONE_HZ, abs=3), where
    reliability.note(f"{rate} Hz clip taken by all three: {RIFF_S:g} s + {NEW_S:g} s at 32 kHz, the tone still at "
                     f"{TONE_HZ:g} Hz")


# ---------------------------------------------------------------------- a path the API did not receive

def _raw_call(served: Served, endpoint: str, fn, **given: Any) -> tuple[str | None, Any, str]:
    """POST /gradio_api/call/<endpoint> with exactly `given` (what gradio_client would rewrite or upload) and
    read the event stream: (last event, its data decoded, the whole stream as text)."""
    import httpx

    signature = inspect.signature(fn)
    values = signature.bind_partial(**given)
    values.apply_defaults()
    data = [values.arguments[name] for name in signature.parameters if name != "request"]
    with httpx.Client(base_url=served.client.src.rstrip("/"), timeout=30) as http:
        posted = http.post(f"/gradio_api/call/{endpoint}", json={"data": data})
        if posted.status_code == 400:  # refused at the door (studio.ui.queue_check): the message is the detail
            return "refused", posted.json(), posted.text
        assert posted.status_code == 200, (posted.status_code, posted.text[:500])
        stream = http.get(f"/gradio_api/call/{endpoint}/{posted.json()['event_id']}")
        assert stream.status_code == 200, (stream.status_code, stream.text[:500])
    event = payload = None
    for line in stream.text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = json.loads(line.split(":", 1)[1].strip())
    return event, payload, stream.text


FOREIGN = "/etc/passwd"


@pytest.mark.reliability("Bad input", "a path outside the allowed folders as the audio file (/etc/passwd)",
                         "API /music and /estimate (raw HTTP: a FileData payload, a bare path, a path dict)")
def test_a_path_the_studio_did_not_receive_is_refused(served, reliability):
    """A FileData payload naming a server path is refused with HTTP 400 before Gradio's queue (Gradio's own
    refusal in its preprocess reached the client as an error with no message); a bare path, or a dict without
    Gradio's `meta`, reaches the studio, which reads only uploads and its own output folder. Either way: a
    message naming the input and the fix, nothing read or echoed, no file kept."""
    from studio.ui.endpoints import Endpoints

    endpoints = Endpoints(served.studio)
    calls = {"music": (endpoints.api_generate("music"), {"model": MUSIC, "prompt": "lofi", "duration": NEW_S}),
             "estimate": (endpoints.api_estimate(), {"model": MUSIC, "duration": NEW_S})}
    payloads = {"FileData": {"path": FOREIGN, "meta": {"_type": "gradio.FileData"}},
                "bare path": FOREIGN, "path dict": {"path": FOREIGN}}
    seen = {}
    with nothing_lost(served, reliability):
        for endpoint, (fn, given) in calls.items():
            for kind, payload in payloads.items():
                event, data, text = _raw_call(served, endpoint, fn, **given, audio=payload)
                assert "root:" not in text  # the file's content never comes back
                if kind == "FileData":  # refused before Gradio's queue, with the input and the fix
                    assert event == "refused", f"/{endpoint} with a {kind}: {text[:500]}"
                    message = data["detail"]
                    _contains_all(message, ("data[", "names a file the server did not receive", "'passwd'",
                                            "handle_file"))
                else:
                    assert event == "error", f"/{endpoint} with a {kind}: {text[:500]}"
                    message = data.get("error") if isinstance(data, dict) else None
                    _contains_all(message or "", ("names a file the studio did not receive", "'passwd'",
                                                  "handle_file"))
                seen[kind] = message
        reliability.note(f"a FileData payload: HTTP 400 before the queue: {seen['FileData']}")
        reliability.note(f"a bare path or path dict: {seen['bare path']}")


# ---------------------------------------------------------------------- the API's audio parameter, working

def test_the_api_continues_an_uploaded_clip_and_names_it(served):
    meta = served.keeper
    assert meta["inputs"]["audio"]["name"] == "riff.wav"
    stored = meta["settings"]["audio"]
    assert stored.startswith("inputs/") and meta["inputs"]["audio"]["file"] == stored
    assert (served.output_dir / stored).read_bytes() == served.riff.read_bytes()
    _check_continuation(served.output_dir / meta["file"])
    assert meta["duration"] == pytest.approx(RIFF_S + NEW_S, abs=HOP / RATE)


def test_the_estimate_counts_the_uploaded_clip(served):
    from gradio_client import handle_file

    plain = served.client.predict(api_name="/estimate", model=MUSIC, duration=NEW_S)
    prompted = served.client.predict(api_name="/estimate", model=MUSIC, duration=NEW_S, audio=handle_file(served.riff))
    assert prompted["seconds"] > plain["seconds"]
    assert f"continues the {RIFF_S:.1f} s clip by {NEW_S:.1f} s" in prompted["summary"]
    assert "continues" not in plain["summary"]


def test_view_api_lists_the_audio_file_parameter(served):
    api = served.client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for endpoint in ("/music", "/estimate"):
        audio = [p for p in api[endpoint]["parameters"] if p["parameter_name"] == "audio"]
        assert len(audio) == 1, endpoint
        assert "filepath" in audio[0]["python_type"]["type"] and audio[0]["parameter_default"] is None
