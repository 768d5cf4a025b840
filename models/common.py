"""Small pieces every transformers-based adapter uses: dtypes, seeding, per-token progress and cancel, offline-aware loading."""

from __future__ import annotations

import logging
from typing import Any

from studio.run import RunContext

log = logging.getLogger(__name__)

# Never run code from a model repo; prefer safetensors (transformers falls back to its safe .bin loader).
SAFE_LOAD = {"trust_remote_code": False}


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def seed_everything(seed: int) -> Any:
    """Seed torch's generators on every device; one generation runs at a time, so global state is safe."""
    import torch

    torch.manual_seed(seed)
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
