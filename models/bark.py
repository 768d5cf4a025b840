"""Bark (Suno): text to speech with voice presets and non-speech cues ([laughs], ♪), in three GPT stages and a codec."""

from __future__ import annotations

import logging
import math

from studio.catalog import MODE, Accepts, Family, ModelSpec, Param, Request, SpeedPrior
from studio.run import Audio, RunContext
from studio.weights import cached_json

from models.common import (OneModuleModel, SAFE_LOAD, SpokenChunks, check_tokenizer, first_chunk_units,
                           load_pretrained, seed_everything, speech_chunks, to_float32_numpy, token_progress)
from models.compiled import CompiledDecoding
from models.dialogue import LONG_FORM, SINGLE, check_one_voice, mode_param

log = logging.getLogger(__name__)

LICENSE = "MIT"
SEMANTIC_HZ = 49.9  # semantic tokens per second of speech
COARSE_HZ = 75.0  # EnCodec 24 kHz frames per second
CHARS_PER_SECOND = 14.0  # typical speech, for estimates before the model has run
CHUNK_CHARS = 180  # Bark truncates at 256 tokens and makes at most ~14 s per call: longer text is chunked
MAX_CHUNK_SECONDS = 14.0
DEFAULT_VOICE = "v2/en_speaker_6"
# The presets Suno publishes for both repos; the list actually offered is read from the cached repo when present.
PUBLISHED_VOICES = tuple(
    f"v2/{lang}_speaker_{i}"
    for lang in ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")
    for i in range(10)
)
# OpenAI's voice names for /v1/audio/speech (studio.ui.openai_api): alloy, the clients' usual default, is Bark's default;
# OpenAI's female voices go to v2/en_speaker_9, the one female English preset of Suno's speaker library, the male
# ones spread over the other English presets.
OPENAI_VOICES = (
    ("alloy", DEFAULT_VOICE), ("ash", "v2/en_speaker_1"), ("ballad", "v2/en_speaker_2"), ("cedar", "v2/en_speaker_8"),
    ("coral", "v2/en_speaker_9"), ("echo", "v2/en_speaker_3"), ("fable", "v2/en_speaker_4"),
    ("marin", "v2/en_speaker_9"), ("nova", "v2/en_speaker_9"), ("onyx", "v2/en_speaker_0"),
    ("sage", "v2/en_speaker_9"), ("shimmer", "v2/en_speaker_9"), ("verse", "v2/en_speaker_7"),
)
# Stage shares of a chunk's progress, so one bar moves smoothly through the three models and the codec.
_SEMANTIC, _COARSE, _FINE = 25, 75, 95
INT8_PARTS = ("semantic", "coarse_acoustics", "fine_acoustics")  # the three GPTs; the EnCodec codec stays float
INT8_CPU_SPEEDUP = 1.56  # int8 vs float32 on a CPU, measured on bark-small (docs/benchmarks.md)


# Bark speaks one preset voice (no cloning, no dialogue); Long form keeps the preset's history prompt on every
# sentence, so the voice holds over a long text. Single voice is the default: what every call before modes did.
MODES = (SINGLE, LONG_FORM)
MAX_TEXT_CHARS = 20_000  # about 110 chunks of 180 characters, 24 minutes of speech: the estimate shows its time


def _params() -> tuple[Param, ...]:
    return (
        mode_param(MODES, SINGLE, {LONG_FORM: "Every sentence uses the same preset's history prompt."}),
        Param("voice", str, DEFAULT_VOICE, "Voice", "Speaker preset; the language of the preset sets the accent.",
              advanced=False),
        Param("text_temperature", float, 0.7, "Text temperature", "Variety of wording and prosody "
              "(the semantic stage).", minimum=0.05, maximum=1.5, step=0.05),
        Param("waveform_temperature", float, 0.7, "Waveform temperature", "Variety of the voice's sound "
              "(the acoustic stages).", minimum=0.05, maximum=1.5, step=0.05),
        Param("max_chunk_seconds", float, MAX_CHUNK_SECONDS, "Max seconds per sentence", "Upper bound on the "
              "speech made for each piece of text; Bark stops earlier when the sentence is done.",
              minimum=0.5, maximum=MAX_CHUNK_SECONDS, step=0.5),
    )


