"""Tiny random Stable Audio 3 checkpoints laid out like Stability's hub repos: the original, unconverted format.

``stabilityai/stable-audio-3-medium`` and ``-medium-base`` hold, as on the hub (file names and layout from the
pins of a public port of SA3, and from the stable-audio-3 reference code's conditioner, which reads
``repo_id`` + ``subfolder``):

* ``model_config.json`` in stable-audio-tools' structure: ``model.pretransform.config`` (the SAME autoencoder:
  channels, c_mults, strides, transformer depths, latent_dim, dim_heads, sliding_window, sinusoidal_blocks,
  downsampling_ratio, io_channels), ``model.conditioning.configs`` (the T5Gemma prompt conditioner pointing at
  ``stabilityai/stable-audio-3-medium`` / ``t5gemma-b-b-ul2``, the 0-384 s ``seconds_total``), and
  ``model.diffusion.diffusion_objective`` (``rf_denoiser`` for the distilled medium, ``rectified_flow`` for base);
  ``sample_size`` 16,777,216 samples (380.4 s) and ``sample_rate`` 44,100 as the real ones;
* ``model.safetensors`` with stable-audio-tools' tensor names: ``model.model.*`` (the DiT, fused self-attention
  projections in the reference's [q | k | v | q2 | k2] order), ``pretransform.model.*`` (the autoencoder, its
  encoder and decoder layer lists with the Transpose/Linear/Transpose entries where the reference has them, each
  transformer layer's own rotary frequencies, the bottleneck's ``scaling_factor`` and empty ``noise_scaling_factor``),
  ``conditioner.conditioners.prompt.padding_embedding`` and ``conditioner.conditioners.seconds_total.*``;
* ``t5gemma-b-b-ul2/``: ``config.json`` (the encoder-decoder T5GemmaConfig, ``T5GemmaForConditionalGeneration``),
  ``model.safetensors`` (the encoder only, as the real 1.18 GB file), ``generation_config.json`` and a Gemma
  tokenizer: ``tokenizer.json``, ``tokenizer.model`` (a BPE sentencepiece model with byte fallback),
  ``tokenizer_config.json``, ``special_tokens_map.json``.

The weights are built as diffusers modules (``build_components``) and written under the reference's names by
inverting the renames of diffusers' conversion script as its docstring and code state them, so a test can compare
the studio's conversion with a pipeline made from the same modules directly. Every weight is drawn at random,
including those diffusers initialises to zero (the autoencoder's attention outputs and feed-forward projections,
the DiT's pre/post convolutions and inpainting projections): with zeros there, a misordered projection would not
show. What product code reads is real: 44.1 kHz stereo, 4096 samples per latent (patch 256 x stride 16), the
0-384 s duration range, the 256-token prompt limit. Tiny: widths 8-32, two layers each.
"""

from __future__ import annotations

import functools
import io
import math
import string
from pathlib import Path

from tests.tiny_models import _CORPUS, _Seeded, _write_json

__all__ = ["SA3_BUILDERS", "SA3_MEDIUM", "SA3_BASE", "build_components", "build_original", "LATENT_SAMPLES"]

SA3_MEDIUM = "stabilityai/stable-audio-3-medium"
SA3_BASE = "stabilityai/stable-audio-3-medium-base"
SAMPLE_RATE = 44100
PATCH, STRIDE = 256, 16
LATENT_SAMPLES = PATCH * STRIDE  # 4096, as SAME-L's
SAMPLE_SIZE = 16_777_216  # medium's model_config.json: 380.4 s
COND_DIM = 16  # T5Gemma width = the DiT's conditioning widths = the duration embedding's
LATENT_DIM = 8
TEXT_FOLDER = "t5gemma-b-b-ul2"
MAX_TOKENS = 256


