"""Realistic-size random-weight checkpoints (the published configs) in an HF cache under the real repo ids.

Random weights of the real architecture do the same arithmetic as the real ones, so they time the same.
The layout (file names, model_index.json, tokenizers, voice presets) is that of the tiny test
checkpoints (tests/tiny_models.py, tests/tiny_diffusers.py), whose helpers are reused: only the sizes
differ. Tokenizers are the tiny ones; every config's vocabulary is the real size, so it covers their ids.

A build is recorded in ``<hf_home>/bench-builds.json`` (seconds, bytes, a version); a repo already built
at the current version is reused, so the realistic-size files are written once per cache.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when a builder changes, so old caches are rebuilt
MANIFEST = "bench-builds.json"

# Published: the parameters each real model holds, for the catalog memory check.
PUBLISHED_PARAMETERS = {
    "facebook/mms-tts-eng": 36_000_000,
    "facebook/musicgen-small": 587_000_000,
    "facebook/musicgen-melody": 1_550_000_000,
    "suno/bark-small": 404_000_000,
    "cvssp/audioldm2": 1_080_000_000,
    "stabilityai/stable-audio-open-1.0": 1_320_000_000,
}


def _seeded(seed: int):
    from tests.tiny_models import _Seeded

    return _Seeded(seed)


def _save(model, dst: Path) -> None:
    model.save_pretrained(dst, safe_serialization=True)


# ------------------------------------------------------------------------------------ MMS-TTS
def build_mms_tts(dst: Path) -> None:
    """facebook/mms-tts-eng: VitsConfig() defaults (36M parameters) and the 38-symbol English vocab."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    from tests.tiny_models import _add_tokenizer_config, _mms_vocab, _write_json

    vocab = _mms_vocab("eng")
    config = VitsConfig(vocab_size=len(vocab), sampling_rate=16000)
    with _seeded(36):
        model = VitsModel(config).eval()
        _save(model, dst)
    vocab_path = dst / "vocab.json"
    _write_json(vocab_path, {c: i for i, c in enumerate(vocab)})
    tok = VitsTokenizer(str(vocab_path), pad_token=vocab[0], unk_token="<unk>", language="eng", add_blank=True,
                        normalize=True, phonemize=False, is_uroman=False)
    tok.save_pretrained(dst)
    _add_tokenizer_config(dst, {"tokenizer_class": "VitsTokenizer"})
    _write_json(dst / "special_tokens_map.json", {"pad_token": vocab[0], "unk_token": "<unk>"})


# ------------------------------------------------------------------------------------ MusicGen
def _musicgen_encoders() -> dict:
    """MusicGen's text encoder (T5-base) and codec (EnCodec 32 kHz, four 2048-code books), as every size has them."""
    from transformers import EncodecConfig, T5Config

    text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                    feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=64, sampling_rate=32000,
                          codebook_size=2048, use_causal_conv=False, normalize=False, use_conv_shortcut=False,
                          chunk_length_s=None, overlap=None)
    return {"text_encoder": text.to_dict(), "audio_encoder": audio.to_dict()}


def _save_musicgen(model_class, config, dst: Path, *, seed: int) -> None:
    """A random MusicGen of `config` (its codec's codebooks filled so that codes decode to sound) with the published
    generation config, saved to `dst`."""
    from transformers import GenerationConfig

    from tests.tiny_models import _fill_encodec_codebooks

    with _seeded(seed):
        model = model_class(config).eval()
        _fill_encodec_codebooks(model.audio_encoder, seed=seed + 1)
        model.generation_config = GenerationConfig(
            bos_token_id=2048, decoder_start_token_id=2048, pad_token_id=2048, do_sample=True, guidance_scale=3.0,
            max_length=1500,
        )
        _save(model, dst)


