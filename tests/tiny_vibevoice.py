"""A tiny random VibeVoice laid out like ``vibevoice/VibeVoice-1.5B-hf``, for offline tests.

Companion of ``tiny_models.py`` (same hub-cache layout, same helpers). transformers 5.23 names the checkpoint in its
docstrings (``@auto_docstring(checkpoint="vibevoice/VibeVoice-1.5B-hf")`` in configuration_vibevoice.py). The repo is
what ``src/transformers/models/vibevoice/convert_vibevoice_to_hf.py`` writes:

* ``model.save_pretrained``: config.json (``VibeVoiceConfig`` with its four sub-configs: the Qwen2 ``text_config``,
  the ``audio_config`` of the acoustic tokenizer (a sigma-VAE: encoder and decoder), the ``semantic_model_config`` of
  the semantic tokenizer's encoder, the ``diffusion_head_config``), model.safetensors, and generation_config.json
  with what the script sets: ``do_sample`` False, ``guidance_scale`` 1.3, ``noise_scheduler_class``
  "DPMSolverMultistepScheduler" with ``noise_scheduler_config`` {beta_schedule "squaredcos_cap_v2", prediction_type
  "v_prediction"}, ``max_new_tokens`` 40500 for the 1.5B (90 minutes at 7.5 frames a second);
* ``VibeVoiceProcessor(VibeVoiceAcousticTokenizerFeatureExtractor(sampling_rate=24000, normalize_audio=True,
  target_dB_FS=-25, eps=1e-6), Qwen2TokenizerFast, chat_template=CHAT_TEMPLATE).save_pretrained``:
  processor_config.json, chat_template.jinja, tokenizer.json + tokenizer_config.json (``tokenizer_class``
  Qwen2TokenizerFast).

The chat template is the script's (a system line, " Voice input:" with one audio placeholder per speaker that has a
sample, " Text input:" with a " Speaker N: text" line per turn, then " Speech output:" and the audio BOS); the
tokenizer is a 400-piece byte-level BPE trained here on the studio's usual English, with Qwen2's special tokens the
processor and config read (<|endoftext|> as pad and EOS, <|vision_start|> / <|vision_end|> / <|vision_pad|> as the
audio BOS / EOS / placeholder, their ids in the config as in the real one).

Kept from the real model: 24 kHz, the acoustic tokenizer's downsampling [2, 2, 4, 5, 5, 8] (3200 samples a frame,
7.5 frames a second) and its seven stages, the semantic encoder of the same shape, the DPM-Solver scheduler. Tiny:
widths 8-16 (the tokenizers from 1 to 64 channels, FFN expansion 1), one LM layer, one diffusion-head layer, one block a stage.

Random weights would pick any of the four tokens the generation allows (audio placeholder, audio BOS/EOS, EOS) and
often end at once; these are set so that the placeholder always wins (a constant residual dimension that the tied
LM head reads as a large logit for it), so, as MODELS.md says of random weights, every run lasts exactly the
studio's cap. Seeded: two builds give byte-identical files.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tests.tiny_models import _CORPUS, _Seeded, _save_model

__all__ = ["VIBEVOICE_BUILDERS", "VIBEVOICE_REPO", "build_vibevoice"]

VIBEVOICE_REPO = "vibevoice/VibeVoice-1.5B-hf"
SAMPLING_RATE = 24000
SEED = 1550
# The tokenizers' conv weights are drawn with this spread (the config's 0.01 shrinks a signal ~1e-6 through the seven
# stages: silence); at 0.1 a frame of latents decodes to a waveform of about 0.03 RMS.
INIT = 0.1
# Qwen2's special tokens that VibeVoice reads, first in the vocabulary here (the real ids are 151643 and 151652-4).
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
CHAT_TEMPLATE = (
    '{%- set system_prompt = system_prompt | default(" Transform the text provided by various speakers into speech '
    'output, utilizing the distinct voice of each respective speaker.\\n") -%}\n'
    "{{ system_prompt -}}\n"
    '{%- set audio_bos_token = audio_bos_token | default("<|vision_start|>") %}\n'
    '{%- set audio_eos_token = audio_eos_token | default("<|vision_end|>") %}\n'
    '{%- set audio_token = audio_token | default("<|vision_pad|>") %}\n'
    '{%- set ns = namespace(speakers_with_audio="") %}\n'
    "{%- for message in messages %}\n"
    "    {%- set role = message['role'] %}\n"
    "    {%- set content = message['content'] %}\n"
    "    {%- set has_audio = content | selectattr('type', 'equalto', 'audio') | list | length > 0 %}\n"
    "    {%- if has_audio and role not in ns.speakers_with_audio %}\n"
    '        {%- set ns.speakers_with_audio = ns.speakers_with_audio + role + "," %}\n'
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{%- if ns.speakers_with_audio %}\n"
    '{{ " Voice input:\\n" }}\n'
    "{%- for speaker in ns.speakers_with_audio.rstrip(',').split(',') %}\n"
    "{%- if speaker %}\n"
    ' Speaker {{ speaker }}:{{ audio_bos_token }}{{ audio_token }}{{ audio_eos_token }}{{ "\\n" }}\n'
    "{%- endif %}\n"
    "{%- endfor %}\n"
    "{%- endif %}\n"
    ' Text input:{{ "\\n" }}\n'
    "\n"
    "{%- for message in messages %}\n"
    "    {%- set role = message['role'] %}\n"
    "    {%- set text_items = message['content'] | selectattr('type', 'equalto', 'text') | list %}\n"
    "    {%- for item in text_items %}\n"
    " Speaker {{ role }}: {{ item['text'] }}{{ \"\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endfor %}\n"
    ' Speech output:{{ "\\n" }}{{ audio_bos_token }}'
)


@functools.lru_cache(maxsize=1)
def _bpe_json() -> str:
    """A byte-level BPE (as Qwen2's) of 400 pieces, the special tokens first; as JSON, the same every build."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    return bpe.to_str()


def _tokenizer():
    from tokenizers import Tokenizer
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast(tokenizer_object=Tokenizer.from_str(_bpe_json()), eos_token=SPECIALS[0],
                              pad_token=SPECIALS[0], unk_token=None)


# The published text model (microsoft/VibeVoice-1.5B's Qwen2.5-1.5B: bench/vibevoice_cpu.py's TEXT) for the
# benchmark's realistic-size build; the rest of VibeVoiceConfig()'s defaults are the 1.5B's.
PUBLISHED_TEXT = dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                      num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=65536,
                      rope_theta=1000000.0, tie_word_embeddings=True)


