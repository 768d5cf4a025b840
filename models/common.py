"""Pieces the adapters share: dtypes, seeding, token and step progress with cancel, text chunking, pipeline offload."""

from __future__ import annotations

import logging
from typing import Any, Callable

from studio.errors import InvalidInput, ModelUnavailable
from studio.run import RunContext

log = logging.getLogger(__name__)

# Never run code from a model repo; prefer safetensors (transformers falls back to its safe .bin loader).
SAFE_LOAD = {"trust_remote_code": False}


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def load_pretrained(model_class, spec, torch_device: str, dtype: str, *, int8_parts: tuple[str, ...] = (),
                    keep_float: tuple[str, ...] = ()):
    """`model_class.from_pretrained` for `spec` in the studio's precision, on `torch_device`, in eval mode.

    int8 stores the Linear and token-embedding matrices of `int8_parts` in 8 bits: on the CPU by PyTorch's
    dynamic quantization after a float32 load (activations stay float32); on CUDA through bitsandbytes'
    LLM.int8 while loading, `keep_float` (e.g. the audio codec) left in float16.
    """
    import torch

    if dtype != "int8":
        model = model_class.from_pretrained(spec.repo_id, dtype=torch_dtype(dtype), **SAFE_LOAD)
        return model.eval().to(torch_device)
    kind = torch.device(torch_device).type
    if kind == "cuda":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InvalidInput(
                "precision int8 on a CUDA GPU needs bitsandbytes: `pip install bitsandbytes`, or choose float16"
            ) from None
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(keep_float))
        model = model_class.from_pretrained(spec.repo_id, dtype=torch.float16, quantization_config=quantization,
                                            device_map={"": torch_device}, **SAFE_LOAD)
        return model.eval()
    if kind != "cpu":
        raise InvalidInput(f"precision int8 runs on the CPU and on CUDA GPUs; on {kind} choose float16 or float32")
    model = model_class.from_pretrained(spec.repo_id, dtype=torch.float32, **SAFE_LOAD).eval()
    quantize_int8(model, int8_parts)
    return model


MIN_TOKENS = 32  # ordinary tokens (not special, not added) a working text tokenizer has at the least


