"""Stable Audio 3 as Stability publishes it (stable-audio-tools' layout) converted once into a diffusers folder.

The hub repos hold `model_config.json`, `model.safetensors` (the DiT, the SAME autoencoder and two conditioner
tensors under stable-audio-tools' names) and `t5gemma-b-b-ul2/` (the T5Gemma text encoder and its tokenizer);
diffusers' StableAudio3Pipeline reads none of it. diffusers converts them with a script in its GitHub repository
(scripts/convert_stable_audio_3_to_diffusers.py, not in the pip package). This module does what that script does,
written here from it ("the script" below; read at diffusers commit 58eb52c):

* renames: `pretransform.model.*` -> the AutoencoderSAME (`vae/`), `model.model.*` -> the StableAudio3DiTModel
  (`transformer/`), `conditioner.conditioners.seconds_total.*` -> the duration embedder, the prompt conditioner's
  learned padding embedding -> the DiT's `prompt_padding_embedding`;
* the fused self-attention projections reordered from [q | k | v | q2 | k2] to [q1 | q2 | k1 | k2 | v] where the
  attention is differential (the DiT's and the autoencoder's);
* configs: the DiT's from the tensor shapes, the autoencoder's from model_config.json (its stride, window and
  sinusoidal layers do not show in the weights), the scheduler from `diffusion_objective`: `rf_denoiser` (the
  distilled medium) samples with 8 ping-pong steps (stochastic_sampling=True), anything else (medium-base,
  `rectified_flow`) with 100 deterministic Euler steps.

Where the script is lenient this is strict: a tensor the diffusers models expect and the checkpoint lacks, or one
of another shape, stops the conversion with its name (the script warns and leaves random weights, which make
noise). Tensors the diffusers models have no place for (the autoencoder's per-layer rotary frequencies, which
diffusers recomputes; an empty noise scale) are left out, as the script's non-strict load leaves them.

It differs from the script in how, not what: the tensors are streamed from the memory-mapped checkpoint into
shards of at most MAX_SHARD_BYTES (the script loads the whole checkpoint, then builds every model, holding two
copies: 2 x 9.2 GB for medium), and the text encoder's weights are copied tensor by tensor instead of through a
model. The result: `<studio cache>/<org>--<name>/<commit>/` (studio.weights.studio_cache, beside the HF cache),
written into a temporary folder renamed at the end, with a marker listing every file and its size written last;
a folder without it, or whose files are not those sizes, is converted again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from studio.catalog import Preparation
from studio.errors import ModelUnavailable
from studio.weights import cached_snapshot, read_header, repair_hint, studio_cache

from models.common import SAFE_LOAD

log = logging.getLogger(__name__)

STAGE = "converting, once"
CONVERSION_VERSION = 1  # raised when what this module writes changes: older conversions are made again
MARKER = "audio-studio-conversion.json"
TEXT_ENCODER_FOLDER = "t5gemma-b-b-ul2"  # where the Stability repos keep their copy of google/t5gemma-b-b-ul2
TEXT_ENCODER_REPO = "google/t5gemma-b-b-ul2"  # the script's default, and the conditioner's model_name
# A shard of the converted weights: what the conversion holds in RAM at once (plus one reordered tensor).
MAX_SHARD_BYTES = 2 * 10**9
TOKENIZER_RAM = 400 * 10**6  # Gemma's 256,000-piece tokenizer read and written again (34 MB of JSON)
# Published sizes, until the files are cached: model.safetensors and t5gemma-b-b-ul2/model.safetensors of
# stabilityai/stable-audio-3-medium at 27b5a21 and of -medium-base at b32993f (the same sizes in both; read from
# the pins of a public port, not from the hub: nothing here can reach it).
PUBLISHED_CHECKPOINT_BYTES = 9_222_116_660
PUBLISHED_TEXT_ENCODER_BYTES = 1_183_022_944

_AE = "pretransform.model."
_DIT = "model.model."
_PADDING = "conditioner.conditioners.prompt.padding_embedding"
_SECONDS = "conditioner.conditioners.seconds_total.embedder.embedding."
_PROMPT = "conditioner.conditioners.prompt."
# The script's renames inside a TransformerResamplingBlock's transformer layers (first match wins, as there).
_TRB_RENAMES = (
    ("pre_norm.", "norm_attn."),
    ("self_attn.to_qkv.", "attn.to_qkv."),
    ("self_attn.to_out.", "attn.to_out."),
    ("self_attn.q_norm.", "attn.q_norm."),
    ("self_attn.k_norm.", "attn.k_norm."),
    ("ff_norm.", "norm_ff."),
    ("ff.ff.0.proj.", "ff.proj_in."),
    ("ff.ff.2.", "ff.proj_out."),
)
# ... and inside a DiT block, whose diffusers names keep the reference's but for the feed-forward.
_DIT_BLOCK_RENAMES = (("ff.ff.0.proj.", "ff.proj_in."), ("ff.ff.2.", "ff.proj_out."))
# DiT tensors outside the blocks: reference name (after model.model.) -> diffusers name.
_DIT_TOP = {
    **{f"to_timestep_embed.{i}.{p}": f"to_timestep_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")},
    **{f"{name}.{i}.weight": f"{name}.{i}.weight" for name in ("to_cond_embed", "to_global_embed") for i in (0, 2)},
    "preprocess_conv.weight": "preprocess_conv.weight",
    "postprocess_conv.weight": "postprocess_conv.weight",
    "transformer.project_in.weight": "proj_in.weight",
    "transformer.project_out.weight": "proj_out.weight",
    "transformer.memory_tokens": "memory_tokens",
    "transformer.rotary_pos_emb.inv_freq": "rotary_pos_emb.inv_freq",
    **{f"transformer.global_cond_embedder.{i}.{p}": f"global_cond_embedder.{i}.{p}" for i in (0, 2)
       for p in ("weight", "bias")},
}


# ------------------------------------------------------------------------------------------------ where things are
def converted_root(repo_id: str) -> Path:
    """The folder holding `repo_id`'s conversions, one per upstream commit."""
    return studio_cache() / repo_id.replace("/", "--")


