"""MusicGen melody's one-hot chroma of a melody clip, computed as transformers' extractor does, without torchaudio."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from studio.errors import InvalidInput

if TYPE_CHECKING:
    import torch

# MusicgenMelodyFeatureExtractor.__init__ defaults, used for keys a preprocessor_config.json leaves out.
DEFAULTS = {"sampling_rate": 32000, "n_fft": 16384, "hop_length": 4096, "num_chroma": 12, "chunk_length": 30}

# Digital silence: a peak below -60 dBFS (1/1000 of full scale). Dither, hum and the noise floor of a quiet
# room all sit lower; any playing or humming meant as a tune peaks far higher. Peak, not RMS, because a tune of
# a few short notes has a low RMS yet is clearly audible. Level itself does not matter above the threshold:
# each chroma frame is normalised to its own maximum before the argmax.
SILENCE_DBFS = -60.0
ROLLOFF, ZERO_CROSSINGS = 0.945, 24  # the extractor's resampling filter (see _resample)
# Telephone-band to studio rates; the bound also caps the resampling filter (its length grows with the rate's
# ratio to 32 kHz in lowest terms).
MIN_RATE, MAX_RATE = 4000, 384000
MAX_CHANNELS = 8  # more "channels" than this is a (n, channels) array the wrong way round


def peak_dbfs(samples: np.ndarray) -> float:
    """The clip's peak in dB relative to full scale (1.0); -inf for all zeros or an empty clip."""
    peak = float(np.max(np.abs(samples))) if np.size(samples) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when the clip's peak is below `threshold_dbfs`: its chroma would be the argmax of noise or zeros."""
    return peak_dbfs(samples) < threshold_dbfs


def check_audible(samples: np.ndarray, name: str = "") -> None:
    """Refuse digital silence as a melody: the chroma of silence is the argmax of zeros, a tune of all C."""
    if is_silent(samples):
        clip = f"the melody clip {name!r}" if name else "the melody clip"
        raise InvalidInput(f"{clip} is silent (peak {peak_dbfs(samples):.1f} dBFS, below {SILENCE_DBFS:.0f} dBFS): "
                           "a melody needs audible notes; record or upload one where the tune can be heard.")


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """scipy's polyphase resampler with the extractor's filter: torchaudio's `resample(rolloff=0.945,
    lowpass_filter_width=24)`, a Hann-windowed sinc cut at 0.945 of the lower rate's Nyquist, 24 zero crossings
    each side (julius's defaults, which audiocraft's convert_audio uses).

    scipy's default filter (Kaiser, cut at Nyquist) is not enough: the chroma's octave weighting still gives
    ~0.1 to 15-16 kHz, and on 30 s of white noise from 44.1 kHz it changed 17% of the frames against the
    extractor's filter; this one changed none (and stays within 1e-5 of it sample by sample).
    """
    from scipy.signal import firwin, resample_poly

    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    cutoff = ROLLOFF / max(up, down)  # relative to the Nyquist of the upsampled signal, as firwin counts
    half = math.ceil(ZERO_CROSSINGS / cutoff)
    taps = firwin(2 * half + 1, cutoff, window="hann")
    return resample_poly(x, up, down, window=taps).astype(np.float32)


