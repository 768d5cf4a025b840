"""MusicGen melody chroma without torchaudio: pure tones light their pitch class, the features match transformers'
extractor run on a stand-in torchaudio, and silent or malformed clips are refused with the fix."""

from __future__ import annotations

import importlib
import math
import types

import numpy as np
import pytest
import scipy.signal
import torch

from models.chroma import is_silent, melody_chroma, peak_dbfs
from studio.errors import InvalidInput

# The keys of facebook/musicgen-melody's preprocessor_config.json that shape the features.
CONFIG = {"sampling_rate": 32000, "n_fft": 16384, "hop_length": 4096, "num_chroma": 12, "chunk_length": 30}
C, A = 0, 9  # chroma_filter_bank(start_at_c_chroma=True) rolls librosa's A-first bins so that C is index 0


def tone(hz: float, seconds: float, rate: int, level_db: float = -6.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (10 ** (level_db / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def chirp(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * scipy.signal.chirp(t, f0=110, t1=seconds, f1=3520, method="logarithmic")).astype(np.float32)


def pitch_classes(features: torch.Tensor) -> np.ndarray:
    assert features.ndim == 3 and features.shape[0] == 1 and features.shape[2] == 12
    assert torch.all(features.sum(-1) == 1), "every frame is one-hot"
    return features[0].argmax(-1).numpy()


# --------------------------------------------------------------------------------------------
# The reference: transformers' own MusicgenMelodyFeatureExtractor on a stand-in torchaudio
# --------------------------------------------------------------------------------------------


class _Spectrogram:
    """torchaudio.transforms.Spectrogram(power=2, center=True, pad=0, normalized=True), written independently of
    models/chroma.py (numpy, float64): reflect-padded frames every hop, periodic Hann window, real FFT, |X|^2
    divided by the window's energy sum(w^2) (torchaudio divides X by its square root)."""

    def __init__(self, *, n_fft, win_length, hop_length, power, center, pad, normalized):
        if (win_length, power, center, pad, normalized) != (n_fft, 2, True, 0, True):
            raise NotImplementedError("only the settings MusicgenMelodyFeatureExtractor uses")
        self.n_fft, self.hop_length = n_fft, hop_length

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2
        x = np.pad(waveform.numpy().astype(np.float64), [(0, 0), (half, half)], mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=-1)[:, :: self.hop_length]
        window = scipy.signal.get_window("hann", self.n_fft)  # periodic, like torch.hann_window
        power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2 / np.sum(window**2)
        return torch.from_numpy(power.transpose(0, 2, 1)).float()  # (batch, freq, frames)


def _resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, *, rolloff: float,
              lowpass_filter_width: int) -> torch.Tensor:
    """torchaudio.functional.resample's documented method, evaluated directly (numpy, float64): each output sample
    is the sum of the input under a sinc cut at `rolloff` of the lower Nyquist, Hann-windowed to
    `lowpass_filter_width` zero crossings either side, zeros beyond the clip's ends."""
    x = waveform.numpy().astype(np.float64)
    cut = rolloff * min(orig_freq, new_freq)  # Hz; the sinc's zero crossings are 1 / cut apart
    reach = math.ceil(lowpass_filter_width / cut * orig_freq) + 1  # input samples either side
    padded = np.pad(x, reach)
    out = []
    for block in np.array_split(np.arange(math.ceil(len(x) * new_freq / orig_freq)), 64):
        when = block / new_freq  # seconds
        index = np.floor(when * orig_freq).astype(np.int64)[:, None] + np.arange(-reach, reach + 1)
        t = np.clip((index / orig_freq - when[:, None]) * cut, -lowpass_filter_width, lowpass_filter_width)
        weights = np.sinc(t) * np.cos(np.pi * t / (2 * lowpass_filter_width)) ** 2 * cut / orig_freq
        out.append(np.sum(weights * padded[index + reach], axis=1))
    return torch.from_numpy(np.concatenate(out).astype(np.float32))


@pytest.fixture
def extractor(monkeypatch):
    """Build MusicgenMelodyFeatureExtractor(**CONFIG, **overrides) with the stand-in torchaudio in its module."""
    # Imported as a module path: `from transformers.models.musicgen_melody import ...` checks for torchaudio first.
    module = importlib.import_module("transformers.models.musicgen_melody.feature_extraction_musicgen_melody")
    fake = types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=_Spectrogram),
                                 functional=types.SimpleNamespace(resample=_resample))
    monkeypatch.setattr(module, "torchaudio", fake, raising=False)
    return lambda **overrides: module.MusicgenMelodyFeatureExtractor(**{**CONFIG, **overrides})


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    return float(np.mean(pitch_classes(ours) == pitch_classes(theirs)))