# --------------------------------------------------------------------------------------------------- tokenizer
@functools.lru_cache(maxsize=1)
def _gemma_spiece() -> bytes:
    """A small BPE sentencepiece model in Gemma's layout: <pad> 0, <eos> 1, <bos> 2, <unk> 3, byte fallback."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*_CORPUS, "rain on a tin roof", string.printable] * 8), model_writer=out,
        vocab_size=500, hard_vocab_limit=False, model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    return out.getvalue()


def _write_gemma_tokenizer(dst: Path) -> int:
    """tokenizer.model plus the tokenizer.json made from it (vocab and BPE merges read through sentencepiece's own
    API: no protobuf here for transformers' converter); returns the vocabulary size."""
    import sentencepiece as spm
    from transformers import GemmaTokenizer

    model = _gemma_spiece()
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, index in vocab.items():
        if sp.is_control(index) or sp.is_unknown(index) or sp.is_byte(index):
            continue
        merges += [(vocab[piece[:k]], vocab[piece[k:]], index, piece[:k], piece[k:]) for k in range(1, len(piece))
                   if piece[:k] in vocab and piece[k:] in vocab]
    merges.sort(key=lambda m: (m[2], m[0], m[1]))
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[(left, right) for *_, left, right in merges],
                               model_max_length=MAX_TOKENS)
    dst.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(dst)
    (dst / "tokenizer.model").write_bytes(model)
    _write_json(dst / "special_tokens_map.json", {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                                                  "unk_token": "<unk>", "mask_token": "<mask>"})
    return len(tokenizer)


# --------------------------------------------------------------------------------------------------- modules
def _t5gemma_config(vocab_size: int):
    from transformers import T5GemmaConfig
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    module = T5GemmaModuleConfig(
        vocab_size=vocab_size, hidden_size=COND_DIM, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512, sliding_window=512,
        layer_types=["full_attention", "full_attention"],
    )
    return T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(), is_encoder_decoder=True,
                         architectures=["T5GemmaForConditionalGeneration"])