def _spec(repo: str, label: str, parameters: int, cpu_per_s: float, cuda_per_s: float, description: str,
          featured: bool = False) -> ModelSpec:
    return ModelSpec(
        repo_id=repo, family="bark", tasks=("speech",), label=label, license=LICENSE, parameters=parameters,
        sample_rate=24000, channels=1, max_duration=None, params=_params(),
        speed={"cpu": SpeedPrior(1.0, cpu_per_s), "cpu/int8": SpeedPrior(1.0, cpu_per_s / INT8_CPU_SPEEDUP),
               "cuda": SpeedPrior(0.5, cuda_per_s),
               "mps": SpeedPrior(1.0, cuda_per_s * 4)},
        unit="second of speech", voices=PUBLISHED_VOICES, max_prompt_chars=MAX_TEXT_CHARS, description=description,
        openai_voices=OPENAI_VOICES,
        featured_in=("speech",) if featured else (),
        prompt_hint="Type what the voice should say. Bark also reads cues like [laughs], [sighs] and ♪ for singing",
    )


SPECS = (
    _spec("suno/bark-small", "Bark small", 404_000_000, 21.9, 0.8,
          "Expressive speech in 13 languages with laughs, sighs and ♪ singing; 24 kHz.", featured=True),
    _spec("suno/bark", "Bark", 1_100_000_000, 55.0, 2.1,
          "The full Bark: better voices than small, about 2.7x slower; 24 kHz."),
)


def list_voices(spec: ModelSpec) -> tuple[str, ...]:
    """Voice presets named in the repo's speaker_embeddings_path.json, when it is cached."""
    table = cached_json(spec.repo_id, "speaker_embeddings_path.json")
    if not table:
        return ()
    return tuple(sorted(k for k, v in table.items() if isinstance(v, dict)))


def _pieces(request: Request) -> list[tuple[str, float]]:
    """(chunk, pause before it): sentences, and in Long form paragraphs kept apart (models.common.speech_chunks)."""
    return speech_chunks(request.prompt, CHUNK_CHARS, long_form=request.params.get(MODE) == LONG_FORM)


def _chunks(request: Request) -> list[str]:
    return [chunk for chunk, _ in _pieces(request)]


def check_text(spec: ModelSpec, text: str, values) -> None:
    """Bark speaks one voice in either mode: a speaker tag is refused, naming the fix."""
    check_one_voice(text, values.get(MODE) or SINGLE, model="Bark", dialogue=False)


def _chunk_units(request: Request) -> list[float]:
    cap = request.get("max_chunk_seconds")
    return [min(len(chunk) / CHARS_PER_SECOND, cap) for chunk in _chunks(request)]


def work_units(spec: ModelSpec, request: Request) -> float:
    return sum(_chunk_units(request))


def first_audio_units(spec: ModelSpec, request: Request) -> float | None:
    """The first chunk's units: each chunk is heard as soon as the codec has decoded it."""
    return first_chunk_units(_chunk_units(request))


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """KV caches of the GPT stages at their longest context, plus the codec decoding one chunk."""
    config = cached_json(spec.repo_id) or {}
    semantic = config.get("semantic_config", {})
    layers = semantic.get("num_layers", 12 if "small" in spec.repo_id else 24)
    hidden = semantic.get("hidden_size", 768 if "small" in spec.repo_id else 1024)
    seconds = request.get("max_chunk_seconds")
    context = 256 + 256 + 1 + int(seconds * SEMANTIC_HZ)  # text + voice history + infer token + new tokens
    kv = 2 * layers * context * hidden * dtype_bytes
    fine = 1024 * hidden * dtype_bytes * 12  # the fine model's non-causal pass over its 1024 window
    codec = 4 * 32 * seconds * spec.sample_rate * dtype_bytes
    return int(kv + fine + codec + 32 * 1024**2)


