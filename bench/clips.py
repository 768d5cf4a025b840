"""The bench's audio inputs: synthetic music written as WAV files, named in a case's params as "clip:SECONDS".

A case says `{"audio": "clip:5"}`; the runner writes a 5 s clip once and passes its path, as a user passes a file.
The clips are 32 kHz mono float32 WAV, MusicGen's own rate and a whole number of codec frames long (640 samples
each), so the studio's prompt and the reference's are the same samples, with no resampling on either side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

PREFIX = "clip:"
RATE = 32000
FRAME = 640  # MusicGen's codec hop at 32 kHz: clips are whole frames long


def clip_seconds(value: Any) -> float | None:
    """The length a "clip:SECONDS" placeholder names, or None for any other value."""
    if isinstance(value, str) and value.startswith(PREFIX):
        return float(value[len(PREFIX):])
    return None


def synth_music(seconds: float, rate: int = RATE) -> np.ndarray:
    """float32 mono samples: a I-V-vi-IV chord loop at 120 bpm with a kick on every beat (random weights make no
    use of the content; it only has to be audio a user could bring)."""
    n = round(seconds * rate / FRAME) * FRAME
    t = np.arange(n) / rate
    chords = ((261.6, 329.6, 392.0), (196.0, 246.9, 293.7), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6))
    index = (t // 2.0).astype(int) % len(chords)  # one chord per bar of 4 beats
    tone = sum(np.sin(2 * np.pi * np.choose(index, [c[k] for c in chords]) * t) for k in range(3)) / 3
    beat = t % 0.5
    kick = np.sin(2 * np.pi * 55.0 * beat) * np.exp(-beat * 18.0)
    return (0.3 * tone + 0.4 * kick).astype(np.float32)


def write_clip(folder: Path, seconds: float) -> Path:
    """`folder`/bench-clip-<seconds>s.wav (written once)."""
    import soundfile as sf

    path = Path(folder) / f"bench-clip-{seconds:g}s.wav"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth_music(seconds), RATE, subtype="FLOAT")
    return path


def with_clips(params: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """`params` with every "clip:SECONDS" replaced by the path of such a clip under `folder`."""
    out = dict(params)
    for name, value in params.items():
        seconds = clip_seconds(value)
        if seconds is not None:
            out[name] = str(write_clip(folder, seconds))
    return out


def as_paths(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validated request params for a reference script: each studio Clip as the path of the file it was read from."""
    from studio.clips import Clip

    return {k: str(v.path) if isinstance(v, Clip) else v for k, v in params.items()}


def readable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params for results.json and the report: each Clip as "clip:SECONDS", as the cases name them."""
    from studio.clips import Clip

    return {k: f"{PREFIX}{v.seconds:g}" if isinstance(v, Clip) else v for k, v in params.items()}
