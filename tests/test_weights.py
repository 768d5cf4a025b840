"""Whether a cached snapshot is a complete download: weight files, shard indexes, diffusers components."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from studio.weights import downloaded, snapshot_complete


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _blob_link(snapshot: Path, name: str, *, complete: bool = True) -> Path:
    """A weight file the way the HF cache holds it: a symbolic link into blobs/, the blob there once complete."""
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / f"{abs(hash(name)):064x}"
    if complete:
        blob.write_bytes(b"\0" * 16)
    else:  # huggingface_hub writes `<etag>.incomplete` and links the file only when it is done
        blob.with_name(blob.name + ".incomplete").write_bytes(b"\0" * 8)
    link = snapshot / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(blob)
    return link


@pytest.fixture
def snapshot(tmp_path) -> Path:
    folder = tmp_path / "models--org--name" / "snapshots" / ("a" * 40)
    _json(folder / "config.json", {"model_type": "tiny"})
    return folder


def test_a_transformers_snapshot_is_complete_with_a_weight_file(snapshot):
    assert not snapshot_complete(snapshot)  # config only: the weights never came
    _blob_link(snapshot, "model.safetensors", complete=False)
    assert not snapshot_complete(snapshot)  # linked to a blob that is still `.incomplete`
    (snapshot / "model.safetensors").unlink()
    _blob_link(snapshot, "pytorch_model.bin")
    assert snapshot_complete(snapshot)


def test_a_sharded_snapshot_needs_every_shard_its_index_names(snapshot):
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    _json(snapshot / "model.safetensors.index.json", {"weight_map": {"a.weight": shards[0], "b.weight": shards[1]}})
    _blob_link(snapshot, shards[0])
    assert not snapshot_complete(snapshot)
    _blob_link(snapshot, shards[1])
    assert snapshot_complete(snapshot)
    (snapshot / shards[0]).unlink()  # noticed at once: files are looked at every time, only the index is kept
    assert not snapshot_complete(snapshot)


def test_a_diffusers_snapshot_needs_the_weights_of_every_model_component(snapshot):
    (snapshot / "config.json").unlink()
    _json(snapshot / "model_index.json", {
        "_class_name": "AudioLDM2Pipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "AudioLDM2UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "vocoder": ["transformers", "SpeechT5HifiGan"], "tokenizer": ["transformers", "RobertaTokenizerFast"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "feature_extractor": ["transformers", "ClapFeatureExtractor"], "safety_checker": [None, None],
    })
    _json(snapshot / "tokenizer" / "tokenizer_config.json", {})
    _json(snapshot / "scheduler" / "scheduler_config.json", {})
    _json(snapshot / "feature_extractor" / "preprocessor_config.json", {})
    for part in ("unet", "vae", "vocoder"):
        _json(snapshot / part / "config.json", {})
    _blob_link(snapshot, "unet/diffusion_pytorch_model.safetensors")
    _blob_link(snapshot, "vocoder/model.safetensors")
    assert not snapshot_complete(snapshot)  # the vae has its config and no weights
    _blob_link(snapshot, "vae/diffusion_pytorch_model.fp16.safetensors")
    assert snapshot_complete(snapshot)
    shutil.rmtree(snapshot / "vocoder")  # a whole model folder missing is missing weights too
    assert not snapshot_complete(snapshot)


def test_completeness_is_a_few_stat_calls(snapshot):
    _blob_link(snapshot, "model.safetensors")
    began = time.perf_counter()
    for _ in range(1000):
        assert snapshot_complete(snapshot)
    assert time.perf_counter() - began < 1.0  # about 20 µs each; estimates ask on every control change


@pytest.mark.parametrize("repo_id,weights", [
    ("cvssp/audioldm2", "vae/diffusion_pytorch_model.safetensors"),
    ("stabilityai/stable-audio-open-1.0", "transformer/diffusion_pytorch_model.safetensors"),
    ("suno/bark-small", "model.safetensors"),
])
def test_the_tiny_checkpoints_are_downloaded_until_a_weight_file_goes(make_studio, tiny_cache, tmp_path, repo_id,
                                                                      weights):
    snapshots = tiny_cache / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    (snapshot,) = list(snapshots.iterdir())
    studio = make_studio()
    assert downloaded(repo_id) and studio.manager.state_of(repo_id) == "on disk"
    path = snapshot / weights
    backup = tmp_path / "weights"
    shutil.move(path, backup)
    try:
        assert not downloaded(repo_id)
        assert studio.manager.state_of(repo_id) == "not downloaded"
        assert "downloads" in studio.estimate(studio.request(None, repo_id, "a test", seed=1)).summary()
    finally:
        shutil.move(backup, path)
    assert downloaded(repo_id)


@pytest.mark.parametrize("repo_id, dtype", [("eustlb/pocket-tts", "float32"), ("eustlb/pocket-tts", "int8"),
                                            ("eustlb/pocket-tts", "bfloat16"), ("nari-labs/Dia-1.6B-0626", "int8"),
                                            ("nari-labs/Dia-1.6B-0626", "float16")])
def test_weights_before_a_download_count_a_companion_codec_once_in_float32(catalog, monkeypatch, tmp_path, repo_id,
                                                                           dtype):
    # Pocket TTS's components list its codec as a part: int8's per-part figure once counted it there (at 4 x 4 bytes
    # a parameter) and again as the companion repo, 490.5 MB for 169.7 MB; and the companion counted in the run's
    # floating dtype, where both codecs stay float32 (bfloat16 219.0 MB for 259.1 MB, Dia float16 3.37 GB for 3.52).
    from huggingface_hub import constants

    from studio.catalog import DTYPE_BYTES
    from studio.estimate import Calibration
    from studio.sizer import Sizer

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing downloaded: the published counts
    spec, family = catalog.get(repo_id), catalog.family(catalog.get(repo_id))
    (companion,) = family.companion_repos
    if family.components is not None:  # Pocket TTS: the model's own parts (its codec excluded) and their int8 split
        own = dict(family.components(spec, 1))
        del own[companion.part]
        assert sum(own.values()) == spec.parameters
        own_bytes = sum(count * (1 if dtype == "int8" and name in family.int8_parts else DTYPE_BYTES[dtype])
                        for name, count in own.items())
    else:  # Dia: int8 keeps about a third of float32 (planned_weight_bytes), the DAC aside
        own_bytes = spec.parameters * 4 // 3 if dtype == "int8" else spec.parameters * DTYPE_BYTES[dtype]
    weights = Sizer(catalog, Calibration(None)).weights(spec, dtype, "cpu")
    assert weights == own_bytes + companion.parameters * 4


def test_an_int8_estimate_before_a_download_keeps_a_float32_part_at_its_own_size(catalog, monkeypatch, tmp_path):
    # CSM's components give its Mimi codec at 4 bytes a parameter in every precision (the loader keeps it float32):
    # int8's per-part figure once took that figure as a parameter count and multiplied it by 4 again, so CSM in
    # int8 came to 7.3 GB before a download, more than in float32 (6.6 GB).
    from huggingface_hub import constants

    from studio.estimate import Calibration
    from studio.sizer import Sizer

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing downloaded: the published counts
    spec = catalog.get("sesame/csm-1b")
    family = catalog.family(spec)
    sizer = Sizer(catalog, Calibration(None))
    codec = family.components(spec, 4)["codec"]
    assert family.components(spec, 1)["codec"] == codec  # the family keeps it float32 whatever the precision
    int8, float32 = sizer.weights(spec, "int8", "cpu"), sizer.weights(spec, "float32", "cpu")
    assert int8 <= float32
    assert int8 == sum(size for name, size in family.components(spec, 4).items()
                       if name not in family.int8_parts) + sum(
        size for name, size in family.components(spec, 1).items() if name in family.int8_parts)