def layout(repo_id: str) -> str | None:
    """"diffusers" (a pipeline folder: a community conversion), "original" (stable-audio-tools' layout), or None
    when nothing of the repo is cached."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        return None
    if (snapshot / "model_index.json").is_file():
        return "diffusers"
    return "original" if (snapshot / "model_config.json").is_file() else None


def converted(repo_id: str) -> Path | None:
    """The complete conversion of the cached commit of `repo_id`, or None (not converted, or damaged)."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None or not (snapshot / "model_config.json").is_file():
        return None
    folder = converted_root(repo_id) / snapshot.name
    return folder if _complete(folder) else None


def _complete(folder: Path) -> bool:
    """The marker is written last and lists every file with its size: a folder cut short or altered fails."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if marker.get("version") != CONVERSION_VERSION:
            return False
        files = marker["files"]
        return bool(files) and all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def marker(folder: Path) -> dict:
    """What the conversion recorded (source commit, sample_size, diffusion objective, files); {} if unreadable."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------ before it runs
def pending(repo_id: str) -> Preparation | None:
    """What converting `repo_id` costs, or None when there is nothing to convert (a diffusers repo, or done).

    Not cached yet: the official repos are in the original layout, sized by their published files. Cached: sized
    by the files themselves. Time: every byte read once and written once. Memory: one shard, the largest tensor
    reordered beside it, and the tokenizer.
    """
    kind = layout(repo_id)
    if kind == "diffusers" or (kind == "original" and converted(repo_id) is not None):
        return None
    checkpoint, text_encoder, largest = PUBLISHED_CHECKPOINT_BYTES, PUBLISHED_TEXT_ENCODER_BYTES, 0
    snapshot = cached_snapshot(repo_id)
    if kind == "original":
        try:
            checkpoint = (snapshot / "model.safetensors").stat().st_size
            largest = max((_nbytes(e) for e in read_header(snapshot / "model.safetensors").values()), default=0)
        except (OSError, ValueError, KeyError):
            pass  # not downloaded yet (an interrupted download), or unreadable: the conversion will say which
        own = snapshot / TEXT_ENCODER_FOLDER
        if own.is_dir():
            text_encoder = sum(p.stat().st_size for p in own.glob("*.safetensors")) or text_encoder
    largest = largest or 7680 * 1536 * 4  # the medium DiT's fused self-attention projection, float32
    peak = min(checkpoint + text_encoder, MAX_SHARD_BYTES + largest) + largest + TOKENIZER_RAM
    return Preparation(stage=STAGE, summary="converts the checkpoint to diffusers' format once",
                       io_bytes=2 * (checkpoint + text_encoder), peak_bytes=peak)


