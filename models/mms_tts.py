"""MMS-TTS (Meta): small VITS text-to-speech models, one repo per language (facebook/mms-tts-ISO)."""

from __future__ import annotations

import logging

from studio.catalog import MODE, Accepts, Family, ModelSpec, Param, Request, SpeedPrior
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json

from models.common import (OneModuleModel, SAFE_LOAD, SpokenChunks, check_tokenizer, first_chunk_units,
                           seed_everything, speech_chunks, to_float32_numpy, torch_dtype)
from models.dialogue import LONG_FORM, SINGLE, check_one_voice, mode_param

log = logging.getLogger(__name__)

LICENSE = "CC-BY-NC-4.0"
CHUNK_CHARS = 400  # VITS memory grows with the text; long text is spoken sentence by sentence
SECONDS_PER_CHAR = 0.075  # typical speech rate, for memory estimates

# ISO 639-3 codes of MMS-TTS repos (facebook/mms-tts-<code>) with their names; the picker in the speech tab.
# Scripts other than Latin are romanized with uroman by the tokenizer, as the model cards describe.
LANGUAGES = {
    "eng": "English", "deu": "German", "fra": "French", "spa": "Spanish", "por": "Portuguese",
    "nld": "Dutch", "pol": "Polish", "ron": "Romanian", "hun": "Hungarian", "fin": "Finnish",
    "swe": "Swedish", "ces": "Czech", "slk": "Slovak", "ell": "Greek", "tur": "Turkish",
    "rus": "Russian", "ukr": "Ukrainian", "bul": "Bulgarian", "heb": "Hebrew", "ara": "Arabic",
    "fas": "Persian", "urd": "Urdu", "hin": "Hindi", "ben": "Bengali", "mar": "Marathi",
    "guj": "Gujarati", "pan": "Punjabi", "tam": "Tamil", "tel": "Telugu", "kan": "Kannada",
    "mal": "Malayalam", "tha": "Thai", "vie": "Vietnamese", "ind": "Indonesian", "tgl": "Tagalog",
    "kor": "Korean", "swh": "Swahili", "yor": "Yoruba", "hau": "Hausa", "amh": "Amharic",
    "som": "Somali", "zlm": "Malay",
}


# One voice per language model (no presets, no cloning, no dialogue). Single voice is the default: what every call
# before modes did; Long form keeps paragraphs apart with a longer pause.
MODES = (SINGLE, LONG_FORM)


def _params() -> tuple[Param, ...]:
    return (
        mode_param(MODES, SINGLE),
        Param("speaking_rate", float, 1.0, "Speaking rate", "Above 1 speaks faster, below 1 slower.",
              minimum=0.5, maximum=2.0, step=0.05),
        Param("noise_scale", float, 0.667, "Variation", "How much the voice varies between runs (VITS noise scale).",
              minimum=0.0, maximum=1.5, step=0.01),
    )


def _spec(code: str, name: str) -> ModelSpec:
    return ModelSpec(
        repo_id=f"facebook/mms-tts-{code}", family="mms_tts", tasks=("speech",), label=f"MMS-TTS {name}",
        license=LICENSE, parameters=36_300_000, sample_rate=16000, channels=1, max_duration=None,
        params=_params(),
        speed={"cpu": SpeedPrior(0.1, 0.04), "cuda": SpeedPrior(0.05, 0.002), "mps": SpeedPrior(0.1, 0.01)},
        unit="character", language=code, max_prompt_chars=20_000,
        description=f"Meta's Massively Multilingual Speech TTS for {name}: tiny and fast, one voice. 16 kHz.",
    )


SPECS = tuple(_spec(code, name) for code, name in LANGUAGES.items())


def _pieces(request: Request) -> list[tuple[str, float]]:
    """(chunk, pause before it): sentences, and in Long form paragraphs kept apart (models.common.speech_chunks)."""
    return speech_chunks(request.prompt, CHUNK_CHARS, long_form=request.params.get(MODE) == LONG_FORM)


