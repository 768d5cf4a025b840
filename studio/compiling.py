"""Where the studio compiles autoregressive decoders (models.compiled does the compiling): the policy from the
environment, and torch's on-disk compile cache."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Where "auto" compiles: (family, device kind, precision) the bench measured faster compiled (docs/benchmarks.md,
# "Compiled decoding", on a 2-core AMD EPYC): musicgen-small int8, RTF 1.91 eager -> 1.66 compiled. Not bark-small
# (int8 1.05x, bfloat16 0.99x) nor Pocket TTS (1.04x in both): half a minute of compiling for a few per cent.
PAYS = {("musicgen", "cpu", "int8")}

# What a compiling model's decode_path() says (models.compiled.DecodeCompiler.describe).
EAGER_PATH = "eager"
COMPILING_PATH = "eager while the decoder compiles"
COMPILED_PATH = "compiled decoder"


@dataclass(frozen=True)
class CompilePolicy:
    """Where the compiled path is used, with what; from STUDIO_COMPILE, STUDIO_COMPILE_BACKEND, STUDIO_CUDA_GRAPHS.

    `mode` "auto" compiles where the bench measured that it pays (PAYS); "on" everywhere a family
    supports it (CUDA and MPS included, unmeasured); "off" never."""

    mode: str = "auto"
    backend: str = "inductor"  # "eager" traces with Dynamo but runs without Inductor (the tests' fast check)
    cuda_graphs: bool = False
    cache_dir: Path | None = None

    MODES = ("auto", "on", "off")

    @classmethod
    def from_environment(cls, mode: str | None = None) -> "CompilePolicy":
        """The policy of `mode` (else STUDIO_COMPILE), with STUDIO_COMPILE_BACKEND and STUDIO_CUDA_GRAPHS."""
        mode = (mode if mode is not None else os.environ.get("STUDIO_COMPILE", "auto")).strip().lower() or "auto"
        mode = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(mode, mode)
        if mode not in cls.MODES:
            log.warning("STUDIO_COMPILE=%r is not one of %s: using auto", mode, ", ".join(cls.MODES))
            mode = "auto"
        return cls(mode=mode, backend=os.environ.get("STUDIO_COMPILE_BACKEND", "inductor") or "inductor",
                   cuda_graphs=os.environ.get("STUDIO_CUDA_GRAPHS", "0") == "1", cache_dir=default_cache_dir())

    def applies(self, family: str, device_kind: str, dtype: str) -> bool:
        """Whether a model of `family` loaded on `device_kind` in `dtype` compiles (if the family can): "on" always;
        "auto" where the bench measured that it pays (PAYS: musicgen-small int8 on a CPU, 1.15x; bfloat16 1.01x is
        not worth a minute of compiling)."""
        if self.mode == "off":
            return False
        return self.mode == "on" or (family, device_kind, dtype) in PAYS

    def compile_mode(self, device_kind: str) -> str | None:
        return "reduce-overhead" if self.cuda_graphs and device_kind == "cuda" else None


def default_cache_dir() -> Path:
    """torch's compile cache, beside the studio's converted weights in the HF cache (HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "audio-studio-compiled"


def use_cache_dir(path: Path | None) -> None:
    """Keep Inductor's compiled kernels and graphs in `path` (torch reads TORCHINDUCTOR_CACHE_DIR when it compiles),
    unless the user set their own."""
    if path is not None and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