def original_components(repo_id: str, dtype_bytes: int) -> dict[str, int]:
    """Bytes per diffusers component of a cached original checkpoint, from its headers split by key prefix."""
    snapshot = cached_snapshot(repo_id)
    if snapshot is None or not (snapshot / "model.safetensors").is_file():
        return {}
    sizes = {"transformer": 0, "vae": 0, "duration_embedder": 0, "text_encoder": 0}
    try:
        for key, entry in read_header(snapshot / "model.safetensors").items():
            part = _part_of(key)
            if part is not None:
                sizes[part] += _nbytes(entry, dtype_bytes)
        for path in (snapshot / TEXT_ENCODER_FOLDER).glob("*.safetensors"):
            sizes["text_encoder"] += sum(_nbytes(e, dtype_bytes) for k, e in read_header(path).items()
                                         if "decoder" not in k)  # an encoder-decoder copy: the encoder is loaded
    except (OSError, ValueError, KeyError) as error:
        log.warning("could not read the safetensors headers of %s: %s", repo_id, error)
        return {}
    return {name: size for name, size in sizes.items() if size}


def _part_of(key: str) -> str | None:
    if key.startswith(_AE):
        return "vae"
    if key.startswith(_DIT) or key == _PADDING:
        return "transformer"
    if key.startswith(_SECONDS):
        return "duration_embedder"
    return None


def _nbytes(entry: dict, dtype_bytes: int | None = None) -> int:
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}
    floating = entry["dtype"] in ("F64", "F32", "F16", "BF16")
    size = dtype_bytes if dtype_bytes is not None and floating else sizes.get(entry["dtype"], 4)
    return math.prod(int(d) for d in entry["shape"]) * size


# ------------------------------------------------------------------------------------------------ converting
def convert(repo_id: str, ctx: Any = None) -> Path | None:
    """Fetch the original files of `repo_id` (from the HF cache, or the hub when online) and convert them once;
    returns the converted folder, or None when the repo turns out to be a diffusers pipeline already.

    `ctx` (a RunContext) hears the stage, the progress (megabytes done of the total) and is checked for cancel
    between tensors; a cancelled or failed conversion leaves nothing behind.
    """
    from filelock import FileLock

    snapshot = _fetch(repo_id, ["model_index.json", "model_config.json", "model.safetensors",
                                f"{TEXT_ENCODER_FOLDER}/*", "LICENSE*"])
    if (snapshot / "model_index.json").is_file():
        return None
    root = converted_root(repo_id)
    root.mkdir(parents=True, exist_ok=True)
    final = root / snapshot.name
    with FileLock(str(root) + ".lock"):  # a second studio process waits here, then finds the folder made
        if _complete(final):
            return final
        for stale in root.glob(f".{snapshot.name}.partial-*"):  # a conversion killed midway (the lock is ours)
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f".{snapshot.name}.partial-{os.getpid()}"
        try:
            _convert_into(repo_id, snapshot, partial, ctx)
            if final.exists():  # damaged or from an older version of this module
                shutil.rmtree(final)
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    for other in root.iterdir():  # conversions of commits no longer cached: derived data, 10 GB each
        if other.is_dir() and other.name != final.name and not other.name.startswith("."):
            log.info("removing the conversion of an older commit of %s: %s", repo_id, other)
            shutil.rmtree(other, ignore_errors=True)
    return final


