"""A tiny random Pocket TTS laid out like ``eustlb/pocket-tts`` (and its codec repo), for offline tests.

Companion of ``tiny_models.py`` (same hub-cache layout, same helpers). transformers 5.23 names the checkpoints in
its docstrings: ``eustlb/pocket-tts`` (``PocketTTSConfig``) and ``eustlb/pocket-tts-audio-tokenizer``
(``PocketTTSAudioTokenizerConfig``). The processor's files point at the codec's repo, as ``ProcessorMixin`` saves
an audio tokenizer: ``processor_config.json`` holds ``audio_tokenizer`` = {class, name_or_path}, and
``from_pretrained`` loads that repo beside this one. So the model repo holds

* ``config.json``, ``model.safetensors``, ``generation_config.json`` (``return_dict_in_generate``, as the
  generation mixin's docstring says the checkpoints' generation config sets),
* ``tokenizer.json`` + ``tokenizer_config.json`` (a ``tokenizers`` unigram model; the four audio placeholders are
  named special tokens, ``audio_prompt_token`` etc., read by ``PocketTTSProcessor.__init__``),
* ``processor_config.json`` (the feature extractor's and the processor's own fields) and ``chat_template.jinja``
  (voice BOS, voice placeholder, the text, the first audio position, the layout ``PocketTTSProcessor`` documents),
* ``voices/<name>.safetensors``: the shipped voices as precomputed voice-prompt latents (``audio_prompt_latents``,
  "the checkpoint's ``voices/``" in the processor's messages), one ``(frames, latent_dim)`` tensor each.

What is kept from the real model: 24 kHz, the codec's upsampling ratios [6, 5, 4] and latent stride 16 (1920
samples a frame, 12.5 frames a second), its sliding window and ``max_position_embeddings`` (the voice-prompt
limit the adapter derives), the placeholder ids after the text vocabulary in the real order (prompt, latent,
prompt BOS, BOS), the LSD flow head. Tiny: widths 16-32, one or two layers, a 200-piece vocabulary. The voice
file format and the template's exact text could not be read from the real repos here (no hub access): they follow
the library's docstrings. Seeded: two builds give byte-identical files.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tests.tiny_models import _CORPUS, _Seeded, _save_model, _write_json

__all__ = ["POCKET_BUILDERS", "POCKET_REPO", "POCKET_CODEC_REPO", "POCKET_VOICES", "build_pocket_tts",
           "build_pocket_codec"]

POCKET_REPO = "eustlb/pocket-tts"
POCKET_CODEC_REPO = "eustlb/pocket-tts-audio-tokenizer"
POCKET_VOICES = ("alba", "marius", "javert")  # a few of the published eight
SAMPLING_RATE = 24000
LATENT_DIM = 8  # real: 32
VOICE_FRAMES = 13  # about a second of latents per shipped voice
_TOKENS = {  # named special tokens of the tokenizer, in the config's id order after the text vocabulary
    "audio_prompt_token": "<|audio_prompt|>",
    "audio_latent_token": "<|audio_latent|>",
    "audio_prompt_bos_token": "<|audio_prompt_bos|>",
    "audio_bos_token": "<|audio_bos|>",
}
# The prompt layout PocketTTSProcessor documents: voice BOS, voice frames, the text, then the first audio position.
# The text gets a capital and a final full stop, as the original runtime prepares it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'audio' -%}" + _TOKENS["audio_prompt_bos_token"] + _TOKENS["audio_prompt_token"] +
    "{%- elif item['type'] == 'text' -%}{%- set text = item['text'] | trim -%}"
    "{{ text[:1] | upper }}{{ text[1:] }}{%- if text[-1:] not in '.!?' -%}.{%- endif -%}"
    "{%- endif -%}{%- endfor -%}{%- endfor -%}" + _TOKENS["audio_bos_token"]
)


@functools.lru_cache(maxsize=1)
def _unigram_vocab() -> tuple[tuple[str, float], ...]:
    """A 200-piece sentencepiece unigram vocabulary of the studio's usual English (every ASCII character in it)."""
    import io

    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 8), model_writer=out, vocab_size=200, hard_vocab_limit=False,
        model_type="unigram", unk_id=0, bos_id=-1, eos_id=-1, pad_id=1, character_coverage=1.0,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=out.getvalue())
    return tuple((sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size()))