class BarkModelAdapter(CompiledDecoding, OneModuleModel):
    compile_holds_device = False  # its warm-up decodes greedily: it draws nothing from the generator a run samples from

    def compile_decoder(self, policy, device_kind: str, make_request=None) -> bool:
        """Compile the semantic and coarse stages' per-token steps now (the manager calls this in the background
        after a load, when the device is idle): two short runs of both stages on the compiled path. The fine stage
        makes a few non-causal passes, not tokens one by one: it stays eager. Returns whether later runs compile."""
        import torch
        from transformers.models.bark.generation_configuration_bark import (
            BarkCoarseGenerationConfig, BarkSemanticGenerationConfig,
        )

        from models.compiled import DecodeCompiler

        self.compiler = compiler = DecodeCompiler(policy, device_kind)
        config = self.model.generation_config
        semantic_config = BarkSemanticGenerationConfig(**config.semantic_config)
        coarse_config = BarkCoarseGenerationConfig(**config.coarse_acoustics_config)

        def run(steps: int, text: str) -> None:
            inputs = self.preprocess(text, voice_preset=None, return_tensors="pt").to(self.torch_device)
            with torch.inference_mode():
                semantic = self.model.semantic.generate(
                    inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    semantic_generation_config=semantic_config, do_sample=False, max_new_tokens=steps,
                    min_new_tokens=steps, **self.compiled_kwargs(self.model.semantic))
                self.model.coarse_acoustics.generate(
                    semantic, semantic_generation_config=semantic_config, coarse_generation_config=coarse_config,
                    codebook_size=config.codebook_size, do_sample=False,
                    **self.compiled_kwargs(self.model.coarse_acoustics))

        return compiler.warm_up(run)

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch
        from transformers.models.bark.generation_configuration_bark import (
            BarkCoarseGenerationConfig, BarkFineGenerationConfig, BarkSemanticGenerationConfig,
        )

        config = self.model.generation_config
        semantic_config = BarkSemanticGenerationConfig(**config.semantic_config)
        coarse_config = BarkCoarseGenerationConfig(**config.coarse_acoustics_config)
        fine_config = BarkFineGenerationConfig(**config.fine_acoustics_config)
        semantic_max = max(1, round(request.get("max_chunk_seconds") * SEMANTIC_HZ))
        pieces = _pieces(request)
        chunks = [chunk for chunk, _ in pieces]
        total = 100 * len(chunks)
        rate = int(config.sample_rate)
        seed_everything(request.seed)
        made = SpokenChunks(ctx, rate)
        for index, chunk in enumerate(chunks):
            base = 100 * index
            # 1. Text (cues like [laughs] included) and the voice preset -> token ids and history prompt.
            inputs = self.preprocess(chunk, voice_preset=request.get("voice") or None, return_tensors="pt")
            history = inputs.get("history_prompt")
            if history is not None:
                history = {k: v.to(self.torch_device) for k, v in history.items()}
            ctx.check()
            with torch.inference_mode():
                # 2. Semantic tokens: what is said; stops at its end-of-speech token or the cap.
                semantic = self.model.semantic.generate(
                    inputs["input_ids"].to(self.torch_device),
                    attention_mask=inputs["attention_mask"].to(self.torch_device),
                    history_prompt=history, semantic_generation_config=semantic_config,
                    do_sample=True, temperature=request.get("text_temperature"), max_new_tokens=semantic_max,
                    stopping_criteria=_scaled_progress(ctx, semantic_max, base, base + _SEMANTIC, total),
                    **self.compiled_kwargs(self.model.semantic),
                )
                # 3. Coarse acoustic tokens: two EnCodec codebooks at 75 Hz, in sliding windows.
                spoken = int((semantic != semantic_config.semantic_pad_token).sum())
                coarse_total = max(1, math.floor(spoken * COARSE_HZ / SEMANTIC_HZ) * coarse_config.n_coarse_codebooks)
                coarse = self.model.coarse_acoustics.generate(
                    semantic, history_prompt=history, semantic_generation_config=semantic_config,
                    coarse_generation_config=coarse_config, codebook_size=config.codebook_size,
                    do_sample=True, temperature=request.get("waveform_temperature"),
                    stopping_criteria=_scaled_progress(ctx, coarse_total, base + _SEMANTIC, base + _COARSE, total),
                    **self.compiled_kwargs(self.model.coarse_acoustics),
                )
                ctx.check()
                # 4. Fine tokens: the remaining six codebooks, non-autoregressive passes.
                fine = self.model.fine_acoustics.generate(
                    coarse, history_prompt=history, semantic_generation_config=semantic_config,
                    coarse_generation_config=coarse_config, fine_generation_config=fine_config,
                    codebook_size=config.codebook_size, temperature=request.get("waveform_temperature"),
                )
                ctx.progress(base + _FINE, total)
                ctx.check()
                # 5. EnCodec turns the codes into a waveform.
                ctx.stage("decoding")
                audio = self.model.codec_decode(fine)
            # 6. Heard at once by whoever listens, with the pause before it.
            made.add(to_float32_numpy(audio.reshape(-1)), pieces[index][1])
            ctx.progress(base + 100, total)
            ctx.stage("generating")
        return Audio(made.joined(), rate, info={"chunks": len(chunks)})


