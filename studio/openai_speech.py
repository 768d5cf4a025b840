"""OpenAI's speech request (POST /v1/audio/speech) read into a studio request, and its audio encoded as OpenAI sends it.

Knows no web framework: studio.ui.openai_api serves it. What OpenAI's names mean here:
- `model`: a catalog repo id, or an alias: `tts`, `tts-1` -> the speech default for this device (the catalog's
  for_task("speech", device kind): Pocket TTS on a CPU, Bark small on a GPU); `tts-1-hd`, `gpt-4o-mini-tts` (and its
  dated names) -> full Bark (`suno/bark`: better voices than small, 13 languages, slower).
- `voice`: a preset of the model, a saved voice of the voice library (also as OpenAI's `{"id": "my-voice"}`), or one
  of OpenAI's voice names, mapped per model by ModelSpec.openai_voices; on a model without that mapping (MMS-TTS has
  one voice; Dia, CSM and VibeVoice have no presets) OpenAI's names mean the model's default voice.
- `speed`: OpenAI's 0.25-4.0, applied where the model has a speed setting (MMS-TTS's speaking_rate, within its own
  range); other models speak at one speed, and refuse any speed but 1.0 rather than change the pitch with it.
- `instructions`: no model of the catalog takes free-form style instructions; they are accepted and ignored, and the
  response says so (the X-Studio-Ignored header).
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from studio.catalog import Catalog, ModelSpec, echo
from studio.errors import InvalidInput

TASK = "speech"
DEFAULT_ALIASES = ("tts", "tts-1")
HD_ALIASES = ("tts-1-hd", "gpt-4o-mini-tts")
HD_MODEL = "suno/bark"
# OpenAI's voice names (openai 3.57's speech_create_params.Voice).
OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")
# response_format -> media type. pcm is OpenAI's: 16-bit little-endian mono at the model's rate, no header.
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "flac": "audio/flac", "wav": "audio/wav",
               "pcm": "audio/pcm"}
# soundfile 0.14 / libsndfile 1.2.2 here write MP3 (LAME) and Ogg Opus, and no AAC at all (sf.available_formats()).
UNSUPPORTED = {"aac": "libsndfile, which writes the studio's files, has no AAC encoder"}
STUDIO_FILE = {"mp3": "mp3", "flac": "flac", "wav": "wav", "pcm": "wav", "opus": "wav"}  # the History copy's format
PROGRESSIVE = ("wav", "pcm")  # sent piece by piece as the run makes them; the others once it ends (see encode)
STREAM_FORMATS = ("audio", "sse")
SPEED_RANGE = (0.25, 4.0)  # OpenAI's
SPEED_PARAMS = ("speed", "speaking_rate")  # a model's own speed setting, where it has one
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the rates Opus codes; anything else is resampled to 48 kHz
# A streamed WAV's header cannot know the length: both sizes say "as long as it goes" (0xFFFFFFFF), as OpenAI's
# streamed WAV does; libsndfile, ffmpeg and browsers then read to the end of the data.
UNKNOWN_SIZE = 0xFFFFFFFF


class SpeechError(InvalidInput):
    """A refused request, with the OpenAI field it is about (`param`) and OpenAI's error code."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class SpeechCall:
    """One /v1/audio/speech request as the studio runs it."""

    spec: ModelSpec
    text: str
    params: dict[str, Any]
    response_format: str
    stream_format: str = "audio"
    stream: bool = True  # not OpenAI's: False sends a finished file (a WAV with its real length) once the run ends
    seed: Any = -1
    ignored: list[str] = field(default_factory=list)  # fields accepted and not used, said in the response
    asked: dict[str, Any] = field(default_factory=dict)  # what the client sent (model, voice), for the metadata

    @property
    def progressive(self) -> bool:
        return self.stream and self.response_format in PROGRESSIVE

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.response_format]

    @property
    def studio_format(self) -> str:
        return STUDIO_FILE[self.response_format]

    def metadata(self) -> dict[str, Any]:
        """What the result's metadata (its History row) says of where it came from."""
        return {"source": "api", "api": {"endpoint": "/v1/audio/speech", **self.asked,
                                         "response_format": self.response_format, "stream_format": self.stream_format}}


