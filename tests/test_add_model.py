"""A user adds a fine-tune or a mirror of a known family: --add-model REPO=FAMILY and <output-dir>/models.json.

The "fine-tunes" are copies of tiny checkpoints under other repo ids in the same temporary HF cache, so the
studio loads them as it would a repo downloaded from the hub; generation runs offline.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio.catalog import Catalog
from studio.errors import InvalidInput, ModelUnavailable
from studio.settings import Settings, settings_from
from studio.user_models import FLAG, add_models, check_repo, parse_entries
from tests.cli_process import run_studio

ROOT = Path(__file__).resolve().parent.parent
MMS = "facebook/mms-tts-eng"
SAO = "stabilityai/stable-audio-open-1.0"
MMS_FINE = "someone/mms-tts-fine"  # a copy of the tiny MMS-TTS English
SAO_MIRROR = "someone/sao-mirror"  # a copy of the tiny Stable Audio Open (a diffusers pipeline)


def _copy_repo(hf_home: Path, source: str, target: str) -> None:
    from studio.weights import cached_snapshot
    from tests.tiny_models import install_repo

    snapshot = cached_snapshot(source)
    install_repo(hf_home, target, lambda folder: shutil.copytree(snapshot, folder, dirs_exist_ok=True))


@pytest.fixture(scope="module")
def hub(tiny_cache):
    _copy_repo(tiny_cache, MMS, MMS_FINE)
    _copy_repo(tiny_cache, SAO, SAO_MIRROR)
    return tiny_cache


def _studio(output_dir: Path, flags: str = ""):
    from studio.device import CpuDevice
    from studio.service import Studio

    settings = Settings(output_dir=output_dir, memory_reserve=0, add_models=parse_entries(flags) if flags else ())
    return Studio(settings, device=CpuDevice())  # no catalog given: the studio builds it with the user's models


def _write_settings(output_dir: Path, text: str) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "models.json"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ every family
def test_every_family_says_which_configs_it_loads_and_its_tiny_repos_pass_the_check(hub, catalog):
    from studio.weights import downloaded

    checked = set()
    for family in catalog.families():
        assert family.accepts, f"{family.name} declares no Family.accepts: a repo added as it cannot be checked"
        for spec in (s for s in catalog if s.family == family.name and downloaded(s.repo_id)):
            check_repo(catalog, replace(spec, added_by=FLAG))  # as if the user had added the real repo id
            checked.add(family.name)
    assert checked == {family.name for family in catalog.families()}


# ------------------------------------------------------------------------------------------ the flag
@pytest.fixture(scope="module")
def flagged(hub, tmp_path_factory):
    """A studio started with --add-model MMS_FINE=mms_tts; one generation with the copy and one with the original."""
    from studio.ui.endpoints import Endpoints

    studio = _studio(tmp_path_factory.mktemp("flag") / "out", f"{MMS_FINE}=mms_tts")
    endpoints = Endpoints(studio)  # what /speech runs
    runs = {repo: endpoints.generate("speech", repo, "Hello there.", seed=7) for repo in (MMS_FINE, MMS)}
    return studio, runs


def test_a_repo_added_with_the_flag_copies_the_familys_smallest_entry_and_says_so(flagged):
    studio, _ = flagged
    spec = studio.catalog.get(MMS_FINE, "speech")
    assert (spec.family, spec.like, spec.added_by, spec.label) == ("mms_tts", MMS, FLAG, MMS_FINE)
    assert spec.params == studio.catalog.get(MMS).params and spec.tasks == ("speech",)
    assert f"settings, sizes and speed figures of {MMS} (the family's smallest" in spec.description
    assert spec.language is None and spec.featured_in == ()  # its own entry in the picker, never the default


def test_an_added_repo_is_in_its_tasks_model_picker_and_not_in_others(flagged):
    from studio.ui.picker import find_group, group_models

    studio, _ = flagged
    group = find_group(group_models(studio.catalog.for_task("speech")), MMS_FINE)
    assert group is not None and group.key == MMS_FINE and not group.by_language
    assert find_group(group_models(studio.catalog.for_task("music")), MMS_FINE) is None


def test_an_added_repo_generates_offline_through_the_api_as_the_repo_it_copies(flagged):
    studio, runs = flagged
    fine, original = runs[MMS_FINE], runs[MMS]
    assert fine.metadata["model"] == MMS_FINE and fine.metadata["task"] == "speech"
    a, b = (np.asarray(__import__("soundfile").read(run.path, dtype="float32")[0]) for run in (fine, original))
    assert a.size > 0 and np.array_equal(a, b)  # the same weights and seed: the same audio
    # Its size is the files' (a few KB), not the copied entry's 36M parameters.
    estimate = studio.estimate(studio.request("speech", MMS_FINE, "Hello there.", seed=7))
    assert estimate.weights_bytes < 2_000_000 < studio.catalog.get(MMS_FINE).weight_bytes("float32")


# ------------------------------------------------------------------------------------------ the file
@pytest.fixture(scope="module")
def from_file(hub, tmp_path_factory, request):
    """A studio whose models.json adds the Stable Audio Open mirror (and one entry with a mistake)."""
    out = tmp_path_factory.mktemp("file") / "out"
    path = _write_settings(out, json.dumps({"models": [
        {"repo": SAO_MIRROR, "family": "stable_audio", "label": "My SAO"},
        {"repo": "someone/other", "family": "stable-audio"},
    ]}, indent=2))
    caplog = logging.getLogger("studio.user_models")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    caplog.addHandler(handler)
    try:
        studio = _studio(out)
    finally:
        caplog.removeHandler(handler)
    result = studio.generate(studio.request("sfx", SAO_MIRROR, "rain on a tin roof", seed=3,
                                            params={"duration": 1.0, "steps": 2}))
    return studio, path, [r.getMessage() for r in records if r.levelno == logging.WARNING], result


def test_a_repo_added_in_the_settings_file_generates_offline_with_its_label(from_file):
    studio, path, _, result = from_file
    spec = studio.catalog.get(SAO_MIRROR)
    assert (spec.label, spec.like, spec.added_by, spec.tasks) == ("My SAO", SAO, str(path), ("music", "sfx"))
    assert result.metadata["model"] == SAO_MIRROR and result.metadata["duration"] == pytest.approx(1.0, abs=0.05)


def test_a_mistake_in_one_entry_of_the_file_is_a_warning_with_its_line_and_the_rest_is_added(from_file):
    studio, path, warnings, _ = from_file
    assert "someone/other" not in studio.catalog
    (warning,) = warnings
    assert f"{path}, entry 2 (line 9)" in warning and "did you mean someone/other=stable_audio?" in warning
    assert "goes on without this entry" in warning


def test_a_broken_settings_file_leaves_the_studio_starting_with_a_warning(hub, tmp_path, caplog):
    path = _write_settings(tmp_path / "out", '{"models": [\n  {"repo": "me/x", "family": "bark"}\n  {"repo": "y"}\n]}')
    with caplog.at_level(logging.WARNING, logger="studio.user_models"):
        studio = _studio(tmp_path / "out", f"{MMS_FINE}=mms_tts")
    assert MMS_FINE in studio.catalog and "me/x" not in studio.catalog  # the flag's model, none of the file's
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{path}, line 3 column 3: not valid JSON" in record.getMessage()
    assert "the studio goes on without the models it adds" in record.getMessage()


# ------------------------------------------------------------------------------------------ the check
def test_a_repo_of_another_family_is_refused_at_start_when_its_config_is_cached(hub, tmp_path):
    with pytest.raises(ModelUnavailable) as caught:
        _studio(tmp_path / "out", f"{MMS_FINE}=musicgen")
    assert str(caught.value) == (
        f"{MMS_FINE} is not a musicgen model: its config.json says model_type 'vits', and musicgen loads "
        f"config.json's model_type 'musicgen' or 'musicgen_melody'; it is a mms_tts model: add it as "
        f"{MMS_FINE}=mms_tts (it was added by --add-model)")


def test_a_repo_not_yet_downloaded_is_checked_after_its_config_arrives_and_before_any_weights(hub, tmp_path,
                                                                                              monkeypatch):
    import huggingface_hub

    late = "someone/late-download"
    studio = _studio(tmp_path / "out", f"{late}=musicgen")  # nothing of it cached: added, checked at its load
    assert studio.catalog.get(late).family == "musicgen"
    fetched = []

    def download(repo_id, filename, **kwargs):  # the hub's edge: the repo arrives, an MMS checkpoint after all
        fetched.append(filename)
        _copy_repo(hub, MMS, repo_id)
        return str(huggingface_hub.try_to_load_from_cache(repo_id, filename))

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # studio.weights.offline(): the check downloads what is missing
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    request = studio.request("music", late, "drums", seed=1, params={"duration": 0.5})
    with pytest.raises(ModelUnavailable, match=r"its config.json says model_type 'vits'.*add it as "
                                                rf"{late}=mms_tts"):
        studio.generate(request)
    assert fetched == ["config.json"]  # only the config: MusicGen's loader never ran
    assert studio.manager.state_of(late).value in ("on disk", "not downloaded")


def test_a_repo_not_in_the_cache_offline_is_refused_with_the_fix(hub, tmp_path):
    studio = _studio(tmp_path / "out", "someone/never-downloaded=bark")
    request = studio.request("speech", "someone/never-downloaded", "hi", seed=1)
    with pytest.raises(ModelUnavailable, match="not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set"):
        studio.generate(request)


# ------------------------------------------------------------------------------------------ bad entries
@pytest.mark.parametrize("value, message", [
    ("me/model", "--add-model 'me/model' must be REPO=FAMILY, e.g. --add-model me/musicgen-finetune=musicgen"),
    ("=musicgen", "--add-model '=musicgen' has no repo id before =: write REPO=FAMILY"),
    ("me/model=", "--add-model 'me/model=' has no family after =: write REPO=FAMILY"),
    ("model=musicgen", "'model' is not a Hugging Face repo id: write owner/name"),
    ("a/b/c=musicgen", "'a/b/c' is not a Hugging Face repo id"),
    ("me--x/y=musicgen", "'me--x/y' is not a Hugging Face repo id"),
])
def test_a_malformed_flag_is_refused_naming_it_and_the_fix(value, message):
    with pytest.raises(InvalidInput) as caught:
        parse_entries(value)
    assert message in str(caught.value)


def test_the_environment_twin_takes_comma_separated_entries_and_names_itself_in_errors():
    settings = settings_from(None, env={"STUDIO_ADD_MODEL": "me/a=bark, me/b=facebook/musicgen-small"})
    assert [(e.repo, e.family, e.source) for e in settings.add_models] == [
        ("me/a", "bark", "STUDIO_ADD_MODEL"), ("me/b", "facebook/musicgen-small", "STUDIO_ADD_MODEL")]
    with pytest.raises(InvalidInput, match=r"^STUDIO_ADD_MODEL entry 'me/c' must be REPO=FAMILY"):
        settings_from(None, env={"STUDIO_ADD_MODEL": "me/a=bark,me/c"})
    flags = settings_from(_args(add_model=["me/d=bark"]), env={"STUDIO_ADD_MODEL": "me/a=bark"})
    assert [e.repo for e in flags.add_models] == ["me/d"]  # a flag wins over its variable, as for every setting


def _args(**values):
    import argparse

    return argparse.Namespace(**values)


@pytest.mark.parametrize("flags, message", [
    ("me/x=musicgn", "'musicgn' is neither a model family (ace_step, audioldm2, bark, csm, dia, mms_tts, musicgen, "
                     "pocket_tts, stable_audio, stable_audio_3, vibevoice) nor a repo id of the catalog: name one (did you "
                     "mean me/x=musicgen?)"),
    ("me/x=nobody/nothing", "'nobody/nothing' is neither a model family"),
    ("suno/bark-small=musicgen", "suno/bark-small is already in the catalog as a bark model; it cannot be added "
                                 "as musicgen: drop the entry"),
    ("me/x=bark,me/x=musicgen", "me/x is added twice, as bark and as musicgen: keep one"),
])
def test_a_flag_the_catalog_cannot_take_is_refused_naming_it_and_the_fix(hub, flags, message):
    with pytest.raises(InvalidInput) as caught:
        add_models(Catalog.discover("models"), parse_entries(flags), None)
    assert message in str(caught.value)


def test_a_repo_id_as_family_copies_that_entry_and_like_picks_one_in_the_file(hub, tmp_path, caplog):
    _write_settings(tmp_path, json.dumps({"models": [
        {"repo": "me/melody-fine", "family": "musicgen", "like": "facebook/musicgen-melody"},
        {"repo": "me/bad-like", "family": "musicgen", "like": "suno/bark"},
        {"repo": "me/typo", "famliy": "bark"},
        {"repo": "not a repo", "family": "bark"},
    ]}))
    catalog = Catalog.discover("models")
    with caplog.at_level(logging.WARNING, logger="studio.user_models"):
        added = add_models(catalog, parse_entries("me/music-fine=cvssp/audioldm2-music"), tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("goes on without this entry" in w for w in warnings)
    for said in ("entry 2 (line 1): \"like\" 'suno/bark' is not a musicgen model of the catalog: name one of",
                 "entry 3 (line 1): unknown key 'famliy'; an entry's keys are repo, family, like, label",
                 "entry 4 (line 1): 'not a repo' is not a Hugging Face repo id"):
        assert any(said in warning for warning in warnings), said
    assert [spec.repo_id for spec in added] == ["me/music-fine", "me/melody-fine"]
    assert catalog.get("me/music-fine").tasks == ("music",)  # audioldm2-music's, not the family's first (sfx)
    assert catalog.get("me/melody-fine").param("audio").label == "Melody"


# ------------------------------------------------------------------------------------------ the CLI
def test_the_cli_lists_added_models_marked_and_generates_with_one(hub, tmp_path, capsys):
    from studio.__main__ import main

    out = tmp_path / "out"
    _write_settings(out, json.dumps({"models": [{"repo": SAO_MIRROR, "family": SAO}]}))
    listed = run_studio(["models", "--output-dir", str(out), "--add-model", f"{MMS_FINE}=mms_tts"], cwd=ROOT,
                        timeout=120)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert lines[MMS_FINE].endswith(f"[user-added (--add-model), like {MMS}]")
    assert lines[SAO_MIRROR].endswith(f"[user-added (models.json), like {SAO}]")
    assert "user-added" not in lines[SAO]
    assert main(["generate", "--model", MMS_FINE, "--prompt", "Hi.", "--seed", "1", "--out", str(tmp_path / "a.wav"),
                 "--output-dir", str(out), "--add-model", f"{MMS_FINE}=mms_tts"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == MMS_FINE


def test_musicgen_picks_melody_by_the_repos_config_not_its_name(hub, catalog):
    from models.musicgen import _is_melody

    _copy_repo(hub, "facebook/musicgen-melody", "someone/tune-follower")
    _copy_repo(hub, "facebook/musicgen-small", "someone/melody-named-small")
    assert _is_melody(replace(catalog.get("facebook/musicgen-melody"), repo_id="someone/tune-follower"))
    assert not _is_melody(replace(catalog.get("facebook/musicgen-small"), repo_id="someone/melody-named-small"))
