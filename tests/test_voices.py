"""The voice library: voices saved, listed, renamed and deleted in the output folder; every refusal names the value and
the fix; a damaged folder is listed as broken, never a crash; `voice="my-voice"` reaches Pocket TTS and Dia exactly as
the same clip given as `audio` does, and every result made from a cloned voice says so; the CLI's `voices` commands.

Library tests need no model; the runs use the tiny checkpoints (tests/tiny_pocket_tts.py, tests/tiny_dia.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from studio.errors import InvalidInput
from studio.voices import CLIP_FILE, CONSENT_TEXT, INFO_FILE, VoiceLibrary

POCKET = "eustlb/pocket-tts"
DIA = "nari-labs/Dia-1.6B-0626"
ROOT = Path(__file__).resolve().parent.parent


def _tone(path: Path, seconds: float, pitch: float = 220.0, rate: int = 24000, subtype: str = "PCM_16") -> Path:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("voice-clips")
    return {"two": _tone(folder / "two.wav", 2.0), "float": _tone(folder / "float.wav", 1.5, 330, 44100, "FLOAT"),
            "short": _tone(folder / "short.wav", 0.5), "long": _tone(folder / "long.wav", 61.0, rate=8000)}


def _clip(path):
    from studio.clips import read_clip

    return read_clip(path)


@pytest.fixture
def library(tmp_path, catalog):
    return VoiceLibrary(tmp_path / "out", catalog)


# ------------------------------------------------------------------ the library itself


def test_save_list_get_rename_delete_and_a_restart_keeps_them(tmp_path, catalog, clips):
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    settings = Settings(output_dir=tmp_path / "out", memory_reserve=0)
    studio = Studio(settings, catalog=catalog, device=CpuDevice())
    saved = studio.voices.save("My voice", _clip(clips["two"]), "Hello there.", consent=True)
    studio.voices.save("float_one-2", _clip(clips["float"]), consent=True, via="api")
    folder = tmp_path / "out" / "voices" / "My voice"
    assert sorted(p.name for p in folder.iterdir()) == sorted([CLIP_FILE, INFO_FILE])
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["name"] == "My voice" and info["transcript"] == "Hello there." and info["source"] == "two.wav"
    assert info["seconds"] == 2.0 and info["sample_rate"] == 24000
    assert info["consent"]["text"] == CONSENT_TEXT and info["consent"]["confirmed"] == info["created"]
    # The clip at its own rate, bit-exact: 16-bit stays 16-bit, anything else is kept as 32-bit float.
    assert soundfile.info(str(folder / CLIP_FILE)).subtype == "PCM_16"
    float_folder = tmp_path / "out" / "voices" / "float_one-2"
    assert soundfile.info(str(float_folder / CLIP_FILE)).subtype == "FLOAT"
    assert soundfile.info(str(float_folder / CLIP_FILE)).samplerate == 44100
    assert np.array_equal(soundfile.read(folder / CLIP_FILE)[0], soundfile.read(clips["two"])[0])
    assert saved.seconds == 2.0 and not saved.broken

    # A new studio on the same folder (a restart) lists them; names are found in any case.
    again = Studio(settings, catalog=catalog, device=CpuDevice())
    assert [v.name for v in again.voices.list()] == ["float_one-2", "My voice"]
    assert again.voices.get("my VOICE").transcript == "Hello there."
    assert again.catalog.saved_voices(catalog.get(POCKET)) == ("float_one-2", "My voice")
    assert again.catalog.saved_voices(catalog.get("suno/bark-small")) == ()  # Bark cannot clone

    renamed = again.voices.rename("my voice", "Narrator")
    assert renamed.name == "Narrator" and renamed.transcript == "Hello there."
    assert json.loads((tmp_path / "out" / "voices" / "Narrator" / INFO_FILE).read_text())["name"] == "Narrator"
    assert again.voices.rename("narrator", "NARRATOR").name == "NARRATOR"  # a change of case is a rename
    assert again.voices.delete("narrator").name == "NARRATOR"
    assert again.voices.names() == ["float_one-2"]
    assert not any(p.name.startswith(".") for p in (tmp_path / "out" / "voices").iterdir())


@pytest.mark.parametrize("name, kwargs, words", [
    ("Mine", {"consent": False}, ["'Mine' was not saved", "confirm you have the right to use this voice", "--consent"]),
    ("Mine", {"consent": "yes"}, ["confirm you have the right"]),
    ("  ", {}, ["needs a name", "1 to 40 letters"]),
    ("x" * 41, {}, ["41 characters", "at most 40", "shorten it"]),
    ("my/voice", {}, ["'/'", "letters, digits, spaces, '-' and '_' only"]),
    ("../up", {}, ["'.'", "'/'"]),
    ("CON", {}, ["device name on Windows", "choose another name"]),
    ("Alba", {}, ["preset voice of eustlb/pocket-tts", "ambiguous", "choose another name"]),
    ("taken", {}, ["already called 'Taken'", "without case", "delete or rename 'Taken' first"]),
    ("Mine", {"clip": "short"}, ["'short.wav' is 0.5 s long", "1 to 60 s", "record or trim"]),
    ("Mine", {"clip": None}, ["has no clip", "upload or record"]),
    ("Mine", {"transcript": 5}, ["transcript must be text"]),
])
def test_every_refusal_names_the_value_and_the_fix(library, clips, name, kwargs, words):
    library.save("Taken", _clip(clips["two"]), consent=True)
    clip = kwargs.pop("clip", "two")
    args = {"consent": True, **kwargs}
    with pytest.raises(InvalidInput) as error:
        library.save(name, _clip(clips[clip]) if clip else None, kwargs.get("transcript", ""), consent=args["consent"])
    for word in words:
        assert word in str(error.value), str(error.value)
    assert library.names() == ["Taken"]  # nothing half-saved


def test_rename_delete_and_get_refuse_what_is_not_there(library, clips):
    library.save("one", _clip(clips["two"]), consent=True)
    library.save("two", _clip(clips["two"]), consent=True)
    for call, words in [(lambda: library.rename("one", "TWO"), ["already called 'two'"]),
                        (lambda: library.rename("nobody", "x"), ["no saved voice 'nobody'", "saved voices: one, two"]),
                        (lambda: library.delete("nobody"), ["no saved voice 'nobody'"]),
                        (lambda: library.get("nobody"), ["no saved voice 'nobody'", "voices save NAME"])]:
        with pytest.raises(InvalidInput) as error:
            call()
        for word in words:
            assert word in str(error.value), str(error.value)
    assert library.names() == ["one", "two"]
    # A name longer than the API would send, or with a null byte, is a name that is not saved: no crash.
    assert library.find("a\x00b") is None and library.find("x" * 5000) is None


def test_a_damaged_or_half_written_voice_is_listed_as_broken_and_refused_with_the_fix(library, clips):
    for name in ("no clip", "bad json", "no json", "fine", "no consent"):
        library.save(name, _clip(clips["two"]), "words", consent=True)
    voices = library.folder
    (voices / "no clip" / CLIP_FILE).unlink()
    (voices / "bad json" / INFO_FILE).write_text("{not json")
    (voices / "no json" / INFO_FILE).unlink()
    info = json.loads((voices / "no consent" / INFO_FILE).read_text())
    (voices / "no consent" / INFO_FILE).write_text(json.dumps({**info, "consent": None}))
    (voices / ".4f2a.part").mkdir()  # a save killed midway: hidden, never listed
    (voices / "stray.txt").write_text("not a voice")  # a file, not a folder
    listed = {v.name: v.problem for v in library.list()}
    assert set(listed) == {"no clip", "bad json", "no json", "fine", "no consent"}
    assert "voice.wav is missing" in listed["no clip"] and "voice.json is damaged" in listed["bad json"]
    assert "voice.json is missing" in listed["no json"] and "no confirmation" in listed["no consent"]
    assert listed["fine"] == "" and library.names() == ["fine"]
    with pytest.raises(InvalidInput) as error:
        library.get("no clip")
    assert "'no clip' cannot be used: its clip voice.wav is missing" in str(error.value)
    assert 'delete it and save it again' in str(error.value) and 'voices delete "no clip"' in str(error.value)
    # A broken voice can still be renamed and deleted.
    assert library.rename("bad json", "still bad").problem.startswith("its voice.json is damaged")
    library.delete("still bad")
    # An abandoned part is cleared at the next start once it is old; a fresh one (a save under way) stays.
    old = time.time() - 3600
    os.utime(voices / ".4f2a.part", (old, old))
    (voices / ".fresh.part").mkdir()
    VoiceLibrary(library.folder.parent, None)
    assert not (voices / ".4f2a.part").exists() and (voices / ".fresh.part").exists()


# ------------------------------------------------------------------ using a voice: Pocket TTS, Dia


@pytest.fixture(scope="module")
def cli_generate(tiny_cache, tmp_path_factory, clips):
    """The issue's command with a saved voice, in one subprocess started first, so it runs beside the tests here."""
    from studio.__main__ import main

    out_dir = tmp_path_factory.mktemp("cli-out")
    assert main(["voices", "save", "my-voice", "--audio", str(clips["two"]), "--consent",
                 "--output-dir", str(out_dir)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    out = out_dir / "x.wav"
    proc = subprocess.Popen([sys.executable, "-m", "studio", "generate", "--model", POCKET, "--prompt", "Hi",
                             "--voice", "my-voice", "--seed", "5", "--out", str(out), "--output-dir", str(out_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, out
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def studio(cli_generate, tiny_cache, catalog, tmp_path_factory, clips):
    import torch

    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save (tests/test_dia.py)
    studio = Studio(Settings(output_dir=tmp_path_factory.mktemp("out"), memory_reserve=0), catalog=catalog,
                    device=CpuDevice())
    studio.voices.save("my-voice", _clip(clips["two"]), "[S1] A long tone.", consent=True)
    studio.voices.save("wordless", _clip(clips["two"]), consent=True)
    yield studio
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pocket_runs(studio, clips):
    """The same text and seed with the saved voice and with its clip given directly, through Studio.generate."""
    saved = studio.generate(studio.request("speech", POCKET, "Hi there.", seed=5, params={"voice": "my-voice"}))
    given = studio.generate(studio.request("speech", POCKET, "Hi there.", seed=5, params={"audio": str(clips["two"])}))
    return saved, given


def test_a_saved_voice_reaches_pocket_tts_as_its_clip_does(pocket_runs):
    saved, given = pocket_runs
    a, b = soundfile.read(saved.path)[0], soundfile.read(given.path)[0]
    assert a.shape == b.shape and np.array_equal(a, b)
    assert saved.metadata["settings"]["voice"] == "my-voice" and "audio" not in saved.metadata["settings"]
    assert saved.metadata["inputs"]["audio"]["name"] == "my-voice.wav"


def test_every_result_of_a_cloned_voice_says_so_in_its_metadata_and_history(studio, pocket_runs):
    saved, given = pocket_runs
    marks = saved.metadata
    assert marks["voice_cloned"] is True and marks["voice"] == "my-voice" and marks["voice_source"] == "library"
    assert marks["voice_consent"]["text"] == CONSENT_TEXT and marks["voice_consent"]["via"] == "page"
    assert marks["cloned_voices"] == [{"speaker": 1, "voice": "my-voice", "source": "library",
                                       "consent": marks["voice_consent"], "clip": marks["inputs"]["audio"]["file"]}]
    # A clip given for one run is cloned too: marked, from where, with no stored confirmation (none was asked).
    assert given.metadata["voice_cloned"] is True and given.metadata["voice_source"] == "clip"
    assert given.metadata["voice"] is None and given.metadata["voice_consent"] is None
    row = studio.history.get(saved.history_id)
    assert row.metadata["voice_cloned"] is True and row.metadata["voice_consent"] == marks["voice_consent"]
    sidecar = json.loads(Path(str(saved.path) + ".json").read_text()) if Path(str(saved.path) + ".json").exists() \
        else None
    if sidecar is not None:
        assert sidecar["voice"] == "my-voice" and sidecar["voice_cloned"] is True


def test_a_saved_voice_reaches_dia_with_its_transcript_as_clip_and_transcript_do(studio, clips):
    fast = {"guidance_scale": 1.0}
    text = "[S1] Hi! [S2] Hello."
    saved = studio.request("speech", DIA, text, seed=3, params={**fast, "voice": "MY-VOICE"})
    given = studio.request("speech", DIA, text, seed=3,
                           params={**fast, "audio": str(clips["two"]), "transcript": "[S1] A long tone."})
    assert saved.params["transcript"] == "[S1] A long tone." and saved.params["voice"] == "my-voice"
    a, b = (studio.manager.run(r).audio.samples for r in (saved, given))
    assert np.array_equal(a, b)
    # the estimate line says what the run does with it
    assert "continues the voice of 'my-voice.wav'" in studio.estimate(saved).work


@pytest.mark.parametrize("model, params, words", [
    (DIA, {"voice": "wordless"}, ["saved voice 'wordless' has no transcript", "needs the words", "save the voice again"]),
    (POCKET, {"voice": "my-voice", "audio": "two"}, ["voice 'my-voice' is a saved voice, and audio is a clip as well",
                                                     "drop audio"]),
    (DIA, {"voice": "my-voice", "transcript": "[S1] Other words."}, ["clear transcript", "own transcript"]),
    (POCKET, {"voice": "nobody"}, ["voice 'nobody' is not a voice of eustlb/pocket-tts", "alba",
                                   "my-voice (saved)"]),
    (DIA, {"voice": "nobody"}, ["voice 'nobody' is not a voice of nari-labs/Dia-1.6B-0626", "my-voice (saved)"]),
    ("suno/bark-small", {"voice": "my-voice"}, ["'my-voice' is a saved voice", "cannot clone", "Pocket TTS"]),
])
def test_using_a_voice_wrongly_is_refused_with_the_fix(studio, clips, model, params, words):
    params = {k: str(clips[v]) if k == "audio" else v for k, v in params.items()}
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", model, "[S1] Hi.", seed=1, params=params)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_a_clip_deleted_under_the_studio_is_refused_with_the_fix(studio, clips):
    studio.voices.save("fragile", _clip(clips["float"]), consent=True)
    (studio.voices.folder / "fragile" / CLIP_FILE).unlink()
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", POCKET, "Hi.", seed=1, params={"voice": "fragile"})
    assert "saved voice 'fragile' cannot be used: its clip voice.wav is missing" in str(error.value)
    assert "fragile" not in studio.catalog.saved_voices(studio.catalog.get(POCKET))  # not offered any more
    studio.voices.delete("fragile")


# ------------------------------------------------------------------ the CLI


def test_the_cli_saves_lists_renames_and_deletes_voices(tmp_path, clips, capsys):
    from studio.__main__ import main

    out = ["--output-dir", str(tmp_path / "out")]
    assert main(["voices", "save", "Cli voice", "--audio", str(clips["two"]), "--transcript", "Hi.", *out]) == 2
    assert "confirm you have the right to use this voice" in capsys.readouterr().err
    assert main(["voices", "save", "Cli voice", "--audio", str(clips["two"]), "--transcript", "Hi.", "--consent",
                 *out]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["name"] == "Cli voice" and saved["consent"]["via"] == "cli" and saved["seconds"] == 2.0
    assert main(["voices", "save", "x", "--audio", str(tmp_path / "missing.wav"), "--consent", *out]) == 2
    assert "'missing.wav' does not exist" in capsys.readouterr().err
    assert main(["voices", "rename", "cli voice", "Renamed", *out]) == 0
    capsys.readouterr()
    assert main(["voices", "list", *out]) == 0
    listing = capsys.readouterr().out
    assert "Renamed" in listing and "2.0 s" in listing and "'Hi.'" in listing
    assert main(["voices", "list", "--json", *out]) == 0
    assert [v["name"] for v in json.loads(capsys.readouterr().out)] == ["Renamed"]
    assert main(["voices", "delete", "Renamed", *out]) == 0
    assert main(["voices", "delete", "Renamed", *out]) == 2
    assert "no saved voice 'Renamed'" in capsys.readouterr().err


def test_the_cli_speaks_in_a_saved_voice(cli_generate):
    proc, out = cli_generate
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    metadata = json.loads(stdout)
    assert metadata["voice"] == "my-voice" and metadata["voice_cloned"] is True
    assert metadata["voice_consent"]["via"] == "cli"
    assert soundfile.info(str(out)).samplerate == 24000


# ------------------------------------------------------------------ the API's functions (served by gr.api in app.py)


def test_the_api_saves_lists_renames_and_deletes_and_refuses_a_file_it_did_not_receive(studio, clips, tmp_path):
    import gradio as gr

    from studio.ui.endpoints import Endpoints

    endpoints = Endpoints(studio)
    received = studio.voices.folder.parent / "api-clip.wav"  # the output folder is one the API may read from
    shutil.copy(clips["two"], received)
    save, listing = endpoints.api_voice_save(), endpoints.api_voices()
    with pytest.raises(gr.Error, match="confirm you have the right to use this voice"):
        save({"path": str(received), "orig_name": "me.wav"}, "api voice", "", False)
    with pytest.raises(gr.Error, match="did not receive"):
        save({"path": str(clips["two"]), "orig_name": "me.wav"}, "api voice", "", True)
    saved = save({"path": str(received), "orig_name": "me.wav"}, "api voice", "Hi.", True)
    assert saved["source"] == "me.wav" and saved["consent"]["via"] == "api" and saved["broken"] is None
    assert "api voice" in [v["name"] for v in listing()]
    assert endpoints.api_voice_rename()("API VOICE", "api renamed")["name"] == "api renamed"
    assert endpoints.api_voice_delete()("api renamed")["name"] == "api renamed"
    assert "api renamed" not in [v["name"] for v in listing()]