def check_tokenizer(spec, tokenizer, files: str, vocab_size: int | None = None) -> None:
    """Refuse a tokenizer that knows (almost) no words: what transformers builds, silently, when the files it
    reads are missing or emptied. Then every word of a prompt becomes the unknown token and the audio ignores it.

    Plausible: at least MIN_TOKENS ordinary tokens, or half the model's `vocab_size` for models with fewer
    (MMS-TTS spells with a few dozen characters). `files` names what the tokenizer reads, for the message.
    """
    from studio.weights import repair_hint

    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    ordinary = len(tokenizer) - len(special)
    needed = min(MIN_TOKENS, (vocab_size or 2 * MIN_TOKENS) // 2)
    if ordinary < needed:
        raise ModelUnavailable(
            f"{spec.repo_id}'s tokenizer in the cache knows {max(ordinary, 0)} word piece(s) besides its special "
            f"tokens (the model has {vocab_size or 'many'}): its files ({files}) are missing or damaged, and every "
            f"word of a prompt would become unknown: {repair_hint(spec.repo_id)}"
        )


def quantize_int8(model, parts: tuple[str, ...]) -> None:
    """In place: the Linear layers of `parts` to dynamic int8, their token embeddings to int8 rows + a scale."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

    from studio.weights import int8_tensor

    replaced: dict[int, Any] = {}  # tied embeddings (T5's shared table) stay one table
    for name in parts:
        part = getattr(model, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization points to torchao; it works in torch 2.13
            quantize_dynamic(part, {torch.nn.Linear}, dtype=torch.qint8, inplace=True,
                             mapping={**get_default_dynamic_quant_module_mappings(),
                                      torch.nn.Linear: _int8_linear_class()})
        for parent in list(part.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Embedding) and int8_tensor(child_name, list(child.weight.shape)):
                    key = child.weight.data_ptr()  # tied tables may sit in two Embedding modules
                    if key not in replaced:
                        replaced[key] = Int8Embedding(child)
                    setattr(parent, child_name, replaced[key])


def int8_linear(linear):
    """One float Linear as the studio's dynamic int8 Linear (what quantize_int8 makes of each)."""
    return _int8_linear_class().from_float(linear)


def _int8_linear_class():
    """torch's dynamic int8 Linear, built from a float Linear without packing a full-size placeholder first
    (models.runtime.int8_modules.Int8Linear)."""
    from models.runtime.int8_modules import Int8Linear

    return Int8Linear


def Int8Embedding(embedding):  # noqa: N802 - builds an instance of the lazily imported module class
    from models.runtime.int8_modules import Int8Embedding

    return Int8Embedding(embedding)


def seed_everything(seed: int) -> Any:
    """Seed torch's generators on every device (and numpy's, which some feature extractors use).

    One generation runs at a time, so global state is safe.
    """
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def token_progress(ctx: RunContext, total: int, *, offset: int = 0, grand_total: int | None = None, on_last=None):
    """A transformers StoppingCriteria reporting (done, total) per generated token, raising Cancelled on cancel.

    With `offset` and `grand_total`, several generate() calls (chunks, stages) report one running count.

    Raising inside generate() stops within the current step, which is what "cancel within one step" means.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList
    import torch

    class _Progress(StoppingCriteria):
        def __init__(self) -> None:
            self.done = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.done += 1
            ctx.progress(offset + min(self.done, total), grand_total or total)
            if self.done >= total and on_last is not None:
                on_last()
            ctx.check()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Progress()])


class OneModuleModel:
    """Adapter state shared by families whose weights are one torch module beside a tokenizer or processor."""

    def __init__(self, spec, model, preprocess, torch_device: str) -> None:
        self.spec = spec
        self.model = model
        self.preprocess = preprocess  # the tokenizer or processor that turns text into the model's inputs
        self.torch_device = torch_device

    @property
    def processor(self):
        """The processor (for families whose preprocessing is a processor, so named in their code)."""
        return self.preprocess

    def modules(self) -> list:
        return [self.model]

    def move(self, torch_device: str) -> None:
        for module in self.modules():  # a family with a second module (a codec) lists it in modules()
            module.to(torch_device)
        self.torch_device = torch_device


class PartSwitcher:
    """CPU offload of a model in named parts: weights stay in RAM and the part that is about to run visits the
    accelerator, the others going back, one at a time; `on_component` books the running part's bytes. On a
    simulated accelerator ("cpu") only the accounting runs. Hook a part with `hook_forward` (its modules' forward)
    or `hook_methods` (a codec called through encode()/decode(), not forward)."""

    def __init__(self, parts: dict[str, list], accelerator: str, on_component, on_move=None) -> None:
        from studio.weights import module_bytes

        self.parts, self.accelerator, self.on_component, self.on_move = parts, accelerator, on_component, on_move
        self.sizes = {name: module_bytes(modules) for name, modules in parts.items()}
        self.active: str | None = None

    def enter(self, name: str) -> None:
        if self.active == name:
            return
        if self.accelerator != "cpu":
            for other, modules in self.parts.items():
                for module in modules:
                    module.to(self.accelerator if other == name else "cpu")
            if self.on_move is not None:  # tensors outside the parts' modules that the running part reads
                self.on_move(self.accelerator)
        self.active = name
        self.on_component(self.sizes[name])

    def hook_forward(self, name: str, modules=None) -> None:
        for module in self.parts[name] if modules is None else modules:
            module.register_forward_pre_hook(lambda _m, _a, _n=name: self.enter(_n))

    def hook_methods(self, name: str, module, methods=("encode", "decode")) -> None:
        for method in methods:
            original = getattr(module, method)
            setattr(module, method, lambda *a, _f=original, **k: (self.enter(name), _f(*a, **k))[1])


def to_float32_numpy(tensor) -> Any:
    return tensor.detach().to("cpu").float().numpy()


def split_text(text: str, max_chars: int, *, first_alone: bool = False) -> list[str]:
    """Split long text into pieces of at most `max_chars`, at sentence ends, then clause breaks, then spaces.

    `first_alone`: the first sentence is a piece of its own, never merged with the next (see speech_chunks)."""
    import re

    pieces: list[str] = []
    for sentence in re.split(r"(?<=[.!?。！？…])\s+|\n+", text.strip()):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            window = sentence[:max_chars]
            cut = max(window.rfind(", "), window.rfind("; "), window.rfind(": "))
            if cut < max_chars // 3:
                cut = window.rfind(" ")
            if cut < max_chars // 3:
                cut = max_chars - 1
            pieces.append(sentence[: cut + 1].strip())
            sentence = sentence[cut + 1 :].strip()
        if sentence:
            pieces.append(sentence)
    # Join short neighbours back together so each call does a useful amount of work.
    merged: list[str] = []
    for piece in pieces:
        if merged and len(merged[-1]) + 1 + len(piece) <= max_chars and not (first_alone and len(merged) == 1):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


SENTENCE_PAUSE_S = 0.15
# Between paragraphs of a Long form text: a reader's paragraph pause, about four times a sentence's (audiobook
# narration guides give 0.5-1 s against 0.1-0.3 s between sentences).
PARAGRAPH_PAUSE_S = 0.6


def speech_chunks(text: str, max_chars: int, *, long_form: bool = False) -> list[tuple[str, float]]:
    """The text's chunks for a model that speaks a chunk at a time, each with the pause before it (0 for the
    first): split_text's sentences; in Long form each paragraph (models.dialogue.paragraphs) on its own, never
    merged with the next, after a PARAGRAPH_PAUSE_S pause.

    The text's first sentence is a chunk of its own (first_alone): a streamed run is heard once its first chunk is
    made, and three merged sentences of a six-sentence text would make the listener wait half the run (issue 16's
    target is a quarter). The chunking is the same whether anyone listens or not, so a file is the same streamed or
    not; the cost is one more model call and one more SENTENCE_PAUSE_S pause after the first sentence."""
    if not long_form:
        return [(chunk, SENTENCE_PAUSE_S if i else 0.0)
                for i, chunk in enumerate(split_text(text, max_chars, first_alone=True))]
    from models.dialogue import paragraphs

    chunks: list[tuple[str, float]] = []
    for paragraph in paragraphs(text):
        for i, chunk in enumerate(split_text(paragraph, max_chars, first_alone=not chunks)):
            chunks.append((chunk, (PARAGRAPH_PAUSE_S if i == 0 else SENTENCE_PAUSE_S) if chunks else 0.0))
    return chunks


def with_pause(part, pause_s: float, sample_rate: int):
    """A spoken chunk as it is handed on (RunContext.audio) and joined: `pause_s` seconds of silence, then the chunk
    (mono float32). The pause before a chunk belongs to it, so the pieces handed on, joined, are the whole output
    (SpokenChunks)."""
    import numpy as np

    part = part.astype(np.float32)
    if pause_s <= 0:
        return part
    return np.concatenate([np.zeros(int(pause_s * sample_rate), dtype=np.float32), part])


class SpokenChunks:
    """A speech run's chunks as they are made: each with the pause before it (the first's is dropped) is handed on
    at once (RunContext.audio) and kept, so the run's output is those same pieces joined."""

    def __init__(self, ctx: RunContext, sample_rate: int) -> None:
        self.ctx, self.sample_rate = ctx, sample_rate
        self.pieces: list = []

    def add(self, part, pause_s: float) -> None:
        piece = with_pause(part, pause_s if self.pieces else 0.0, self.sample_rate)
        self.pieces.append(piece)
        self.ctx.audio(piece, self.sample_rate)

    def __len__(self) -> int:
        return len(self.pieces)

    def joined(self):
        import numpy as np

        return self.pieces[0] if len(self.pieces) == 1 else np.concatenate(self.pieces)


