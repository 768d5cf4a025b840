"""Pocket TTS (Kyutai, ported to transformers): a 100M-parameter speech model with shipped voices and voice cloning.

One causal transformer reads the voice (latents of its codec), the text and the audio so far, and a small flow head
turns each step's hidden state into the next continuous latent frame (12.5 a second); the codec decodes the frames
to 24 kHz audio. transformers 5.23 holds it as `PocketTTSForConditionalGeneration` + `PocketTTSProcessor`, the
codec (`PocketTTSAudioTokenizerModel`) in a second repo that the processor's files name.
"""

from __future__ import annotations

import logging
import math

from studio.catalog import MODE, Accepts, Companion, Family, ModelSpec, Param, Request, SpeedPrior
from studio.clips import Clip
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json, cached_snapshot, cached_weight_bytes

from models.common import (SAFE_LOAD, OneModuleModel, PartSwitcher, SpokenChunks, check_tokenizer, first_chunk_units,
                           load_pretrained, seed_everything, speech_chunks, to_float32_numpy)
from models.compiled import CompiledDecoding
from models.dialogue import LONG_FORM, SINGLE, check_one_voice, mode_param, paragraphs

log = logging.getLogger(__name__)

# transformers 5.23 names these checkpoints in its docstrings (`@auto_docstring(checkpoint=...)` in
# configuration_pocket_tts.py and configuration_pocket_tts_audio_tokenizer.py): a personal namespace (the porter's),
# not Kyutai's own organisation (kyutai/pocket-tts, whose weights are in the original package's format).
REPO = "eustlb/pocket-tts"
CODEC_REPO = "eustlb/pocket-tts-audio-tokenizer"
LICENSE = "CC-BY-4.0"  # Kyutai's weights (code MIT); the port's card could not be read here
SAMPLE_RATE = 24000  # PocketTTSAudioTokenizerConfig.sampling_rate
FRAME_RATE = 12.5  # PocketTTSConfig.frame_rate: 24000 / (6 * 5 * 4 * 16) samples a frame
# The eight voices Kyutai publishes; the list offered is read from the cached repo's voices/ folder when present.
PUBLISHED_VOICES = ("alba", "marius", "javert", "jean", "fantine", "cosette", "eponine", "azelma")
DEFAULT_VOICE = "alba"
# OpenAI's voice names for /v1/audio/speech (studio.ui.openai_api), by the voice's register: Kyutai's female voices
# (alba, the default, fantine, cosette, eponine, azelma) for OpenAI's female ones and alloy, the male ones (marius,
# javert, jean) for OpenAI's male ones.
OPENAI_VOICES = (
    ("alloy", "alba"), ("ash", "marius"), ("ballad", "jean"), ("cedar", "jean"), ("coral", "cosette"),
    ("echo", "javert"), ("fable", "marius"), ("marin", "fantine"), ("nova", "fantine"), ("onyx", "javert"),
    ("sage", "azelma"), ("shimmer", "eponine"), ("verse", "marius"),
)
MIN_PROMPT_S = 1.0  # under a second there is hardly a voice to hear
# The codec's encoder transformer runs at the SEANet rate, 24000 / (6 * 5 * 4) = 200 frames a second, with rotary
# positions up to max_position_embeddings = 8000 (PocketTTSAudioTokenizerConfig): 40 s of voice prompt. The feature
# extractor itself cuts nothing (its max_length defaults to None), so a longer clip is refused, not truncated.
MAX_PROMPT_S = 8000 * 6 * 5 * 4 / SAMPLE_RATE
CHUNK_CHARS = 200  # PocketTTSProcessor.split_text groups sentences into chunks of <= 50 tokens: about 200 characters
CHARS_PER_SECOND = 14.0  # typical speech, for estimates before the model has run
# A trained model ends each chunk at its end-of-speech logit; a random-weight one may never do so, and generate()'s own
# budget counts tokens of a tokenizer the studio has not loaded when it estimates. So each chunk is capped from its
# characters: a second to start and end, plus 0.12 s a character (8 characters a second, slower than any reading).
CAP_BASE_S = 1.0
CAP_S_PER_CHAR = 0.12
# The backbone and the flow head: their Linear layers (and the token table) become int8 on a CPU. The codec stays float.
INT8_PARTS = ("model", "flow_head")
# Read by the backbone as `.weight.dtype` (modeling_pocket_tts.py, embed_audio_latents and the voice projection), which a
# dynamically quantized Linear does not have: they stay float (2 x 32 x 1024 weights).
_FLOAT_PROJECTIONS = ("audio_prompt_proj", "audio_latent_proj")
# Published architecture (the library's default configs equal Kyutai's english config: 6 layers of 1024, a 6-block
# flow head of 512, the Mimi-style codec), counted on the meta device: backbone 79.7M + flow head 9.76M = 89.4M, codec
# 20.1M (encoder 9.75M, decoder 10.3M). Used until the repos' files are cached.
MODEL_PARAMETERS = 89_449_537
CODEC_PARAMETERS = 20_054_337
LAYERS, HIDDEN = 6, 1024
# Speed, measured here: `python -m bench --quick --only pocket-tts` (docs/benchmarks.md), a random-weight build of the
# published configs (above) speaking one 56-character sentence to its cap (97 frames, 7.76 s of audio, codec decode
# included), the studio's run against transformers called directly, 2 threads, on a 2-core AMD EPYC (avx2,
# avx512f/bw/vl, avx512_vnni, avx512_bf16) with other jobs holding under one core: float32 4.02 s (0.041 s a frame,
# real-time factor 0.52, the reference 4.10 s), int8 2.28 s (0.024 s a frame, RTF 0.29: 1.80x the float32 reference),
# bfloat16 3.72 s (1.10x). An earlier probe on the same CPU kept at a load average of 6-7 measured 0.32 s a frame:
# other jobs cost this model eight-fold. Kyutai publishes about 6x faster than real time on 2 cores of an M4.
CPU_S_PER_FRAME = 0.041  # float32
CPU_INT8_S_PER_FRAME = 0.024
CUDA_S_PER_FRAME = 0.010  # not measured (no GPU here): a 6-layer 1024-wide step is launch-bound, about 10 ms
MPS_S_PER_FRAME = 0.020  # not measured


