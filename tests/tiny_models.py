"""Tiny random checkpoints laid out like the real Hugging Face repos, for offline tests.

The builders write, under the real repo ids, a Hugging Face hub cache (``HF_HOME/hub``) holding
small random models of the real architectures, with the same file names as the real repos
(config.json, generation_config.json, model.safetensors, tokenizer files, preprocessor configs,
Bark's voice presets). Product code that runs
``MusicgenForConditionalGeneration.from_pretrained("facebook/musicgen-small")`` with
``HF_HUB_OFFLINE=1`` and ``HF_HOME=<that dir>`` loads them like the real ones.

Everything is seeded: two builds give byte-identical weights, and a seeded generation gives the
same audio. The config values that product code may read (sampling rates, frame rates, codebook
sizes, token ids, number of codebooks, audio channels) are those of the real repos; only the
widths, depths and the generation length limits are tiny.

Usage::

    make_tiny_cache(tmp_path)            # all repos in TINY_BUILDERS
    env = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}   # set before importing huggingface_hub
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import string
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "TINY_BUILDERS",
    "build_bark",
    "build_mms_tts",
    "build_musicgen",
    "install_repo",
    "make_tiny_cache",
]

# --------------------------------------------------------------------------------------------
# The hub cache
# --------------------------------------------------------------------------------------------


def _fake_commit(repo_id: str) -> str:
    """A 40-hex "commit sha", the same for the same repo id on every run."""
    return hashlib.sha1(f"audio-studio-tiny:{repo_id}".encode()).hexdigest()


def install_repo(hf_home: Path, repo_id: str, build: Callable[[Path], None]) -> Path:
    """Make ``hf_home/hub/models--{org}--{name}`` with ``refs/main`` and ``snapshots/<sha>/``.

    ``build(snapshot_dir)`` writes the repo's files; they are plain files in the snapshot
    directory (no blobs/ or symlinks), which huggingface_hub's offline resolution accepts.
    An existing snapshot of the same repo is replaced. Returns the snapshot directory.
    """
    org, sep, name = repo_id.partition("/")
    if not sep or not org or not name or "/" in name:
        raise ValueError(f"repo id must look like 'org/name', got {repo_id!r}")
    repo_dir = Path(hf_home) / "hub" / f"models--{org}--{name}"
    sha = _fake_commit(repo_id)
    snapshot = repo_dir / "snapshots" / sha
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    build(snapshot)
    refs = repo_dir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(sha)  # the hub writes the sha without a newline
    return snapshot


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class _Seeded:
    """``torch.manual_seed(seed)`` for the block, leaving the caller's RNG state untouched."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._ctx = torch.random.fork_rng(devices=[])
        self._ctx.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _fill_encodec_codebooks(codec, seed: int) -> None:
    """EnCodec's codebooks are zero-initialised buffers: give them noise so codes decode to sound."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            book = layer.codebook
            noise = torch.randn(book.embed.shape, generator=gen)
            book.embed.copy_(noise)
            book.embed_avg.copy_(noise)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(1.0)


def _save_model(model, dst: Path) -> None:
    model.save_pretrained(dst, safe_serialization=True)


# English text that the tiny tokenizers are trained on / built from: prompts of the kind the
# studio sends, plus every ASCII letter, digit and punctuation mark so nothing maps to <unk>.
_CORPUS = [
    "An upbeat electronic dance track with heavy bass and bright synth leads.",
    "A calm acoustic guitar melody with soft piano chords and a lo-fi hip hop beat.",
    "80s pop track with bassy drums and synth, 120 bpm.",
    "90s rock song with loud guitars and heavy drums.",
    "A grand orchestral arrangement with thunderous percussion, epic brass fanfares and soaring strings.",
    "Smooth jazz with a walking bass line, brushed drums and a warm saxophone solo.",
    "Ambient soundscape with slow evolving pads, gentle rain and distant bells.",
    "Happy ukulele tune for a summer video, whistling and hand claps.",
    "Dark cinematic trailer music with deep drums and tense violins.",
    "Classical piano sonata in a minor key, slow and sad.",
    "Funky disco groove with slap bass, wah guitar and string stabs.",
    "Reggae rhythm with offbeat guitar chords and a relaxed vocal hum.",
    "Techno loop with a driving kick drum, hi-hats and acid synth.",
    "Country song with banjo, fiddle and a steady acoustic strum.",
    "Hello, my dog is cute. I need him in my life!",
    "Hello world, this is a test of the text to speech voice.",
    "The quick brown fox jumps over the lazy dog.",
    "Welcome to Audio Studio. Type a prompt and press generate.",
    "Good morning! How are you today? I am fine, thank you.",
    "It's a beautiful day in the neighborhood, isn't it?",
    "Please read this sentence slowly and clearly.",
    "Once upon a time there was a little girl who loved music.",
    "Music, speech and sound effects from a single studio.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "[laughs] That was funny... [sighs] Well, let's try again.",
    "Guten Morgen, wie geht es dir? Bonjour, comment allez-vous?",
    string.ascii_lowercase,
    string.ascii_uppercase,
    string.digits,
    string.punctuation,
]


@functools.lru_cache(maxsize=1)
def _t5_spiece() -> bytes:
    """A tiny unigram sentencepiece model in T5's layout (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 8),
        model_writer=out,
        vocab_size=400,
        hard_vocab_limit=False,  # the corpus is small: take what it gives
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        normalization_rule_name="identity",  # tokenizer.json (no protobuf here) can match it exactly
        num_threads=1,
        minloglevel=2,
    )
    return out.getvalue()