# --------------------------------------------------------------------------------------------
# Pitch classes of pure tones
# --------------------------------------------------------------------------------------------


def test_a4_sine_lights_the_a_bin_in_every_frame():
    features = melody_chroma(tone(440.0, 1.0, 32000), 32000, CONFIG)
    assert features.shape == (1, 1 + 32000 // 4096, 12)
    assert list(pitch_classes(features)) == [A] * features.shape[1]


def test_c5_sine_lights_the_c_bin_in_every_frame():
    assert set(pitch_classes(melody_chroma(tone(523.25, 1.0, 32000), 32000, CONFIG))) == {C}


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 192000])
def test_other_input_rates_are_resampled_and_keep_the_pitch(rate):
    features = melody_chroma(tone(440.0, 1.0, rate), rate, CONFIG)
    assert features.shape == (1, 1 + 32000 // 4096, 12)  # one second at the model's 32 kHz
    assert set(pitch_classes(features)) == {A}


def test_missing_config_keys_take_the_extractor_defaults():
    x = noise(2.0, 32000)
    assert torch.equal(melody_chroma(x, 32000, {}), melody_chroma(x, 32000, CONFIG))


# --------------------------------------------------------------------------------------------
# Agreement with transformers' extractor
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal", [noise, chirp])
def test_matches_the_extractor_at_32k(extractor, signal):
    x = signal(30.0, 32000)
    theirs = extractor()(x, sampling_rate=32000, return_tensors="pt").input_features
    ours = melody_chroma(x, 32000, CONFIG)
    assert ours.shape == theirs.shape == (1, 235, 12)
    # Same samples, same formula; only float32 torch vs float64 numpy spectrograms, so a near-tie could flip.
    assert agreement(ours, theirs) >= 0.99


@pytest.mark.parametrize("signal", [noise, chirp])
def test_matches_the_extractor_at_44k1_after_resampling(extractor, signal):
    x = signal(30.0, 44100)
    # The real extractor resamples with torchaudio, which needs a tensor, not a numpy array.
    theirs = extractor()(torch.from_numpy(x), sampling_rate=44100, return_tensors="pt").input_features
    ours = melody_chroma(x, 44100, CONFIG)
    assert ours.shape == theirs.shape == (1, 235, 12)
    # Same filter reached two ways (scipy's polyphase with designed taps, the direct sum above): the taps' Hann
    # window spans a fraction of a sample more when 24 zero crossings are not a whole number of taps, and float
    # rounding differs, so a frame whose two strongest pitch classes nearly tie could flip.
    assert agreement(ours, theirs) >= 0.99


def test_long_clips_are_cut_to_chunk_length_like_the_extractor(extractor):
    x = noise(3.5, 32000, seed=1)
    theirs = extractor(chunk_length=2)(x, sampling_rate=32000, return_tensors="pt").input_features
    ours = melody_chroma(x, 32000, {**CONFIG, "chunk_length": 2})
    assert ours.shape == theirs.shape == (1, 1 + 2 * 32000 // 4096, 12)
    assert agreement(ours, theirs) == 1.0


def test_clips_shorter_than_one_window_are_centred_in_zeros_like_the_extractor(extractor):
    x = chirp(0.3, 32000)  # 9600 samples < n_fft
    theirs = extractor()(x, sampling_rate=32000, return_tensors="pt").input_features
    ours = melody_chroma(x, 32000, CONFIG)
    assert ours.shape == theirs.shape == (1, 1 + 16384 // 4096, 12)
    assert agreement(ours, theirs) == 1.0


def test_stereo_is_the_mean_of_its_channels_like_the_extractor(extractor):
    stereo = np.stack([tone(440.0, 2.0, 32000), chirp(2.0, 32000)])
    ours = melody_chroma(stereo, 32000, CONFIG)
    assert torch.equal(ours, melody_chroma(stereo.mean(axis=0), 32000, CONFIG))
    # The extractor reads a bare (2, n) array as two mono clips; a list of one (channels, n) clip is its stereo path.
    theirs = extractor()([stereo], sampling_rate=32000, return_tensors="pt").input_features
    assert agreement(ours, theirs) == 1.0


# --------------------------------------------------------------------------------------------
# Refused input
# --------------------------------------------------------------------------------------------


def test_digital_silence_is_refused_with_the_fix():
    with pytest.raises(InvalidInput, match=r"silent \(peak -inf dBFS") as refused:
        melody_chroma(np.zeros(32000, np.float32), 32000, CONFIG)
    assert "record or upload one where the tune can be heard" in str(refused.value)


def test_silence_is_a_peak_below_minus_60_dbfs():
    assert is_silent(tone(440.0, 1.0, 32000, level_db=-70.0))
    assert not is_silent(tone(440.0, 1.0, 32000, level_db=-50.0))
    assert peak_dbfs(np.zeros(4)) == -math.inf
    with pytest.raises(InvalidInput, match=r"peak -70\.\d dBFS"):
        melody_chroma(tone(440.0, 1.0, 32000, level_db=-70.0), 32000, CONFIG)
    # A quiet but audible tune is fine: each frame is normalised to its own maximum.
    assert set(pitch_classes(melody_chroma(tone(440.0, 1.0, 32000, level_db=-50.0), 32000, CONFIG))) == {A}


def test_stereo_channels_that_cancel_are_silent():
    x = tone(440.0, 1.0, 32000)
    with pytest.raises(InvalidInput, match="silent"):
        melody_chroma(np.stack([x, -x]), 32000, CONFIG)


def test_silence_is_judged_on_the_part_the_model_hears():
    x = np.concatenate([np.zeros(3 * 32000, np.float32), tone(440.0, 1.0, 32000)])  # the tune starts after 3 s
    with pytest.raises(InvalidInput, match="silent"):
        melody_chroma(x, 32000, {**CONFIG, "chunk_length": 2})


@pytest.mark.parametrize("samples, rate, message", [
    (np.zeros(0, np.float32), 32000, "empty"),
    (np.full(100, np.nan, np.float32), 32000, "NaN"),
    (np.zeros((32000, 2), np.float32), 32000, r"\(channels, n\)"),
    (np.zeros((1, 2, 100), np.float32), 32000, "mono"),
    (np.ones(100, np.float32), 0, "whole number of Hz from 4000 to 384000"),
    (np.ones(100, np.float32), 44100.5, "whole number of Hz"),
    (np.ones(100, np.float32), 999_999_937, "whole number of Hz"),
])
def test_malformed_clips_are_refused(samples, rate, message):
    with pytest.raises(InvalidInput, match=message):
        melody_chroma(samples, rate, CONFIG)


# --------------------------------------------------------------------------------------------
# The features as MusicgenMelodyForConditionalGeneration.generate takes them
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_melody(tmp_path_factory):
    """A tiny random facebook/musicgen-melody (model, tokenizer), built once for this module."""
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    from tests.tiny_models import build_musicgen

    folder = tmp_path_factory.mktemp("musicgen-melody")
    build_musicgen(folder, melody=True)
    return MusicgenMelodyForConditionalGeneration.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_the_features_condition_the_tiny_melody_model(tiny_melody, guidance):
    model, tokenizer = tiny_melody
    text = tokenizer(["calm piano"], return_tensors="pt")
    features = melody_chroma(chirp(2.0, 44100), 44100, CONFIG)
    prefixes = []
    hook = model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: prefixes.append(kwargs.get("encoder_hidden_states")), with_kwargs=True)
    torch.manual_seed(0)
    try:
        # Batch-1 features: generate() adds the unconditional half (one-hot C frames, zeroed text) itself.
        audio = model.generate(**text, input_features=features.to(model.dtype), guidance_scale=guidance,
                               do_sample=True, max_new_tokens=8)
    finally:
        hook.remove()
    assert audio.shape[:2] == (1, 1) and audio.shape[-1] > 0
    # The decoder sees the chroma, tiled to chroma_length frames, then the text, as a prefix on the first step only.
    batch = 2 if guidance > 1 else 1
    assert prefixes[0].shape == (batch, model.config.chroma_length + text["input_ids"].shape[1],
                                 model.decoder.config.hidden_size)
    assert all(p is None for p in prefixes[1:])