def _config(vocab_size: int, lm_layers: int | None = None):
    from transformers import VibeVoiceConfig

    ids = {name: SPECIALS.index(token) for name, token in (
        ("pad_token_id", "<|endoftext|>"), ("eos_token_id", "<|endoftext|>"),
        ("audio_bos_token_id", "<|vision_start|>"), ("audio_eos_token_id", "<|vision_end|>"),
        ("audio_token_id", "<|vision_pad|>"))}
    if lm_layers is not None:
        text = dict(PUBLISHED_TEXT, num_hidden_layers=lm_layers, pad_token_id=ids["pad_token_id"],
                    eos_token_id=ids["eos_token_id"], bos_token_id=None)
        return VibeVoiceConfig(text_config=text, **ids)
    # The real acoustic tokenizer's strides and stages (hop 3200), at tiny widths: num_filters channels doubling at
    # each of the six downsamplings, one ConvNeXt block a stage.
    tokenizer = dict(num_filters=1, downsampling_ratios=[2, 2, 4, 5, 5, 8], depths=[1] * 7, kernel_size=7, ffn_expansion=1,
                     initializer_range=INIT)
    return VibeVoiceConfig(
        text_config=dict(model_type="qwen2", vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=65536, tie_word_embeddings=True, pad_token_id=ids["pad_token_id"],
                         eos_token_id=ids["eos_token_id"], bos_token_id=None),
        audio_config=dict(model_type="vibevoice_acoustic_tokenizer", hidden_size=8, **tokenizer),
        semantic_model_config=dict(model_type="vibevoice_acoustic_tokenizer_encoder", hidden_size=8, **tokenizer),
        diffusion_head_config=dict(num_hidden_layers=1, intermediate_size=24, frequency_embedding_size=16),
        **ids,
    )