# One voice, a preset or cloned (no dialogue): the same voice latents prompt every chunk, so Long form holds the voice
# over a long text. Single voice is the default: what every call before modes did.
MODES = (SINGLE, LONG_FORM)


def _params() -> tuple[Param, ...]:
    return (
        mode_param(MODES, SINGLE, {LONG_FORM: "Every chunk starts from the same voice (preset or cloned)."}),
        Param("voice", str, DEFAULT_VOICE, "Voice", "One of the voices shipped with the model. A clip in Voice to "
              "clone replaces it.", advanced=False),
        Param("audio", Clip, None, "Voice to clone",
              f"A clip of the voice to speak with ({MIN_PROMPT_S:g} to {MAX_PROMPT_S:g} s of one speaker, WAV, "
              "FLAC, OGG or MP3, or a recording); 5-10 s of clean speech work best. Replaces Voice.",
              minimum=MIN_PROMPT_S, maximum=MAX_PROMPT_S, advanced=False),
        Param("temperature", float, 0.7, "Temperature", "Variance of the noise each frame is drawn from: higher is "
              "livelier, lower steadier; 0 draws none (the same audio for any seed).",
              minimum=0.0, maximum=1.5, step=0.05),
        Param("num_flow_steps", int, 1, "Flow steps", "Euler steps of the flow head per frame; the released model "
              "is distilled for 1.", minimum=1, maximum=10, step=1),
        Param("eos_threshold", float, -4.0, "End-of-speech threshold", "End-of-speech logit above which a sentence "
              "ends; higher lets it run on longer.", minimum=-10.0, maximum=10.0, step=0.5),
    )


def _spec() -> ModelSpec:
    return ModelSpec(
        repo_id=REPO, family="pocket_tts", tasks=("speech",), label="Pocket TTS",
        license=LICENSE, parameters=MODEL_PARAMETERS, sample_rate=SAMPLE_RATE, channels=1,
        max_duration=None, params=_params(),
        speed={"cpu": SpeedPrior(0.5, CPU_S_PER_FRAME), "cpu/int8": SpeedPrior(0.5, CPU_INT8_S_PER_FRAME),
               "cuda": SpeedPrior(0.5, CUDA_S_PER_FRAME), "mps": SpeedPrior(0.5, MPS_S_PER_FRAME)},
        unit="frame", voices=PUBLISHED_VOICES, max_prompt_chars=20_000, openai_voices=OPENAI_VOICES,
        # The speech default on a CPU: about 3.4x faster than real time there in int8 (CPU_S_PER_FRAME's note), where
        # Bark small takes some 20 s a second of speech. Bark stays the default on GPUs (13 languages, cues).
        featured_in=("speech",), featured_on=("cpu",),
        description="Kyutai's 100M-parameter English TTS, faster than real time on a CPU: eight shipped voices or a "
                    f"voice cloned from a clip; 24 kHz. Community port in a personal namespace ({REPO}, codec in {CODEC_REPO}); "
                    "Kyutai gates the weights that clone voices.",
    )