def _fetch(repo_id: str, patterns: list[str]) -> Path:
    """The snapshot folder holding `patterns` of `repo_id`: downloaded when online, the cached one offline."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=patterns))


def _convert_into(repo_id: str, snapshot: Path, out: Path, ctx: Any) -> None:
    import diffusers
    import torch
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    started = time.monotonic()
    config = _read_config(repo_id, snapshot)
    checkpoint = snapshot / "model.safetensors"
    if not checkpoint.is_file():
        raise ModelUnavailable(f"{repo_id}'s model.safetensors is not in the cache: {repair_hint(repo_id)}")
    header = read_header(checkpoint)
    encoder = _text_encoder_source(repo_id, snapshot, config)
    progress = _Progress(ctx, checkpoint.stat().st_size + sum(p.stat().st_size for p in encoder.glob("*.safetensors")))
    if ctx is not None:
        ctx.stage(STAGE)
    out.mkdir(parents=True)

    # 1. The autoencoder, the duration embedder and the DiT, tensor by tensor from the checkpoint.
    vae_config = _vae_config(repo_id, header, config)
    plans = {
        "vae": (AutoencoderSAME, vae_config, _vae_plan(header, vae_config["use_differential_attention"])),
        "duration_embedder": (StableAudio3DurationEmbedder, _duration_config(header, config), _duration_plan()),
        "transformer": (StableAudio3DiTModel, (dit := _dit_config(repo_id, header)),
                        _dit_plan(header, dit["use_differential_attention"])),
    }
    for name, (model_class, model_config, plan) in plans.items():
        with torch.device("meta"):
            model = model_class(**model_config)
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        computed = _computed(name, model_config)
        plan = _checked(repo_id, name, plan, header, expected, computed)
        model.save_config(out / name)
        _write(checkpoint, plan, computed, out / name, "diffusion_pytorch_model", progress)

    # 2. The text encoder (encoder-only T5Gemma) and its tokenizer, from the repo's own copy.
    tokenizer_class = _convert_text_encoder(repo_id, encoder, config, out, progress)
    progress.finish()

    # 3. The scheduler the checkpoint was made for, and the pipeline's index.
    objective = _objective(config)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0,
                                                stochastic_sampling=objective == "rf_denoiser")
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableAudio3Pipeline", "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", "AutoencoderSAME"], "text_encoder": ["transformers", "T5GemmaEncoderModel"],
        "tokenizer": ["transformers", tokenizer_class],
        "duration_embedder": ["diffusers", "StableAudio3DurationEmbedder"],
        "transformer": ["diffusers", "StableAudio3DiTModel"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    files = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    (out / MARKER).write_text(json.dumps({
        "version": CONVERSION_VERSION, "repo": repo_id, "commit": snapshot.name, "diffusion_objective": objective,
        "sample_size": config.get("sample_size"), "sample_rate": config.get("sample_rate"),
        "seconds": round(time.monotonic() - started, 2), "files": files,
    }, indent=2), encoding="utf-8")
    log.info("converted %s (%s) into %s in %.1f s", repo_id, snapshot.name[:12], out, time.monotonic() - started)


class _Progress:
    """Kilobytes of source tensors converted of the total, reported to the run (at most once per 0.1 % of it);
    cancel is checked after every tensor."""

    def __init__(self, ctx: Any, total_bytes: int) -> None:
        self.ctx = ctx
        self.total = max(1, math.ceil(total_bytes / 1e3))
        self.done_bytes = 0
        self._reported = 0

    def add(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        if self.ctx is None:
            return
        done = min(self.total, round(self.done_bytes / 1e3))
        if done - self._reported >= self.total / 1000:
            self._reported = done
            self.ctx.progress(done, self.total)
        self.ctx.check()

    def finish(self) -> None:
        if self.ctx is not None and self._reported < self.total:
            self._reported = self.total
            self.ctx.progress(self.total, self.total)


def _read_config(repo_id: str, snapshot: Path) -> dict:
    try:
        config = json.loads((snapshot / "model_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelUnavailable(f"{repo_id}'s model_config.json is not in the cache: {repair_hint(repo_id)}") from None
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"{repo_id}'s model_config.json in the cache is not valid JSON ({error}): "
                               f"{repair_hint(repo_id)}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ModelUnavailable(f"{repo_id}'s model_config.json has no 'model' section: it is not a Stable Audio 3 "
                               f"checkpoint this studio can convert")
    return config


def _objective(config: dict) -> str | None:
    """The script's lookup order: model.diffusion.diffusion_objective, model.diffusion_objective, top level."""
    model = config.get("model", {})
    return ((model.get("diffusion") or {}).get("diffusion_objective") or model.get("diffusion_objective")
            or config.get("diffusion_objective"))


