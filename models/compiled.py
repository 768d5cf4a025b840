"""The compiled decode path (issue 17): an autoregressive decoder's per-token step under torch.compile, with a static
KV cache, compiled once in the background while eager runs serve, its artifacts kept on disk.

What it takes, measured on musicgen-small (bench section `compiled`, docs/benchmarks.md):
- a static cache (transformers' StaticCache) so every step has the same shapes; the cache is sized to the run, and
  torch's automatic dynamic shapes make its length (and the text's) symbolic after the warm-up's second call, so
  that no later run compiles again;
- no graph break per layer: torch's dynamic int8 Linear (the CPU int8 path, models.common.quantize_int8) is a
  TorchScript-packed op Dynamo cannot trace, so under compile it goes through one opaque custom op (`int8_linear`);
  MusicGen's sinusoidal positions branch on a tensor, so they are looked up branch-free (`branch_free_positions`);
- inputs of one layout each step: generate() slices the growing sequence (a stride that changes every step) and
  grows the decoder's all-ones mask; the step wrapper passes a contiguous copy and no mask (the static cache's own
  positions make the causal mask).

A compiled step computes the same function in another order, so its audio differs from eager's in rounding (the
sampled tokens part after a while), not in kind; tests/test_compiled.py checks that on the tiny checkpoint a
compiled run makes the eager run's audio.

On CUDA the same path can capture the step in CUDA graphs (`mode="reduce-overhead"`); it cannot be measured on the
machines this was built on, so it is off unless STUDIO_CUDA_GRAPHS=1 (README, "Compiled decoding").
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable

from studio.compiling import COMPILED_PATH, COMPILING_PATH, EAGER_PATH, CompilePolicy, use_cache_dir

log = logging.getLogger(__name__)

# The two warm-up calls: different lengths and text lengths, so the second compiles the symbolic-shape graph
# that every later run uses.
WARM_UP_STEPS = (12, 20)
WARM_UP_TEXTS = ("warm up", "warm up the compiled decoder with a longer text")


# ---------------------------------------------------------------------- int8 Linear under compile

_PACKED: dict[int, Any] = {}  # key -> the packed weights of a dynamic int8 Linear (TorchScript objects)
_keys = iter(range(1, 1 << 62))
_keys_lock = threading.Lock()


def prepare_int8(model) -> int:
    """Give each dynamic int8 Linear of `model` a key to its packed weights, which its forward passes to the
    `int8_linear` op while Dynamo traces it (models.common); forgotten with the module. Returns how many."""
    from torch.ao.nn.quantized.dynamic import Linear

    int8_linear_op()
    count = 0
    for module in model.modules():
        if isinstance(module, Linear):
            with _keys_lock:
                key = next(_keys)
            _PACKED[key] = module._packed_params._packed_params
            old = getattr(module, "studio_key", None)
            module.studio_key = key
            weakref.finalize(module, _PACKED.pop, key, None)
            if old is not None:
                _PACKED.pop(old, None)
            count += 1
    return count


@functools.cache
def int8_linear_op():
    """torch.ops.studio.int8_linear(x, key, out_features): the packed layer `key`'s output, opaque to Dynamo."""
    import torch

    # The schema spelt out: this module's annotations are strings (from __future__ import annotations).
    @torch.library.custom_op("studio::int8_linear", mutates_args=(),
                             schema="(Tensor x, int key, int out_features) -> Tensor")
    def int8_linear(x, key, out_features):
        return torch.ops.quantized.linear_dynamic(x, _PACKED[key], True)

    @int8_linear.register_fake
    def _(x, key, out_features):
        return x.new_empty(*x.shape[:-1], out_features)

    return torch.ops.studio.int8_linear


# ---------------------------------------------------------------------- the compiled step


def branch_free_positions(embedding, needed: int) -> None:
    """MusicGen's sinusoidal positions without the data-dependent resize (a graph break in every step): the table
    is made long enough first, then rows are looked up. The same rows as transformers' forward."""
    import types

    if embedding.weights.size(0) < needed:
        embedding.make_weights(needed, embedding.embedding_dim)
    if getattr(embedding, "_studio_branch_free", False):
        return

    def forward(self, input_ids, past_key_values_length=0):
        import torch

        seq_len = input_ids.size(-1)
        positions = torch.arange(seq_len, device=input_ids.device) + past_key_values_length
        return self.weights.index_select(0, positions.view(-1)).detach()

    embedding.forward = types.MethodType(forward, embedding)
    embedding._studio_branch_free = True


