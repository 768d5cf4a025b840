"""What is cached and how big it is: safetensors headers, weight bytes before a load, and load failures in words."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any, Callable, Iterable

from studio.catalog import DTYPE_BYTES, ModelSpec
from studio.errors import ModelUnavailable

log = logging.getLogger(__name__)

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8,
}
# A snapshot is found by one of these files at its root: a diffusers pipeline, a transformers model, or a
# checkpoint in stable-audio-tools' own layout (model_config.json beside model.safetensors, e.g. Stable Audio 3).
_MARKERS = ("model_index.json", "config.json", "model_config.json")
_warned: set[str] = set()


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of `repo_id` in the HF cache, or None when nothing of it is cached.

    A snapshot may be partial (an interrupted download leaves the small files and no weights): fine for reading
    configs and headers; whether the model is downloaded is `downloaded()`'s question.
    """
    from huggingface_hub import try_to_load_from_cache

    for marker in _MARKERS:
        found = try_to_load_from_cache(repo_id, marker)
        if isinstance(found, str):
            return Path(found).parent
    return None


def downloaded(repo_id: str) -> bool:
    """Whether `repo_id` is completely in the HF cache: its configs and every weight file they call for."""
    snapshot = cached_snapshot(repo_id)
    return snapshot is not None and snapshot_complete(snapshot)


_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json",
            "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json")
# Parts of a diffusers pipeline that hold no weights, by the class model_index.json names for them.
_WEIGHTLESS_CLASSES = ("Tokenizer", "TokenizerFast", "Scheduler", "FeatureExtractor", "ImageProcessor", "Processor")
_parse_cache: dict[tuple[Path, Any], tuple[tuple[int, int], Any]] = {}


def snapshot_complete(snapshot: Path) -> bool:
    """Whether a snapshot folder holds its weights, not only the small files an interrupted download leaves.

    A transformers repo: every shard its index names, or without an index at least one weight file. A diffusers
    repo (model_index.json): the same for every component folder that holds a model. Weight files in the HF
    cache are symbolic links into blobs/ made once a blob is complete, so a few stat calls answer; the JSON
    files read on the way are kept while their size and mtime stay the same (estimates ask on every change).
    """
    model_index = _small_json(snapshot / "model_index.json")
    if model_index is None:
        return _weights_present(snapshot)
    for name, value in model_index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[1] is None:
            continue  # metadata ("_class_name", ...) and optional parts left out (null)
        folder = snapshot / name
        has_config = (folder / "config.json").exists()
        if not has_config and str(value[1]).endswith(_WEIGHTLESS_CLASSES):
            continue
        if not _weights_present(folder):
            return False
    return True


def _weights_present(folder: Path) -> bool:
    for index_name in _INDEXES:
        index = _small_json(folder / index_name)
        if index is not None:
            shards = set(index.get("weight_map", {}).values()) if isinstance(index, dict) else set()
            return bool(shards) and all((folder / shard).exists() for shard in shards)
    try:
        with os.scandir(folder) as entries:
            # is_file() follows the cache's symbolic links: a link to a missing blob is no weight file.
            return any(e.name.endswith(_WEIGHT_SUFFIXES) and e.is_file() for e in entries)
    except OSError:
        return False


def _small_json(path: Path) -> Any:
    """The parsed JSON file, or None when it is missing or unreadable; reparsed only when it changes."""
    try:
        return _parsed(path, _read_json)
    except (OSError, ValueError):
        return None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _parsed(path: Path, parse) -> Any:
    """`parse(path)`, kept while the file's size and mtime stay the same: estimates ask on every control change.

    Callers must not modify what it returns. Errors from stat or parse propagate (and nothing is kept).
    """
    stat = path.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _parse_cache.get((path, parse))
    if cached is not None and cached[0] == key:
        return cached[1]
    data = parse(path)
    if len(_parse_cache) > 256:
        _parse_cache.clear()
    _parse_cache[(path, parse)] = (key, data)
    return data


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file: tensor name -> {dtype, shape, data_offsets}. Do not modify it."""
    return _parsed(Path(path), _parse_header)


def _parse_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100 * 1024**2:
            raise ValueError(f"{path} has an implausible safetensors header of {length} bytes")
        header = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    return header


def _weight_files(snapshot: Path) -> list[Path]:
    files = sorted(snapshot.rglob("*.safetensors"))
    # diffusers repos may hold both full and ".fp16" variants of a component; count one of them.
    full = [f for f in files if ".fp16." not in f.name]
    return full or files


def int8_tensor(name: str, shape: list) -> bool:
    """Whether int8 mode stores this tensor as 8-bit: the matrices of Linear layers and token embeddings.

    Position tables (names with "pos") and T5's relative attention bias keep the float dtype, as do vectors
    (norms, biases) and convolution kernels.
    """
    return len(shape) == 2 and "pos" not in name and "relative" not in name


def safetensors_bytes(snapshot: Path, dtype_bytes: int, int8_parts: tuple[str, ...] = ()) -> int | None:
    """Bytes the weights take once loaded with floating tensors cast to `dtype_bytes` per element.

    With `int8_parts` (top-level module names), the int8 matrices under them count one byte per element plus
    a float32 scale per row.
    """
    files = _weight_files(snapshot)
    if not files:
        return None
    total = 0
    for path in files:
        # A tensor's part: a diffusers component's folder (transformer/...), else its name's first segment.
        folder = path.parent.name if path.parent != snapshot else None
        for name, entry in read_header(path).items():
            numel = 1
            for dim in entry["shape"]:
                numel *= int(dim)
            size = dtype_bytes if entry["dtype"] in _FLOAT_DTYPES else _DTYPE_SIZES.get(entry["dtype"], 4)
            part = folder or name.split(".", 1)[0]
            if int8_parts and part in int8_parts and int8_tensor(name, entry["shape"]):
                total += numel + 4 * int(entry["shape"][0])
                continue
            total += numel * size
    return total


def cached_weight_bytes(repo_id: str, dtype_bytes: int, int8_parts: tuple[str, ...] = ()) -> int | None:
    """Exact bytes from the cached safetensors of `repo_id`, or None when they are not (all) cached."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None or not snapshot_complete(snapshot):  # the shards present of a partial download undercount
        return None
    try:
        return safetensors_bytes(snapshot, dtype_bytes, int8_parts)
    except (OSError, ValueError, KeyError) as error:
        if repo_id not in _warned:  # estimates ask often; once is enough to point at the broken files
            _warned.add(repo_id)
            log.warning("could not read the safetensors headers of %s (%s); estimating from the catalog", repo_id,
                        error)
        return None