def _conditioner(config: dict, kind: str) -> dict:
    """The conditioning config whose id is `kind` ("prompt", "seconds_total"), {} when there is none."""
    for entry in (config.get("model", {}).get("conditioning") or {}).get("configs", []):
        if isinstance(entry, dict) and entry.get("id") == kind:
            return entry.get("config") or {}
    return {}


# ------------------------------------------------------------------------------------------------ configs
def _vae_config(repo_id: str, header: dict, config: dict) -> dict:
    """AutoencoderSAME's config: the script's _infer_vae_config with model_config.json given (the stride, window
    and sinusoidal layers are invisible in the weights), the differential attention and feed-forward width as the
    reference's defaults unless the config names them."""
    try:
        ae = config["model"]["pretransform"]["config"]
        enc, dec = ae["encoder"]["config"], ae["decoder"]["config"]
        strides = [int(s) for s in enc["strides"]]
        window = enc.get("sliding_window") or [1]
        return {
            "audio_channels": int(ae.get("io_channels", 2)),
            "patch_size": int(ae["downsampling_ratio"]) // math.prod(strides),
            "encoder_channels": int(enc["channels"]),
            "encoder_c_mults": [int(c) for c in enc["c_mults"]],
            "encoder_strides": strides,
            "encoder_transformer_depths": [int(d) for d in enc["transformer_depths"]],
            "latent_dim": int(enc.get("latent_dim", header[_AE + "bottleneck.scaling_factor"]["shape"][1])),
            "use_differential_attention": bool(enc.get("differential", True)),
            "dim_heads": int(enc.get("dim_heads", 64)),
            "ff_mult": int(enc.get("ff_mult", 3)),
            "sliding_window": int(window[0]),
            "encoder_sinusoidal_blocks": [int(b) for b in enc.get("sinusoidal_blocks", [0])],
            "decoder_sinusoidal_blocks": [int(b) for b in dec.get("sinusoidal_blocks", [0])],
            "sampling_rate": int(config.get("sample_rate", 44100)),
        }
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise ModelUnavailable(f"{repo_id}'s model_config.json does not describe a SAME autoencoder as Stable Audio "
                               f"3's do ({type(error).__name__}: {error}): it cannot be converted") from None


def _duration_config(header: dict, config: dict) -> dict:
    """The duration embedder's: width from the weight, range from the seconds_total conditioner (the script
    hard-codes 0-384 s, medium's; the config says the same there)."""
    out_dim, fourier_dim = header[_SECONDS + "1.weight"]["shape"] if _SECONDS + "1.weight" in header else (768, 256)
    seconds = _conditioner(config, "seconds_total")
    return {"output_dim": int(out_dim), "fourier_dim": int(fourier_dim), "min_val": float(seconds.get("min_val", 0.0)),
            "max_val": float(seconds.get("max_val", 384.0)), "min_freq": 0.5, "max_freq": 10000.0}


def _dit_config(repo_id: str, header: dict) -> dict:
    """The script's _infer_dit_config: every size from a tensor's shape. Without memory tokens, none (the script
    assumes 64 and would leave them random)."""
    def shape(key: str) -> list[int] | None:
        entry = header.get(_DIT + key)
        return [int(d) for d in entry["shape"]] if entry is not None else None

    timestep = shape("to_timestep_embed.0.weight")
    if timestep is None:
        raise ModelUnavailable(f"{repo_id}'s model.safetensors has no {_DIT}to_timestep_embed.0.weight: it is not a "
                               f"Stable Audio 3 DiT this studio can convert")
    embed_dim, features = timestep
    depth = 0
    while _DIT + f"transformer.layers.{depth}.pre_norm.gamma" in header:
        depth += 1
    dim_heads = (shape("transformer.layers.0.self_attn.q_norm.gamma") or [64])[0]
    qkv = shape("transformer.layers.0.self_attn.to_qkv.weight")
    ff = shape("transformer.layers.0.ff.ff.0.proj.weight")
    memory = shape("transformer.memory_tokens")
    return {
        "io_channels": (shape("preprocess_conv.weight") or [256])[0], "patch_size": 1, "embed_dim": embed_dim,
        "depth": depth, "num_heads": embed_dim // dim_heads,
        "cond_token_dim": (shape("to_cond_embed.0.weight") or [0, 768])[1],
        "global_cond_dim": (shape("to_global_embed.0.weight") or [0, 768])[1],
        "local_add_cond_dim": (shape("transformer.layers.0.to_local_embed.0.weight") or [0, 257])[1],
        "timestep_features_dim": features, "ff_mult": ff[0] // (2 * embed_dim) if ff else 4,
        "num_memory_tokens": memory[0] if memory else 0,
        "use_differential_attention": qkv is not None and qkv[0] == 5 * embed_dim,
    }


