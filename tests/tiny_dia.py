"""A tiny random Dia laid out like ``nari-labs/Dia-1.6B-0626`` and its DAC codec ``descript/dac_44khz``, offline.

Companion of ``tiny_models.py`` (same hub-cache layout, same helpers). The real repo is what transformers'
``src/transformers/models/dia/convert_dia_to_hf.py`` writes: ``model.save_pretrained`` (config.json with the
encoder and decoder sub-configs and the delay pattern; generation_config.json from ``get_generation_config``:
sampling, top_k 45, top_p 0.95, temperature 1.2, guidance 3.0, max_length 3072) and
``DiaProcessor(DiaFeatureExtractor(sampling_rate=44100, hop_length=512), DiaTokenizer(),
DacModel.from_pretrained("descript/dac_44khz")).save_pretrained`` (processor_config.json holding the feature
extractor and a pointer to the DAC repo, tokenizer_config.json). The DAC weights are not in the Dia repo: the
processor loads them from ``descript/dac_44khz`` by the name its processor_config.json keeps, so the DAC is a
second tiny repo here too.

Kept from the real repos (the values product code or the library read): the decoder's 9 channels, vocabulary 1028
(1024 codes + EOS 1024, PAD 1025, BOS 1026), the delay pattern [0, 8, ..., 15], the decoder's 3072 positions (the
length limit) and the encoder's 1024 (the text limit); the byte tokenizer ([S1]/[S2] as ids 1 and 2, every UTF-8
byte a token: no text is unknown); the DAC's 44.1 kHz, downsampling [2, 4, 8, 8] (512 samples a frame, 86.1 frames a
second), 9 codebooks of 1024 codes. Only widths and depths are tiny (one layer each, 4-16 wide). DAC's codebooks are
nn.Embedding tables drawn at random, so codes decode to sound, and different clips encode to different codes.
Seeded: two builds give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.tiny_models import _Seeded, _save_model

__all__ = ["DAC_REPO", "DIA_BUILDERS", "DIA_REPO", "build_dac", "build_dia"]

DIA_REPO = "nari-labs/Dia-1.6B-0626"
DAC_REPO = "descript/dac_44khz"
SEED = 1526


def _dac(published: bool = False):
    """The tiny DAC, the same every time (the Dia repo's processor and the DAC repo hold the same one);
    `published`: descript/dac_44khz's widths (bench/dia_cpu.py), for the benchmark's realistic-size build."""
    from transformers import DacConfig, DacModel

    widths = dict(encoder_hidden_size=64, decoder_hidden_size=1536, codebook_dim=8) if published else \
        dict(encoder_hidden_size=2, decoder_hidden_size=16, codebook_dim=2)
    config = DacConfig(downsampling_ratios=[2, 4, 8, 8], n_codebooks=9, codebook_size=1024, sampling_rate=44100,
                       **widths)
    with _Seeded(SEED):
        dac = DacModel(config).eval()
    dac.name_or_path = DAC_REPO  # what the processor writes into processor_config.json
    return dac


def build_dac(dst: Path, *, published: bool = False) -> None:
    from transformers import DacFeatureExtractor

    _save_model(_dac(published), dst)
    DacFeatureExtractor(sampling_rate=44100, hop_length=512).save_pretrained(dst)


def build_dia(dst: Path, *, decoder_layers: int | None = None) -> None:
    """The tiny Dia; with `decoder_layers`, the published widths (DiaConfig's defaults are Nari Labs' 1.6B: a
    12-layer encoder of 1024, an 18-layer decoder of 2048) with that many decoder layers, and the published DAC, for
    the benchmark's realistic-size build."""
    import torch
    from transformers import (DiaConfig, DiaFeatureExtractor, DiaForConditionalGeneration, DiaProcessor,
                              DiaTokenizer, GenerationConfig)

    published = decoder_layers is not None
    encoder = dict(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, num_key_value_heads=2, head_dim=4,
                   intermediate_size=16, vocab_size=256, max_position_embeddings=1024)
    decoder = dict(num_hidden_layers=1, hidden_size=4, intermediate_size=8, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=4, cross_num_attention_heads=2, cross_head_dim=4,
                   cross_num_key_value_heads=2, cross_hidden_size=8, vocab_size=1028, num_channels=9,
                   max_position_embeddings=3072)
    config = DiaConfig(encoder_config=encoder, decoder_config=decoder) if not published else \
        DiaConfig(decoder_config={"num_hidden_layers": decoder_layers})
    with _Seeded(SEED + 1):
        model = DiaForConditionalGeneration(config).eval()
    if published:
        # Channel 0's EOS ends a run when it is the likeliest code (DiaEOSChannelFilterLogitsProcessor): a random
        # head makes it so about once in 1,025 steps, at random. A zero row gives it a logit of 0, below the best of
        # the 1,024 random others: every run goes to its cap, as the benchmark's estimates assume.
        with torch.no_grad():
            vocab = config.decoder_config.vocab_size
            model.logits_dense.weight[config.decoder_config.eos_token_id].zero_()
            assert model.logits_dense.weight.shape[0] == config.decoder_config.num_channels * vocab
    # convert_dia_to_hf.get_generation_config
    generation = GenerationConfig.from_model_config(config)
    generation._from_model_config = False
    generation.do_sample = True
    generation.top_k = 45
    generation.top_p = 0.95
    generation.temperature = 1.2
    generation.guidance_scale = 3.0
    generation.max_length = 3072
    model.generation_config = generation
    processor = DiaProcessor(DiaFeatureExtractor(sampling_rate=44100, hop_length=512), DiaTokenizer(),
                             _dac(published))
    processor.save_pretrained(dst)
    _save_model(model, dst)


DIA_BUILDERS: dict[str, Callable[[Path], None]] = {DIA_REPO: build_dia, DAC_REPO: build_dac}