def build_musicgen_small(dst: Path) -> None:
    """facebook/musicgen-small: T5-base encoder, 24-layer 1024-wide decoder, EnCodec 32 kHz (587M parameters)."""
    from transformers import (EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration)

    from tests.tiny_models import _add_json_key, _add_tokenizer_config, _write_t5_tokenizer

    decoder = MusicgenDecoderConfig(pad_token_id=2048, bos_token_id=2048, tie_word_embeddings=False)
    config = MusicgenConfig(**_musicgen_encoders(), decoder=decoder.to_dict())
    _save_musicgen(MusicgenForConditionalGeneration, config, dst, seed=587)
    _write_t5_tokenizer(dst)
    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_side="left", padding_value=0.0,
                                 chunk_length_s=None, overlap=None, return_attention_mask=True)
    fe.save_pretrained(dst)
    _add_json_key(dst / "preprocessor_config.json", "processor_class", "MusicgenProcessor")
    _add_tokenizer_config(dst, {"processor_class": "MusicgenProcessor"})


def build_musicgen_melody(dst: Path) -> None:
    """facebook/musicgen-melody: T5-base encoder, 48-layer 1536-wide decoder whose prefix is 235 chroma frames and the
    text (no cross-attention), EnCodec 32 kHz (1.5B parameters)."""
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration

    from tests.tiny_models import _add_tokenizer_config, _write_json, _write_t5_tokenizer

    decoder = MusicgenMelodyDecoderConfig(hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, ffn_dim=6144,
                                          pad_token_id=2048, bos_token_id=2048, tie_word_embeddings=False)
    config = MusicgenMelodyConfig(**_musicgen_encoders(), decoder=decoder.to_dict(), num_chroma=12, chroma_length=235)
    _save_musicgen(MusicgenMelodyForConditionalGeneration, config, dst, seed=1550)
    _write_t5_tokenizer(dst)
    # As the real repo has it (MusicgenMelodyFeatureExtractor needs torchaudio to be built; models.chroma reads it).
    _write_json(dst / "preprocessor_config.json", {
        "chunk_length": 30, "feature_extractor_type": "MusicgenMelodyFeatureExtractor", "feature_size": 12,
        "hop_length": 4096, "n_fft": 16384, "num_chroma": 12, "padding_side": "left", "padding_value": 0.0,
        "processor_class": "MusicgenMelodyProcessor", "return_attention_mask": True, "sampling_rate": 32000,
        "stem_indices": [3, 2]})
    _add_tokenizer_config(dst, {"processor_class": "MusicgenMelodyProcessor"})


# ------------------------------------------------------------------------------------ Bark
def build_bark_small(dst: Path, *, repo_id: str = "suno/bark-small") -> None:
    """suno/bark-small: three 12-layer 768-wide GPTs and EnCodec 24 kHz (404M parameters), with voice presets."""
    from transformers import BarkConfig, BarkModel, EncodecConfig
    from transformers.models.bark import BarkCoarseConfig, BarkFineConfig, BarkSemanticConfig
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    from tests.tiny_models import (
        _fill_encodec_codebooks,
        _save_bark,
        _write_bark_tokenizer,
        _write_bark_voice_presets,
    )

    common = dict(hidden_size=768, num_layers=12, num_heads=12, block_size=1024, bias=False, dropout=0.0)
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(input_vocab_size=129_600, output_vocab_size=10_048, **common).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(input_vocab_size=12_096, output_vocab_size=12_096,
                                                 **common).to_dict(),
        fine_acoustics_config=BarkFineConfig(input_vocab_size=1056, output_vocab_size=1056, n_codes_total=8,
                                             n_codes_given=1, **common).to_dict(),
        codec_config=EncodecConfig().to_dict(),
    )
    with _seeded(404):
        model = BarkModel(config).eval()
        _fill_encodec_codebooks(model.codec_model, seed=405)
        model.generation_config = BarkGenerationConfig(
            semantic_config=dict(eos_token_id=10_000, max_new_tokens=768, do_sample=True, temperature=0.7,
                                 text_encoding_offset=10_048, text_pad_token=129_595, semantic_infer_token=129_599,
                                 semantic_vocab_size=10_000, max_input_semantic_length=256, semantic_rate_hz=49.9),
            coarse_acoustics_config=dict(do_sample=True, temperature=0.7, coarse_semantic_pad_token=12_048,
                                         coarse_rate_hz=75, n_coarse_codebooks=2, coarse_infer_token=12_050,
                                         max_coarse_input_length=256, max_coarse_history=630, sliding_window_len=60),
            fine_acoustics_config=dict(temperature=0.5, max_fine_history_length=512, max_fine_input_length=1024,
                                       n_fine_codebooks=8),
            sample_rate=24000,
            codebook_size=1024,
        )
        _save_bark(model, dst)  # works around transformers 5.23 not saving a BarkGenerationConfig
    _write_bark_tokenizer(dst)
    _write_bark_voice_presets(dst, repo_id)


