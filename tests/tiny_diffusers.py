"""Tiny random diffusers pipelines laid out like the real Hugging Face repos, for offline tests.

Companion of ``tiny_models.py`` (same hub-cache layout, same helpers): the builders here write the
diffusers repos ``cvssp/audioldm2``, ``cvssp/audioldm2-music`` and
``stabilityai/stable-audio-open-1.0`` as small random models of the real architectures, with the
real file names (``model_index.json``, ``<component>/config.json``,
``<component>/diffusion_pytorch_model.safetensors`` or ``model.safetensors``,
``scheduler/scheduler_config.json``, tokenizer and feature-extractor files).

What is kept from the real repos (the values product code reads or that fix the audio length):

* AudioLDM2: ``model_index.json`` names the language model ``["transformers", "GPT2Model"]`` and
  ``language_model/config.json`` says ``"architectures": ["GPT2Model"]`` with ``max_new_tokens: 8``,
  exactly like the hub. So ``AudioLDM2Pipeline.from_pretrained(repo)`` loads a bare GPT2Model and
  generation fails in diffusers 0.42.1 + transformers 5.x (diffusers issue #12630); the workaround
  ``language_model=GPT2LMHeadModel.from_pretrained(repo, subfolder="language_model")`` works.
  Vocoder: SpeechT5HifiGan, 16 kHz, 64 mel bins, upsample rates [5, 4, 2, 2, 2] (hop 160 samples =
  10 ms per mel frame). VAE: AutoencoderKL with 3 blocks (scale factor 4), 1 in/out channel,
  8 latent channels. UNet: AudioLDM2UNet2DConditionModel, DownBlock2D + 3 CrossAttnDownBlock2D,
  8 in/out channels, sample_size 256 (the 10.24 s default), cross-attention dims
  ``[None, GPT2 n_embd, T5 d_model]`` per block. Scheduler: DDIMScheduler (betas 0.0015-0.0195,
  scaled_linear). Tokenizers: RoBERTa BPE (CLAP, model_max_length 512) and T5 (128).
* Stable Audio Open: ``StableAudioPipeline`` with CosineDPMSolverMultistepScheduler (needs
  torchsde), T5EncoderModel + T5TokenizerFast (128 tokens), StableAudioProjectionModel
  (conditioning dim = T5 d_model, seconds in [0, 512]), StableAudioDiTModel (2:1 grouped-query cross
  attention) and AutoencoderOobleck (stereo, 44.1 kHz, downsampling ratios [2, 4, 4, 8, 8] = hop 2048).
  The encoder's output holds a mean and a scale per latent channel, so ``encoder_hidden_size`` is twice
  the latent channels (the real repo: 128 and 64; here 16 and 8), which the DiT's in/out channels and
  the decoder's input match: a clip encoded by the VAE can be denoised and decoded, as the real one's
  can. Only the DiT's latent window is short: ``sample_size`` 64 latents = 64 * 2048 / 44100 = 2.97 s
  maximum (the real repo: 1024 latents = 47.55 s).

Not reproduced: the real repos' duplicate ``*.bin`` / fp16 weight files, and Stable Audio's
original-format root files (``model.ckpt``, ``model.safetensors``, ``model_config.json``). The
vocoder's convolutions are re-drawn at unit gain (see ``_unit_gain_convs``) so that the random
AudioLDM2 is audible. ``cvssp/audioldm2-large`` is not built: its UNet config is not known here
(same layout, larger UNet).

Everything is seeded: two builds give byte-identical files. Usage::

    from tests.tiny_models import install_repo
    from tests.tiny_diffusers import DIFFUSERS_BUILDERS
    for repo_id, build in DIFFUSERS_BUILDERS.items():
        install_repo(hf_home, repo_id, build)

``tests.tiny_models.make_tiny_cache`` builds these along with the transformers families.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from pathlib import Path

from tests.tiny_models import _CORPUS, _add_tokenizer_config, _save_model, _Seeded, _write_json, _write_t5_tokenizer

__all__ = [
    "AUDIOLDM2_HOP",
    "AUDIOLDM2_SAMPLING_RATE",
    "DIFFUSERS_BUILDERS",
    "STABLE_AUDIO_HOP",
    "STABLE_AUDIO_MAX_SECONDS",
    "STABLE_AUDIO_SAMPLE_SIZE",
    "STABLE_AUDIO_SAMPLING_RATE",
    "build_audioldm2",
    "build_stable_audio",
]

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _fix_model_index(dst: Path, classes: dict[str, list[str]]) -> None:
    """Write the (library, class) pairs the real model_index.json has where saving wrote others."""
    path = dst / "model_index.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for name, pair in classes.items():
        if name not in data:
            raise KeyError(f"model_index.json has no component {name!r}")
        data[name] = pair
    _write_json(path, data)


def _unit_gain_convs(module, *, seed: int, gain: float = 1.0) -> None:
    """Re-draw every Conv1d / ConvTranspose1d weight with std ``gain / sqrt(fan_in)`` and zero bias.

    SpeechT5HifiGan initialises its convs with std 0.01 (``initializer_range``): at tiny widths
    every layer then shrinks the signal ~10x and a random vocoder outputs ~1e-10, i.e. silence.
    """
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.ConvTranspose1d):
                fan_in = m.in_channels * m.kernel_size[0] / m.stride[0]
            elif isinstance(m, torch.nn.Conv1d):
                fan_in = m.in_channels * m.kernel_size[0] / m.groups
            else:
                continue
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (gain / math.sqrt(fan_in)))
            if m.bias is not None:
                m.bias.zero_()


@functools.lru_cache(maxsize=1)
def _working_oobleck(vae, *, seed: int) -> None:
    """Re-draw a random AutoencoderOobleck so that it behaves like a trained one in the ways tests can see.

    As initialised, the tiny Oobleck's output is its biases: decoding two unrelated latents gives audio with a
    correlation of 0.999, and the encoder's latents have a std of 0.05 (a trained one's are about 1, the
    scheduler's sigma_data), so any noise level buries a clip. Here every conv gets unit-norm random filters times
    0.7 (measured: it keeps the signal's size through the residual stacks; 0.5 shrinks it 100x, 0.85 grows it 10x)
    and zero bias; the encoder's last conv then scales the latent means up and gives the posterior a small std
    (softplus(-4) = 0.018, small beside the means, as a trained VAE's is). Measured: a 0.5-amplitude stereo sine
    encodes to latents of std 1.0 (noise of std 0.3: 4.0); N(0, 1) latents decode to audio of std 0.08, two of them
    to audio with a correlation of 0.26, and adding 0.3x another latent leaves a correlation of 0.93; generated
    audio peaks at 0.3-0.75 (seeds 0-5, 3 steps). The convs are weight-normed (weight_g, weight_v): those are
    redrawn.
    """
    import torch

    gain = 0.7
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                m.weight_v.copy_(torch.randn(m.weight_v.shape, generator=gen))
                m.weight_g.fill_(gain)
                if m.bias is not None:
                    m.bias.zero_()
        last = vae.encoder.conv2  # output channels: the latent means, then the scales
        half = last.out_channels // 2
        last.weight_g[:half].mul_(9.0)
        last.weight_g[half:].mul_(0.1)
        last.bias[half:].fill_(-4.0)


def _roberta_bpe() -> tuple[str, str]:
    """A tiny byte-level BPE in RoBERTa's layout: (vocab.json text, merges.txt text).

    Ids as in roberta-base / laion/clap-htsat-unfused: <s> 0, <pad> 1, </s> 2, <unk> 3, and
    <mask> last. Every byte is in the alphabet, so no text maps to <unk>.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _CORPUS + ["glass breaking", "rain on a tin roof", "a dog barking in the distance"]
    tok.train_from_iterator(corpus * 8, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    vocab["<mask>"] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    vocab_text = json.dumps(vocab, ensure_ascii=False)
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    return vocab_text, merges_text


def _write_roberta_tokenizer(dst: Path, *, model_max_length: int) -> int:
    """RoBERTa tokenizer files as laion/clap-htsat-unfused has them: vocab.json, merges.txt,
    tokenizer.json, tokenizer_config.json, special_tokens_map.json. Returns the vocab size."""
    from transformers import RobertaTokenizer

    vocab_text, merges_text = _roberta_bpe()
    vocab = json.loads(vocab_text)
    merges = [tuple(line.split(" ")) for line in merges_text.splitlines()[1:] if line]
    tok = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    dst.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dst)
    (dst / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (dst / "merges.txt").write_text(merges_text, encoding="utf-8")
    _add_tokenizer_config(
        dst,
        {
            "tokenizer_class": "RobertaTokenizer",
            "model_max_length": model_max_length,
            "vocab_file": "vocab.json",
            "merges_file": "merges.txt",
        },
    )
    _write_json(
        dst / "special_tokens_map.json",
        {
            "bos_token": "<s>",
            "cls_token": "<s>",
            "eos_token": "</s>",
            "mask_token": "<mask>",
            "pad_token": "<pad>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
        },
    )
    return len(vocab)


def _write_t5_tokenizer_dir(dst: Path, *, model_max_length: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    _write_t5_tokenizer(dst)
    _add_tokenizer_config(dst, {"model_max_length": model_max_length})


def _tiny_t5_config(*, d_model: int, feed_forward_proj: str):
    from transformers import T5Config

    return T5Config(
        vocab_size=32128,  # like the real T5s; the tiny tokenizer uses the first few hundred ids
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=d_model // 8,
        feed_forward_proj=feed_forward_proj,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


# --------------------------------------------------------------------------------------------
# AudioLDM2 (cvssp/audioldm2, cvssp/audioldm2-music)
# --------------------------------------------------------------------------------------------

AUDIOLDM2_SAMPLING_RATE = 16000
AUDIOLDM2_UPSAMPLE_RATES = [5, 4, 2, 2, 2]
AUDIOLDM2_HOP = 160  # samples per mel frame = prod(upsample_rates): 100 frames/s
AUDIOLDM2_MEL_BINS = 64  # vocoder model_in_dim
AUDIOLDM2_VAE_SCALE = 4  # 2 ** (len(vae block_out_channels) - 1)
AUDIOLDM2_SAMPLE_SIZE = 256  # unet sample_size: default length 256 * 4 * 160 / 16000 = 10.24 s
AUDIOLDM2_MAX_NEW_TOKENS = 8  # language_model/config.json max_new_tokens (as in the real repos)

# Distinct widths, so a wiring mistake fails loudly instead of happening to fit.
_CLAP_PROJECTION_DIM = 16  # real: 512
_AUDIOLDM2_T5_DIM = 32  # real: 1024 (flan-t5-large)
_GPT2_DIM = 24  # real: 768


def build_audioldm2(dst: Path, *, seed: int = 5150) -> None:
    """cvssp/audioldm2 and cvssp/audioldm2-music (same architecture and layout)."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        RobertaTokenizer,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5EncoderModel,
        T5Tokenizer,
    )

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    # Tokenizers first: the CLAP text model's vocab is sized from the RoBERTa one.
    clap_vocab_size = _write_roberta_tokenizer(dst / "tokenizer", model_max_length=512)
    _write_t5_tokenizer_dir(dst / "tokenizer_2", model_max_length=128)
    tokenizer = RobertaTokenizer.from_pretrained(dst / "tokenizer")
    tokenizer_2 = T5Tokenizer.from_pretrained(dst / "tokenizer_2")

    with _Seeded(seed):
        clap_config = ClapConfig(
            text_config=ClapTextConfig(
                vocab_size=clap_vocab_size,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=514,  # 512 tokens + RoBERTa's padding offset, as in CLAP
                projection_dim=_CLAP_PROJECTION_DIM,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
            ).to_dict(),
            audio_config=ClapAudioConfig(
                # HTSAT: 64 mel bins like the feature extractor; spec 256 as in the real model, so 10 s of
                # features (1001 frames) fit the Swin input when candidates are ranked; a tiny Swin (window 8).
                spec_size=256,
                window_size=8,
                num_mel_bins=64,
                patch_size=4,
                patch_stride=(4, 4),
                patch_embeds_hidden_size=8,
                hidden_size=16,
                depths=[1, 1],
                num_attention_heads=[2, 2],
                num_hidden_layers=2,
                projection_dim=_CLAP_PROJECTION_DIM,
                enable_fusion=False,
                mlp_ratio=2.0,
            ).to_dict(),
            projection_dim=_CLAP_PROJECTION_DIM,
        )
        text_encoder = ClapModel(clap_config).eval()

        text_encoder_2 = T5EncoderModel(_tiny_t5_config(d_model=_AUDIOLDM2_T5_DIM, feed_forward_proj="gated-gelu"))
        text_encoder_2.eval()

        gpt2_config = GPT2Config(
            vocab_size=50257,
            n_positions=1024,
            n_embd=_GPT2_DIM,
            n_layer=2,
            n_head=2,
            architectures=["GPT2Model"],
        )
        gpt2_config.max_new_tokens = AUDIOLDM2_MAX_NEW_TOKENS  # the real config.json has it; the pipeline reads it
        language_model = GPT2Model(gpt2_config).eval()

        projection_model = AudioLDM2ProjectionModel(
            text_encoder_dim=_CLAP_PROJECTION_DIM,
            text_encoder_1_dim=_AUDIOLDM2_T5_DIM,
            langauge_model_dim=_GPT2_DIM,  # sic: diffusers spells it so
        )

        unet = AudioLDM2UNet2DConditionModel(
            sample_size=AUDIOLDM2_SAMPLE_SIZE,
            in_channels=8,
            out_channels=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(8, 16, 24, 40),  # the real (128, 256, 384, 640) / 16
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=2,
            cross_attention_dim=([None, _GPT2_DIM, _AUDIOLDM2_T5_DIM],) * 4,
        )

        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            latent_channels=8,
            norm_num_groups=8,
            sample_size=1024,
        )

        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=AUDIOLDM2_MEL_BINS,
                sampling_rate=AUDIOLDM2_SAMPLING_RATE,
                upsample_initial_channel=32,  # halves per upsampling stage: 16, 8, 4, 2, 1
                upsample_rates=AUDIOLDM2_UPSAMPLE_RATES,
                upsample_kernel_sizes=[16, 16, 8, 4, 4],
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3]],
                normalize_before=False,
            )
        ).eval()
        _unit_gain_convs(vocoder, seed=seed + 1, gain=1.5)

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type="epsilon",
    )
    feature_extractor = ClapFeatureExtractor()  # the laion/clap-htsat-unfused values (48 kHz, 64 mels)

    pipe = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )
    assert pipe.vae_scale_factor == AUDIOLDM2_VAE_SCALE
    _save_model(pipe, dst)  # DiffusionPipeline.save_pretrained(dst, safe_serialization=True)
    # Saving rewrote the tokenizer folders from the in-memory tokenizers: put back the real files.
    _write_roberta_tokenizer(dst / "tokenizer", model_max_length=512)
    _write_t5_tokenizer_dir(dst / "tokenizer_2", model_max_length=128)
    _fix_model_index(
        dst,
        {
            "language_model": ["transformers", "GPT2Model"],
            "tokenizer": ["transformers", "RobertaTokenizerFast"],
            "tokenizer_2": ["transformers", "T5TokenizerFast"],
        },
    )


# --------------------------------------------------------------------------------------------
# Stable Audio Open (stabilityai/stable-audio-open-1.0)
# --------------------------------------------------------------------------------------------

STABLE_AUDIO_SAMPLING_RATE = 44100
STABLE_AUDIO_DOWNSAMPLING = [2, 4, 4, 8, 8]
STABLE_AUDIO_HOP = 2048  # samples per latent = prod(downsampling_ratios)
STABLE_AUDIO_SAMPLE_SIZE = 64  # transformer sample_size in latents: 2.97 s (the real repo: 1024 = 47.55 s)
STABLE_AUDIO_MAX_SECONDS = STABLE_AUDIO_SAMPLE_SIZE * STABLE_AUDIO_HOP / STABLE_AUDIO_SAMPLING_RATE  # 2.97 s
# Latent channels (the real repo: 64). The Oobleck encoder's last conv gives encoder_hidden_size channels, split
# into a mean and a scale, so it must be twice this for an encoded clip to fit the DiT and the decoder.
STABLE_AUDIO_LATENT_CHANNELS = 8
_STABLE_AUDIO_T5_DIM = 32  # real: 768 (t5-base); the conditioning dim equals it, as in the real repo


def build_stable_audio(dst: Path, *, seed: int = 4410) -> None:
    """stabilityai/stable-audio-open-1.0 (the diffusers folders of the gated repo)."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5EncoderModel, T5Tokenizer

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    _write_t5_tokenizer_dir(dst / "tokenizer", model_max_length=128)
    tokenizer = T5Tokenizer.from_pretrained(dst / "tokenizer")
    cond_dim = _STABLE_AUDIO_T5_DIM
    head_dim = 8

    with _Seeded(seed):
        text_encoder = T5EncoderModel(_tiny_t5_config(d_model=_STABLE_AUDIO_T5_DIM, feed_forward_proj="relu")).eval()
        projection_model = StableAudioProjectionModel(
            text_encoder_dim=_STABLE_AUDIO_T5_DIM,
            conditioning_dim=cond_dim,  # == text_encoder_dim: the text projection is an Identity, as in the real one
            min_value=0,
            max_value=512,
        )
        transformer = StableAudioDiTModel(
            sample_size=STABLE_AUDIO_SAMPLE_SIZE,
            in_channels=STABLE_AUDIO_LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=head_dim,
            num_attention_heads=8,
            num_key_value_attention_heads=cond_dim // head_dim,  # 4: 2:1 grouped-query like the real 24:12
            out_channels=STABLE_AUDIO_LATENT_CHANNELS,
            cross_attention_dim=cond_dim,
            time_proj_dim=16,
            global_states_input_dim=2 * cond_dim,  # start and end seconds embeddings, concatenated
            cross_attention_input_dim=cond_dim,
        )
        with warnings.catch_warnings():  # Oobleck uses the deprecated torch.nn.utils.weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            vae = AutoencoderOobleck(
                encoder_hidden_size=2 * STABLE_AUDIO_LATENT_CHANNELS,  # a mean and a scale per latent channel
                downsampling_ratios=STABLE_AUDIO_DOWNSAMPLING,
                channel_multiples=[1, 2, 4, 8, 16],
                decoder_channels=4,
                decoder_input_channels=STABLE_AUDIO_LATENT_CHANNELS,
                audio_channels=2,
                sampling_rate=STABLE_AUDIO_SAMPLING_RATE,
            )
        _working_oobleck(vae, seed=seed + 1)
    assert vae.hop_length == STABLE_AUDIO_HOP
    scheduler = CosineDPMSolverMultistepScheduler(
        sigma_min=0.3,
        sigma_max=500,
        sigma_data=1.0,
        sigma_schedule="exponential",
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="v_prediction",
        rho=7.0,
        solver_type="midpoint",
        lower_order_final=True,
        euler_at_final=False,
        final_sigmas_type="zero",
    )
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection_model,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    _save_model(pipe, dst)  # DiffusionPipeline.save_pretrained(dst, safe_serialization=True)
    _write_t5_tokenizer_dir(dst / "tokenizer", model_max_length=128)
    _fix_model_index(dst, {"tokenizer": ["transformers", "T5TokenizerFast"]})


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------

DIFFUSERS_BUILDERS: dict[str, Callable[[Path], None]] = {
    "cvssp/audioldm2": build_audioldm2,
    "cvssp/audioldm2-music": build_audioldm2,
    "stabilityai/stable-audio-open-1.0": build_stable_audio,
}