# ------------------------------------------------------------------------------------------------ key plans
# A plan: diffusers key -> (checkpoint key, reorder the fused self-attention projection).
Plan = dict[str, tuple[str, bool]]


def _rename(local: str, renames) -> str:
    for old, new in renames:
        if old in local:
            return local.replace(old, new, 1)
    return local


def _trb_plan(header: dict, source: str, target: str, differential: bool, plan: Plan) -> None:
    """One TransformerResamplingBlock: its mapping convolution and output tokens as they are, its layers renamed."""
    for key in header:
        if not key.startswith(source):
            continue
        local = key[len(source):]
        if local.startswith("transformers."):
            local = _rename(local, _TRB_RENAMES)
        elif not (local.startswith("mapping.") or local == "new_tokens"):
            continue
        plan[target + local] = (key, differential and local.endswith("attn.to_qkv.weight"))


def _vae_plan(header: dict, differential: bool) -> Plan:
    """Reference encoder layers: [TRB_0 .. TRB_n-1, Transpose, Linear, Transpose]; decoder layers: [Transpose,
    Linear, Transpose, TRB_0 ..] with the deepest level first, as diffusers' SAMEDecoder.blocks are."""
    plan: Plan = {}
    encoder, decoder = _AE + "encoder.layers.", _AE + "decoder.layers."
    depth = 0
    while f"{encoder}{depth}.new_tokens" in header:
        depth += 1
    for i in range(depth):
        _trb_plan(header, f"{encoder}{i}.", f"encoder.blocks.{i}.", differential, plan)
        _trb_plan(header, f"{decoder}{3 + i}.", f"decoder.blocks.{i}.", differential, plan)
    for suffix in ("weight", "bias"):
        plan[f"encoder.proj.{suffix}"] = (f"{encoder}{depth + 1}.{suffix}", False)
        plan[f"decoder.proj.{suffix}"] = (f"{decoder}1.{suffix}", False)
    for source, target in (("scaling_factor", "scale"), ("bias", "bias"), ("running_std", "running_std")):
        plan[f"bottleneck.{target}"] = (f"{_AE}bottleneck.{source}", False)
    return plan


def _duration_plan() -> Plan:
    # Index 0 of the reference's embedding is ExpoFourierFeatures (no weights), index 1 the Linear.
    return {f"linear.{p}": (f"{_SECONDS}1.{p}", False) for p in ("weight", "bias")}


def _dit_plan(header: dict, differential: bool) -> Plan:
    plan: Plan = {target: (_DIT + source, False) for source, target in _DIT_TOP.items()}
    blocks = _DIT + "transformer.layers."
    for key in header:
        if not key.startswith(blocks):
            continue
        index, _, local = key[len(blocks):].partition(".")
        if index.isdigit():
            local = _rename(local, _DIT_BLOCK_RENAMES)
            # Only the self-attention is fused as [q | k | v | q2 | k2]; the cross-attention's to_q ([q | q2]) and
            # to_kv ([k | k2 | v]) already match diffusers' layout (the script's note).
            plan[f"transformer_blocks.{index}.{local}"] = (key, differential and local == "self_attn.to_qkv.weight")
    plan["prompt_padding_embedding"] = (_PADDING, False)
    return plan


