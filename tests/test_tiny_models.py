"""The tiny hub cache loads offline through the standard transformers classes and makes sound.

The loading happens in a subprocess: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is
imported, so they must be set before that.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


import tests.tiny_models as tiny_models  # noqa: E402
from tests.tiny_models import TINY_BUILDERS, install_repo, make_tiny_cache  # noqa: E402

MUSICGEN = [
    "facebook/musicgen-small",
    "facebook/musicgen-medium",
    "facebook/musicgen-large",
    "facebook/musicgen-melody",
    "facebook/musicgen-stereo-small",
]
BARK = ["suno/bark-small", "suno/bark"]
MMS = ["facebook/mms-tts-eng", "facebook/mms-tts-deu", "facebook/mms-tts-fra"]

MUSICGEN_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
}
BARK_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "speaker_embeddings_path.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
} | {
    f"speaker_embeddings/{preset}_{kind}_prompt.npy"
    for preset in tiny_models.BARK_VOICE_PRESETS
    for kind in ("semantic", "coarse", "fine")
}
MMS_FILES = {
    "added_tokens.json",
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "vocab.json",
}


def _snapshot(hf_home: Path, repo_id: str) -> Path:
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    sha = (repo_dir / "refs" / "main").read_text()
    return repo_dir / "snapshots" / sha


def _files(snapshot: Path) -> set[str]:
    return {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    start = time.monotonic()
    make_tiny_cache(home)
    elapsed = time.monotonic() - start
    assert elapsed < 60, f"make_tiny_cache took {elapsed:.1f} s"
    return home


# The script run in the subprocess: loads every repo like product code would and reports JSON.
_LOADER = textwrap.dedent(
    r"""
    import json, sys
    import numpy as np
    import torch
    from transformers import (
        AutoProcessor, AutoTokenizer, BarkModel, BarkProcessor, MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration, T5Tokenizer, VitsModel, VitsTokenizer,
    )

    def stats(x):
        x = x.detach().float()
        return {"shape": list(x.shape), "std": float(x.std()), "finite": bool(torch.isfinite(x).all()),
                "max_abs": float(x.abs().max())}

    out = {}
    N = 25
    for repo in sys.argv[1].split(","):
        r = out[repo] = {}
        if "musicgen" in repo:
            if "melody" in repo:
                tok = AutoTokenizer.from_pretrained(repo)
                inputs = tok(["80s pop track with bassy drums and synth"], return_tensors="pt", padding=True)
                model = MusicgenMelodyForConditionalGeneration.from_pretrained(repo)
            else:
                proc = AutoProcessor.from_pretrained(repo)
                r["processor"] = type(proc).__name__
                tok = proc.tokenizer
                inputs = proc(text=["80s pop track with bassy drums and synth"], return_tensors="pt", padding=True)
                model = MusicgenForConditionalGeneration.from_pretrained(repo)
            r["tokenizer"] = type(tok).__name__
            r["t5_tokenizer_ids"] = T5Tokenizer.from_pretrained(repo)("a calm guitar").input_ids
            r["auto_tokenizer_ids"] = tok("a calm guitar").input_ids
            torch.manual_seed(0)
            a = model.generate(**inputs, max_new_tokens=N, guidance_scale=3.0, do_sample=True)
            torch.manual_seed(0)
            b = model.generate(**inputs, max_new_tokens=N, guidance_scale=3.0, do_sample=True)
            r["audio"] = stats(a)
            r["deterministic"] = bool(torch.equal(a, b))
            r["sampling_rate"] = model.config.audio_encoder.sampling_rate
            r["frame_rate"] = model.config.audio_encoder.frame_rate
            r["channels"] = model.config.decoder.audio_channels
            r["num_codebooks"] = model.config.decoder.num_codebooks
        elif "bark" in repo:
            proc = BarkProcessor.from_pretrained(repo)
            r["processor"] = type(AutoProcessor.from_pretrained(repo)).__name__
            r["presets"] = sorted(proc.available_voice_presets)
            model = BarkModel.from_pretrained(repo)
            inputs = proc("Hello, my dog is cute. [laughs]", voice_preset="v2/en_speaker_6")
            torch.manual_seed(0)
            a = model.generate(**inputs, semantic_max_new_tokens=20)
            torch.manual_seed(0)
            b = model.generate(**inputs, semantic_max_new_tokens=20)
            plain = proc("Hello world")
            torch.manual_seed(1)
            c, lengths = model.generate(**plain, semantic_max_new_tokens=10, return_output_lengths=True)
            r["audio"] = stats(a)
            r["deterministic"] = bool(torch.equal(a, b))
            r["no_preset_audio"] = stats(c)
            r["no_preset_lengths"] = [int(x) for x in lengths]
            r["sampling_rate"] = model.generation_config.sample_rate
            r["codec_sampling_rate"] = model.config.codec_config.sampling_rate
        else:
            tok = AutoTokenizer.from_pretrained(repo)
            r["tokenizer"] = type(tok).__name__
            r["vits_tokenizer"] = type(VitsTokenizer.from_pretrained(repo)).__name__
            model = VitsModel.from_pretrained(repo)
            ids = tok("Hello world, it's me! Ωμέγα 42", return_tensors="pt")
            r["max_id"] = int(ids.input_ids.max())
            r["vocab_size"] = model.config.vocab_size
            with torch.no_grad():
                torch.manual_seed(0)
                a = model(**ids).waveform
                torch.manual_seed(0)
                b = model(**ids).waveform
            r["audio"] = stats(a)
            r["deterministic"] = bool(torch.equal(a, b))
            r["sampling_rate"] = model.config.sampling_rate
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def loaded(hf_home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, ",".join(TINY_BUILDERS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_catalog_covers_the_real_repo_ids():
    assert set(TINY_BUILDERS) == set(MUSICGEN + BARK + MMS)


@pytest.mark.parametrize("repo_id", MUSICGEN + BARK + MMS)
def test_layout_mirrors_the_real_repo(hf_home, repo_id):
    repo_dir = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    sha = (repo_dir / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert [p.name for p in (repo_dir / "snapshots").iterdir()] == [sha]
    expected = MUSICGEN_FILES if repo_id in MUSICGEN else BARK_FILES if repo_id in BARK else MMS_FILES
    assert _files(repo_dir / "snapshots" / sha) == expected
    config = json.loads((repo_dir / "snapshots" / sha / "config.json").read_text())
    if repo_id in BARK:
        index = json.loads((repo_dir / "snapshots" / sha / "speaker_embeddings_path.json").read_text())
        assert index["repo_or_path"] == repo_id
        assert config["codec_config"]["sampling_rate"] == 24000
    elif repo_id in MUSICGEN:
        assert config["audio_encoder"]["sampling_rate"] == 32000
        gen = json.loads((repo_dir / "snapshots" / sha / "generation_config.json").read_text())
        assert gen["do_sample"] is True and gen["guidance_scale"] == 3.0
        assert gen["pad_token_id"] == gen["decoder_start_token_id"] == 2048
    else:
        assert config["sampling_rate"] == 16000


def test_install_repo_is_deterministic_and_replaces(tmp_path):
    calls = []

    def build(d: Path):
        calls.append(d)
        (d / "config.json").write_text("{}")

    first = install_repo(tmp_path, "org/name", build)
    (first / "stale.txt").write_text("x")
    second = install_repo(tmp_path, "org/name", build)
    assert first == second == calls[0] == calls[1]
    assert first.parent.parent == tmp_path / "hub" / "models--org--name"
    assert _files(second) == {"config.json"}
    with pytest.raises(ValueError):
        install_repo(tmp_path, "no-slash", build)


def test_builds_are_byte_identical(hf_home, tmp_path):
    make_tiny_cache(tmp_path, ["facebook/musicgen-small", "facebook/mms-tts-eng"])
    for repo_id in ("facebook/musicgen-small", "facebook/mms-tts-eng"):
        a, b = _snapshot(hf_home, repo_id), _snapshot(tmp_path, repo_id)
        for name in _files(a):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (repo_id, name)


def test_unknown_repo_is_refused(tmp_path):
    with pytest.raises(KeyError):
        make_tiny_cache(tmp_path, ["facebook/musicgen-huge"])


def _assert_sound(audio: dict) -> None:
    assert audio["finite"]
    assert audio["std"] > 1e-4
    assert audio["max_abs"] < 100


@pytest.mark.parametrize("repo_id", MUSICGEN)
def test_musicgen_generates_offline(loaded, repo_id):
    r = loaded[repo_id]
    stereo = "stereo" in repo_id
    assert r["tokenizer"] == "T5Tokenizer"
    assert r["t5_tokenizer_ids"] == r["auto_tokenizer_ids"]
    assert r["auto_tokenizer_ids"][-1] == 1  # </s>
    if "melody" not in repo_id:
        assert r["processor"] == "MusicgenProcessor"
    assert (r["sampling_rate"], r["frame_rate"]) == (32000, 50)
    assert (r["channels"], r["num_codebooks"]) == ((2, 8) if stereo else (1, 4))
    # 25 new tokens: the delay pattern of 4 codebooks per channel eats 3 frames, 640 samples each.
    assert r["audio"]["shape"] == [1, 2 if stereo else 1, (25 - 3) * 640]
    _assert_sound(r["audio"])
    assert r["deterministic"]


@pytest.mark.parametrize("repo_id", BARK)
def test_bark_generates_offline(loaded, repo_id):
    r = loaded[repo_id]
    assert r["processor"] == "BarkProcessor"
    assert r["presets"] == sorted(tiny_models.BARK_VOICE_PRESETS)
    assert r["sampling_rate"] == r["codec_sampling_rate"] == 24000
    # 20 semantic tokens -> 30 coarse frames (75 / 49.9 Hz) of 320 samples.
    assert r["audio"]["shape"] == [1, 30 * 320]
    _assert_sound(r["audio"])
    assert r["deterministic"]
    assert r["no_preset_audio"]["shape"] == [1, 15 * 320]
    assert r["no_preset_lengths"] == [15 * 320]
    _assert_sound(r["no_preset_audio"])


@pytest.mark.parametrize("repo_id", MMS)
def test_mms_tts_speaks_offline(loaded, repo_id):
    r = loaded[repo_id]
    assert r["tokenizer"] == r["vits_tokenizer"] == "VitsTokenizer"
    assert r["max_id"] < r["vocab_size"]
    assert r["sampling_rate"] == 16000
    assert len(r["audio"]["shape"]) == 2 and r["audio"]["shape"][0] == 1
    assert r["audio"]["shape"][1] % 256 == 0 and r["audio"]["shape"][1] > 0
    _assert_sound(r["audio"])
    assert r["audio"]["max_abs"] <= 1.0
    assert r["deterministic"]
