"""`python -m studio generate` end to end, in a process of its own, on the tiny checkpoints of the test HF cache.

Each CLI run is its own process, forked from one that imported torch and transformers already
(tests/cli_process.py), except the cases marked `fresh`, which start a new interpreter as a user does. The runs
this session selected are started together, two or so at a time, as soon as the first test needs one; each test
then waits for its own run and checks it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.cli_process import run_studio

ROOT = Path(__file__).resolve().parent.parent
WORKERS = min(4, max(2, os.cpu_count() or 2))  # each run is a torch process of ~0.5 GB
TIMEOUT_S = 240

REQUIRED_KEYS = ("model", "seed", "sample_rate", "duration", "elapsed_s", "estimated_s", "peak_bytes", "settings")
MUSICGEN_FRAME = 640  # samples per EnCodec frame at 32 kHz (50 frames a second)


@dataclass(frozen=True)
class Case:
    """One CLI invocation. `out` is relative to the run's own directory; `--output-dir` is added too."""

    id: str
    args: tuple[str, ...]
    out: str = "clip.wav"
    regular_file: str | None = None  # create this plain file in the run directory first
    clips: tuple[tuple[str, float], ...] = ()  # (name, seconds): 44.1 kHz tones written in the run directory
    # first; RUN_DIR in an argument stands for that directory
    texts: tuple[tuple[str, str], ...] = ()  # (name, text): UTF-8 text files written in the run directory first
    fresh: bool = False  # a new interpreter, as a user starts it (the others are forked: tests/cli_process.py)


@dataclass
class Run:
    case: Case
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    out: Path
    files_before: frozenset[str] = field(default_factory=frozenset)
    seconds: float = 0.0

    def files(self) -> set[str]:
        return {str(p.relative_to(self.workdir)) for p in self.workdir.rglob("*") if p.is_file()}

    def metadata(self) -> dict:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stderr[-3000:]}"
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"stdout should be one JSON line, got {self.stdout!r}"
        data = json.loads(lines[0])
        assert isinstance(data, dict)
        return data


RUN_DIR = "{run}"
CLIP_RATE = 44100


def _tone(seconds: float, rate: int = CLIP_RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)