def _computed(name: str, model_config: dict) -> dict:
    """Tensors the diffusers model has that the checkpoint does not hold, made as the script makes them."""
    import torch

    computed = {}
    if name == "duration_embedder":  # the fixed exponential Fourier frequencies (StableAudio3DurationEmbedder)
        half = model_config["fourier_dim"] // 2
        low, high = math.log(model_config["min_freq"]), math.log(model_config["max_freq"])
        computed["freqs"] = torch.exp(torch.linspace(0.0, 1.0, half) * (high - low) + low)
    return computed


def _checked(repo_id: str, name: str, plan: Plan, header: dict, expected: dict, computed: dict) -> Plan:
    """The plan cut to what the diffusers model holds; a tensor it needs and cannot get, or gets in another
    shape, stops the conversion with its name."""
    kept = {target: source for target, source in plan.items() if target in expected and source[0] in header}
    if name == "transformer" and "prompt_padding_embedding" not in kept and _PADDING not in header:
        computed["prompt_padding_embedding"] = _zeros(expected["prompt_padding_embedding"])  # padding_mode "zero"
    missing = sorted(k for k in expected if k not in kept and k not in computed)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelUnavailable(f"{repo_id}'s model.safetensors lacks what diffusers' {name} needs ({shown}): it is "
                               f"not a Stable Audio 3 checkpoint this studio can convert, or its download is "
                               f"damaged: {repair_hint(repo_id)}")
    for target, (source, _) in kept.items():
        shape = tuple(int(d) for d in header[source]["shape"])
        if shape != expected[target]:
            raise ModelUnavailable(f"{repo_id}'s {source} has the shape {list(shape)} where diffusers' {name} expects "
                                   f"{list(expected[target])} for {target}: the checkpoint and its model_config.json "
                                   "disagree")
    unused = [k for k in plan if k not in kept]
    if unused:
        log.debug("%s: %d tensor(s) of the checkpoint have no place in diffusers' %s: %s", repo_id, len(unused),
                  name, unused[:8])
    return kept


def _zeros(shape):
    import torch

    return torch.zeros(shape)


_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                 "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _read_tensor(f, start: int, entry: dict):
    """One tensor of an open safetensors file, read into memory of its own: not memory-mapped, so what the
    conversion holds is the shard it writes, not every page of the checkpoint it has touched (measured on the
    realistic-size medium: a peak RSS of 6.4 GB through safetensors' mmap, 2.4 GB this way)."""
    import torch

    begin, end = entry["data_offsets"]
    f.seek(start + begin)
    tensor = torch.empty(end - begin, dtype=torch.uint8)
    if end > begin and f.readinto(memoryview(tensor.numpy())) != end - begin:
        raise ModelUnavailable(f"{Path(f.name).name} is shorter than its header says (cut short): delete it and "
                               "download the model again")
    return tensor.view(getattr(torch, _TORCH_DTYPES[entry["dtype"]])).reshape([int(d) for d in entry["shape"]])