def melody_chroma(samples: np.ndarray, sample_rate: int, config: Mapping) -> torch.Tensor:
    """(1, frames, num_chroma) float32 one-hot chroma of one clip, as MusicgenMelodyFeatureExtractor computes it.

    `samples`: float mono `(n,)` or `(channels, n)`, full scale 1.0; `sample_rate`: its rate in Hz;
    `config`: the repo's preprocessor_config.json (missing keys take the extractor's defaults).

    Follows the extractor's `__call__` and `_torch_extract_fbank_features` for a batch of one:
    channels are averaged, the clip is resampled to `sampling_rate`, cut to its first `chunk_length`
    seconds (the extractor truncates to `max_length`, by default `chunk_length * sampling_rate`; padding
    to the longest clip of a batch of one does nothing), zero-padded to `n_fft` when shorter, then a
    window-normalised power STFT (torchaudio's `Spectrogram(normalized=True)`), the librosa chroma filter
    bank, per-frame inf-norm and argmax. Resampling is scipy's polyphase resampler given the extractor's
    filter, so the result matches up to float rounding (which could flip a frame at a near-tie).
    Demucs stem separation (the extractor's 4-D input path) is not done: pass the mix or an isolated stem.

    Raises InvalidInput for an empty, non-finite or silent clip, or a sample rate outside MIN_RATE..MAX_RATE.
    """
    import torch
    from transformers.audio_utils import chroma_filter_bank

    rate = int(config.get("sampling_rate", DEFAULTS["sampling_rate"]))
    n_fft = int(config.get("n_fft", DEFAULTS["n_fft"]))
    hop_length = int(config.get("hop_length", DEFAULTS["hop_length"]))
    num_chroma = int(config.get("num_chroma", DEFAULTS["num_chroma"]))
    max_samples = int(config.get("chunk_length", DEFAULTS["chunk_length"])) * rate

    # 1. Check the input, then fold channels: the extractor's stereo path is `stereo.mean(dim=0)`.
    if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer))
            or not MIN_RATE <= sample_rate <= MAX_RATE):
        raise InvalidInput(f"the melody clip's sample rate must be a whole number of Hz from {MIN_RATE} to "
                           f"{MAX_RATE}, but is {sample_rate!r}; pass the rate the clip was recorded at, e.g. 44100.")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise InvalidInput(f"the melody clip must be mono (n,) or (channels, n) samples, but has shape {x.shape}.")
    if x.ndim == 2 and x.shape[0] > MAX_CHANNELS:
        raise InvalidInput(f"the melody clip has shape {x.shape}, read as {x.shape[0]} channels; pass (channels, n) "
                           "samples (transpose soundfile's (n, channels) with .T).")
    x = x.mean(axis=0) if x.ndim == 2 else x
    if x.size == 0:
        raise InvalidInput("the melody clip is empty: record or upload one where the tune can be heard.")
    if not np.isfinite(x).all():
        raise InvalidInput("the melody clip contains NaN or infinite samples: re-export it from its source.")

    # 2. Keep what the extractor keeps (its first chunk_length seconds), plus a second so the resampling filter
    #    sees the same neighbours at the cut; resampling all of a long upload would only be thrown away.
    x = x[: int(math.ceil((max_samples / rate + 1) * sample_rate))]
    used = x[: int(math.ceil(max_samples / rate * sample_rate))]
    check_audible(used)
    if sample_rate != rate:
        x = _resample(x, int(sample_rate), rate)
    wav = torch.from_numpy(np.ascontiguousarray(x[:max_samples]))[None]  # (1, n), the extractor's batch of one

    # 3. Too short for one window: centre it in zeros, as the extractor does.
    if wav.shape[-1] < n_fft:
        pad = n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2 + pad % 2), "constant", 0)

    # 4. torchaudio.functional.spectrogram with normalized=True ("window"): a plain STFT with its default periodic
    #    Hann window and reflect padding, divided by the window's L2 norm, then squared magnitude (power=2).
    window = torch.hann_window(n_fft)
    spec = torch.stft(wav, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec /= window.pow(2.0).sum().sqrt()
    spec = spec.abs().pow(2.0)  # (1, n_fft // 2 + 1, frames)

    # 5. Pitch classes (C first), each frame scaled by its loudest class, then only the loudest kept.
    filters = torch.from_numpy(chroma_filter_bank(sampling_rate=rate, num_frequency_bins=n_fft, tuning=0,
                                                  num_chroma=num_chroma)).float()
    raw = torch.einsum("cf, ...ft->...ct", filters, spec)
    norm = torch.nn.functional.normalize(raw, p=float("inf"), dim=-2, eps=1e-6).transpose(1, 2)
    one_hot = torch.zeros_like(norm)
    return one_hot.scatter_(dim=-1, index=norm.argmax(-1, keepdim=True), value=1)