def float_bytes(dtype: str, compute_kind: str) -> int:
    """Bytes per element of what stays floating: activations, and with int8 the unquantized weights."""
    if dtype == "int8":  # CPU int8 computes in float32; CUDA (bitsandbytes) in float16
        return 4 if compute_kind == "cpu" else 2
    return DTYPE_BYTES[dtype]


def planned_weight_bytes(spec: ModelSpec, dtype: str, floating: int, int8_parts: tuple[str, ...] = (),
                         part_bytes: Callable[[], dict[str, int]] | None = None) -> int:
    """Weight bytes `spec` will take loaded in `dtype` (floating tensors at `floating` bytes each), before any load.

    Exact from the cached safetensors headers when the model is downloaded; otherwise from the catalog's parameter
    count, where int8 keeps about a third (the codec and the vectors stay float), or, for a pipeline of parts,
    the sum of `part_bytes()`: each part's bytes as it will be held (int8 parts at a byte a parameter).
    """
    exact = cached_weight_bytes(spec.repo_id, floating, int8_parts if dtype == "int8" else ())
    if exact is not None:
        return exact
    if dtype != "int8":
        return spec.weight_bytes(dtype)
    if part_bytes is not None:
        return sum(part_bytes().values())
    return spec.parameters * floating // 3


def module_bytes(modules: Iterable) -> int:
    """Bytes of the distinct tensors (parameters and buffers) the modules hold; shared storage counts once.

    Dynamically quantized Linear layers keep their int8 weights in packed parameters that are neither
    parameters nor buffers; those count too.
    """
    seen: set[tuple[str, int]] = set()
    total = 0
    for module in modules:
        tensors = list(module.parameters()) + list(module.buffers())
        for sub in module.modules():
            packed = getattr(sub, "_packed_params", None)
            if packed is not None and hasattr(packed, "_weight_bias"):
                tensors.extend(t for t in packed._weight_bias() if t is not None)
        for tensor in tensors:
            if tensor.is_quantized:  # packed: no shared storage to look at; its int8 data plus one scale per row
                total += tensor.numel() * tensor.element_size() + 4 * tensor.shape[0]
                continue
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if key in seen or storage.nbytes() == 0:
                continue
            seen.add(key)
            total += storage.nbytes()
    return total


def cached_json(repo_id: str, filename: str = "config.json") -> dict | None:
    """A small JSON file of `repo_id` if it is in the cache (no download), for estimates before a load."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    if not isinstance(found, str):
        return None
    try:
        return json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def component_bytes(repo_id: str, dtype_bytes: int) -> dict[str, int]:
    """Per component (top-level subfolder, e.g. unet, vae, text_encoder) bytes of a cached diffusers repo."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        return {}
    return folder_component_bytes(snapshot, dtype_bytes, name=repo_id)


def folder_component_bytes(pipeline: Path, dtype_bytes: int, *, name: str = "") -> dict[str, int]:
    """Per component bytes of a diffusers pipeline folder (in the HF cache or not)."""
    sizes: dict[str, int] = {}
    try:
        folders = sorted(p for p in Path(pipeline).iterdir() if p.is_dir())
    except OSError:
        return {}
    for folder in folders:
        try:
            size = safetensors_bytes(folder, dtype_bytes)
        except (OSError, ValueError, KeyError) as error:
            log.warning("could not read the safetensors headers of %s/%s: %s", name or pipeline, folder.name, error)
            continue
        if size:
            sizes[folder.name] = size
    return sizes