def _write_t5_tokenizer(dst: Path) -> None:
    """T5 tokenizer files as the MusicGen repos have them: spiece.model, tokenizer.json,
    tokenizer_config.json, special_tokens_map.json."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    model_bytes = _t5_spiece()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    # T5 keeps its 100 sentinels at the end of the vocab, in reverse (<extra_id_0> is the last id).
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tok = T5Tokenizer(vocab=vocab, extra_ids=100, model_max_length=512)
    tok.save_pretrained(dst)
    (dst / "spiece.model").write_bytes(model_bytes)
    _add_tokenizer_config(dst, {"tokenizer_class": "T5Tokenizer", "vocab_file": "spiece.model"})
    _write_json(
        dst / "special_tokens_map.json",
        {
            "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)],
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
        },
    )


def _add_tokenizer_config(dst: Path, extra: dict) -> None:
    path = dst / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.update(extra)
    _write_json(path, data)


# --------------------------------------------------------------------------------------------
# MusicGen
# --------------------------------------------------------------------------------------------

# The real MusicGen repos: EnCodec 32 kHz with 640-sample hop (50 frames/s), 2048-entry codebooks,
# target bandwidth 2.2 kbps -> 4 codebooks; stereo repos interleave two mono streams (8 codebooks).
MUSICGEN_SAMPLING_RATE = 32000
MUSICGEN_HOP = 640
MUSICGEN_CODEBOOK_SIZE = 2048
MUSICGEN_MAX_LENGTH = 64  # generation_config max_length (the real repos: 1500 = 30 s)


def _musicgen_configs(*, stereo: bool):
    from transformers import EncodecConfig, T5Config

    text = T5Config(
        vocab_size=32128,  # like t5-base; the tokenizer uses the first few hundred ids
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        feed_forward_proj="relu",
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    audio = EncodecConfig(
        sampling_rate=MUSICGEN_SAMPLING_RATE,
        audio_channels=1,  # the stereo repos keep the mono facebook/encodec_32khz codec
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=MUSICGEN_CODEBOOK_SIZE,
        num_filters=4,
        hidden_size=16,
        num_lstm_layers=1,
        use_causal_conv=False,
        normalize=False,
        use_conv_shortcut=False,
        chunk_length_s=None,
        overlap=None,
    )
    assert audio.hop_length == MUSICGEN_HOP and audio.frame_rate == 50 and audio.num_quantizers == 4
    decoder_kwargs = dict(
        vocab_size=MUSICGEN_CODEBOOK_SIZE,
        max_position_embeddings=2048,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=64,
        num_codebooks=8 if stereo else 4,
        audio_channels=2 if stereo else 1,
        pad_token_id=MUSICGEN_CODEBOOK_SIZE,
        bos_token_id=MUSICGEN_CODEBOOK_SIZE,
        tie_word_embeddings=False,
    )
    return text, audio, decoder_kwargs


def build_musicgen(dst: Path, *, melody: bool = False, stereo: bool = False) -> None:
    """facebook/musicgen-{small,medium,large}, -melody (``melody=True``), -stereo-* (``stereo=True``)."""
    from transformers import EncodecFeatureExtractor, GenerationConfig

    if melody and stereo:
        raise ValueError("no tiny builder for musicgen-stereo-melody")
    dst = Path(dst)
    text, audio, decoder_kwargs = _musicgen_configs(stereo=stereo)
    with _Seeded(1234 + 2 * int(melody) + int(stereo)):
        if melody:
            from transformers import (
                MusicgenMelodyConfig,
                MusicgenMelodyDecoderConfig,
                MusicgenMelodyForConditionalGeneration,
            )

            config = MusicgenMelodyConfig(
                text_encoder=text.to_dict(),
                audio_encoder=audio.to_dict(),
                decoder=MusicgenMelodyDecoderConfig(**decoder_kwargs).to_dict(),
                num_chroma=12,
                chroma_length=235,
            )
            model = MusicgenMelodyForConditionalGeneration(config)
        else:
            from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

            config = MusicgenConfig(
                text_encoder=text.to_dict(),
                audio_encoder=audio.to_dict(),
                decoder=MusicgenDecoderConfig(**decoder_kwargs).to_dict(),
            )
            model = MusicgenForConditionalGeneration(config)
        _fill_encodec_codebooks(model.audio_encoder, seed=99)
        model.eval()
        model.generation_config = GenerationConfig(
            bos_token_id=MUSICGEN_CODEBOOK_SIZE,
            decoder_start_token_id=MUSICGEN_CODEBOOK_SIZE,
            pad_token_id=MUSICGEN_CODEBOOK_SIZE,
            do_sample=True,
            guidance_scale=3.0,
            max_length=MUSICGEN_MAX_LENGTH,
        )
        _save_model(model, dst)

    _write_t5_tokenizer(dst)
    if melody:
        # MusicgenMelodyFeatureExtractor needs torchaudio to be built, so write its config as the
        # real repo has it (AutoProcessor for this repo fails without torchaudio, like the real one).
        _write_json(
            dst / "preprocessor_config.json",
            {
                "chunk_length": 30,
                "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
                "feature_size": 12,
                "hop_length": 4096,
                "n_fft": 16384,
                "num_chroma": 12,
                "padding_side": "left",
                "padding_value": 0.0,
                "processor_class": "MusicgenMelodyProcessor",
                "return_attention_mask": True,
                "sampling_rate": MUSICGEN_SAMPLING_RATE,
                "stem_indices": [3, 2],
            },
        )
        _add_tokenizer_config(dst, {"processor_class": "MusicgenMelodyProcessor"})
    else:
        fe = EncodecFeatureExtractor(
            feature_size=2 if stereo else 1,
            sampling_rate=MUSICGEN_SAMPLING_RATE,
            padding_side="left",
            padding_value=0.0,
            chunk_length_s=None,
            overlap=None,
            return_attention_mask=True,
        )
        fe.save_pretrained(dst)
        _add_json_key(dst / "preprocessor_config.json", "processor_class", "MusicgenProcessor")
        _add_tokenizer_config(dst, {"processor_class": "MusicgenProcessor"})


def _add_json_key(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data[key] = value
    _write_json(path, data)


# --------------------------------------------------------------------------------------------
# Bark
# --------------------------------------------------------------------------------------------

BARK_SAMPLING_RATE = 24000
BARK_HOP = 320  # facebook/encodec_24khz: 75 frames/s
BARK_CODEBOOK_SIZE = 1024
BARK_SEMANTIC_MAX_NEW_TOKENS = 48  # generation_config (the real repos: 768)
BARK_VOICE_PRESETS = ("announcer", "v2/en_speaker_0", "v2/en_speaker_6", "v2/de_speaker_1")
_BARK_PRESET_SEMANTIC_LEN = 64
_BARK_PRESET_ACOUSTIC_LEN = 96  # ~ 64 * 75 / 49.9


def _bark_vocab() -> list[str]:
    """A small bert-base-multilingual-cased-like vocab.txt (same special-token ids)."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = string.punctuation + string.digits + string.ascii_letters + "äöüßÄÖÜéèêàçôœ"
    vocab += list(dict.fromkeys(chars))
    words: dict[str, None] = {}
    for line in _CORPUS:
        for raw in line.replace("'", " ' ").split():
            word = raw.strip(string.punctuation)
            if len(word) > 1:
                words[word] = None
    vocab += [w for w in words if w not in vocab]
    vocab += [f"##{c}" for c in dict.fromkeys(string.digits + string.ascii_letters + "äöüßéèêàçôœ")]
    vocab += ["##s", "##ed", "##ing", "##er", "##ly"]
    return list(dict.fromkeys(vocab))