SPECS = (_spec(),)


def list_voices(spec: ModelSpec) -> tuple[str, ...]:
    """The voices in the cached repo's voices/ folder (one safetensors of voice latents each), when it is cached."""
    snapshot = cached_snapshot(spec.repo_id)
    if snapshot is None or not (snapshot / "voices").is_dir():
        return ()
    return tuple(sorted(path.stem for path in (snapshot / "voices").glob("*.safetensors")))


def _pieces(request: Request) -> list[tuple[str, float]]:
    """(chunk, pause before it): sentences, and in Long form paragraphs kept apart (models.common.speech_chunks)."""
    return speech_chunks(request.prompt, CHUNK_CHARS, long_form=request.params.get(MODE) == LONG_FORM)


def _chunks(request: Request) -> list[str]:
    return [chunk for chunk, _ in _pieces(request)]


def check_text(spec: ModelSpec, text: str, values) -> None:
    """Pocket TTS speaks one voice in either mode: a speaker tag is refused, naming the fix."""
    check_one_voice(text, values.get(MODE) or SINGLE, model="Pocket TTS", dialogue=False)


def frame_cap(chunk: str, frame_rate: float = FRAME_RATE) -> int:
    """The most frames one chunk may take (see CAP_S_PER_CHAR)."""
    return math.ceil((CAP_BASE_S + CAP_S_PER_CHAR * len(chunk)) * frame_rate)


def _chunk_units(request: Request) -> list[float]:
    """Each chunk's frames a trained model makes at a typical speaking rate; the first also carries the voice clip's
    frames (its encoding and the prefill over it cost about a frame each), which come before it."""
    units = [min(len(chunk) / CHARS_PER_SECOND * FRAME_RATE, frame_cap(chunk)) for chunk in _chunks(request)]
    clip = request.params.get("audio")
    if units and clip is not None:
        units[0] += clip.seconds * FRAME_RATE
    return units


def work_units(spec: ModelSpec, request: Request) -> float:
    return sum(_chunk_units(request))


def first_audio_units(spec: ModelSpec, request: Request) -> float | None:
    """The voice and the first chunk: each chunk is heard as soon as the codec has decoded it."""
    return first_chunk_units(_chunk_units(request))


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The backbone's KV cache at a chunk's longest context, and the codec decoding a chunk (or encoding the clip):
    its SEANet activations, num_filters channels doubling as the rate halves, about 4 x num_filters per sample."""
    config = cached_json(spec.repo_id) or {}
    codec = cached_json(CODEC_REPO) or {}
    layers, hidden = config.get("num_hidden_layers", LAYERS), config.get("hidden_size", HIDDEN)
    clip = request.params.get("audio")
    voice_s = clip.seconds if clip is not None else 10.0  # the shipped voices are prompts of a few seconds
    longest = max(frame_cap(chunk) for chunk in _chunks(request))
    context = voice_s * FRAME_RATE + CHUNK_CHARS + longest
    kv = 2 * layers * context * hidden * dtype_bytes
    samples = max(longest / FRAME_RATE, voice_s) * SAMPLE_RATE
    codec_bytes = 4 * codec.get("num_filters", 64) * samples * 4  # the codec computes in float32
    return int(kv + codec_bytes + 32 * 1024**2)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    """The two repos' weights: the TTS model and its codec (which stays float32: the processor loads it so)."""
    model = cached_weight_bytes(spec.repo_id, dtype_bytes)
    codec = cached_weight_bytes(CODEC_REPO, 4)
    return {"model": model if model is not None else MODEL_PARAMETERS * dtype_bytes,
            "audio_tokenizer": codec if codec is not None else CODEC_PARAMETERS * 4}