def aliases(catalog: Catalog, device_kind: str | None) -> dict[str, str]:
    """Alias -> repo id, for this device: the defaults always, the HD names when their model is in the catalog."""
    speech = catalog.for_task(TASK, device_kind)
    if not speech:
        return {}
    table = {name: speech[0].repo_id for name in DEFAULT_ALIASES}
    hd = HD_MODEL if HD_MODEL in catalog.ids(TASK) else speech[0].repo_id
    table.update({name: hd for name in HD_ALIASES})
    return table


def resolve_model(catalog: Catalog, model: Any, device_kind: str | None) -> ModelSpec:
    table = aliases(catalog, device_kind)
    if not isinstance(model, str) or not model.strip():
        raise SpeechError(f"model {echo(model)} is not a model name: send a catalog repo id (GET /v1/models lists "
                          f"them) or an alias: {', '.join(table)}", "model", "model_not_found")
    name = model.strip()
    if name.startswith("gpt-4o-mini-tts-"):  # OpenAI's dated names of the same model
        name = "gpt-4o-mini-tts"
    repo = table.get(name.lower(), name)
    if repo in catalog and TASK in catalog.get(repo).tasks:
        return catalog.get(repo)
    raise SpeechError(f"model {echo(model)} is not a speech model of the studio; choose one of: "
                      f"{catalog.describe_ids(TASK)}, or an alias: {', '.join(table)}", "model", "model_not_found")


def read_call(catalog: Catalog, body: Any, device_kind: str | None) -> SpeechCall:
    """Check OpenAI's body field by field (each refusal names the field, the value and the fix) and map it onto the
    model's settings. The studio's own checks (voice names, text rules) follow in Catalog.make_request."""
    if not isinstance(body, Mapping):
        raise SpeechError(f"the request body must be a JSON object with model, input and voice, but is "
                          f"{type(body).__name__}", None, "invalid_body")
    spec = resolve_model(catalog, body.get("model"), device_kind)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise SpeechError(f"input {echo(text)} is empty: send the text to speak", "input", "empty_input")
    if len(text) > spec.max_prompt_chars:
        raise SpeechError(f"input has {len(text):,} characters; {spec.repo_id} takes at most "
                          f"{spec.max_prompt_chars:,}: shorten it or send it in parts", "input", "input_too_long")
    fmt = _response_format(body.get("response_format"))
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in STREAM_FORMATS:
        raise SpeechError(f"stream_format {echo(stream_format)} is not one of {', '.join(STREAM_FORMATS)}",
                          "stream_format", "invalid_stream_format")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise SpeechError(f"stream {echo(stream)} must be true or false", "stream", "invalid_stream")
    params: dict[str, Any] = {}
    call = SpeechCall(spec=spec, text=text, params=params, response_format=fmt, stream_format=stream_format,
                      stream=stream, seed=body.get("seed", -1),
                      asked={"model": body.get("model"), "voice": _voice_name(body.get("voice"))})
    _map_voice(catalog, spec, call.asked["voice"], params)
    _map_speed(catalog, spec, body.get("speed"), params)
    instructions = body.get("instructions")
    if instructions not in (None, ""):
        if not isinstance(instructions, str):
            raise SpeechError(f"instructions {echo(instructions)} must be text", "instructions", "invalid_instructions")
        call.ignored.append("instructions")
    return call


def _response_format(value: Any) -> str:
    fmt = "mp3" if value is None else value  # OpenAI's default
    key = fmt.strip().lower() if isinstance(fmt, str) else None
    if key in MEDIA_TYPES:
        return key
    why = f" ({UNSUPPORTED[key]})" if key in UNSUPPORTED else ""
    raise SpeechError(f"response_format {echo(fmt)} is not available here{why}; choose one of: "
                      f"{', '.join(MEDIA_TYPES)}", "response_format", "unsupported_response_format")


def _voice_name(voice: Any) -> Any:
    """OpenAI's voice: a name, or a custom voice object {"id": ...} (here: a saved voice's name)."""
    if isinstance(voice, Mapping) and isinstance(voice.get("id"), str):
        return voice["id"]
    return voice


