"""Where the studio compiles autoregressive decoders (models.compiled does the compiling): the policy from the
environment, and torch's on-disk compile cache."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Where "auto" compiles: (family, device kind, precision) the bench measured faster compiled (docs/benchmarks.md,
# "Compiled decoding", on a 2-core AMD EPYC): musicgen-small int8, RTF 1.91 eager -> 1.66 compiled. Not bark-small
# (int8 1.05x, bfloat16 0.99x) nor Pocket TTS (1.04x in both): half a minute of compiling for a few per cent. A
# model whose adapter names itself apart (`compile_name`) is measured apart: MusicGen melody int8, RTF 13.00 -> 9.95
# (1.31x, AVX2 only).
PAYS = {("musicgen", "cpu", "int8"), ("musicgen_melody", "cpu", "int8")}

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
        "auto" where the bench measured that it pays (PAYS: MusicGen int8 on a CPU, 1.27-1.30x on the AMX Xeon).
        bfloat16 is not in it: it measured 1.01x before the windowed cache and 1.23-1.25x since, but on a CPU auto
        runs MusicGen in int8, which is faster still, so only a bfloat16 picked by hand would compile."""
        if self.mode == "off":
            return False
        return self.mode == "on" or (family, device_kind, dtype) in PAYS

    def may_apply(self, device_kind: str) -> bool:
        """Whether some model loaded on `device_kind` would compile (some family, some precision)."""
        if self.mode == "off":
            return False
        return self.mode == "on" or any(kind == device_kind for _, kind, _ in PAYS)

    def compiled_here(self) -> bool:
        """Whether a decoder has compiled on this machine before: a trace kept in the compile cache (models.compiled
        keep_traces, MusicGen's), which a later compile loads."""
        folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or self.cache_dir or "") / "dynamo"
        try:
            return folder.is_dir() and any(folder.iterdir())
        except OSError:
            return False

    def prepare(self, device_kind: str) -> float:
        """prepare_compiler(device_kind) for Inductor (another backend needs none of it); the seconds it took."""
        return prepare_compiler(device_kind, self.cache_dir) if self.backend == "inductor" else 0.0

    def compile_mode(self, device_kind: str) -> str | None:
        return "reduce-overhead" if self.cuda_graphs and device_kind == "cuda" else None


def default_cache_dir() -> Path:
    """torch's compile cache, beside the studio's converted weights in the HF cache (HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "audio-studio-compiled"


def use_cache_dir(path: Path | None) -> None:
    """Keep Inductor's compiled kernels and graphs in `path` (torch reads TORCHINDUCTOR_CACHE_DIR when it compiles),
    unless the user set their own. A folder that cannot be made (a read-only HF_HOME) leaves torch's default, said once
    in the log: compiling is an optimisation, never a reason to fail."""
    if path is not None and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log.warning("cannot keep compiled decoders in %s (%s); torch's own cache folder is used", path, error)
            return
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


_prepare_lock = threading.Lock()
_prepared: set[str] = set()  # the device kinds prepare_compiler() has prepared this process for


def prepare_compiler(device_kind: str, cache_dir: Path | None = None) -> float:
    """What any compile in this process does first, done ahead: import torch's compiler (Dynamo and Inductor), and on
    a CPU pick the vector instruction set Inductor builds for (it compiles a test program into the compile cache and
    loads it in a subprocess). Even loading a trace an earlier process saved needs both: on a 2-core AMD EPYC they were
    about 1.3 s and 0.5 s of a second process's 5.4 s compile. Once per process and device kind; a thread that asks
    while another prepares waits for it. Returns the seconds this call spent preparing."""
    with _prepare_lock:
        if device_kind in _prepared:
            return 0.0
        started = time.perf_counter()
        use_cache_dir(cache_dir)
        importlib.import_module("torch._inductor.compile_fx")  # what torch.compile imports for Inductor

        if device_kind == "cpu":
            from torch._inductor import cpu_vec_isa

            cpu_vec_isa.pick_vec_isa()
        _prepared.add(device_kind)
        return time.perf_counter() - started


@contextlib.contextmanager
def lowered_priority(niceness: int = 10):
    """Run this thread (and the compiler processes it starts) at a lower priority, so a run that starts while it
    compiles keeps the cores (Linux: a thread's nice value is its own)."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, before + niceness))
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, before)  # may be refused without privileges: the thread ends anyway