def _randomize(module, seed: int) -> None:
    """Every parameter drawn at random (scaled by its fan-in), the bottleneck's running std too; the fixed
    frequency buffers (rotary, duration Fourier features) stay as the modules compute them."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                param.copy_(noise / math.sqrt(max(1, param[0].numel())))
            elif name.endswith(("gamma", "alpha", "scale")) or name.split(".")[-1] in ("scale",):
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_(0.1 * noise)
        for name, buffer in module.named_buffers():
            if name.endswith("running_std"):
                buffer.fill_(1.25)


def build_components(objective: str = "rf_denoiser", seed: int = 3300) -> dict:
    """The diffusers modules of a tiny SA3 (what StableAudio3Pipeline takes), built and filled from `seed`."""
    import tempfile

    import torch
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import AutoTokenizer, T5GemmaEncoderModel

    with tempfile.TemporaryDirectory() as folder:
        vocab_size = _write_gemma_tokenizer(Path(folder))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    with _Seeded(seed):
        # Heads of 64 channels as the real DiT's: below that diffusers' rotary embedding (dim_heads // 2 channels)
        # and the reference's (at least 32) part ways.
        transformer = StableAudio3DiTModel(
            io_channels=LATENT_DIM, patch_size=1, embed_dim=128, depth=2, num_heads=2, cond_token_dim=COND_DIM,
            global_cond_dim=COND_DIM, local_add_cond_dim=1 + LATENT_DIM, timestep_features_dim=16, ff_mult=2,
            num_memory_tokens=3, use_differential_attention=True,
        )
        vae = AutoencoderSAME(
            audio_channels=2, patch_size=PATCH, encoder_channels=8, encoder_c_mults=(2,), encoder_strides=(STRIDE,),
            encoder_transformer_depths=(2,), latent_dim=LATENT_DIM, use_differential_attention=True, dim_heads=8,
            ff_mult=3, sliding_window=1, encoder_sinusoidal_blocks=(0,), decoder_sinusoidal_blocks=(1,),
            sampling_rate=SAMPLE_RATE,
        )
        # 256 Fourier features: the reference's NumberEmbedder always has 256 (its `dim` default), as the real one.
        duration_embedder = StableAudio3DurationEmbedder(output_dim=COND_DIM, fourier_dim=256, max_val=384.0)
        config = _t5gemma_config(vocab_size)
        config.is_encoder_decoder = False
        text_encoder = T5GemmaEncoderModel(config)
    for offset, module in enumerate((transformer, vae, duration_embedder, text_encoder)):
        _randomize(module, seed + 1 + offset)
        module.eval()
    assert vae.downsampling_ratio == LATENT_SAMPLES
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0,
                                                stochastic_sampling=objective == "rf_denoiser")
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "duration_embedder": duration_embedder,
            "transformer": transformer, "scheduler": scheduler}


# --------------------------------------------------------------------------------------------------- original names
# diffusers' conversion script renames (reference -> diffusers); the original layout applies them backwards.
_TRB_RENAMES = (("pre_norm.", "norm_attn."), ("self_attn.to_qkv.", "attn.to_qkv."),
                ("self_attn.to_out.", "attn.to_out."), ("self_attn.q_norm.", "attn.q_norm."),
                ("self_attn.k_norm.", "attn.k_norm."), ("ff_norm.", "norm_ff."), ("ff.ff.0.proj.", "ff.proj_in."),
                ("ff.ff.2.", "ff.proj_out."))
_FF_RENAMES = (("ff.ff.0.proj.", "ff.proj_in."), ("ff.ff.2.", "ff.proj_out."))
_DIT_TOP = {"proj_in.weight": "transformer.project_in.weight", "proj_out.weight": "transformer.project_out.weight",
            "memory_tokens": "transformer.memory_tokens",
            "rotary_pos_emb.inv_freq": "transformer.rotary_pos_emb.inv_freq"}


def _back(local: str, renames) -> str:
    for reference, ours in renames:
        if ours in local:
            return local.replace(ours, reference, 1)
    return local


def _reference_qkv(weight):
    """diffusers' [q1 | q2 | k1 | k2 | v] back to stable-audio-tools' [q | k | v | q2 | k2]."""
    import torch

    q1, q2, k1, k2, v = weight.split(weight.shape[0] // 5, dim=0)
    return torch.cat([q1, k1, v, q2, k2], dim=0)


def original_state_dict(components: dict) -> dict:
    """The tensors of model.safetensors under stable-audio-tools' names (the text encoder is not in it)."""
    import torch

    out = {}
    for key, value in components["transformer"].state_dict().items():
        if key == "prompt_padding_embedding":
            out["conditioner.conditioners.prompt.padding_embedding"] = value
            continue
        if key.startswith("transformer_blocks."):
            _, index, local = key.split(".", 2)
            if local == "self_attn.to_qkv.weight":
                value = _reference_qkv(value)
            out[f"model.model.transformer.layers.{index}.{_back(local, _FF_RENAMES)}"] = value
            continue
        if key.startswith("global_cond_embedder."):
            out[f"model.model.transformer.{key}"] = value
            continue
        out["model.model." + _DIT_TOP.get(key, key)] = value
    vae = components["vae"]
    depth = len(vae.config.encoder_strides)
    dim_heads = vae.config.dim_heads
    for key, value in vae.state_dict().items():
        part, _, rest = key.partition(".")
        if part == "bottleneck":
            out["pretransform.model.bottleneck." + {"scale": "scaling_factor"}.get(rest, rest)] = value
            continue
        kind, index, local = rest.split(".", 2) if rest.startswith("blocks.") else (rest, None, None)
        if kind == "proj.weight" or kind == "proj.bias":
            position = depth + 1 if part == "encoder" else 1
            out[f"pretransform.model.{part}.layers.{position}.{kind.split('.')[1]}"] = value
            continue
        position = int(index) if part == "encoder" else 3 + int(index)
        if local.startswith("transformers."):
            if local.endswith("attn.to_qkv.weight"):
                value = _reference_qkv(value)
            local = _back(local, _TRB_RENAMES)
        out[f"pretransform.model.{part}.layers.{position}.{local}"] = value
    # What the reference holds and diffusers has no place for: each layer's rotary frequencies, an empty noise scale.
    for name in list(out):
        if name.startswith("pretransform.model.") and name.endswith(".pre_norm.alpha"):
            layer = name[: -len("pre_norm.alpha")]
            width = min(dim_heads, out[layer + "pre_norm.gamma"].shape[0]) // 2
            out[layer + "rope.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, width, 2).float() / width))
    out["pretransform.model.bottleneck.noise_scaling_factor"] = torch.ones(1, 0, 1)
    embedder = components["duration_embedder"].state_dict()
    for suffix in ("weight", "bias"):
        out[f"conditioner.conditioners.seconds_total.embedder.embedding.1.{suffix}"] = embedder[f"linear.{suffix}"]
    return {name: value.contiguous() for name, value in out.items()}


def model_config(components: dict, objective: str) -> dict:
    """model_config.json in stable-audio-tools' structure, with the tiny sizes."""
    vae = components["vae"].config
    same = {"channels": vae.encoder_channels, "c_mults": list(vae.encoder_c_mults),
            "strides": list(vae.encoder_strides),
            "transformer_depths": list(vae.encoder_transformer_depths), "latent_dim": vae.latent_dim,
            "dim_heads": vae.dim_heads, "sliding_window": [vae.sliding_window, vae.sliding_window],
            "variable_stride": True}
    patched = vae.audio_channels * vae.patch_size
    dit = components["transformer"].config
    return {
        "model_type": "diffusion_cond_inpaint", "sample_size": SAMPLE_SIZE, "sample_rate": SAMPLE_RATE,
        "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                "encoder": {"type": "same", "config": {**same, "in_channels": patched}},
                "decoder": {"type": "same", "config": {**same, "out_channels": patched,
                                                       "sinusoidal_blocks": list(vae.decoder_sinusoidal_blocks)}},
                "bottleneck": {"type": "soft_norm", "config": {"dim": vae.latent_dim, "auto_scale": True}},
                "pretransform": {"type": "patched", "config": {"channels": vae.audio_channels,
                                                               "patch_size": vae.patch_size}},
                "latent_dim": vae.latent_dim, "downsampling_ratio": LATENT_SAMPLES, "io_channels": vae.audio_channels,
            }},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5gemma", "config": {"max_length": MAX_TOKENS, "padding_mode": "learned",
                                                               "repo_id": SA3_MEDIUM, "subfolder": TEXT_FOLDER}},
                {"id": "seconds_total", "type": "number",
                 "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"}},
            ], "cond_dim": COND_DIM},
            "diffusion": {"type": "dit", "diffusion_objective": objective,
                          "cross_attention_cond_ids": ["prompt", "seconds_total"], "global_cond_ids": ["seconds_total"],
                          "config": {"io_channels": dit.io_channels, "embed_dim": dit.embed_dim, "depth": dit.depth,
                                     "num_heads": dit.num_heads, "cond_token_dim": dit.cond_token_dim,
                                     "global_cond_dim": dit.global_cond_dim, "project_cond_tokens": True,
                                     "global_cond_type": "adaLN", "timestep_features_type": "expo",
                                     "timestep_features_dim": dit.timestep_features_dim,
                                     "num_memory_tokens": dit.num_memory_tokens,
                                     "local_add_cond_dim": dit.local_add_cond_dim, "norm_type": "rms_norm",
                                     "norm_kwargs": {"eps": 1e-6},
                                     "attn_kwargs": {"differential": True, "qk_norm": "rms"},
                                     "ff_kwargs": {"mult": dit.ff_mult}}},
        },
    }


