"""A tiny random ACE-Step 1.5 pipeline laid out like ``ACE-Step/acestep-v15-xl-turbo-diffusers``, for offline tests.

Companion of ``tiny_models.py`` and ``tiny_diffusers.py`` (same hub-cache layout, same helpers). The real repo is
what diffusers' ``scripts/convert_ace_step_to_diffusers.py`` writes with ``AceStepPipeline.save_pretrained``:
``model_index.json`` naming ``transformer`` (``AceStepTransformer1DModel``), ``condition_encoder``,
``audio_tokenizer`` and ``audio_token_detokenizer`` (the pipeline's own classes, library ``ace_step``),
``text_encoder`` (``Qwen3Model``: Qwen3-Embedding-0.6B), ``tokenizer`` (``Qwen2Tokenizer``), ``vae``
(``AutoencoderOobleck``) and ``scheduler`` (``FlowMatchEulerDiscreteScheduler`` with ``num_train_timesteps=1``
and ``shift=1.0``: the pipeline computes its own sigmas), each in its folder. This builder assembles the same
pipeline from tiny components and saves it the same way.

What is kept from the real repo (the values product code or the pipeline read):

* the VAE's sampling rate (48 kHz), stereo, and downsampling ratios [2, 4, 4, 6, 10] = 1920 samples per latent,
  25 latents a second: durations, clip lengths and repaint ranges map to latents as in the real model;
* the transformer's ``is_turbo`` (guidance distilled: the pipeline ignores guidance), ``patch_size`` 2 and
  ``in_channels`` = 3 x the latent channels (noise, source latents and the chunk mask, concatenated);
* a condition encoder narrower than the DiT, as on the XL (2048 feeding 2560; here 16 feeding 32), hence the
  DiT's ``encoder_hidden_size``;
* the audio tokenizer's FSQ levels [8, 8, 8, 5, 5, 5] (64,000 codes) and pool window 5 (5 codes a second);
* the condition encoder's ``silence_latent`` buffer of 15,000 frames (600 s), here a constant latent, as a
  trained VAE's encoding of silence is;
* a byte-level BPE tokenizer in Qwen's layout (its split regex, ``<|endoftext|>`` as pad and end token), so
  token counts of lyrics behave like the real one's (every byte is in the alphabet: no text is dropped).

Only the widths and depths are tiny (4 latent channels instead of 64; the VAE's channel multiples [1, 1, 2, 2, 4]
instead of [1, 2, 4, 8, 16], which decodes 10 s of 48 kHz audio in about 0.3 s on one core). The VAE's convolutions
are redrawn by ``tiny_diffusers._working_oobleck`` so that encoded clips and decoded latents carry their structure
(a random Oobleck otherwise outputs its biases). Seeded: two builds give byte-identical files.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

from tests.tiny_diffusers import _working_oobleck
from tests.tiny_models import _CORPUS, _Seeded, _add_tokenizer_config, _save_model, _write_json

__all__ = ["ACE_STEP_BUILDERS", "ACE_STEP_REPO", "ACE_STEP_HOP", "ACE_STEP_SAMPLING_RATE", "build_ace_step"]

ACE_STEP_REPO = "ACE-Step/acestep-v15-xl-turbo-diffusers"
ACE_STEP_SAMPLING_RATE = 48000
ACE_STEP_DOWNSAMPLING = [2, 4, 4, 6, 10]
ACE_STEP_HOP = 1920  # samples per latent = prod(downsampling_ratios): 25 latents a second
LATENT_CHANNELS = 4  # the real repo: 64 (the DiT's audio_acoustic_hidden_dim, the timbre encoder's input)
TEXT_DIM = 16  # Qwen3 hidden size (real: 1024), the condition encoder's text_hidden_dim
ENCODER_DIM = 16  # condition encoder width (real XL: 2048), fed to a wider DiT
DIT_DIM = 32  # DiT width (real XL: 2560)
SILENCE_FRAMES = 15000  # the real silence_latent's length (600 s of latents)

# Song words the tokenizer learns besides the studio's usual prompts: the pipeline's prompt template and lyrics.
_LYRICS = [
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n",
    "Repaint the mask area based on the given conditions: Generate audio semantic tokens",
    "# Metas\n- bpm: N/A\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n",
    "# Languages\nen\n\n# Lyric\n[verse]\n[chorus]\n[bridge]\n[outro]\n[Instrumental]",
    "Soft notes in the morning light\nDancing through the air so bright",
    "Music fills the air tonight\nEvery note feels just right",
    "upbeat synth-pop with a catchy hook and a driving beat",
]


def _qwen_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small byte-level BPE trained with Qwen2's pre-tokenizer: (vocab, merges); <|endoftext|> is id 0."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((_CORPUS + _LYRICS) * 8, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


def _write_tokenizer(dst: Path):
    """tokenizer/ as the real repo has it (tokenizer.json, tokenizer_config.json, vocab.json, merges.txt)."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _qwen_vocab()
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    dst.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dst)
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    _add_tokenizer_config(dst, {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 32768})
    return tok