def check_text(spec: ModelSpec, text: str, values) -> None:
    """MMS-TTS speaks one voice in either mode: a speaker tag is refused, naming the fix."""
    check_one_voice(text, values.get(MODE) or SINGLE, model=spec.label, dialogue=False)


def work_units(spec: ModelSpec, request: Request) -> float:
    return float(len(request.prompt))


def first_audio_units(spec: ModelSpec, request: Request) -> float | None:
    """The first chunk's characters: each chunk is heard as soon as its forward pass is done."""
    return first_chunk_units([float(len(chunk)) for chunk, _ in _pieces(request)])


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The HiFi-GAN decoder's activations for the longest chunk dominate."""
    config = cached_json(spec.repo_id) or {}
    chars = min(len(request.prompt), CHUNK_CHARS)
    rate = request.get("speaking_rate")
    samples = chars * SECONDS_PER_CHAR / rate * config.get("sampling_rate", spec.sample_rate)
    channels = config.get("upsample_initial_channel", 512)
    # Each upsampling stage halves the channels and multiplies the length: sum ~ 2 x the first stage's output.
    return int(4 * channels * samples / 8 * dtype_bytes + 16 * 1024**2)


class MmsTtsModel(OneModuleModel):
    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. Sentence-sized chunks keep memory bounded for long text.
        pieces = _pieces(request)
        chunks = [chunk for chunk, _ in pieces]
        self.model.noise_scale = request.get("noise_scale")
        seed_everything(request.seed)
        rate = self.model.config.sampling_rate
        spoken, pending = SpokenChunks(ctx, rate), 0.0
        # 2. One forward pass per chunk; cancel is checked between chunks.
        for index, chunk in enumerate(chunks):
            ctx.check()
            inputs = self.preprocess(chunk, return_tensors="pt").to(self.torch_device)
            # A skipped chunk's pause passes to the next spoken one: a paragraph break stays the longer pause.
            pending = max(pending, pieces[index][1])
            if inputs["input_ids"].shape[-1] == 0:
                ctx.progress(index + 1, len(chunks))  # the bar counts every chunk, spoken or not
                continue  # nothing this language's alphabet can say (e.g. only punctuation)
            with torch.inference_mode():
                waveform = self.model(**inputs, speaking_rate=request.get("speaking_rate")).waveform
            # Heard at once by whoever listens, with the pause before it.
            spoken.add(to_float32_numpy(waveform[0]), pending)
            pending = 0.0
            ctx.progress(index + 1, len(chunks))
        ctx.check()
        if not spoken:
            raise InvalidInput(
                f"{self.spec.repo_id} found nothing it can pronounce in the text: write it in "
                f"{LANGUAGES.get(self.spec.language or '', 'the model language')}"
            )
        return Audio(spoken.joined(), rate, info={"chunks": len(chunks)})


def load(spec: ModelSpec, torch_device: str, dtype: str) -> MmsTtsModel:
    from transformers import VitsModel, VitsTokenizer

    model = VitsModel.from_pretrained(spec.repo_id, dtype=torch_dtype(dtype), **SAFE_LOAD)
    model.eval().to(torch_device)
    tokenizer = VitsTokenizer.from_pretrained(spec.repo_id, **SAFE_LOAD)
    check_tokenizer(spec, tokenizer, "vocab.json", model.config.vocab_size)
    return MmsTtsModel(spec, model, tokenizer, torch_device)


# The model is 36M parameters (145 MB in fp32): halving it saves little, and fp32 keeps VITS's flow and
# stochastic duration predictor clear of fp16 range problems.
FAMILY = Family(
    name="mms_tts", load=load, work_units=work_units, working_bytes=working_bytes, check_text=check_text,
    first_audio_units=first_audio_units,
    preferred_dtypes={"cuda": "float32", "mps": "float32", "cpu": "float32"}, precisions=("float32",),
    files=(("vocab.json",),),  # VitsTokenizer's characters
    accepts=(Accepts("config.json", "model_type", ("vits",)),),  # VitsConfig.model_type: every MMS-TTS repo is VITS
)