def describe(spec: ModelSpec, request: Request) -> str:
    clip = request.params.get("audio")
    chunks = len(_chunks(request))
    parts = f" in {chunks} parts" if chunks > 1 else ""
    if request.params.get(MODE) == LONG_FORM:
        count = len(paragraphs(request.prompt))
        parts = f" {count} paragraph{'s' if count != 1 else ''} in {chunks} part{'s' if chunks != 1 else ''}"
    if clip is not None:
        return f"speaks{parts} in the voice of the {clip.seconds:.1f} s clip {clip.name!r} (cloned)"
    return f"speaks{parts} in the voice {request.get('voice')!r}"


class PocketTTSAdapter(CompiledDecoding, OneModuleModel):
    """The model, its processor and the codec the processor holds (the processor encodes voices and decodes frames)."""

    @property
    def codec(self):
        return self.processor.audio_tokenizer

    def modules(self) -> list:
        return [self.model, self.codec]

    def enable_offload(self, accelerator: str, on_component) -> None:
        """Weights stay in RAM; the model or the codec visits the accelerator while it runs, one at a time."""
        switcher = PartSwitcher({"model": [self.model], "audio_tokenizer": [self.codec]}, accelerator, on_component)
        switcher.hook_forward("model")
        switcher.hook_methods("audio_tokenizer", self.codec)  # the processor calls its methods, not its forward
        self.torch_device = accelerator

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        # 1. The voice: latents of the clip to clone, or of a shipped voice; the same for every chunk.
        clip = request.params.get("audio")
        voice = self._clone(clip) if clip is not None else self._shipped_voice(request.get("voice"))
        pieces = _pieces(request)
        chunks = [chunk for chunk, _ in pieces]
        caps = [frame_cap(chunk, self.model.config.frame_rate) for chunk in chunks]
        total, done = sum(caps), 0
        temperature = request.get("temperature")
        seed_everything(request.seed)
        spoken, frames = SpokenChunks(ctx, SAMPLE_RATE), []
        for chunk, cap in zip(chunks, caps):
            ctx.check()
            # 2. The prompt as the processor's chat template writes it: voice placeholders, the text, the first frame.
            conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": chunk}]}]
            prompt = self.processor.apply_chat_template(conversation)
            inputs = self.processor(text=prompt, audio_prompt_latents=[voice], return_tensors="pt")
            inputs = inputs.to(self.torch_device)
            # 3. One frame per forward pass (the prefill yields the first). PocketTTS's generate drops every
            # StoppingCriteria but its own and the length cap, and ignores logits processors and streamers
            # (generation_pocket_tts.py, _get_stopping_criteria / _get_logits_processor / _sample), so progress and
            # cancel hook the model's forward: raising there stops within the frame being made.
            counter = _FrameProgress(ctx, done, total, cap)
            hook = self.model.register_forward_hook(counter)
            try:
                with torch.inference_mode():
                    out = self.model.generate(
                        **inputs, max_new_tokens=cap, do_sample=temperature > 0,
                        temperature=temperature if temperature > 0 else None,
                        num_flow_steps=request.get("num_flow_steps"), eos_threshold=request.get("eos_threshold"),
                        return_dict_in_generate=True, **self.compiled_kwargs(self.model),
                    )
            finally:
                hook.remove()
            done += cap  # a chunk that ended early hands the rest of its share on
            ctx.progress(done, total)
            ctx.check()
            # 4. The codec turns the frames into audio.
            ctx.stage("decoding")
            # As a batch of one: decode's one-sample form (2-D latents) fails on its mask in 5.23 (sum() of a 1-D mask
            # is a 0-d tensor, whose tolist() is an int it then iterates).
            waveform = self.processor.decode(out.audio_latents, out.audio_latents_mask)[0]
            # Heard at once by whoever listens, with the pause before it.
            spoken.add(to_float32_numpy(waveform), pieces[len(spoken)][1])
            frames.append(int(out.audio_latents_mask[0].sum()))
            ctx.stage("generating")
        return Audio(spoken.joined(), SAMPLE_RATE,
                     info={"chunks": len(chunks), "frames": frames, "cloned": clip is not None})

    def _clone(self, clip: Clip):
        """The clip's latents, as PocketTTSProcessor._process_audio makes them (feature extractor, codec encoder)."""
        import torch

        samples = clip.conformed(SAMPLE_RATE, 1)[0]
        features = self.processor.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        codec = self.codec
        features = features.to(codec.device)
        with torch.inference_mode():
            encoded = codec.encode(features["input_values"].to(codec.dtype), features["padding_mask"])
        return encoded.latents[0][encoded.latents_mask[0].bool()].float().cpu()

    def _shipped_voice(self, name: str):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
        from safetensors.torch import load_file

        try:
            path = hf_hub_download(self.spec.repo_id, f"voices/{name}.safetensors")
        except (EntryNotFoundError, LocalEntryNotFoundError):
            known = list_voices(self.spec) or PUBLISHED_VOICES
            raise InvalidInput(f"voice {name!r} is not in {self.spec.repo_id}'s voices/ folder (in the cache or on "
                               f"the hub); choose one of: {', '.join(known)}, or give a clip in Voice to clone") \
                from None
        tensors = load_file(path)
        latents = tensors.get("audio_prompt_latents", next(iter(tensors.values()), None))
        latent_dim = self.model.config.latent_dim
        if latents is None or latents.shape[-1] != latent_dim or latents.reshape(-1, latent_dim).shape[0] == 0:
            shape = None if latents is None else tuple(latents.shape)
            raise InvalidInput(f"voice {name!r} of {self.spec.repo_id} holds latents of shape {shape}, not "
                               f"(frames, {latent_dim}): the file is damaged; delete voices/{name}.safetensors from "
                               "the cache to download it again, or choose another voice")
        return latents.reshape(-1, latent_dim).float()


