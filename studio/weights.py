"""Exact weight sizes: from the safetensors headers in the Hugging Face cache before a load, from the tensors after."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8,
}
_MARKERS = ("model_index.json", "config.json")
_warned: set[str] = set()


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of `repo_id` in the HF cache, or None when nothing of it is cached."""
    from huggingface_hub import try_to_load_from_cache

    for marker in _MARKERS:
        found = try_to_load_from_cache(repo_id, marker)
        if isinstance(found, str):
            return Path(found).parent
    return None


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file: tensor name -> {dtype, shape, data_offsets}."""
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


def safetensors_bytes(snapshot: Path, dtype_bytes: int) -> int | None:
    """Bytes the weights take once loaded with floating tensors cast to `dtype_bytes` per element."""
    files = _weight_files(snapshot)
    if not files:
        return None
    total = 0
    for path in files:
        for entry in read_header(path).values():
            numel = 1
            for dim in entry["shape"]:
                numel *= int(dim)
            size = dtype_bytes if entry["dtype"] in _FLOAT_DTYPES else _DTYPE_SIZES.get(entry["dtype"], 4)
            total += numel * size
    return total


def cached_weight_bytes(repo_id: str, dtype_bytes: int) -> int | None:
    """Exact bytes from the cached safetensors of `repo_id`, or None when they are not cached."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        return None
    try:
        return safetensors_bytes(snapshot, dtype_bytes)
    except (OSError, ValueError, KeyError) as error:
        if repo_id not in _warned:  # estimates ask often; once is enough to point at the broken files
            _warned.add(repo_id)
            log.warning("could not read the safetensors headers of %s (%s); estimating from the catalog", repo_id,
                        error)
        return None


def module_bytes(modules: Iterable) -> int:
    """Bytes of the distinct tensors (parameters and buffers) the modules hold; shared storage counts once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
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
    sizes: dict[str, int] = {}
    for folder in sorted(p for p in snapshot.iterdir() if p.is_dir()):
        try:
            size = safetensors_bytes(folder, dtype_bytes)
        except (OSError, ValueError, KeyError) as error:
            log.warning("could not read the safetensors headers of %s/%s: %s", repo_id, folder.name, error)
            continue
        if size:
            sizes[folder.name] = size
    return sizes