def _write_bark_tokenizer(dst: Path) -> None:
    from transformers import BertTokenizer

    vocab = _bark_vocab()
    tok = BertTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        do_lower_case=False,
        strip_accents=None,
        tokenize_chinese_chars=True,
        model_max_length=512,
    )
    tok.save_pretrained(dst)
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _add_tokenizer_config(
        dst, {"tokenizer_class": "BertTokenizer", "do_lower_case": False, "processor_class": "BarkProcessor"}
    )
    _write_json(
        dst / "special_tokens_map.json",
        {
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "unk_token": "[UNK]",
        },
    )


def _write_bark_voice_presets(dst: Path, repo_or_path: str) -> None:
    """speaker_embeddings_path.json + speaker_embeddings/**/*.npy, as in the real Bark repos."""
    index: dict[str, object] = {"repo_or_path": repo_or_path}
    for preset in BARK_VOICE_PRESETS:
        seed = int(hashlib.sha1(preset.encode()).hexdigest()[:8], 16)
        rng = np.random.RandomState(seed)
        arrays = {
            "semantic_prompt": rng.randint(0, 10_000, size=(_BARK_PRESET_SEMANTIC_LEN,)).astype(np.int64),
            "coarse_prompt": rng.randint(0, BARK_CODEBOOK_SIZE, size=(2, _BARK_PRESET_ACOUSTIC_LEN)).astype(
                np.int64
            ),
            "fine_prompt": rng.randint(0, BARK_CODEBOOK_SIZE, size=(8, _BARK_PRESET_ACOUSTIC_LEN)).astype(np.int64),
        }
        entry = {}
        for key, arr in arrays.items():
            rel = f"speaker_embeddings/{preset}_{key}.npy"
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(dst / rel, arr, allow_pickle=False)
            entry[key] = rel
        index[preset] = entry
    _write_json(dst / "speaker_embeddings_path.json", index)