def _reorder_qkv(weight):
    """[q | k | v | q2 | k2] (stable-audio-tools) -> [q1 | q2 | k1 | k2 | v] (diffusers), along the output rows."""
    import torch

    q, k, v, q2, k2 = weight.split(weight.shape[0] // 5, dim=0)
    return torch.cat([q, q2, k, k2, v], dim=0)


def _write(source_file: Path, plan: Plan, computed: dict, folder: Path, stem: str, progress: _Progress) -> None:
    """Write the planned tensors (read one at a time from the memory-mapped `source_file`) and `computed` ones as
    safetensors shards of at most MAX_SHARD_BYTES, with diffusers'/transformers' index when there are several."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    header = read_header(source_file)
    shards: list[list[str]] = [[]]
    size = 0
    for target in list(plan) + list(computed):
        nbytes = _nbytes(header[plan[target][0]]) if target in plan else computed[target].numel() * 4
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(target)
        size += nbytes
    names = ([f"{stem}.safetensors"] if len(shards) == 1 else
             [f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    weight_map = {}
    with open(source_file, "rb") as f:
        start = 8 + int.from_bytes(f.read(8), "little")  # where the tensors' bytes begin, after the JSON header
        for shard, name in zip(shards, names):
            tensors = {}
            for target in shard:
                if target in computed:
                    tensors[target] = computed[target].contiguous()
                    continue
                key, reorder = plan[target]
                tensor = _read_tensor(f, start, header[key])
                tensors[target] = (_reorder_qkv(tensor) if reorder else tensor).contiguous()
                progress.add(_nbytes(header[key]))
            save_file(tensors, str(folder / name), metadata={"format": "pt"})
            weight_map.update({target: name for target in shard})
            del tensors
    if len(shards) > 1:
        total = sum(_nbytes(header[plan[t][0]]) if t in plan else computed[t].numel() * 4 for t in weight_map)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ text encoder
def _text_encoder_source(repo_id: str, snapshot: Path, config: dict) -> Path:
    """The folder of the T5Gemma the checkpoint was trained with: the repo's own copy (every official repo ships
    one), else where the prompt conditioner says (a -base repo's config names its post-trained sibling's copy),
    else google/t5gemma-b-b-ul2 (the script's default)."""
    own = snapshot / TEXT_ENCODER_FOLDER
    if (own / "config.json").is_file():
        return own
    prompt = _conditioner(config, "prompt")
    subfolder = prompt.get("subfolder") or ""
    repo = prompt.get("repo_id") or prompt.get("model_name") or TEXT_ENCODER_REPO
    if (snapshot / subfolder / "config.json").is_file() and subfolder:
        return snapshot / subfolder
    try:
        other = _fetch(repo, [f"{subfolder}/*" if subfolder else "*"])
    except Exception as error:
        raise ModelUnavailable(
            f"{repo_id}'s text encoder ({repo}{'/' + subfolder if subfolder else ''}) is not in the cache and could "
            f"not be downloaded ({type(error).__name__}): download it once online, e.g. `hf download {repo}`") from None
    folder = other / subfolder if subfolder else other
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(f"{repo_id}'s text encoder folder {repo}/{subfolder} has no config.json: "
                               f"{repair_hint(repo)}")
    return folder


def _convert_text_encoder(repo_id: str, source: Path, config: dict, out: Path, progress: _Progress) -> str:
    """T5GemmaEncoderModel's config (encoder-only, as the script sets it) and weights (an encoder-decoder copy's
    decoder left out, a "model." prefix dropped), then the tokenizer, with the conditioner's token limit."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel

    te_config = AutoConfig.from_pretrained(str(source), **SAFE_LOAD)
    te_config.is_encoder_decoder = False
    with torch.device("meta"):
        model = T5GemmaEncoderModel(te_config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise ModelUnavailable(f"{repo_id}'s text encoder ({source.name}/) has no safetensors weights in the cache: "
                               f"{repair_hint(repo_id)}")
    where = {key: path for path in files for key in read_header(path)}
    plan_by_file: dict[Path, Plan] = {}
    for target, shape in expected.items():
        source_key = next((k for k in (target, "model." + target) if k in where), None)
        if source_key is None:
            raise ModelUnavailable(f"{repo_id}'s text encoder ({source.name}/) lacks {target}: "
                                   f"{repair_hint(repo_id)}")
        plan_by_file.setdefault(where[source_key], {})[target] = (source_key, False)
    for path, plan in plan_by_file.items():
        _checked(repo_id, "text_encoder", plan, read_header(path), expected, {})
    folder = out / "text_encoder"
    te_config.save_pretrained(folder)
    for number, (path, plan) in enumerate(plan_by_file.items()):
        stem = "model" if len(plan_by_file) == 1 else f"model-part{number + 1}"
        _write(path, plan, {}, folder, stem, progress)
    if len(plan_by_file) > 1 or any(folder.glob("*.index.json")):
        _write_joint_index(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(source), **SAFE_LOAD)
    tokenizer.model_max_length = int(_conditioner(config, "prompt").get("max_length", 256))
    tokenizer.save_pretrained(out / "tokenizer")
    return type(tokenizer).__name__


def _write_joint_index(folder: Path) -> None:
    """One model.safetensors.index.json over every shard written for the text encoder."""
    weight_map, total = {}, 0
    for index in folder.glob("*.index.json"):
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map.update(data["weight_map"])
        index.unlink()
    for path in sorted(folder.glob("*.safetensors")):
        for key, entry in read_header(path).items():
            weight_map.setdefault(key, path.name)
            total += _nbytes(entry)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2), encoding="utf-8")