def _write_tokenizer(dst: Path) -> int:
    """tokenizer.json + tokenizer_config.json; returns the text vocabulary's size (the placeholders follow it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = list(_unigram_vocab())
    backend = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        extra_special_tokens=dict(_TOKENS))
    tokenizer.save_pretrained(dst)
    return len(vocab)


def _configs(text_vocab: int, *, published: bool = False):
    """The tiny configs; `published`: the library's defaults, which are Kyutai's released widths (the benchmark's
    realistic-size build), with this tokenizer's vocabulary and ids (a 4,000-row token table in the real one)."""
    from transformers import PocketTTSAudioTokenizerConfig, PocketTTSConfig

    ids = {name.replace("_token", "_token_id"): text_vocab + i for i, name in enumerate(_TOKENS)}
    if published:
        return (PocketTTSConfig(vocab_size=text_vocab + len(_TOKENS), pad_token_id=1, **ids),
                PocketTTSAudioTokenizerConfig())
    config = PocketTTSConfig(
        vocab_size=text_vocab + len(_TOKENS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=8192, latent_dim=LATENT_DIM, pad_token_id=1,
        flow_head_config={"hidden_size": 16, "num_hidden_layers": 1, "latent_dim": LATENT_DIM, "condition_dim": 32,
                          "frequency_embedding_size": 16},
        **ids,
    )
    codec = PocketTTSAudioTokenizerConfig(
        sampling_rate=SAMPLING_RATE, hidden_size=16, num_filters=4, upsample_groups=16, num_hidden_layers=1,
        intermediate_size=32, num_attention_heads=2, num_key_value_heads=2, latent_dim=LATENT_DIM,
    )
    return config, codec


def build_pocket_codec(dst: Path, *, published: bool = False) -> None:
    """The codec repo: config.json and model.safetensors of PocketTTSAudioTokenizerModel."""
    from transformers import PocketTTSAudioTokenizerModel

    _, codec_config = _configs(len(_unigram_vocab()), published=published)
    with _Seeded(1500):
        codec = PocketTTSAudioTokenizerModel(codec_config).eval()
    _save_model(codec, dst)


def build_pocket_tts(dst: Path, *, published: bool = False) -> None:
    """The model repo (see the module docstring); it points at POCKET_CODEC_REPO for its audio tokenizer.
    `published`: Kyutai's widths (see _configs) and voices of 10 s, for the benchmark."""
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, PocketTTSFeatureExtractor, PocketTTSForConditionalGeneration

    text_vocab = _write_tokenizer(dst)
    config, codec_config = _configs(text_vocab, published=published)
    latent_dim, voice_frames = config.latent_dim, 125 if published else VOICE_FRAMES
    with _Seeded(1501):
        model = PocketTTSForConditionalGeneration(config).eval()
        # Random latent statistics, as a trained model's are not 0 and 1: voices and frames then differ per dim.
        model.latent_mean.copy_(torch.randn(latent_dim) * 0.1)
        model.latent_std.copy_(torch.rand(latent_dim) + 0.5)
        model.model.bos_latent.data.copy_(torch.randn(latent_dim))
        # A random end-of-speech head fires at random (with the released threshold of -4, at the first frame it
        # may); this one never does, as MODELS.md says of random weights: every run goes to the studio's cap.
        model.eos_head.bias.data.fill_(-100.0)
        voices = {name: torch.randn(voice_frames, latent_dim) for name in POCKET_VOICES}
    # The released checkpoints' sampling: temperature 0.7 and one LSD step (generation_pocket_tts's defaults).
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.7, num_flow_steps=1, eos_threshold=-4.0, min_frames_before_eos=6,
        return_dict_in_generate=True, max_new_tokens=40, pad_token_id=config.pad_token_id,
    )
    _save_model(model, dst)
    (dst / "voices").mkdir()
    for name, latents in voices.items():
        save_file({"audio_prompt_latents": latents.contiguous()}, str(dst / "voices" / f"{name}.safetensors"))
    features = PocketTTSFeatureExtractor(sampling_rate=SAMPLING_RATE, frame_size=codec_config.frame_size,
                                         pad_to_multiple_of=codec_config.frame_size)
    processor_config = {
        "processor_class": "PocketTTSProcessor",
        "feature_extractor": {**features.to_dict(), "feature_extractor_type": "PocketTTSFeatureExtractor"},
        "audio_tokenizer": {"audio_tokenizer_class": "PocketTTSAudioTokenizerModel",
                            "audio_tokenizer_name_or_path": POCKET_CODEC_REPO},
        "short_text_max_words": 4, "frames_after_eos_short_text": 4, "frames_after_eos": 2,
        "fade_in_duration": 0.005,
    }
    _write_json(dst / "processor_config.json", processor_config)
    (dst / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")


POCKET_BUILDERS = {POCKET_REPO: build_pocket_tts, POCKET_CODEC_REPO: build_pocket_codec}