# ------------------------------------------------------------------------------------ AudioLDM2
def build_audioldm2(dst: Path) -> None:
    """cvssp/audioldm2 at its real size: CLAP, Flan-T5-large encoder, GPT2, UNet, VAE, HiFi-GAN (1.08B parameters)."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        GPT2Config,
        GPT2Model,
        RobertaTokenizer,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    from tests.tiny_diffusers import _fix_model_index, _write_roberta_tokenizer, _write_t5_tokenizer_dir

    dst.mkdir(parents=True, exist_ok=True)
    _write_roberta_tokenizer(dst / "tokenizer", model_max_length=512)
    _write_t5_tokenizer_dir(dst / "tokenizer_2", model_max_length=128)
    tokenizer = RobertaTokenizer.from_pretrained(dst / "tokenizer")
    tokenizer_2 = T5Tokenizer.from_pretrained(dst / "tokenizer_2")
    with _seeded(1080):
        text_encoder = ClapModel(ClapConfig()).eval()  # laion/clap-htsat-unfused: RoBERTa-base text + HTSAT audio
        text_encoder_2 = T5EncoderModel(T5Config(  # google/flan-t5-large's encoder
            vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
            feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )).eval()
        gpt2_config = GPT2Config(architectures=["GPT2Model"])  # gpt2 (124M)
        gpt2_config.max_new_tokens = 8  # as the real language_model/config.json
        language_model = GPT2Model(gpt2_config).eval()
        projection_model = AudioLDM2ProjectionModel(text_encoder_dim=512, text_encoder_1_dim=1024,
                                                    langauge_model_dim=768)
        unet = AudioLDM2UNet2DConditionModel(
            sample_size=256, in_channels=8, out_channels=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(128, 256, 384, 640), layers_per_block=2, attention_head_dim=8,
            cross_attention_dim=([None, 768, 1024],) * 4,
        )
        vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(128, 256, 512),
                            layers_per_block=2, latent_channels=8, sample_size=1024)
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4], normalize_before=False,
        )).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", steps_offset=1, clip_sample=False, set_alpha_to_one=False,
                              prediction_type="epsilon")
    pipe = AudioLDM2Pipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                             projection_model=projection_model, language_model=language_model, tokenizer=tokenizer,
                             tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(), unet=unet,
                             scheduler=scheduler, vocoder=vocoder)
    _save(pipe, dst)
    _write_roberta_tokenizer(dst / "tokenizer", model_max_length=512)
    _write_t5_tokenizer_dir(dst / "tokenizer_2", model_max_length=128)
    _fix_model_index(dst, {"language_model": ["transformers", "GPT2Model"],
                           "tokenizer": ["transformers", "RobertaTokenizerFast"],
                           "tokenizer_2": ["transformers", "T5TokenizerFast"]})


# ------------------------------------------------------------------------------------ Stable Audio Open
def build_stable_audio(dst: Path) -> None:
    """stabilityai/stable-audio-open-1.0: T5-base, the 1024-latent DiT and the Oobleck VAE (1.32B parameters)."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from tests.tiny_diffusers import _fix_model_index, _write_t5_tokenizer_dir

    dst.mkdir(parents=True, exist_ok=True)
    _write_t5_tokenizer_dir(dst / "tokenizer", model_max_length=128)
    tokenizer = T5Tokenizer.from_pretrained(dst / "tokenizer")
    with _seeded(1320):
        text_encoder = T5EncoderModel(T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                                               num_heads=12, feed_forward_proj="relu", decoder_start_token_id=0,
                                               pad_token_id=0, eos_token_id=1)).eval()
        projection_model = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0,
                                                      max_value=512)
        transformer = StableAudioDiTModel(sample_size=1024, in_channels=64, num_layers=24, attention_head_dim=64,
                                          num_attention_heads=24, num_key_value_attention_heads=12,
                                          cross_attention_dim=768, global_states_input_dim=1536, time_proj_dim=256)
        with warnings.catch_warnings():  # Oobleck uses the deprecated torch.nn.utils.weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            vae = AutoencoderOobleck(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8],
                                     channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128,
                                     decoder_input_channels=64, audio_channels=2, sampling_rate=44100)
    scheduler = CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential", num_train_timesteps=1000,
        solver_order=2, prediction_type="v_prediction", rho=7.0, solver_type="midpoint", lower_order_final=True,
        euler_at_final=False, final_sigmas_type="zero",
    )
    pipe = StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection_model,
                               tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)
    _save(pipe, dst)
    _write_t5_tokenizer_dir(dst / "tokenizer", model_max_length=128)
    _fix_model_index(dst, {"tokenizer": ["transformers", "T5TokenizerFast"]})