def _map_voice(catalog: Catalog, spec: ModelSpec, voice: Any, params: dict[str, Any]) -> None:
    if voice is None or (isinstance(voice, str) and not voice.strip()):
        return  # the model's default voice
    if not isinstance(voice, str):
        raise SpeechError(f"voice {echo(voice)} must be a voice name (or {{\"id\": name}})", "voice", "invalid_voice")
    name = voice.strip()
    mapped = dict(spec.openai_voices)
    if name.lower() in mapped:
        params["voice"] = mapped[name.lower()]
    elif name.lower() in OPENAI_VOICES:
        return  # a model without OpenAI's names mapped speaks in its default voice
    elif spec.param("voice") is not None:
        params["voice"] = name  # a preset or a saved voice: make_request checks it and names the choices
    else:
        raise SpeechError(f"voice {echo(voice)} is not a voice of {spec.repo_id}, which speaks in one voice: send one "
                          f"of OpenAI's names ({', '.join(OPENAI_VOICES)}), which all mean that voice, or choose "
                          "a model with presets", "voice", "voice_not_found")


def _map_speed(catalog: Catalog, spec: ModelSpec, speed: Any, params: dict[str, Any]) -> None:
    if speed is None:
        return
    low, high = SPEED_RANGE
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) \
            or not low <= speed <= high:
        raise SpeechError(f"speed {echo(speed)} must be a number from {low:g} to {high:g} (1.0 is normal)", "speed",
                          "invalid_speed")
    param = next((spec.param(name) for name in SPEED_PARAMS if spec.param(name) is not None), None)
    if param is None:
        if speed != 1.0:
            others = ", ".join(s.label for s in catalog.for_task(TASK) if any(s.param(n) for n in SPEED_PARAMS))
            raise SpeechError(f"speed {speed:g}: {spec.repo_id} speaks at one speed (changing the pitch to change it "
                              f"is not offered); send speed 1.0 or leave it out"
                              + (f", or use a model with a speed setting ({others})" if others else ""), "speed",
                              "unsupported_speed")
        return
    if (param.minimum is not None and speed < param.minimum) or (param.maximum is not None and speed > param.maximum):
        raise SpeechError(f"speed {speed:g} is outside what {spec.repo_id} can do: {param.minimum:g} to "
                          f"{param.maximum:g} (its {param.label})", "speed", "unsupported_speed")
    params[param.name] = float(speed)


# ----------------------------------------------------------------------------------------------- encoding


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples ((frames,) or (channels, frames)) as OpenAI's pcm: mono, 16-bit little-endian, clipped."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def streaming_wav_header(sample_rate: int) -> bytes:
    """The 44-byte header of a 16-bit mono WAV of unknown length (see UNKNOWN_SIZE)."""
    return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) +
            b"data" + struct.pack("<I", UNKNOWN_SIZE))


def opus_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Ogg Opus of float (channels, frames) samples; a rate Opus does not code (44.1 kHz) is resampled to 48 kHz."""
    import soundfile as sf

    x = np.asarray(samples, dtype=np.float32)
    x = x[None, :] if x.ndim == 1 else x
    if sample_rate not in OPUS_RATES:
        from scipy.signal import resample_poly

        g = math.gcd(48000, int(sample_rate))
        x = resample_poly(x, 48000 // g, int(sample_rate) // g, axis=1).astype(np.float32)
        sample_rate = 48000
    buffer = io.BytesIO()
    sf.write(buffer, x.T, sample_rate, format="OGG", subtype="OPUS")
    return buffer.getvalue()


def file_bytes(path: Any, fmt: str) -> bytes:
    """The finished result in `fmt`: the saved file itself where it is in that format (its tags included), else
    encoded from its samples (the peak-safe audio the file holds)."""
    import soundfile as sf

    if fmt in ("wav", "flac", "mp3"):
        with open(path, "rb") as handle:
            return handle.read()
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if fmt == "pcm":
        return pcm16(samples.T)
    return opus_bytes(samples.T, rate)