def build_ace_step(dst: Path, *, seed: int = 1515) -> None:
    """ACE-Step/acestep-v15-xl-turbo-diffusers as a tiny pipeline."""
    import torch
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_tokenizer(dst / "tokenizer")
    small = {"head_dim": 8, "rope_theta": 1000000.0, "sliding_window": 16}  # real: 128, 1e6, 128
    encoder = {"hidden_size": ENCODER_DIM, "intermediate_size": 2 * ENCODER_DIM, "num_attention_heads": 2,
               "num_key_value_heads": 1, **small}
    with _Seeded(seed):
        text_encoder = Qwen3Model(Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=32768,
            tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )).eval()
        transformer = AceStepTransformer1DModel(
            hidden_size=DIT_DIM, intermediate_size=2 * DIT_DIM, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, in_channels=3 * LATENT_CHANNELS, audio_acoustic_hidden_dim=LATENT_CHANNELS,
            patch_size=2, encoder_hidden_size=ENCODER_DIM, is_turbo=True, **small,
        )
        condition_encoder = AceStepConditionEncoder(
            text_hidden_dim=TEXT_DIM, timbre_hidden_dim=LATENT_CHANNELS, num_lyric_encoder_hidden_layers=2,
            num_timbre_encoder_hidden_layers=1, **encoder,
        )
        pooler = {"audio_acoustic_hidden_dim": LATENT_CHANNELS, "pool_window_size": 5,
                  "num_attention_pooler_hidden_layers": 1, **encoder}
        audio_tokenizer = AceStepAudioTokenizer(fsq_dim=ENCODER_DIM, fsq_input_levels=[8, 8, 8, 5, 5, 5],
                                                fsq_input_num_quantizers=1, **pooler)
        audio_token_detokenizer = AceStepAudioTokenDetokenizer(**pooler)
        with warnings.catch_warnings():  # Oobleck uses the deprecated torch.nn.utils.weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            vae = AutoencoderOobleck(
                encoder_hidden_size=2 * LATENT_CHANNELS,  # a mean and a scale per latent channel
                downsampling_ratios=ACE_STEP_DOWNSAMPLING,
                channel_multiples=[1, 1, 2, 2, 4],  # real: [1, 2, 4, 8, 16]; narrower decodes 48 kHz 2x faster
                decoder_channels=4,
                decoder_input_channels=LATENT_CHANNELS,
                audio_channels=2,
                sampling_rate=ACE_STEP_SAMPLING_RATE,
            )
        _working_oobleck(vae, seed=seed + 1)
        # A trained VAE encodes silence to about the same latent at every frame: one random frame, repeated.
        silence = torch.randn(1, 1, LATENT_CHANNELS) * 0.5
        condition_encoder.silence_latent.copy_(silence.expand(1, SILENCE_FRAMES, LATENT_CHANNELS))
    assert vae.hop_length == ACE_STEP_HOP
    pipe = AceStepPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        audio_tokenizer=audio_tokenizer, audio_token_detokenizer=audio_token_detokenizer,
    )
    _save_model(pipe, dst)  # DiffusionPipeline.save_pretrained(dst, safe_serialization=True), as the converter does
    _write_tokenizer(dst / "tokenizer")  # save_pretrained rewrote it without vocab.json / merges.txt


ACE_STEP_BUILDERS: dict[str, Callable[[Path], None]] = {ACE_STEP_REPO: build_ace_step}