# ------------------------------------------------------------------------------------ ACE-Step 1.5 XL turbo
# The XL turbo DiT as its diffusers config holds it (transformer/config.json of ACE-Step/acestep-v15-xl-turbo-diffusers;
# the same values appear in independent ports that read the released weights: hidden 2560, MLP 9728, 32 heads / 8 KV
# heads of 128, 32 layers alternating sliding (window 128) and full attention, a 2048-wide condition encoder projected
# up by `condition_embedder`). The condition encoder, the audio (de)tokenizer and the Oobleck VAE are the non-XL ones
# (the class defaults and the converter's fall-backs). None of it is read from the real repo here (no network).
ACE_XL_LAYERS = 32
ACE_XL_DIT = dict(hidden_size=2560, intermediate_size=9728, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                  in_channels=192, audio_acoustic_hidden_dim=64, patch_size=2, rope_theta=1_000_000.0,
                  sliding_window=128, encoder_hidden_size=2048, is_turbo=True, model_version="turbo")
ACE_ENCODER = dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                   rope_theta=1_000_000.0, sliding_window=128)
ACE_VAE = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 2, 4, 8, 16],
               decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=48000)
# Qwen3-Embedding-0.6B (the text encoder and the lyric token embeddings).
ACE_QWEN3 = dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                 rope_theta=1_000_000.0, tie_word_embeddings=True)
# The bench's default DiT depth: 2 of the 32 identical blocks. The rest of the pipeline is 1.58B parameters (Qwen3
# 0.6B, the 0.6B condition encoder, the audio (de)tokenizer, the VAE: 6.3 GB in float32), so a float32 build with 2
# blocks is 7.7 GB resident, inside the 10 GB a bench process may hold on this shared 24 GB machine; the real 32
# blocks would add 15.3 GB. Per-block time and memory are measured and extrapolated to 32 (bench/music_dit.py).
# BENCH_ACE_XL_LAYERS=32 builds the real depth on a machine that holds 24 GB.
ACE_XL_BENCH_LAYERS = int(os.environ.get("BENCH_ACE_XL_LAYERS", "2"))