def first_chunk_units(units: list[float]) -> float | None:
    """Family.first_audio_units from the work units of each chunk a run hands on: the first's, None for one chunk
    (nothing to hear before the run ends)."""
    return units[0] if len(units) > 1 else None


def step_callback(ctx: RunContext, steps: int):
    """The diffusers per-step callback(step, timestep, latents): progress, cancel between steps, then 'decoding'.

    diffusers 0.42's audio pipelines have no interrupt flag; raising from the callback stops the loop
    after the current step, and the pipeline object stays usable.
    """

    def callback(step: int, timestep, latents) -> None:
        done = min(step + 1, steps)
        ctx.progress(done, steps)
        ctx.check()
        if done == steps:
            ctx.stage("decoding")

    return callback


def keep_outside(clip, generated, first: int, last: int, fade: int):
    """`clip` (channels, samples) with samples first..last taken from `generated`, joined by raised-cosine fades of
    `fade` samples (at most a quarter of the range) just inside the range where it meets the clip; outside the
    range the clip is untouched, sample for sample. Repainting and inpainting pipelines regenerate every latent and
    keep the rest only as well as their model follows its condition: the studio keeps it."""
    import numpy as np

    out = clip.astype(np.float32, copy=True)
    out[:, first:last] = generated[:, first:last]
    fade = min(fade, (last - first) // 4)
    if fade > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)).astype(np.float32)
        if first > 0:
            window = slice(first, first + fade)
            out[:, window] = clip[:, window] * (1 - ramp) + generated[:, window] * ramp
        if last < clip.shape[1]:
            window = slice(last - fade, last)
            out[:, window] = generated[:, window] * ramp[::-1] + clip[:, window] * (1 - ramp[::-1])
    return out


