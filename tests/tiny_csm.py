"""A tiny random CSM laid out like ``sesame/csm-1b``, offline.

Companion of ``tiny_models.py`` (same hub-cache layout, same helpers). The real repo is what transformers'
``src/transformers/models/csm/convert_csm.py`` writes, all in ONE repo:

* ``write_model``: ``CsmForConditionalGeneration.save_pretrained`` with the Mimi codec INSIDE (config.json's
  ``codec_config`` is ``MimiModel.from_pretrained("kyutai/mimi").config``, and the codec's weights are saved as
  ``codec_model.*`` in the same model.safetensors), and the generation config it sets (sampling, top_k 50,
  temperature 0.9, max_new_tokens 125, the same three for the depth decoder, saved as ``depth_decoder_*`` keys);
* ``write_tokenizer``: Llama 3.2's tokenizer (byte-level BPE) with a post-processor ``<|begin_of_text|> $A
  <|end_of_text|>``, pad = eos, and the ids right after the BPE vocabulary renamed ``<|AUDIO|>`` and
  ``<|audio_eos|>`` (128002, 128003: the config's ``audio_token_id`` / ``audio_eos_token_id``);
* ``write_processor``: ``CsmProcessor(tokenizer, AutoFeatureExtractor.from_pretrained("kyutai/mimi"),
  chat_template)`` (an EncodecFeatureExtractor at 24 kHz; the chat template copied verbatim below).

Kept from the real model (what the adapter or the library reads): 24 kHz; Mimi's upsampling ratios [8, 6, 5, 4] and
its frame rate 12.5 (1920 samples a frame: CsmProcessor's hard-coded ``encoded_length_kwargs`` count a clip's frames
with exactly these kernels and strides); 2048 codes a codebook and the audio vocabulary of 2051 (codes 2048-2050 are
CSM's specials, which Mimi cannot decode); codebook EOS 0 and PAD 2050; the backbone's 2048 positions (the window
the adapter derives its limits from); the token layout and the chat template. Tiny: widths 4-16, one layer each,
4 codebooks instead of 32 (the codec's quantizers with them), a byte-level BPE of about 300 tokens. Mimi's
codebooks are zero buffers when built from a config: they are filled with noise so codes decode to sound and
different clips encode to different codes. Seeded: two builds give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models import _CORPUS, _Seeded, _save_model

__all__ = ["CSM_BUILDERS", "CSM_REPO", "build_csm"]

CSM_REPO = "sesame/csm-1b"
SEED = 1700
CODEBOOKS = 4  # real: 32
SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>")  # Llama 3's 128000.. order
# convert_csm.write_processor's chat template, verbatim.
CHAT_TEMPLATE = "\n{%- for message in messages %}\n    {#-- Validate role is a stringified integer --#}\n    {%- if not message['role'] is string or not message['role'].isdigit() %}\n        {{- raise_exception(\"The role must be an integer or a stringified integer (e.g. '0') designating the speaker id\") }}\n    {%- endif %}\n\n    {#-- Validate content is a list --#}\n    {%- set content = message['content'] %}\n    {%- if content is not iterable or content is string %}\n        {{- raise_exception(\"The content must be a list\") }}\n    {%- endif %}\n\n    {#-- Collect content types --#}\n    {%- set content_types = content | map(attribute='type') | list %}\n    {%- set is_last = loop.last %}\n\n    {#-- Last message validation --#}\n    {%- if is_last %}\n        {%- if 'text' not in content_types %}\n            {{- raise_exception(\"The last message must include one item of type 'text'\") }}\n        {%- elif (content_types | select('equalto', 'text') | list | length > 1) or (content_types | select('equalto', 'audio') | list | length > 1) %}\n            {{- raise_exception(\"At most two items are allowed in the last message: one 'text' and one 'audio'\") }}\n        {%- endif %}\n\n    {#-- All other messages validation --#}\n    {%- else %}\n        {%- if content_types | select('equalto', 'text') | list | length != 1\n              or content_types | select('equalto', 'audio') | list | length != 1 %}\n            {{- raise_exception(\"Each message (except the last) must contain exactly one 'text' and one 'audio' item\") }}\n        {%- elif content_types | reject('in', ['text', 'audio']) | list | length > 0 %}\n            {{- raise_exception(\"Only 'text' and 'audio' types are allowed in content\") }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n\n{%- for message in messages %}\n    {{- bos_token }}\n    {{- '[' + message['role'] + ']' }}\n    {{- message['content'][0]['text'] }}\n    {{- eos_token }}\n    {%- if message['content']|length > 1 %}\n        {{- '<|AUDIO|><|audio_eos|>' }}\n    {%- endif %}\n{%- endfor %}\n"  # noqa: E501


def _tokenizer():
    """A byte-level BPE (as Llama 3's: no text is unknown) trained on the studio's corpus, the four specials after it,
    and convert_csm's post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    backend.add_special_tokens(list(SPECIALS))
    bos, eos = SPECIALS[0], SPECIALS[1]
    backend.post_processor = TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0", pair=f"{bos}:0 $A:0 {eos}:0 {bos}:1 $B:1 {eos}:1",
        special_tokens=[(bos, backend.token_to_id(bos)), (eos, backend.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=eos)


def _model(tokenizer, backbone_layers: int | None = None):
    """The tiny CSM; with `backbone_layers`, the published widths (CsmConfig()'s defaults and MimiConfig(num_quantizers=
    32), as convert_csm.py builds sesame/csm-1b: a 2048-wide backbone, the 4-layer depth decoder, 32 codebooks, the
    128,256-row text table) with that many of the backbone's 16 layers, for the benchmark's realistic-size build."""
    import torch
    from transformers import CsmConfig, CsmForConditionalGeneration, MimiConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    special_ids = dict(bos_token_id=ids["<|begin_of_text|>"], pad_token_id=ids["<|AUDIO|>"],
                       audio_token_id=ids["<|AUDIO|>"], audio_eos_token_id=ids["<|audio_eos|>"])
    if backbone_layers is not None:
        config = CsmConfig(num_hidden_layers=backbone_layers, codec_config=MimiConfig(num_quantizers=32).to_dict(),
                           **special_ids)
    else:
        codec = MimiConfig(hidden_size=16, num_filters=2, num_residual_layers=1, upsampling_ratios=[8, 6, 5, 4],
                           codebook_size=2048, codebook_dim=2, vector_quantization_hidden_dimension=2,
                           num_quantizers=CODEBOOKS, num_semantic_quantizers=1, upsample_groups=16,
                           num_hidden_layers=1, intermediate_size=16, num_attention_heads=2, num_key_value_heads=2,
                           head_dim=8, sliding_window=250, max_position_embeddings=8000)
        depth = dict(num_codebooks=CODEBOOKS, backbone_hidden_size=8, vocab_size=2051, hidden_size=4,
                     intermediate_size=8, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                     max_position_embeddings=CODEBOOKS + 1)
        config = CsmConfig(
            num_codebooks=CODEBOOKS, vocab_size=2051, text_vocab_size=len(tokenizer), hidden_size=8,
            intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=2048, codebook_pad_token_id=2050, codebook_eos_token_id=0,
            depth_decoder_config=depth, codec_config=codec.to_dict(), **special_ids,
        )
    with _Seeded(SEED):
        model = CsmForConditionalGeneration(config).eval()
        with torch.no_grad():  # Mimi's codebooks: noise, not zeros (see the module docstring)
            for layer in model.codec_model.quantizer.modules():
                if hasattr(layer, "embed_sum"):
                    layer.embed_sum.copy_(torch.randn_like(layer.embed_sum))
                    layer._embed = None
            if backbone_layers is not None:
                # A turn ends at the frame whose codebooks 0-30 are all codebook_eos_token_id (generation_csm.py
                # _sample's "Csm specific" EOS check). A zero row of the first codebook's head gives code 0 a logit
                # of 0, below the 50 best of 2,047 random others (top_k 50): codebook 0 never samples it, so no
                # frame is an EOS frame and every turn runs to the studio's cap, as the benchmark's estimates assume.
                model.lm_head.weight[config.codebook_eos_token_id].zero_()
    # convert_csm.write_model's generation config
    generation = model.generation_config
    generation._from_model_config = False
    generation.max_new_tokens = 125
    generation.do_sample = True
    generation.top_k = 50
    generation.temperature = 0.9
    depth_generation = model.depth_decoder.generation_config
    depth_generation.do_sample = True
    depth_generation.top_k = 50
    depth_generation.temperature = 0.9
    return model


def build_csm(dst: Path, *, backbone_layers: int | None = None) -> None:
    """The tiny CSM; `backbone_layers`: the published widths with that many backbone layers (see _model)."""
    from transformers import CsmProcessor, EncodecFeatureExtractor

    tokenizer = _tokenizer()
    model = _model(tokenizer, backbone_layers)
    _save_model(model, dst)
    # kyutai/mimi's preprocessor_config.json: an EncodecFeatureExtractor, mono, 24 kHz, no chunking
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0)
    CsmProcessor(features, tokenizer, chat_template=CHAT_TEMPLATE).save_pretrained(dst)


CSM_BUILDERS = {CSM_REPO: build_csm}