def word_tokenizer(vocab_size: int, *, eos: str, pad: str, cls=None, model_max_length: int = 4096):
    """A word-level fast tokenizer over a few hundred words with ids inside a real vocabulary of `vocab_size`.

    The real BPE files are not needed to time a model: the cost depends on the token count, not on which ids.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.tiny_models import _CORPUS

    words = sorted({w.strip(".,!?;:()[]\"'").lower() for line in _CORPUS for w in line.split()} - {""})
    vocab = {pad: 0, eos: 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    assert len(vocab) < vocab_size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return (cls or PreTrainedTokenizerFast)(tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token="<unk>",
                                           model_max_length=model_max_length)


def ace_step_xl_pipeline(dit_layers: int = ACE_XL_BENCH_LAYERS, *, seed: int = 4700):
    """AceStepPipeline with the XL turbo widths and `dit_layers` of its 32 DiT blocks, random weights."""
    import torch
    from diffusers import AceStepPipeline, AceStepTransformer1DModel, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step import AceStepAudioTokenDetokenizer, AceStepAudioTokenizer, AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    with _seeded(seed), torch.no_grad():
        transformer = AceStepTransformer1DModel(num_hidden_layers=dit_layers, **ACE_XL_DIT).eval()
        condition_encoder = AceStepConditionEncoder(text_hidden_dim=1024, timbre_hidden_dim=64,
                                                    num_lyric_encoder_hidden_layers=8,
                                                    num_timbre_encoder_hidden_layers=4, **ACE_ENCODER).eval()
        # The converter bakes ACE-Step's silence_latent.pt (B, 15000, 64) in: a quiet latent, here small noise.
        condition_encoder.silence_latent.normal_(0.0, 0.1)
        pooler = dict(audio_acoustic_hidden_dim=64, pool_window_size=5, num_attention_pooler_hidden_layers=2,
                      layer_types=["sliding_attention", "full_attention"], **ACE_ENCODER)
        audio_tokenizer = AceStepAudioTokenizer(fsq_dim=2048, fsq_input_levels=[8, 8, 8, 5, 5, 5],
                                                fsq_input_num_quantizers=1, **pooler).eval()
        audio_token_detokenizer = AceStepAudioTokenDetokenizer(**pooler).eval()
        with warnings.catch_warnings():  # Oobleck uses the deprecated torch.nn.utils.weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            vae = AutoencoderOobleck(**ACE_VAE).eval()
        text_encoder = Qwen3Model(Qwen3Config(**ACE_QWEN3)).eval()
    tokenizer = word_tokenizer(ACE_QWEN3["vocab_size"], eos="<|endoftext|>", pad="<|endoftext|>_pad")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    pipe = AceStepPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                           condition_encoder=condition_encoder, scheduler=scheduler, audio_tokenizer=audio_tokenizer,
                           audio_token_detokenizer=audio_token_detokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_ace_step_xl_turbo(dst: Path) -> None:
    """ACE-Step/acestep-v15-xl-turbo-diffusers: the real widths, ACE_XL_BENCH_LAYERS (2) of the DiT's 32 blocks."""
    from tests.tiny_diffusers import _fix_model_index

    pipe = ace_step_xl_pipeline()
    _save(pipe, dst)
    _fix_model_index(dst, {"tokenizer": ["transformers", "PreTrainedTokenizerFast"]})


# ------------------------------------------------------------------------------------ Stable Audio 3 medium
# StableAudio3DiTModel's class defaults are SA3 medium's DiT (1536 wide, 24 blocks of 24 heads, differential
# attention, 64 memory tokens: diffusers' docstring and the converter's fall-backs); the SAME-L autoencoder is
# AutoencoderSAME(encoder_channels=256, encoder_transformer_depths=(12,)) per its docstring, with the 8 trailing
# sinusoidal decoder blocks it names; the text encoder is T5Gemma-B's encoder (google/t5gemma-b-b-ul2: 768 wide,
# 12 layers of 12 heads of 64, GeGLU 2048, vocabulary 256000, as ports that read that config give it).
SA3_LAYERS = 24
SA3_DIT: dict = {}  # the class defaults
SA3_VAE = dict(encoder_channels=256, encoder_transformer_depths=(12,), decoder_sinusoidal_blocks=(8,))
SA3_T5GEMMA = dict(vocab_size=256000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                   num_attention_heads=12, num_key_value_heads=12, head_dim=64, max_position_embeddings=8192,
                   query_pre_attn_scalar=64)