def build_original(dst: Path, *, objective: str = "rf_denoiser", seed: int = 3300) -> None:
    """Write a tiny SA3 repo in Stability's original layout into `dst` (see the module notes)."""
    from safetensors.torch import save_file

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    components = build_components(objective, seed)
    save_file(original_state_dict(components), str(dst / "model.safetensors"), metadata={"format": "pt"})
    _write_json(dst / "model_config.json", model_config(components, objective))
    text = dst / TEXT_FOLDER
    _write_gemma_tokenizer(text)
    encoder = components["text_encoder"]
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(text / "model.safetensors"),
              metadata={"format": "pt"})
    config = _t5gemma_config(encoder.config.encoder.vocab_size)
    config.save_pretrained(text)  # the encoder-decoder config the real folder has, with encoder-only weights
    _write_json(text / "generation_config.json", {"_from_model_config": True, "bos_token_id": 2, "eos_token_id": 1,
                                                  "pad_token_id": 0})
    (dst / "LICENSE.md").write_text("Stability AI Community License (tiny test copy)\n", encoding="utf-8")
    (dst / "LICENSE_GEMMA.md").write_text("Gemma Terms of Use (tiny test copy)\n", encoding="utf-8")


SA3_BUILDERS = {
    SA3_MEDIUM: functools.partial(build_original, objective="rf_denoiser"),
    SA3_BASE: functools.partial(build_original, objective="rectified_flow", seed=3400),
}