def step_end_callback(ctx: RunContext, steps: int):
    """The same, as diffusers' newer `callback_on_step_end(pipe, step, timestep, callback_kwargs)` wants it.

    Raising Cancelled from it stops the loop at once, as with `step_callback`; the callback returns the
    tensors it was given (the pipeline replaces its own with what comes back).
    """
    report = step_callback(ctx, steps)

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        report(step, timestep, None)
        return callback_kwargs

    return callback


class DiffusersPipelineModel:
    """Adapter state for a diffusers pipeline: its nn.Module parts, moving, and CPU offload with accounting."""

    def __init__(self, spec, pipe, torch_device: str) -> None:
        self.spec = spec
        self.pipe = pipe
        self.torch_device = torch_device
        self.execution_device = torch_device

    def parts(self) -> dict:
        import torch

        return {name: c for name, c in self.pipe.components.items() if isinstance(c, torch.nn.Module)}

    def modules(self) -> list:
        return list(self.parts().values())

    def move(self, torch_device: str) -> None:
        self.pipe.to(torch_device)
        self.torch_device = self.execution_device = torch_device

    def enable_offload(self, accelerator: str, on_component: Callable[[int], None]) -> None:
        """Weights stay in RAM; each part visits the accelerator when it runs (diffusers' model offload).

        `on_component(bytes)` hears which part is on the device, so memory accounting counts only that one.
        On a simulated accelerator (torch device "cpu") only the accounting runs: there is nothing to move.
        """
        from studio.weights import module_bytes

        sizes = {name: module_bytes([module]) for name, module in self.parts().items()}
        active: list[str | None] = [None]
        for name, module in self.parts().items():
            def enter(_module, _args, name=name) -> None:
                if active[0] != name:
                    active[0] = name
                    on_component(sizes[name])

            for sub in module.modules():
                sub.register_forward_pre_hook(enter)
        if accelerator != "cpu":
            self.pipe.enable_model_cpu_offload(device=accelerator)
        self.execution_device = accelerator


def rank_by_clap(pipe, prompt: str, audio, sample_rate: int):
    """AudioLDM2's own ranking of candidate waveforms by CLAP text-audio similarity, best first.

    diffusers does this only when librosa is installed; scipy's polyphase resampler does the same job here.
    """
    import math

    import numpy as np
    import torch
    from scipy.signal import resample_poly

    target = pipe.feature_extractor.sampling_rate
    g = math.gcd(target, sample_rate)
    resampled = [resample_poly(np.asarray(a, dtype=np.float64), target // g, sample_rate // g) for a in audio]
    inputs = pipe.tokenizer([prompt], return_tensors="pt", padding=True)
    # An unfused CLAP takes one mel crop per clip; "fusion" would stack four.
    fused = getattr(pipe.text_encoder.config.audio_config, "enable_fusion", False)
    features = pipe.feature_extractor(resampled, return_tensors="pt", sampling_rate=target,
                                      truncation="fusion" if fused else "rand_trunc").input_features
    inputs["input_features"] = features.to(pipe.text_encoder.dtype)
    device = next(pipe.text_encoder.parameters()).device
    with torch.inference_mode():
        scores = pipe.text_encoder(**inputs.to(device)).logits_per_text[0]
    order = torch.argsort(scores, descending=True).cpu().numpy()
    return [audio[i] for i in order], scores.cpu().numpy()[order]