# 8 of the 24 DiT blocks: SAME-L (852M) and T5Gemma-B's encoder (282M) are 4.5 GB in float32, 8 blocks + the
# DiT's fixed part another 2.0 GB, and decoding 10 s through SAME-L's transformers adds over a GB of activations.
SA3_BENCH_LAYERS = int(os.environ.get("BENCH_SA3_LAYERS", "8"))


def _redraw_zero_weights(modules, *, seed: int) -> None:
    """Weight matrices that are all zero at initialisation, redrawn from N(0, 1 / fan_in) (unit gain)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for module in modules:
        for name, p in module.named_parameters():
            if p.dim() >= 2 and not p.any() and "embed" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def stable_audio_3_pipeline(dit_layers: int = SA3_BENCH_LAYERS, *, seed: int = 1450, distilled: bool = True):
    """StableAudio3Pipeline with SA3 medium's widths and `dit_layers` of its 24 DiT blocks, random weights."""
    import torch
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    with _seeded(seed), torch.no_grad():
        transformer = StableAudio3DiTModel(depth=dit_layers, **SA3_DIT).eval()
        vae = AutoencoderSAME(**SA3_VAE).eval()
        module = T5GemmaModuleConfig(**SA3_T5GEMMA).to_dict()
        text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=module, decoder=module,
                                                         is_encoder_decoder=False)).eval()
        duration_embedder = StableAudio3DurationEmbedder().eval()
        # SAME initialises every attention and feed-forward output projection to zero and the DiT its pre/post
        # convolutions (a trained model has none): each SAME transformer block would be the identity. Redrawn at
        # unit gain; the arithmetic (and so the time) is the same. Even so a random SAME decoder barely reads its
        # input (its output tokens learn to attend to the latents only in training: two latents 1 % apart decode to
        # waveforms 1e-6 apart), so the bench compares SA3's outputs as latents, not waveforms.
        _redraw_zero_weights([vae, transformer], seed=seed + 1)
    tokenizer = word_tokenizer(SA3_T5GEMMA["vocab_size"], eos="<eos>", pad="<pad>", model_max_length=256)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, stochastic_sampling=distilled)
    pipe = StableAudio3Pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                duration_embedder=duration_embedder, transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_stable_audio_3_medium_diffusers(dst: Path) -> None:
    """stabilityai/stable-audio-3-medium converted to diffusers format (the layout the studio's converter writes)."""
    from tests.tiny_diffusers import _fix_model_index

    pipe = stable_audio_3_pipeline()
    _save(pipe, dst)
    _fix_model_index(dst, {"tokenizer": ["transformers", "PreTrainedTokenizerFast"]})



def build_stable_audio_3_original(dst: Path, *, objective: str = "rf_denoiser") -> None:
    """stabilityai/stable-audio-3-medium as Stability publishes it (model_config.json, model.safetensors with
    stable-audio-tools' names, the t5gemma-b-b-ul2/ folder), which the studio converts on first use: the modules of
    `stable_audio_3_pipeline()` written back under the original names by the tests' tiny builder's own mapping
    (tests/tiny_stable_audio_3.py), so the conversion the bench times is the product's, on realistic sizes."""
    from safetensors.torch import save_file
    from transformers import T5GemmaConfig
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    from tests.tiny_models import _write_json
    from tests.tiny_stable_audio_3 import TEXT_FOLDER, _write_gemma_tokenizer, model_config, original_state_dict

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    pipe = stable_audio_3_pipeline(distilled=objective == "rf_denoiser")
    components = dict(pipe.components)
    save_file(original_state_dict(components), str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = model_config(components, objective)
    config["model"]["conditioning"]["cond_dim"] = pipe.transformer.config.cond_token_dim  # the helper's is tiny
    _write_json(dst / "model_config.json", config)
    text = dst / TEXT_FOLDER
    _write_gemma_tokenizer(text)  # a small Gemma-style vocabulary: ids inside the real 256000
    encoder = components["text_encoder"]
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(text / "model.safetensors"),
              metadata={"format": "pt"})
    module = T5GemmaModuleConfig(**SA3_T5GEMMA).to_dict()
    T5GemmaConfig(encoder=module, decoder=module, is_encoder_decoder=True,
                  architectures=["T5GemmaForConditionalGeneration"]).save_pretrained(text)
    _write_json(text / "generation_config.json", {"_from_model_config": True, "bos_token_id": 2, "eos_token_id": 1,
                                                  "pad_token_id": 0})
    (dst / "LICENSE.md").write_text("Stability AI Community License (bench copy)\n", encoding="utf-8")
    (dst / "LICENSE_GEMMA.md").write_text("Gemma Terms of Use (bench copy)\n", encoding="utf-8")