def _execute(case: Case, workdir: Path) -> Run:
    workdir.mkdir(parents=True)
    if case.regular_file:
        (workdir / case.regular_file).write_bytes(b"a regular file, not a directory\n")
    for name, seconds in case.clips:
        sf.write(workdir / name, _tone(seconds), CLIP_RATE)
    for name, text in case.texts:
        (workdir / name).write_text(text, encoding="utf-8", errors="surrogateescape")
    before = frozenset(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    out = workdir / case.out
    args = [arg.replace(RUN_DIR, str(workdir)) for arg in case.args]
    started = time.monotonic()
    proc = run_studio(["generate", *args, "--out", str(out), "--output-dir", str(workdir / "outputs")], cwd=ROOT,
                      timeout=TIMEOUT_S, fresh=case.fresh)
    return Run(case, proc.returncode, proc.stdout, proc.stderr, workdir, out, before, time.monotonic() - started)


class CliRunner:
    """Runs cases in a small pool of worker threads, each case once."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._pool = ThreadPoolExecutor(max_workers=WORKERS)
        self._futures: dict[str, Future] = {}

    def start(self, case: Case) -> None:
        if case.id not in self._futures:
            self._futures[case.id] = self._pool.submit(_execute, case, self._base / case.id)

    def __call__(self, case: Case) -> Run:
        self.start(case)
        return self._futures[case.id].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _cases_in(value) -> list[Case]:
    if isinstance(value, Case):
        return [value]
    if isinstance(value, (tuple, list)):
        return [c for v in value for c in _cases_in(v)]
    return []


@pytest.fixture(scope="module")
def cli(request, tiny_cache, tmp_path_factory):
    """Starts every case the selected tests of this module use, model-loading ones first."""
    runner = CliRunner(tmp_path_factory.mktemp("cli"))
    selected = [case
                for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                for value in item.callspec.params.values()
                for case in _cases_in(value)]
    for case in sorted(selected, key=lambda c: c.id in FAST_IDS):
        runner.start(case)
    yield runner
    runner.close()


# --------------------------------------------------------------------------------------------
# Good runs
# --------------------------------------------------------------------------------------------

MUSIC = Case("musicgen-small", ("--model", "facebook/musicgen-small", "--prompt", "lofi beat", "--duration", "1",
                                "--seed", "7"), out="a.wav", fresh=True)
BARK = Case("bark-small", ("--model", "suno/bark-small", "--prompt", "Hello there", "--voice", "v2/en_speaker_6",
                           "--set", "max_chunk_seconds=0.5", "--seed", "3"))
MMS = ("--model", "facebook/mms-tts-eng", "--prompt", "hello world")
MMS_WAV = Case("mms-wav-seed7", (*MMS, "--seed", "7"), fresh=True)  # and MMS_WAV_AGAIN forked: the same samples
MMS_WAV_AGAIN = Case("mms-wav-seed7-again", (*MMS, "--seed", "7"))
FORMAT_CASES = {
    "wav": MMS_WAV,
    **{fmt: Case(f"mms-{fmt}-seed8", (*MMS, "--seed", "8", "--format", fmt), out=f"clip.{fmt}")
       for fmt in ("flac", "mp3", "ogg")},
}
CONTAINER = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "OGG"}


def _decoded(run: Run, meta: dict) -> np.ndarray:
    assert run.out.is_file(), f"{run.out} was not written"
    samples, rate = sf.read(run.out, dtype="float32", always_2d=True)
    assert rate == meta["sample_rate"]
    assert samples.shape[1] == meta.get("channels", 1)
    # The JSON's duration is rounded to 0.1 ms; the decoded length must agree with it.
    assert abs(samples.shape[0] / rate - meta["duration"]) <= 1e-4 + 1 / rate, (samples.shape, meta["duration"])
    assert np.isfinite(samples).all()
    if meta.get("format", "wav") in ("wav", "flac"):
        # Written peak-safe; lossless formats give it back. (mp3/ogg of noise-like audio overshoot on decode.)
        assert np.abs(samples).max() <= 1.0
    return samples


def _check_common(meta: dict, model: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    assert missing == [], f"metadata lacks {missing}"
    assert meta["model"] == model
    assert isinstance(meta["settings"], dict)
    assert meta["elapsed_s"] > 0 and math.isfinite(meta["elapsed_s"])
    assert meta["estimated_s"] > 0 and math.isfinite(meta["estimated_s"])
    assert isinstance(meta["peak_bytes"], int) and meta["peak_bytes"] > 0


@pytest.mark.parametrize("case", [MUSIC], ids=lambda c: c.id)
def test_music(cli, case):
    run = cli(case)
    meta = run.metadata()
    _check_common(meta, "facebook/musicgen-small")
    assert meta["seed"] == 7
    assert meta["sample_rate"] == 32000
    assert meta["settings"]["duration"] == 1.0
    assert abs(meta["duration"] - 1.0) <= MUSICGEN_FRAME / 32000
    samples = _decoded(run, meta)
    assert abs(samples.shape[0] - 32000) <= MUSICGEN_FRAME
    assert np.abs(samples).max() > 0, "a random model still makes some sound, not digital silence"


@pytest.mark.parametrize("case", [BARK], ids=lambda c: c.id)
def test_bark_speech_with_voice_and_setting(cli, case):
    run = cli(case)
    meta = run.metadata()
    _check_common(meta, "suno/bark-small")
    assert meta["seed"] == 3
    assert meta["sample_rate"] == 24000
    assert meta["settings"]["voice"] == "v2/en_speaker_6"
    assert meta["settings"]["max_chunk_seconds"] == 0.5
    # One short sentence, at most 0.5 s of speech per chunk (plus one 24 kHz EnCodec frame of rounding).
    assert 0 < meta["duration"] <= 0.5 + 320 / 24000
    _decoded(run, meta)


@pytest.mark.parametrize("case", [MMS_WAV], ids=lambda c: c.id)
def test_mms_speech(cli, case):
    run = cli(case)
    meta = run.metadata()
    _check_common(meta, "facebook/mms-tts-eng")
    assert meta["seed"] == 7
    assert meta["sample_rate"] == 16000
    assert "duration" not in meta["settings"] and "voice" not in meta["settings"]
    assert meta["duration"] > 0
    _decoded(run, meta)


@pytest.mark.parametrize(("fmt", "case"), list(FORMAT_CASES.items()), ids=list(FORMAT_CASES))
def test_each_format(cli, fmt, case):
    run = cli(case)
    meta = run.metadata()
    assert meta["format"] == fmt
    assert sf.info(str(run.out)).format == CONTAINER[fmt]
    _decoded(run, meta)


@pytest.mark.parametrize("pair", [(MMS_WAV, MMS_WAV_AGAIN)], ids=["mms-seed7-twice"])
def test_same_seed_gives_identical_samples(cli, pair):
    first, second = (cli(case) for case in pair)
    a = _decoded(first, first.metadata())
    b = _decoded(second, second.metadata())
    assert a.shape == b.shape
    assert np.array_equal(a, b)


@pytest.mark.parametrize("pair", [(MMS_WAV, FORMAT_CASES["flac"])], ids=["mms-seed7-vs-seed8"])
def test_a_different_seed_gives_different_samples(cli, pair):
    # wav and flac both hold 24-bit PCM, so only the seed (7 vs 8) can make these differ.
    seven, eight = (cli(case) for case in pair)
    a = _decoded(seven, seven.metadata())
    b = _decoded(eight, eight.metadata())
    assert a.shape != b.shape or not np.array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Audio in: --audio FILE, --set audio=@FILE, --extend SECONDS
# --------------------------------------------------------------------------------------------

SMALL = "facebook/musicgen-small"
RIFF_S = 2.0
RIFF = (("riff.wav", RIFF_S),)
# The "Done means" command, `--audio riff.wav --prompt "same groove, add strings" --duration 10`, with
# 0.5 s of new music (the shortest duration) instead of 10, and a seed: 10 s is 500 decoder steps, which took 69 s
# on the tiny checkpoint on this 2-core machine (shared with other work) and over 240 s, this file's timeout, beside
# its other runs; 2 s (103 steps) still came near that timeout on a loaded machine, and what is checked (the clip,
# then new music, the stored copy, the length) does not depend on how much new music follows. The seed lets
# --set audio=@FILE be compared with --audio sample for sample.
CONTINUE_S = 0.5
SAME_GROOVE = ("--prompt", "same groove, add strings", "--duration", f"{CONTINUE_S:g}", "--seed", "5")
CONTINUE = Case("musicgen-continue", ("--model", SMALL, "--audio", f"{RUN_DIR}/riff.wav", *SAME_GROOVE),
                out="more.wav", clips=RIFF)
SET_AUDIO = Case("musicgen-set-audio", ("--model", SMALL, "--set", f"audio=@{RUN_DIR}/riff.wav", *SAME_GROOVE),
                 out="more.wav", clips=RIFF)
# --extend 40 from the 2 s riff is 1,906 decoder steps in two windows: 198 s on the tiny checkpoint, measured as above.
# The windows' arithmetic (three windows, smooth joins, one progress bar) is tested in-process with 1.5 s windows in
# tests/test_continuation.py; here, that --extend sets the length of the whole result, the clip included (0.5 s
# past the clip: the shortest continuation, as above).
EXTEND_S = 2.5
EXTEND = Case("musicgen-extend", ("--model", SMALL, "--extend", f"{EXTEND_S:g}", "--audio", f"{RUN_DIR}/riff.wav",
                                  "--prompt", "same groove", "--set", "guidance_scale=1"), clips=RIFF)


def _continuation(run: Run, total_s: float) -> dict:
    """The run's metadata, after checking its file: the riff (resampled to 32 kHz), then new music, `total_s`
    long in all; the metadata names the copy of the riff kept under the output folder."""
    from scipy.signal import resample_poly

    meta = run.metadata()
    _check_common(meta, SMALL)
    samples = _decoded(run, meta)[:, 0]
    assert abs(samples.shape[0] - round(total_s * 32000)) <= MUSICGEN_FRAME, samples.shape
    riff = run.workdir / "riff.wav"
    stored = meta["settings"]["audio"]
    assert stored.startswith("inputs/") and meta["inputs"]["audio"]["file"] == stored
    assert meta["inputs"]["audio"]["name"] == "riff.wav" and meta["inputs"]["audio"]["duration"] == RIFF_S
    assert (run.workdir / "outputs" / stored).read_bytes() == riff.read_bytes()
    # The clip first (up to the crossfade just before the new music), whatever gain the writer applied.
    head = resample_poly(sf.read(riff, dtype="float32")[0], 320, 441)[: round((RIFF_S - 0.2) * 32000)]
    assert np.corrcoef(head, samples[: head.size])[0, 1] > 0.99
    assert np.std(samples[round(RIFF_S * 32000):]) > 1e-5, "new audio after the clip"
    return meta


@pytest.mark.parametrize("case", [CONTINUE], ids=lambda c: c.id)
def test_audio_is_continued_by_the_duration(cli, case):
    meta = _continuation(cli(case), RIFF_S + CONTINUE_S)
    assert meta["settings"]["duration"] == CONTINUE_S
    assert meta["continuation_s"] == pytest.approx(CONTINUE_S, abs=MUSICGEN_FRAME / 32000)


@pytest.mark.parametrize("pair", [(SET_AUDIO, CONTINUE)], ids=["set-audio-vs-audio"])
def test_set_audio_at_file_does_what_audio_does(cli, pair):
    by_set, by_flag = (cli(case) for case in pair)
    meta = _continuation(by_set, RIFF_S + CONTINUE_S)
    assert meta["settings"]["audio"] == by_flag.metadata()["settings"]["audio"]  # the same content, stored alike
    assert np.array_equal(_decoded(by_set, meta), _decoded(by_flag, by_flag.metadata()))


@pytest.mark.parametrize("case", [EXTEND], ids=lambda c: c.id)
def test_extend_sets_the_whole_length(cli, case):
    meta = _continuation(cli(case), EXTEND_S)
    assert meta["settings"]["extend_to"] == EXTEND_S and meta["windows"] == 1


# --------------------------------------------------------------------------------------------
# A song with lyrics from a file: the "Done means" command, 10 s instead of 30 (a third of the decoding)
# --------------------------------------------------------------------------------------------

ACE = "ACE-Step/acestep-v15-xl-turbo-diffusers"
SONG_TXT = "[verse]\nNeon lights on the avenue\nEvery color calling you\n\n[chorus]\nDance, dance, the night is new\n"
SONG = Case("ace-step-song", ("--model", ACE, "--prompt", "upbeat synth-pop", "--set", f"lyrics=@{RUN_DIR}/song.txt",
                              "--duration", "10", "--seed", "2"), out="song.flac", texts=(("song.txt", SONG_TXT),))


@pytest.mark.parametrize("case", [SONG], ids=lambda c: c.id)
def test_a_song_takes_its_lyrics_from_a_file_and_its_format_from_out(cli, case):
    run = cli(case)
    meta = run.metadata()
    _check_common(meta, ACE)
    assert meta["format"] == "flac" and sf.info(str(run.out)).format == "FLAC"  # no --format: song.flac says it
    assert meta["sample_rate"] == 48000 and meta["channels"] == 2 and meta["duration"] == 10.0
    assert meta["settings"]["lyrics"] == SONG_TXT.strip() and meta["mode"] == "song"
    assert _decoded(run, meta).shape == (480000, 2)


def test_help_says_the_output_holds_the_clip_then_the_new_music(capsys):
    from studio.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["generate", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "the output file holds the clip, then the new music" in text
    assert "--audio FILE" in text and "--extend SECONDS" in text and "NAME=@FILE" in text


# --------------------------------------------------------------------------------------------
# Bad input: non-zero exit, one "error:" line naming the value, nothing written, empty stdout
# --------------------------------------------------------------------------------------------

MUSICGEN = ("--model", "facebook/musicgen-small")
MMS_ENG = ("--model", "facebook/mms-tts-eng")
# With the default --device auto, choosing the device imports torch (~2 s) before the request is checked;
# `--device cpu` does not, so most cases use it. Those without it cover the path a user takes by default.
CPU = ("--device", "cpu")

# (case, values the one-line message must name)
BAD = [
    (Case("unknown-model", ("--model", "nope/not-a-model", "--prompt", "hi")), ["nope/not-a-model", "choose one of"]),
    (Case("empty-prompt", (*MUSICGEN, "--prompt", "")), ["prompt", "empty"]),
    (Case("whitespace-prompt", (*MUSICGEN, "--prompt", "  \t  ", *CPU)), ["prompt", "empty"]),
    (Case("duration-0", (*MUSICGEN, "--prompt", "hi", "--duration", "0", *CPU)), ["duration", "0"]),
    (Case("duration-31", (*MUSICGEN, "--prompt", "hi", "--duration", "31")), ["duration", "31", "30"]),
    (Case("duration-abc", (*MUSICGEN, "--prompt", "hi", "--duration", "abc", *CPU)), ["duration", "abc"]),
    (Case("duration-nan", (*MUSICGEN, "--prompt", "hi", "--duration", "nan", *CPU)), ["duration", "nan"]),
    (Case("seed-negative", (*MUSICGEN, "--prompt", "hi", "--seed", "-5", *CPU)), ["seed", "-5"]),
    (Case("seed-text", (*MUSICGEN, "--prompt", "hi", "--seed", "x", *CPU)), ["seed", "x"]),
    (Case("bark-unknown-voice", ("--model", "suno/bark-small", "--prompt", "hi", "--voice", "martian", *CPU)),
     ["martian", "v2/en_speaker_6"]),
    (Case("mms-voice", (*MMS_ENG, "--prompt", "hi", "--voice", "v2/en_speaker_6", *CPU)), ["--voice", "mms-tts-eng"]),
    (Case("mms-duration", (*MMS_ENG, "--prompt", "hi", "--duration", "2", *CPU)), ["--duration", "mms-tts-eng"]),
    (Case("unknown-format", (*MMS_ENG, "--prompt", "hi", "--format", "aiff"), out="clip.aiff"), ["aiff", "wav"]),
    (Case("unknown-setting", (*MMS_ENG, "--prompt", "hi", "--set", "bogus=1", *CPU)), ["bogus", "speaking_rate"]),
    (Case("memory-budget-unit", (*MMS_ENG, "--prompt", "hi", "--memory-budget", "6XB")), ["--memory-budget", "6XB"]),
    (Case("device-tpu", (*MMS_ENG, "--prompt", "hi", "--device", "tpu")), ["--device", "tpu"]),
    (Case("model-path-traversal", ("--model", "../../etc/passwd", "--prompt", "hi", *CPU)),
     ["../../etc/passwd", "choose one of"]),
    (Case("set-audio-without-at", (*MUSICGEN, "--prompt", "hi", "--set", f"audio={RUN_DIR}/riff.wav", *CPU),
          clips=RIFF), ["audio=@FILE", "audio input"]),
    (Case("audio-on-speech-model", (*MMS_ENG, "--prompt", "hi", "--audio", f"{RUN_DIR}/riff.wav", *CPU), clips=RIFF),
     ["facebook/mms-tts-eng", "--audio", SMALL]),
    (Case("extend-on-speech-model", (*MMS_ENG, "--prompt", "hi", "--extend", "10", *CPU)),
     ["facebook/mms-tts-eng", "--extend", SMALL]),
    (Case("extend-on-melody", ("--model", "facebook/musicgen-melody", "--prompt", "hi", "--extend", "40", *CPU)),
     ["facebook/musicgen-melody", "--extend", SMALL]),
    (Case("lyrics-file-missing", ("--model", ACE, "--prompt", "hi", "--set", "lyrics=@nowhere.txt", *CPU)),
     ["lyrics=@nowhere.txt", "no file", "nowhere.txt"]),
    (Case("at-file-for-a-number", ("--model", ACE, "--prompt", "hi", "--set", f"bpm=@{RUN_DIR}/song.txt", *CPU),
          texts=(("song.txt", "120"),)), ["bpm", "a number", "give the value itself"]),
    (Case("lyrics-file-not-utf8", ("--model", ACE, "--prompt", "hi", "--set", f"lyrics=@{RUN_DIR}/song.txt", *CPU),
          texts=(("song.txt", "caf\udce9"),)), ["song.txt", "UTF-8"]),
    (Case("ace-bpm-0", ("--model", ACE, "--prompt", "hi", "--set", "bpm=0", *CPU)), ["bpm", "0", "30", "300"]),
    (Case("extend-shorter-than-clip", (*MUSICGEN, "--prompt", "hi", "--extend", "3", "--audio",
                                       f"{RUN_DIR}/riff5s.wav", *CPU), clips=(("riff5s.wav", 5.0),)),
     ["3", "riff5s.wav", "5.0"]),
]
BAD_IDS = [case.id for case, _ in BAD]

BAD_OUT = [
    pytest.param(Case("out-dir-missing", (*MMS_ENG, "--prompt", "hi"), out="missing/clip.wav"), "missing",
                 id="out-dir-missing"),
    pytest.param(Case("out-under-a-file", (*MMS_ENG, "--prompt", "hi"), out="regular/clip.wav",
                      regular_file="regular"), "regular",
                 id="out-under-a-file"),
]
# Refused before any model loads; the runs that load one start first so the cheap ones fill in around them.
FAST_IDS = set(BAD_IDS)


def _names(value: str, message: str) -> bool:
    """`value` appears in `message` as a whole token, not as part of a longer word or number."""
    return re.search(rf"(?<![\w.]){re.escape(value)}(?!\w|\.\d)", message) is not None


def _check_refused(run: Run, must_name: list[str]) -> str:
    assert run.returncode != 0
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, f"stderr should be one line, got:\n{run.stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("error:"), line
    for value in must_name:
        assert _names(value, line), f"{value!r} not named in {line!r}"
    assert not run.out.exists()
    assert run.files() == set(run.files_before), f"files left behind: {run.files() - run.files_before}"
    return line


@pytest.mark.parametrize(("case", "must_name"), BAD, ids=BAD_IDS)
def test_bad_input_is_one_clean_error_line(cli, case, must_name):
    _check_refused(cli(case), must_name)


@pytest.mark.parametrize(("case", "folder"), BAD_OUT)
def test_bad_out_is_refused_before_the_model_runs(cli, case, folder):
    line = _check_refused(cli(case), [folder])  # files left behind = the model ran (calibration.json)
    assert "disk space" not in line, f"the folder is the problem, not the disk: {line!r}"


def test_unknown_model_lists_catalog_ids(cli, catalog):
    line = cli(BAD[0][0]).stderr.strip()
    listed = [repo for repo in catalog.ids() if repo in line]
    assert len(listed) >= 3, f"the message should list the choices: {line!r}"


def test_unknown_voice_lists_the_cached_voices(cli, catalog):
    line = cli(BAD[9][0]).stderr.strip()
    assert BAD[9][0].id == "bark-unknown-voice"
    voices = catalog.voices(catalog.get("suno/bark-small"))
    assert voices and all(voice in line for voice in voices), line
