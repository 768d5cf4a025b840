"""Pieces the adapters share: dtypes, seeding, token and step progress with cancel, text chunking, pipeline offload."""

from __future__ import annotations

import logging
from typing import Any, Callable

from studio.run import RunContext

log = logging.getLogger(__name__)

# Never run code from a model repo; prefer safetensors (transformers falls back to its safe .bin loader).
SAFE_LOAD = {"trust_remote_code": False}


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


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

    def modules(self) -> list:
        return [self.model]

    def move(self, torch_device: str) -> None:
        self.model.to(torch_device)
        self.torch_device = torch_device


def to_float32_numpy(tensor) -> Any:
    return tensor.detach().to("cpu").float().numpy()


def split_text(text: str, max_chars: int) -> list[str]:
    """Split long text into pieces of at most `max_chars`, at sentence ends, then clause breaks, then spaces."""
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
        if merged and len(merged[-1]) + 1 + len(piece) <= max_chars:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def join_with_pauses(parts: list, sample_rate: int, pause_s: float = 0.15):
    """Concatenate mono chunks with a short silence between them."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    gap = np.zeros(int(pause_s * sample_rate), dtype=np.float32)
    joined: list = []
    for i, part in enumerate(parts):
        if i:
            joined.append(gap)
        joined.append(part.astype(np.float32))
    return np.concatenate(joined)


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