def build_vibevoice(dst: Path, *, lm_layers: int | None = None) -> None:
    """The tiny VibeVoice; with `lm_layers`, the published widths (VibeVoiceConfig()'s defaults with the Qwen2.5-1.5B
    text model, PUBLISHED_TEXT) with that many of the LM's 28 layers, for the benchmark's realistic-size build."""
    import torch
    from transformers import (GenerationConfig, VibeVoiceAcousticTokenizerFeatureExtractor,
                              VibeVoiceForConditionalGeneration, VibeVoiceProcessor)

    tokenizer = _tokenizer()
    config = _config(len(tokenizer), lm_layers)
    with _Seeded(SEED):
        model = VibeVoiceForConditionalGeneration(config).eval()
        # The placeholder always wins (see the module docstring): every input embedding carries +4 in dimension 0
        # (text rows, and the bias of both projectors that embed audio frames), the one layer's small random weights
        # keep it positive, and the tied LM head reads row audio_token's larger value there as the largest logit.
        embed = model.model.language_model.embed_tokens.weight
        embed.data[:, 0] = 4.0
        embed.data[config.audio_token_id, 0] = 12.0
        for projector in (model.model.multi_modal_projector, model.model.semantic_connector):
            projector.linear_2.bias.data[0] = 4.0
        # Trained latents are scaled to unit variance; random ones as a trained model's are not 1 and 0.
        model.model.latent_scaling_factor.data.fill_(0.8)
        model.model.latent_bias_factor.data.fill_(0.1)
        for tower in (model.model.audio_tower, model.model.semantic_tokenizer_encoder):
            for name, param in tower.named_parameters():
                if name.endswith("gamma"):  # layer scale, 1e-6 at init: the blocks would add nothing
                    param.data.fill_(0.5)
        if lm_layers is not None:
            _unit_gain_towers(model)
    # convert_vibevoice_to_hf.py's generation config for the 1.5B
    model.generation_config = GenerationConfig(
        max_new_tokens=40500, do_sample=False, guidance_scale=1.3, noise_scheduler_class="DPMSolverMultistepScheduler",
        noise_scheduler_config={"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
    )
    _save_model(model, dst)
    features = VibeVoiceAcousticTokenizerFeatureExtractor(sampling_rate=SAMPLING_RATE, normalize_audio=True,
                                                          target_dB_FS=-25, eps=1e-6)
    VibeVoiceProcessor(feature_extractor=features, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(dst)
    _tokenizer_class(dst / "tokenizer_config.json")


def _unit_gain_towers(model) -> None:
    """The published tokenizers' convolutions redrawn at unit gain (N(0, 1 / fan_in)). At the config's
    initializer_range of 0.01 the narrow stages (32-256 channels) shrink a signal ~0.15x each, so a random decoder
    writes waveforms and the semantic encoder features that fall to denormal floats, which x86 computes some 100x
    slower (bench/vibevoice_cpu.py measured 31 s a frame so): a trained model's signals stay near unit scale, and so
    do these. The arithmetic, and so the time of a run without denormals, is the same."""
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    for tower in (model.model.audio_tower, model.model.semantic_tokenizer_encoder):
        for module in tower.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                weight = module.weight
                fan_in = weight.shape[1] * weight.shape[2] if isinstance(module, torch.nn.Conv1d) else \
                    weight.shape[0] * weight.shape[2] // max(1, module.stride[0])
                weight.data.copy_(torch.randn(weight.shape, generator=generator) / fan_in ** 0.5)


def _tokenizer_class(path: Path) -> None:
    """As the conversion script does: tokenizer_config.json names Qwen2TokenizerFast."""
    import json

    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "Qwen2TokenizerFast"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


VIBEVOICE_BUILDERS = {VIBEVOICE_REPO: build_vibevoice}