def _save_bark(model, dst: Path) -> None:
    """Save a BarkModel. transformers 5.23 cannot save a BarkGenerationConfig (GenerationConfig.validate reads
    attributes its __init__ never sets): save the model without it, then write the file."""
    model.can_generate = lambda: False
    _save_model(model, dst)
    del model.can_generate
    _write_json(dst / "generation_config.json", _bark_generation_dict(model.generation_config))


def _bark_generation_dict(gen) -> dict:
    """BarkGenerationConfig as generation_config.json, sub-configs without their unset (None) keys."""
    import transformers

    out = {}
    for key, value in gen.to_dict().items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None and not k.startswith("_")}
            value.pop("transformers_version", None)
        out[key] = value
    out["transformers_version"] = transformers.__version__
    return out


def build_bark(dst: Path, *, repo_id: str = "suno/bark-small") -> None:
    """suno/bark-small and suno/bark: BarkModel + BarkProcessor files + voice presets."""
    from transformers import BarkConfig, BarkModel, EncodecConfig
    from transformers.models.bark import (
        BarkCoarseConfig,
        BarkFineConfig,
        BarkSemanticConfig,
    )
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    dst = Path(dst)
    common = dict(hidden_size=16, num_layers=1, num_heads=2, block_size=1024, bias=False, dropout=0.0)
    semantic = BarkSemanticConfig(input_vocab_size=129_600, output_vocab_size=10_048, **common)
    coarse = BarkCoarseConfig(input_vocab_size=12_096, output_vocab_size=12_096, **common)
    fine = BarkFineConfig(
        input_vocab_size=1056, output_vocab_size=1056, n_codes_total=8, n_codes_given=1, **common
    )
    codec = EncodecConfig(
        sampling_rate=BARK_SAMPLING_RATE,
        audio_channels=1,
        upsampling_ratios=[8, 5, 4, 2],
        target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0],
        codebook_size=BARK_CODEBOOK_SIZE,
        num_filters=4,
        hidden_size=16,
        num_lstm_layers=1,
        use_causal_conv=True,
        normalize=False,
    )
    assert codec.hop_length == BARK_HOP and codec.frame_rate == 75
    config = BarkConfig(
        semantic_config=semantic.to_dict(),
        coarse_acoustics_config=coarse.to_dict(),
        fine_acoustics_config=fine.to_dict(),
        codec_config=codec.to_dict(),
    )
    with _Seeded(4321):
        model = BarkModel(config)
        _fill_encodec_codebooks(model.codec_model, seed=77)
        model.eval()
        model.generation_config = BarkGenerationConfig(
            semantic_config=dict(
                eos_token_id=10_000,
                max_new_tokens=BARK_SEMANTIC_MAX_NEW_TOKENS,
                do_sample=True,
                temperature=0.7,
                text_encoding_offset=10_048,
                text_pad_token=129_595,
                semantic_infer_token=129_599,
                semantic_vocab_size=10_000,
                max_input_semantic_length=256,
                semantic_rate_hz=49.9,
            ),
            coarse_acoustics_config=dict(
                do_sample=True,
                temperature=0.7,
                coarse_semantic_pad_token=12_048,
                coarse_rate_hz=75,
                n_coarse_codebooks=2,
                coarse_infer_token=12_050,
                max_coarse_input_length=256,
                max_coarse_history=630,
                sliding_window_len=60,
            ),
            fine_acoustics_config=dict(
                temperature=0.5,
                max_fine_history_length=512,
                max_fine_input_length=1024,
                n_fine_codebooks=8,
            ),
            sample_rate=BARK_SAMPLING_RATE,
            codebook_size=BARK_CODEBOOK_SIZE,
        )
        _save_bark(model, dst)
    _write_bark_tokenizer(dst)
    _write_bark_voice_presets(dst, repo_id)


