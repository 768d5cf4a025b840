"""The studio's int8 modules (models.common.quantize_int8). Top-level classes in a module of their own: torch.ao is
imported only when a model is quantized, and Dynamo's precompile (models.compiled) saves a module's type by its
import path, which a class defined inside a function does not have."""

from __future__ import annotations

import torch
from torch.ao.nn.quantized.dynamic import Linear
from torch.ao.nn.quantized.modules.utils import _quantize_weight
from torch.ao.quantization.qconfig import default_dynamic_qconfig


class Int8Linear(Linear):
    """torch's dynamic int8 Linear, built from a float Linear without packing a full-size placeholder first.

    `Linear.from_float` (torch/ao/nn/quantized/dynamic/modules/linear.py) makes `cls(in, out)`, whose __init__
    quantizes and prepacks an empty [out, in] weight, then packs the real one over it: of an int8 load of
    musicgen-small (316 Linear layers) linear_prepack took 3.1 s of 8.4 s (cProfile, 948 calls: a 1 x 1, the
    placeholder and the weight per layer). Here the placeholder is 1 x 1; the observer, the quantized weight and
    the packed result are from_float's own, so the layer computes the same numbers. Measured on the bench's
    realistic-size musicgen-small, niced, load average 3.3-4.6 on 2 cores: an int8 load 9.4-11.0 s -> 6.7-7.3 s,
    the same seed giving the same audio sample for sample.
    """

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        qconfig = getattr(mod, "qconfig", None)  # what quantize_dynamic set (default_dynamic_qconfig for qint8)
        observer = (qconfig if qconfig is not None else default_dynamic_qconfig).weight()
        observer(mod.weight)
        qweight = _quantize_weight(mod.weight.float(), observer)
        linear = cls(1, 1, bias_=False, dtype=observer.dtype)
        linear.in_features, linear.out_features = mod.in_features, mod.out_features
        linear.set_weight_bias(qweight, mod.bias)
        return linear

    def forward(self, x):
        key = getattr(self, "studio_key", None)  # set by models.compiled.prepare_int8 before a compile
        if key is not None and torch.compiler.is_compiling():  # one opaque op instead of a graph break
            return torch.ops.studio.int8_linear(x, key, self.out_features)
        return super().forward(x)


class Int8Embedding(torch.nn.Module):
    """A token table stored as int8 rows with one float32 scale per row; rows are dequantized on lookup."""

    def __init__(self, embedding: torch.nn.Embedding) -> None:
        super().__init__()
        weight = embedding.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        self.register_buffer("qweight", torch.round(weight / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.padding_idx = embedding.padding_idx
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim

    @property
    def weight(self) -> torch.Tensor:  # for code that reads `.weight.device` or `.weight.dtype`
        return self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].to(self.scale.dtype) * self.scale[ids]