def _scaled_progress(ctx: RunContext, steps: int, start: int, end: int, total: int):
    """Per-token progress of one stage, mapped onto [start, end] of the run's 0..total scale."""
    scaled = RunContext(cancel=ctx.cancel,
                        on_progress=lambda done, n: ctx.progress(start + (end - start) * min(done, n) // max(n, 1), total))
    return token_progress(scaled, steps)


def fused_attention(self, query, key, value, attention_mask=None):
    """BarkSelfAttention._attn through torch's fused scaled_dot_product_attention: the eager version's math
    (scale 1/sqrt(head_dim), the causal triangle offset for a KV cache, the additive padding mask) without
    materializing the softmax matrix. transformers gives Bark no SDPA path; the fine stage's 1024-frame
    non-causal passes are where it pays. Returns no attention weights (nothing here asks for them)."""
    import torch

    q_len, k_len = query.size(-2), key.size(-2)
    mask, causal = attention_mask, False
    if self.is_causal and q_len > 1:
        if attention_mask is None and q_len == k_len:
            causal = True
        else:
            allowed = self.bias[:, :, k_len - q_len:k_len, :k_len]
            if attention_mask is None:
                mask = allowed
            else:
                mask = torch.where(allowed, attention_mask, torch.finfo(attention_mask.dtype).min)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal)
    return output, None


def use_fused_attention(model) -> int:
    """Route every eager Bark attention of `model` through `fused_attention`; returns how many."""
    import types

    from transformers.models.bark.modeling_bark import BarkSelfAttention, BarkSelfFlashAttention2

    count = 0
    for module in model.modules():
        if isinstance(module, BarkSelfAttention) and not isinstance(module, BarkSelfFlashAttention2):
            module._attn = types.MethodType(fused_attention, module)
            count += 1
    return count


def load(spec: ModelSpec, torch_device: str, dtype: str) -> BarkModelAdapter:
    from transformers import BarkModel, BarkProcessor

    model = load_pretrained(BarkModel, spec, torch_device, dtype, int8_parts=INT8_PARTS, keep_float=("codec_model",))
    use_fused_attention(model)
    processor = BarkProcessor.from_pretrained(spec.repo_id, **SAFE_LOAD)
    check_tokenizer(spec, processor.tokenizer, "tokenizer.json or vocab.txt", model.config.semantic_config.input_vocab_size)
    return BarkModelAdapter(spec, model, processor, torch_device)


FAMILY = Family(
    name="bark", load=load, work_units=work_units, working_bytes=working_bytes, list_voices=list_voices,
    check_text=check_text, first_audio_units=first_audio_units,
    # int8 on a CPU: 1.6x faster than float32 on bark-small (docs/benchmarks.md); EnCodec stays float.
    preferred_dtypes={"cuda": "float16", "mps": "float16", "cpu": "int8"},
    precisions=("float32", "float16", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    files=(("tokenizer.json", "vocab.txt"),),  # BERT's tokenizer, from either file
    accepts=(Accepts("config.json", "model_type", ("bark",)),),  # BarkConfig.model_type
)