class _FrameProgress:
    """A forward hook: one call per generated frame; reports the run's running count and raises Cancelled on cancel."""

    def __init__(self, ctx: RunContext, offset: int, total: int, cap: int) -> None:
        self.ctx, self.offset, self.total, self.cap = ctx, offset, total, cap
        self.frames = 0

    def __call__(self, module, args, output) -> None:
        self.frames += 1
        self.ctx.progress(self.offset + min(self.frames, self.cap), self.total)
        self.ctx.check()


def load(spec: ModelSpec, torch_device: str, dtype: str) -> PocketTTSAdapter:
    from transformers import PocketTTSForConditionalGeneration, PocketTTSProcessor

    if dtype == "int8":
        model = load_pretrained(PocketTTSForConditionalGeneration, spec, torch_device, "float32")
        backbone = model.model
        keep = {name: getattr(backbone, name) for name in _FLOAT_PROJECTIONS}
        from models.common import quantize_int8

        quantize_int8(model, INT8_PARTS)
        for name, module in keep.items():
            setattr(backbone, name, module)
    else:
        model = load_pretrained(PocketTTSForConditionalGeneration, spec, torch_device, dtype)
    # The processor loads the codec from the repo its processor_config.json names (CODEC_REPO), in float32: the
    # waveform's quality is in the codec, and it is a fifth of the weights.
    processor = PocketTTSProcessor.from_pretrained(spec.repo_id, **SAFE_LOAD)
    processor.audio_tokenizer.eval().to(torch_device)
    check_tokenizer(spec, processor.tokenizer, "tokenizer.json", model.config.vocab_size)
    return PocketTTSAdapter(spec, model, processor, torch_device)


FAMILY = Family(
    name="pocket_tts", load=load, work_units=work_units, working_bytes=working_bytes, list_voices=list_voices,
    check_text=check_text, first_audio_units=first_audio_units,
    components=components, describe=describe, speed_param=None,
    # auto is int8 on a CPU: 1.80x the float32 reference and 1.76x the studio's own float32 (CPU_S_PER_FRAME's note;
    # bfloat16 only 1.10x), as for Bark and MusicGen. Its effect on a trained flow head could not be heard here
    # (random weights): Precision float32 is one click away. bfloat16 on GPUs, where the library keeps the latent
    # statistics and the flow times in float32 (_keep_in_fp32_modules_strict).
    preferred_dtypes={"cuda": "bfloat16", "mps": "float32", "cpu": "int8"},
    precisions=("float32", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    files=(("tokenizer.json",), ("processor_config.json",)),
    accepts=(Accepts("config.json", "model_type", ("pocket_tts",)),),  # PocketTTSConfig.model_type
    # The codec is a repo of its own that the processor loads: its bytes count once beside the model's (exact once
    # cached), and the sizer leaves its part out of the model's own int8 figure from `components`.
    companion_repos=(Companion(CODEC_REPO, CODEC_PARAMETERS, part="audio_tokenizer"),),
)