def studio_cache() -> Path:
    """The studio's own cache beside the HF cache (HF_HOME/audio-studio-converted): what it derives from cached
    repos once, e.g. a checkpoint converted into the library's format. Deleting it costs a conversion, no download."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "audio-studio-converted"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def cache_folder(repo_id: str) -> Path:
    """The repo's folder in the HF cache (HF_HOME/hub/models--owner--name), whether or not it exists."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def repair_hint(repo_id: str) -> str:
    """How to replace a repo's damaged or missing cached files: download them again, or start its folder over."""
    return (f"run `hf download {repo_id} --force-download`, or delete the folder {cache_folder(repo_id)} and "
            f"download the model again")


def missing_files(repo_id: str, needs: Iterable[tuple[str, ...]]) -> list[str]:
    """Which of the files a family's loader reads are not in the repo's cached snapshot.

    `needs` is a list of groups; a group is met when one of its alternatives is present, an alternative
    "a + b" when both are. An unmet group is returned as "first (or second or ...)". Nothing is missing
    from a repo that is not cached at all: that is a download, not damage.
    """
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        return []
    missing = []
    for group in needs:
        if not any(all((snapshot / name).is_file() for name in alternative.split(" + ")) for alternative in group):
            missing.append(group[0] + (f" (or {' or '.join(group[1:])})" if len(group) > 1 else ""))
    return missing


def describe_missing_files(spec: ModelSpec, missing: list[str]) -> str:
    files = " and ".join(missing)
    verb = "is" if len(missing) == 1 else "are"
    return (f"{spec.repo_id}'s cached files are incomplete: {files} {verb} missing, and the model cannot read its "
            f"prompt without {'it' if len(missing) == 1 else 'them'} (every word would become unknown): "
            f"{repair_hint(spec.repo_id)}")


_MAX_JSON_BYTES = 64 * 1024**2


def broken_json_files(repo_id: str) -> list[str]:
    """The JSON files of the repo's cached snapshot that do not parse, relative to the snapshot (after a failure)."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        return []
    broken = []
    for path in sorted(snapshot.rglob("*.json")):
        try:
            if path.stat().st_size <= _MAX_JSON_BYTES:
                json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            broken.append(path.relative_to(snapshot).as_posix())
    return broken


def describe_load_error(spec: ModelSpec, error: BaseException) -> str:
    """A load failure in words a user can act on: not cached offline, gated, corrupt files, JSON that does not parse."""
    name = type(error).__name__
    text = str(error)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    lowered = text.lower()
    missing = name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError") or any(
        phrase in lowered for phrase in ("couldn't connect", "cannot find the requested files", "not fully cached",
                                         "not cached locally", "local_files_only")) or (offline and "offline" in lowered)
    gated = "gated" in lowered or "401" in text or "403" in text or name in ("GatedRepoError", "HfHubHTTPError")
    if spec.gated and (gated or missing):
        where = " (and HF_HUB_OFFLINE=1 is set, so nothing can be downloaded now)" if offline else ""
        return (
            f"{spec.repo_id} is a gated model and its files are not in the cache{where}: accept its licence at "
            f"https://huggingface.co/{spec.repo_id}, then run `hf auth login` or set HF_TOKEN, and try again"
        )
    if missing:
        hint = "HF_HUB_OFFLINE=1 is set: run once online or copy the model into the cache" if offline else \
            "check your internet connection, or download it once with `hf download " + spec.repo_id + "`"
        return f"{spec.repo_id} is not in the Hugging Face cache and could not be downloaded ({hint})"
    if name in ("JSONDecodeError", "UnicodeDecodeError") or "not a valid json" in lowered:
        broken = broken_json_files(spec.repo_id)
        if not broken:
            named = re.search(r"'([^']+\.json)'", text)
            broken = [Path(named.group(1)).name] if named else []
        if broken:
            verb = "is" if len(broken) == 1 else "are"
            return (f"{spec.repo_id}'s {', '.join(broken)} in the cache {verb} not valid JSON (damaged or cut short): "
                    f"{repair_hint(spec.repo_id)}")
    if name in ("SafetensorError", "HeaderTooLarge", "UnpicklingError") or "safetensors" in lowered \
            or "incomplete" in lowered or "truncated" in lowered:
        return (
            f"{spec.repo_id}'s files in the cache look corrupt or incomplete ({name}): delete them and download "
            f"again: {repair_hint(spec.repo_id)}"
        )
    first_line = text.strip().splitlines()[0] if text.strip() else name
    return f"{spec.repo_id} could not be loaded: {first_line[:300]}"


def require_files(spec: ModelSpec, needs: tuple[tuple[str, ...], ...]) -> None:
    """Refuse, naming the file and the fix, when a file the family reads is missing from the cached repo."""
    missing = missing_files(spec.repo_id, needs)
    if missing:
        raise ModelUnavailable(describe_missing_files(spec, missing))


def explain_load_failure(spec: ModelSpec, needs: tuple[tuple[str, ...], ...], error: BaseException) -> str:
    """Why a load failed, in words a user can act on: a missing file first, else what the error says."""
    missing = missing_files(spec.repo_id, needs)
    return describe_missing_files(spec, missing) if missing else describe_load_error(spec, error)