# Dia's decoder is built with this many of its published 18 layers (2048 wide): at 18 a float32 step with guidance
# takes about a second on 2 cores and a copy holds 6.4 GB, and the bench keeps three. The per-step work and the
# studio's overhead scale with it; bench.dia_cpu fits the per-layer time to extrapolate to 18.
DIA_BENCH_LAYERS = int(os.environ.get("BENCH_DIA_LAYERS", "6"))


def _speech_builders() -> dict[str, Callable[[Path], None]]:
    """Issue 15's speech families at their published widths, through the tests' builders (tokenizers, processors,
    voices and file layout are theirs)."""
    from tests.tiny_dia import DAC_REPO, DIA_REPO, build_dac, build_dia
    from tests.tiny_pocket_tts import POCKET_CODEC_REPO, POCKET_REPO, build_pocket_codec, build_pocket_tts

    return {POCKET_REPO: functools.partial(build_pocket_tts, published=True),
            POCKET_CODEC_REPO: functools.partial(build_pocket_codec, published=True),
            DIA_REPO: functools.partial(build_dia, decoder_layers=DIA_BENCH_LAYERS),
            DAC_REPO: functools.partial(build_dac, published=True)}


# ------------------------------------------------------------------------------------ CSM 1B
# The published widths (tests/tiny_csm.py with backbone_layers: CsmConfig() and MimiConfig(num_quantizers=32)) with
# 4 of the backbone's 16 layers. A frame is one backbone step and 31 steps of the full-size depth decoder (4 layers,
# 1024 wide), which reads about 4x the bytes of the 4-layer backbone: measured here, the quick case's 13 frames in
# 18 s (1.4 s a frame, float32, others' load 1.0; 3 s a frame in a probe at load average 4-5). The 16 would add
# 12 x 60M parameters (2.9 GB read a frame) and 2.9 GB of RAM per float32 copy; the reference holds its own copy
# (3.7 GB) beside the studio's float32 (3.7 GB), int8 (2.2 GB) and bfloat16 (2.0 GB): 11.6 GB of weights. The build
# takes 39 s and 3.68 GB on disk.
CSM_BENCH_LAYERS = int(os.environ.get("BENCH_CSM_LAYERS", "4"))


def build_csm_1b(dst: Path) -> None:
    """sesame/csm-1b: the published widths, CSM_BENCH_LAYERS (4) of the backbone's 16 layers; the first codebook's
    head never samples the EOS frame, so every turn runs to the studio's cap."""
    from tests.tiny_csm import build_csm

    build_csm(dst, backbone_layers=CSM_BENCH_LAYERS)


# ------------------------------------------------------------------------------------ VibeVoice 1.5B
# VibeVoiceConfig()'s defaults (the 1.5B's tokenizers and diffusion head) with the Qwen2.5-1.5B text model and 4 of its
# 28 layers (tests/tiny_vibevoice.py with lm_layers). The two tokenizers alone are 4.1 GB in float32 and run every
# frame; an LM layer is 0.27 s of a frame's 8.5 (bench/vibevoice_cpu.py), so a frame's time is mostly the real one.
# Measured here, the quick case's 8 frames in 13 s (1.7 s a frame, float32, 10 diffusion steps, others' load 1.0).
# The studio holds float32 (6.3 GB), int8 (2.2 GB) and bfloat16 (3.2 GB) copies; the reference borrows the float32
# one. The build takes 54 s and 6.32 GB on disk.
VIBEVOICE_BENCH_LAYERS = int(os.environ.get("BENCH_VIBEVOICE_LAYERS", "4"))