# --------------------------------------------------------------------------------------------
# MMS-TTS (VITS)
# --------------------------------------------------------------------------------------------

MMS_SAMPLING_RATE = 16000

# facebook/mms-tts-eng's vocab.json (38 symbols; "k" doubles as the pad/blank token, id 0).
_MMS_ENG_VOCAB = [
    "k", "'", "z", "y", "u", "d", "h", "e", "s", "w", "–", "3", "c", "p", "-", "1", "j", "m", "i",
    " ", "f", "l", "o", "0", "b", "r", "a", "4", "2", "n", "_", "x", "v", "t", "q", "5", "6", "g",
]  # fmt: skip
_MMS_EXTRA = {"deu": "äöüß", "fra": "éèêàâçîïôûùœë"}


def _mms_vocab(language: str) -> list[str]:
    vocab = list(_MMS_ENG_VOCAB)
    vocab += [c for c in _MMS_EXTRA.get(language, "") if c not in vocab]
    return vocab


def build_mms_tts(dst: Path, *, language: str = "eng") -> None:
    """facebook/mms-tts-{eng,deu,fra}: VitsModel + VitsTokenizer (character vocab.json)."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    dst = Path(dst)
    vocab = _mms_vocab(language)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        window_size=4,
        ffn_dim=32,
        ffn_kernel_size=3,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=32,
        upsample_rates=[8, 8, 2, 2],  # 256-sample hop like the real model
        upsample_kernel_sizes=[16, 16, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2,
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=2,
        depth_separable_num_layers=2,
        use_stochastic_duration_prediction=True,
        sampling_rate=MMS_SAMPLING_RATE,
        speaking_rate=1.0,
        noise_scale=0.667,
        noise_scale_duration=0.8,
    )
    with _Seeded(2024 + sum(map(ord, language))):
        model = VitsModel(config)
        model.eval()
        _save_model(model, dst)
    vocab_path = dst / "vocab.json"
    _write_json(vocab_path, {c: i for i, c in enumerate(vocab)})
    tok = VitsTokenizer(
        str(vocab_path),
        pad_token=vocab[0],
        unk_token="<unk>",
        language=language,
        add_blank=True,
        normalize=True,
        phonemize=False,
        is_uroman=False,
    )
    tok.save_pretrained(dst)
    _add_tokenizer_config(dst, {"tokenizer_class": "VitsTokenizer"})
    _write_json(dst / "special_tokens_map.json", {"pad_token": vocab[0], "unk_token": "<unk>"})


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------

TINY_BUILDERS: dict[str, Callable[[Path], None]] = {
    "facebook/musicgen-small": build_musicgen,
    "facebook/musicgen-medium": build_musicgen,
    "facebook/musicgen-large": build_musicgen,
    "facebook/musicgen-melody": functools.partial(build_musicgen, melody=True),
    "facebook/musicgen-stereo-small": functools.partial(build_musicgen, stereo=True),
    "suno/bark-small": functools.partial(build_bark, repo_id="suno/bark-small"),
    "suno/bark": functools.partial(build_bark, repo_id="suno/bark"),
    "facebook/mms-tts-eng": functools.partial(build_mms_tts, language="eng"),
    "facebook/mms-tts-deu": functools.partial(build_mms_tts, language="deu"),
    "facebook/mms-tts-fra": functools.partial(build_mms_tts, language="fra"),
}


def all_tiny_builders() -> dict[str, Callable[[Path], None]]:
    """Every tiny repo's builder: TINY_BUILDERS and the families kept in modules of their own."""
    from tests.tiny_ace_step import ACE_STEP_BUILDERS
    from tests.tiny_csm import CSM_BUILDERS  # CSM with its Mimi codec inside, one repo
    from tests.tiny_dia import DIA_BUILDERS  # Dia and its DAC codec, two repos
    from tests.tiny_diffusers import DIFFUSERS_BUILDERS  # the diffusers pipelines live in their own module
    from tests.tiny_pocket_tts import POCKET_BUILDERS  # Pocket TTS and its codec, two repos
    from tests.tiny_stable_audio_3 import SA3_BUILDERS  # Stable Audio 3 in Stability's original format
    from tests.tiny_vibevoice import VIBEVOICE_BUILDERS  # VibeVoice with its processor and chat template

    return {**TINY_BUILDERS, **DIFFUSERS_BUILDERS, **ACE_STEP_BUILDERS, **SA3_BUILDERS, **DIA_BUILDERS,
            **POCKET_BUILDERS, **CSM_BUILDERS, **VIBEVOICE_BUILDERS}