class DecodeCompiler:
    """One model's compiled decode step and its state: eager (not compiled yet), compiling, compiled, failed.

    `generate_kwargs` gives generate() what the compiled path needs (a static cache, the compile config); the
    model's generate() asks for it only once `ready` (the warm-up's own calls aside), so no run waits for a compile.
    """

    EAGER, COMPILING, COMPILED, FAILED = "eager", "compiling", "compiled", "failed"

    def __init__(self, model, policy: CompilePolicy, device_kind: str) -> None:
        self.model = model  # the transformers model whose generate() runs
        self.policy = policy
        self.device_kind = device_kind
        self.state = self.EAGER
        self.reason = ""
        self.compile_s: float | None = None
        self._compiled: Callable | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.state == self.COMPILED

    def describe(self) -> str:
        """For the estimate line and logs: which path a run takes now."""
        if self.state == self.COMPILED:
            return COMPILED_PATH
        if self.state == self.COMPILING:
            return COMPILING_PATH
        if self.state == self.FAILED:
            return f"eager (compile failed: {self.reason})"
        return EAGER_PATH

    def _step(self) -> Callable:
        import torch

        with self._lock:
            if self._compiled is None:
                use_cache_dir(self.policy.cache_dir)
                prepare_int8(self.model)
                options = {"backend": self.policy.backend, "fullgraph": False, "dynamic": None}
                mode = self.policy.compile_mode(self.device_kind)
                if mode is not None and self.policy.backend == "inductor":
                    options["mode"] = mode
                self._compiled = torch.compile(self.model.__call__, **options)
        compiled, eager = self._compiled, self.model.__call__

        def step(**inputs):
            ids = inputs.get("decoder_input_ids")
            mask = inputs.get("decoder_attention_mask")
            if mask is not None and not bool(mask.all()):
                return eager(**inputs)  # padding in the decoder's own sequence: the eager model handles it
            inputs["decoder_input_ids"] = ids.contiguous() if ids is not None else ids
            inputs["decoder_attention_mask"] = None
            return compiled(**inputs)

        return step

    def generate_kwargs(self, decoder_config, *, cache_len: int, text_len: int) -> dict[str, Any]:
        """What generate() needs to decode through the compiled step: a static cache of the run's length (and the
        text's, for cross-attention) and a compile config that lets transformers compile on any device."""
        import torch
        from transformers.cache_utils import EncoderDecoderCache, StaticCache
        from transformers.generation.configuration_utils import CompileConfig

        step = self._step()
        # transformers asks the model for its compiled call when the cache is static; this one normalises the
        # inputs first (see the module's docstring).
        self.model.get_compiled_call = lambda _config: step
        config = CompileConfig()
        config._compile_all_devices = True  # transformers compiles on CUDA-like devices only unless told
        # Made under inference_mode whoever calls: the cache's position counter is a graph input, and one made
        # outside it carries another dispatch key, which fails the compiled graph's guards (a recompile mid-run).
        with torch.inference_mode():
            cache = EncoderDecoderCache(StaticCache(config=decoder_config, max_cache_len=cache_len),
                                        StaticCache(config=decoder_config, max_cache_len=text_len))
        return {"past_key_values": cache, "compile_config": config}

    def warm_up(self, run: Callable[[int, str], Any]) -> bool:
        """Compile now, through `run(steps, text)` (a short generate() on the compiled path) twice; returns whether
        it compiled. Never raises: a failed compile leaves the model eager and says why in the log."""
        with self._lock:
            if self.state in (self.COMPILING, self.COMPILED):
                return self.state == self.COMPILED
            self.state = self.COMPILING
        started = time.monotonic()
        try:
            with lowered_priority():
                for steps, text in zip(WARM_UP_STEPS, WARM_UP_TEXTS):
                    run(steps, text)
        except Exception as error:  # the eager path still serves
            self.state, self.reason = self.FAILED, _short(error)
            log.warning("compiling the decoder failed (%s); runs stay eager", self.reason)
            return False
        self.compile_s = time.monotonic() - started
        self.state = self.COMPILED
        log.info("decoder compiled in %.1f s (backend %s)", self.compile_s, self.policy.backend)
        return True


def _short(error: BaseException, limit: int = 160) -> str:
    """An error's first sentence, for a log line and the estimate (torch's compile errors run to pages)."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[:limit - 1] + "…"


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