def build_vibevoice_1_5b(dst: Path) -> None:
    """vibevoice/VibeVoice-1.5B-hf: the published widths, VIBEVOICE_BENCH_LAYERS (4) of the LM's 28 layers; the audio
    placeholder always wins (no run ends early) and the tokenizers' convolutions are at unit gain (no denormals)."""
    from tests.tiny_vibevoice import build_vibevoice

    build_vibevoice(dst, lm_layers=VIBEVOICE_BENCH_LAYERS)


REALISTIC_BUILDERS: dict[str, Callable[[Path], None]] = {
    "facebook/mms-tts-eng": build_mms_tts,
    "facebook/musicgen-small": build_musicgen_small,
    "facebook/musicgen-melody": build_musicgen_melody,
    "suno/bark-small": functools.partial(build_bark_small, repo_id="suno/bark-small"),
    "cvssp/audioldm2": build_audioldm2,
    "stabilityai/stable-audio-open-1.0": build_stable_audio,
    "ACE-Step/acestep-v15-xl-turbo-diffusers": build_ace_step_xl_turbo,
    "stabilityai/stable-audio-3-medium": build_stable_audio_3_original,  # needs tests/tiny_stable_audio_3.py (sa3)
    **_speech_builders(),
    "sesame/csm-1b": build_csm_1b,
    "vibevoice/VibeVoice-1.5B-hf": build_vibevoice_1_5b,
}


def tiny_builders() -> dict[str, Callable[[Path], None]]:
    from tests.tiny_models import all_tiny_builders

    return all_tiny_builders()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def recorded_builds(hf_home: Path, *, tiny: bool = False) -> dict[str, dict]:
    """Every build the cache's manifest records (of this kind): {repo: {built: False, seconds, bytes, kind}}."""
    path = Path(hf_home) / MANIFEST
    if not path.exists():
        return {}
    kind = "tiny" if tiny else "realistic"
    data = json.loads(path.read_text())
    return {repo: {"built": False, "seconds": e["seconds"], "bytes": e["bytes"], "kind": kind}
            for repo, e in data.items() if e.get("kind") == kind and e.get("version") == BUILD_VERSION}


def ensure_checkpoints(hf_home: Path, repo_ids: Iterable[str], *, tiny: bool = False) -> dict[str, dict]:
    """Build what is missing under ``hf_home/hub``; return per repo {built: bool, seconds, bytes}.

    ``seconds`` is the time the build took when it ran (now or on an earlier run, from the manifest).
    """
    from tests.tiny_models import install_repo

    hf_home = Path(hf_home)
    hf_home.mkdir(parents=True, exist_ok=True)
    manifest_path = hf_home / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    builders = tiny_builders() if tiny else REALISTIC_BUILDERS
    kind = "tiny" if tiny else "realistic"
    report: dict[str, dict] = {}
    for repo_id in repo_ids:
        entry = manifest.get(repo_id, {})
        snapshot_root = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
        if entry.get("version") == BUILD_VERSION and entry.get("kind") == kind and snapshot_root.exists():
            report[repo_id] = {"built": False, "seconds": entry["seconds"], "bytes": entry["bytes"], "kind": kind}
            continue
        log.info("building %s checkpoint of %s (once per cache)", kind, repo_id)
        started = time.monotonic()
        snapshot = install_repo(hf_home, repo_id, builders[repo_id])
        seconds = time.monotonic() - started
        size = _dir_bytes(snapshot)
        manifest[repo_id] = {"version": BUILD_VERSION, "kind": kind, "seconds": round(seconds, 1), "bytes": size}
        manifest_path.write_text(json.dumps(manifest, indent=2))
        log.info("built %s in %.0f s (%.2f GB)", repo_id, seconds, size / 1e9)
        report[repo_id] = {"built": True, "seconds": round(seconds, 1), "bytes": size, "kind": kind}
    return report