def make_tiny_cache(hf_home: Path, repo_ids: Iterable[str] | None = None) -> None:
    """Build every tiny repo (or only ``repo_ids``) into ``hf_home/hub``.

    Repos that share a builder are built once and copied.
    """
    builders = all_tiny_builders()
    hf_home = Path(hf_home)
    ids = list(builders) if repo_ids is None else list(repo_ids)
    unknown = [r for r in ids if r not in builders]
    if unknown:
        raise KeyError(f"no tiny builder for {unknown}; known: {sorted(builders)}")
    built: dict[object, Path] = {}
    for repo_id in ids:
        builder = builders[repo_id]
        key = _builder_key(builder)
        if key in built:
            src = built[key]
            install_repo(hf_home, repo_id, lambda d, src=src: shutil.copytree(src, d, dirs_exist_ok=True))
        else:
            built[key] = install_repo(hf_home, repo_id, builder)
    # Bark presets name their repo in speaker_embeddings_path.json: fix the copies.
    for repo_id in ids:
        snap = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / _fake_commit(repo_id)
        index = snap / "speaker_embeddings_path.json"
        if index.exists():
            _add_json_key(index, "repo_or_path", repo_id)


def _builder_key(builder: Callable) -> object:
    """Builders that write the same files share a key (repo-id-only arguments are ignored)."""
    if isinstance(builder, functools.partial):
        kw = {k: v for k, v in builder.keywords.items() if k != "repo_id"}
        return (builder.func, tuple(builder.args), tuple(sorted(kw.items())))
    return (builder, (), ())

