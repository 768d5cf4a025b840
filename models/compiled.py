"""The compiled decode path (issue 17): an autoregressive decoder's per-token step under torch.compile, with a static
KV cache, compiled once in the background while eager runs serve, its artifacts kept on disk.

What it takes, measured on musicgen-small (bench section `compiled`, docs/benchmarks.md):
- a static cache (transformers' StaticCache) so every step has the same shapes; the cache is sized to the run, and
  its length, the text's and the attention's window are symbolic sizes from the first trace (symbolic_lengths), so
  the warm-up compiles one graph and no later run compiles again (automatic dynamic shapes would compile a graph
  for the first call's sizes, then the symbolic one);
- a step's attention reads the written part of the cache, rounded up (WindowedStaticLayer), not its whole length:
  15 s of musicgen-small int8 ran at RTF 4.30 against 4.97 reading the whole cache (the same graph, interleaved);
- no graph break per layer: torch's dynamic int8 Linear (the CPU int8 path, models.common.quantize_int8) is a
  TorchScript-packed op Dynamo cannot trace, so under compile it goes through one opaque custom op (`int8_linear`);
  MusicGen's sinusoidal positions branch on a tensor, so they are looked up branch-free (`branch_free_positions`);
- inputs of one layout each step: generate() slices the growing sequence (a stride that changes every step) and
  grows the decoder's all-ones mask; the step wrapper passes a contiguous copy and no mask (the static cache's own
  positions make the causal mask).

A later process does not trace MusicGen again: Dynamo's trace is kept beside Inductor's kernels (keep_traces,
torch's caching precompile) and found by the next process's compile, which then only loads it. What torch 2.13
takes for that: the compiled function is one of the studio's own, per kind of module
(models.runtime.compiled_step), not the module's `__call__`; every class the trace meets is defined at a module's
top level (models.runtime: the windowed cache layer, the int8 modules); the layers draw no LayerDrop numbers
(no_layer_drop_draws); a run on a found trace marks no symbolic sizes (DecodeCompiler.marks_dims). A trace that
cannot be saved is compiled for the process alone, and one the warm-up fails on is deleted (warm_up).

Bark's semantic and coarse stages take the same path (one compiled step each, one warm-up for both): generate()
makes a static cache per call (the coarse stage calls it once per window) and a 4D mask over the cache's whole
length (causal, padding, the unwritten tail shut), which Bark's attention (models.bark.fused_attention) intersects
with its own causal triangle, a superset of the causal part when the keys outnumber the sequence. Measured, it pays
too little to be on by default (bark-small int8 1.05x, bfloat16 0.99x): studio.compiling.PAYS.

Dia, CSM, VibeVoice and Pocket TTS take transformers' static cache as their generate() is: `CompiledDecoding` gives
them the kwargs and a warm-up through the adapter's own generate() (Pocket TTS measured 1.04x: not on by default).

Measured on the 2-core AMX Xeon and dropped: the decoder's plain attention instead of SDPA under compile (no gain,
and its trace could not be saved), skipping Dynamo's guard evaluation (set_stance skip_guard_eval_unsafe: no gain),
weight-only int8 products (aten._weight_int8pack_mm: a step's matrices 32 ms in bfloat16 against dynamic int8's 25
ms). What a step spends, and what is left to gain, is in the README ("Compiled decoding").

A compiled step computes the same function in another order, so its audio differs from eager's in rounding (the
sampled tokens part after a while), not in kind; tests/test_compiled.py checks that on the tiny checkpoint a
compiled run makes the eager run's audio.

On CUDA the same path can capture the step in CUDA graphs (`mode="reduce-overhead"`); it cannot be measured on the
machines this was built on, so it is off unless STUDIO_CUDA_GRAPHS=1 (README, "Compiled decoding").
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable

from studio.compiling import (COMPILED_PATH, COMPILING_PATH, EAGER_PATH, CompilePolicy, lowered_priority,
                              use_cache_dir)

log = logging.getLogger(__name__)

# The two warm-up calls: different lengths and text lengths, so the second compiles the symbolic-shape graph
# that every later run uses.
WARM_UP_STEPS = (12, 20)
WARM_UP_TEXTS = ("warm up", "warm up the compiled decoder with a longer text")
# The decode steps of the warm-up on a trace an earlier process saved (DecodeCompiler.warm_up_steps): it compiles
# nothing, so it is one run (DecodeCompiler._warm_up_calls) that loads the trace and checks its guards once. More
# than MusicGen's four codebooks, so that the run ends with a whole frame.
SAVED_TRACE_WARM_UP_STEPS = 6


# ---------------------------------------------------------------------- int8 Linear under compile

_PACKED: dict[int, Any] = {}  # key -> the packed weights of a dynamic int8 Linear (TorchScript objects)
_keys = iter(range(1, 1 << 62))
_keys_lock = threading.Lock()
_LIBRARIES: list[Any] = []


def prepare_int8(model) -> int:
    """Give each dynamic int8 Linear of `model` a key to its packed weights, which its forward passes to the
    `int8_linear` op while Dynamo traces it (models.common); forgotten with the module. Returns how many.

    The key is a buffer (a one-element tensor), so the graph takes it as an input: a key written into the graph as a
    number would make the graph, and the compile cache's key for it, depend on how many layers the process had
    prepared before (another model loaded first), and a second process would compile everything again."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear

    int8_linear_op()
    count = 0
    for module in model.modules():
        if isinstance(module, Linear):
            with _keys_lock:
                key = next(_keys)
            _PACKED[key] = module._packed_params._packed_params
            old = getattr(module, "studio_key", None)
            module.register_buffer("studio_key", torch.tensor(key, dtype=torch.int64), persistent=False)
            weakref.finalize(module, _PACKED.pop, key, None)
            if old is not None:
                _PACKED.pop(int(old), None)
            count += 1
    return count


@functools.cache
def int8_linear_op():
    """torch.ops.studio.int8_linear(x, key, out_features): the output of the packed layer numbered `key` (a
    one-element tensor: prepare_int8), opaque to Dynamo.

    A plain operator library with a CPU kernel, not torch.library.custom_op: a decoder step calls it some 200 times
    (musicgen-small: 196), and custom_op's Python wrapper cost about 11 us a call over the packed op's own 24 us
    (a 1024 x 1024 layer, 2 rows, 2 threads; 2-core AMX Xeon, op calls timed in a loop), where this costs about
    3 us."""
    import torch

    library = torch.library.Library("studio", "DEF")
    library.define("int8_linear(Tensor x, Tensor key, int out_features) -> Tensor")

    def int8_linear(x, key, out_features):
        return torch.ops.quantized.linear_dynamic(x, _PACKED[int(key)], True)

    def fake(x, key, out_features):
        return x.new_empty(*x.shape[:-1], out_features)

    library.impl("int8_linear", int8_linear, "CPU")
    torch.library.register_fake("studio::int8_linear", fake, lib=library)
    _LIBRARIES.append(library)  # an operator lives as long as its library object
    return torch.ops.studio.int8_linear


# ---------------------------------------------------------------------- the compiled step


def branch_free_positions(embedding, needed: int) -> None:
    """MusicGen's sinusoidal positions without the data-dependent resize (a graph break in every step): the table
    is made long enough first, then rows are looked up. The same rows as transformers' forward, which takes the
    codes, (batch, codebooks, length), or in MusicGen melody the embeddings, (batch, length, width)."""
    import types

    if embedding.weights.size(0) < needed:
        embedding.make_weights(needed, embedding.embedding_dim)
    if getattr(embedding, "_studio_branch_free", False):
        return

    def forward(self, inputs, past_key_values_length=0):
        import torch

        seq_len = inputs.size(1) if inputs.is_floating_point() else inputs.size(-1)
        positions = torch.arange(seq_len, device=inputs.device) + past_key_values_length
        return self.weights.index_select(0, positions.view(-1)).detach()

    embedding.forward = types.MethodType(forward, embedding)
    embedding._studio_branch_free = True


class _NoLayerDrop:
    """Stands in for the `random` module of a modeling module whose decoder draws a number per layer every step
    for LayerDrop (MusicGen's: `random.uniform(0, 1) < layerdrop` drops a layer, and only while training). Dynamo
    replays such draws through a global it installs in the compiled function's module, which its precompile does not
    save: a second process found the trace and failed on the missing global. This draws nothing and drops nothing."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return high


def no_layer_drop_draws(module) -> None:
    """The modeling module of `module`'s class draws no LayerDrop numbers (_NoLayerDrop); inference is unchanged."""
    import sys

    modeling = sys.modules[type(module).__module__]
    if getattr(modeling, "random", None) is not None:
        modeling.random = _NoLayerDrop


# ---------------------------------------------------------------------- attention over the written part

WINDOW_STEP = 16  # positions: a step's attention reads the written part of the static cache, rounded up to this


def windowed(cache):
    """`cache` (a transformers StaticCache) with layers whose attention reads only the window set_window() gives."""
    from models.runtime.windowed_cache import WindowedStaticLayer

    for layer in cache.layers:
        layer.__class__ = WindowedStaticLayer
    return cache


def windowed_length(positions: int) -> int:
    """A windowed cache's length for `positions`: rounded up to WINDOW_STEP, and one step more, so that no window
    is ever the whole cache (Inductor guards on whether the window's slice is the whole tensor: a window as long as
    the cache would compile a second graph)."""
    return -(-positions // WINDOW_STEP) * WINDOW_STEP + WINDOW_STEP


def window_length(last_position: int) -> int:
    """The window a step whose last query sits at `last_position` reads: up to it, rounded up to WINDOW_STEP."""
    return -(-(last_position + 1) // WINDOW_STEP) * WINDOW_STEP


def set_window(cache, last_position: int, mark: bool = True) -> None:
    """Before a step whose last query sits at `last_position`: its layers read positions up to it, rounded up to
    WINDOW_STEP (at most the cache's length). One window tensor for all layers (one input of the graph), on the
    cache's device (a CPU input would keep a CUDA graph from being captured). `mark`: its length is marked a
    symbolic size (DecodeCompiler.marks_dims)."""
    import torch

    first = cache.layers[0]
    length = min(first.max_cache_len, window_length(last_position))
    if first.window is not None and first.window.shape[0] == length:
        return
    window = torch.empty(length, dtype=torch.uint8, device=getattr(first, "device", None) or "cpu")
    if mark:
        torch._dynamo.maybe_mark_dynamic(window, 0)
    for layer in cache.layers:
        layer.window = window


def symbolic_lengths(*dims) -> None:
    """Make each (tensor, dim) a symbolic size of the graph from its first trace (a run's length, its text's): the
    warm-up then compiles one graph that every run takes, where automatic dynamic shapes would compile one for the
    first call's sizes and another, symbolic, at the second. None tensors are skipped."""
    import torch

    for tensor, dim in dims:
        if tensor is not None:
            torch._dynamo.maybe_mark_dynamic(tensor, dim)


# Graphs torch may keep for one code object. transformers wraps every model's forward in the same decorator function
# (`can_return_tuple`'s `wrapper`), so each model compiled in a process adds its graphs to that one code object;
# torch's default of 8 ran out after three or four models, and from then on a compile silently ran eager.
RECOMPILE_LIMIT = 64


def keep_traces() -> None:
    """Dynamo's precompile: what Dynamo traced is saved beside Inductor's kernels (save_traces, after a warm-up) and
    a later process that compiles the same kind of module loads it instead of tracing again. A second process's
    compile of musicgen-small took 30 s before, 25 s of them Dynamo's trace (docs/benchmarks.md). Only for the
    compilers that ask for it (DecodeCompiler.precompile).

    It drops the guards that cannot outlive a process (an object's identity, a closure's contents); the ones kept
    check every tensor's shape and dtype, the modules' types and the other constants the trace read. The compiled
    steps are only ever called with one layout of inputs (`prepare`), so the dropped ones guard nothing a step
    changes. Process-wide and never undone: every later trace drops them (the other compiled decoders' too, which
    keep nothing on disk; their steps, too, take one layout of inputs).

    The shape guards (some 470 relations between the symbolic sizes, for MusicGen) are compiled C++ rather than one
    Python function (Dynamo's enable_cpp_symbolic_shape_guards, off by default in torch 2.13 because it runs the C++
    compiler in every compile): the Python function is rebuilt, common subexpressions and all, in every process that
    loads the trace, and the C++ one is a library in the compile cache that it only opens. A later process's load of
    musicgen-small's guards made a third fewer Python calls (2.5 million against 3.8 million, cProfile)."""
    import torch._dynamo.config

    torch._dynamo.config.caching_precompile = True
    torch._dynamo.config.enable_cpp_symbolic_shape_guards = True
    _load_saved_guards_once()
    guards_log = logging.getLogger("torch._dynamo.guards")
    if not any(isinstance(f, _DroppedGuardsFilter) for f in guards_log.filters):
        guards_log.addFilter(_DroppedGuardsFilter())


class _DroppedGuardsFilter(logging.Filter):
    """torch warns once per guard that precompile drops: some thousand lines for one MusicGen; the studio's log
    says it once, in keep_traces' docstring."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is dropped with caching_precompile=True" not in str(record.msg)


def _load_saved_guards_once() -> None:
    """A saved trace's guards are built once when it loads (keep_traces installs this, once per process). With
    caching_precompile on, torch 2.13 builds every trace's guards twice, once to show them to the filter that drops
    those a saved trace cannot keep and once for real. A saved trace's guards were filtered when it was saved, so
    the filter has nothing to drop; the first build was 1.4 s of a 2.3 s load for musicgen-small here (AVX2 EPYC).
    Only the load is changed: a trace made now, to be saved, is still filtered. Where torch has no such function,
    nothing changes."""
    import torch._dynamo.config
    import torch._dynamo.package as package

    load = getattr(package, "load_guard_manager", None)
    if load is None or getattr(load, "studio_once", False):
        return

    def load_once(*args, **kwargs):
        with torch._dynamo.config.patch(caching_precompile=False):
            return load(*args, **kwargs)

    load_once.studio_once = True
    package.load_guard_manager = load_once


def _has_saved_trace(function) -> bool:
    """Whether torch.compile found a trace of `function` that an earlier process saved (keep_traces)."""
    try:
        from torch._C._dynamo.eval_frame import _debug_get_precompile_entries

        return bool(_debug_get_precompile_entries(function.__code__))
    except (ImportError, RuntimeError):  # a torch without it: traces as if none was found (marks and all)
        return False


def forget_traces(functions: list[Callable]) -> None:
    """Delete the saved traces of `functions` (keep_traces): one the warm-up failed on would fail every later
    process's warm-up the same way (a trace saved by another torch or transformers, say, whose guards reject this
    one's calls), where without it the next process compiles afresh and saves a trace that works."""
    import shutil

    try:
        from torch._dynamo.package import CompilePackage, DynamoCache

        for function in functions:
            shutil.rmtree(os.path.join(DynamoCache.path_prefix(), CompilePackage.source_id_from_fn(function)),
                          ignore_errors=True)
    except ImportError:
        pass
    functions.clear()


def save_traces() -> None:
    """Write the traces that keep_traces recorded (all of this process's) to torch's compile cache. A failure to
    save costs only a later process's time, so it is logged, never raised."""
    try:
        from torch._dynamo.precompile_context import PrecompileContext

        PrecompileContext.save_to_dynamo_cache()
    except Exception as error:  # noqa: BLE001 - a cache write must never fail a compile
        log.warning("could not save the compiled decoder's trace (%s); a later process traces it again",
                    _short(error))


def allow_shared_frames() -> None:
    import torch._dynamo.config

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)


class DecodeCompiler:
    """One model's compiled decode steps and their state: eager (not compiled yet), compiling, compiled, failed.

    A model may decode through several modules (Bark's semantic and coarse GPTs): each gets its own compiled step,
    all compiled by one warm-up and ready together. `compile_config(module, prepare)` gives generate() what it needs
    to decode `module` through its compiled step; the model asks for it only once `ready` (the warm-up's own calls
    aside), so no run waits for a compile.
    """

    EAGER, COMPILING, COMPILED, FAILED = "eager", "compiling", "compiled", "failed"

    def __init__(self, policy: CompilePolicy, device_kind: str, precompile: bool = False) -> None:
        self.policy = policy
        self.device_kind = device_kind
        # Whether what Dynamo traces is kept on disk for a later process (keep_traces): where it has been verified
        # to save (MusicGen), and only with a compile cache to keep it in. Bark's layers, for one, trace a guard on
        # their class that cannot be saved, and torch then fails the compile instead of leaving the trace unsaved.
        self.precompile = precompile and policy.cache_dir is not None
        self.state = self.EAGER
        self.reason = ""
        self.compile_s: float | None = None
        self.compiled_steps = 0  # decode steps taken through a compiled step (the tests and the bench read it)
        self.loaded_trace = False  # whether a trace an earlier process saved was found (keep_traces)
        self._compiled: dict[int, Callable] = {}  # id(module) -> its compiled step
        self._traced: list[Callable] = []  # the functions compiled with precompile (keep_traces)
        self._lock = threading.Lock()
        self._warming = threading.local()  # set on the thread that runs the warm-up, while it runs

    @property
    def marks_dims(self) -> bool:
        """Whether a step marks its varying lengths as symbolic sizes (symbolic_lengths, set_window): not when it
        runs a trace an earlier process saved. The saved guards check that a tensor carries no marks (torch saves a
        tensor without its marks: torch 2.13), so a marked tensor would fail them and trace everything again."""
        return not self.loaded_trace

    @property
    def ready(self) -> bool:
        return self.state == self.COMPILED

    def usable(self) -> bool:
        """Whether a run on this thread decodes through the compiled steps: once compiled, and the warm-up's own."""
        return self.ready or getattr(self._warming, "on", False)

    def describe(self) -> str:
        """For the estimate line and logs: which path a run takes now."""
        if self.state == self.COMPILED:
            return COMPILED_PATH
        if self.state == self.COMPILING:
            return COMPILING_PATH
        if self.state == self.FAILED:
            return f"eager (compile failed: {self.reason})"
        return EAGER_PATH

    def step(self, module, prepare: Callable[[dict], dict | None]) -> Callable:
        """`module`'s per-token step through torch.compile; `prepare(inputs)` puts generate()'s inputs in the one
        layout the graph was built for, or returns None for a step the eager module must take."""
        import torch

        with self._lock:
            compiled = self._compiled.get(id(module))
            if compiled is None:
                use_cache_dir(self.policy.cache_dir)
                allow_shared_frames()
                prepare_int8(module)
                options = {"backend": self.policy.backend, "fullgraph": False, "dynamic": None}
                mode = self.policy.compile_mode(self.device_kind)
                if mode is not None and self.policy.backend == "inductor":
                    options["mode"] = mode
                if self.precompile:
                    from models.runtime.compiled_step import step_function

                    function = step_function(module)
                    self._traced.append(function)
                    keep_traces()
                    compiled = functools.partial(torch.compile(function, **options), module)
                    self.loaded_trace = self.loaded_trace or _has_saved_trace(function)
                else:  # no package: nothing of this trace is saved, whatever another model's compile switched on
                    with torch._dynamo.config.patch(caching_precompile=False):
                        compiled = torch.compile(module.__call__, **options)
                self._compiled[id(module)] = compiled
        eager = module.__call__

        def step(**inputs):
            prepared = prepare(inputs)
            if prepared is None or self.state == self.FAILED:
                return eager(**inputs)
            self.compiled_steps += 1
            if not self.loaded_trace or getattr(self._warming, "on", False):
                return compiled(**prepared)
            try:
                return compiled(**prepared)
            except Exception as error:
                return self._eager_after_failed_trace(error, eager, prepared)

        return step

    def warm_up_steps(self, steps: int) -> int:
        """The decode steps a warm-up run asked for `steps` takes: as many, or a few on a trace an earlier process
        saved (SAVED_TRACE_WARM_UP_STEPS). Known once the run has asked for its compiled step (compile_config)."""
        return min(steps, SAVED_TRACE_WARM_UP_STEPS) if self.loaded_trace else steps

    def _eager_after_failed_trace(self, error: Exception, eager: Callable, inputs: dict):
        """A run's step on a trace an earlier process saved raised (not a cancel, not out of memory): this step and
        every later one decode eager, and the estimate line says why. torch 2.13 cannot trace such a function again
        in the same process (the saved trace's globals clash with a new trace's), so a run whose sizes the saved
        guards reject would fail here instead. The step is safe to take again: what it wrote to the cache, if
        anything, it writes again at the same positions."""
        import torch

        from studio.errors import Cancelled

        if isinstance(error, (Cancelled, torch.OutOfMemoryError)):
            raise error
        self.state, self.reason = self.FAILED, _short(error)
        log.warning("the compiled decoder failed on the trace a previous process saved (%s); decoding eager",
                    self.reason)
        return eager(**inputs)

    def compile_config(self, module, prepare: Callable[[dict], dict | None]):
        """Route `module`'s decode steps through its compiled step whenever generate() decodes with a static cache;
        returns the compile config to pass to generate(), which lets transformers compile on any device."""
        from transformers.generation.configuration_utils import CompileConfig

        step = self.step(module, prepare)
        # transformers asks the model for its compiled call when the cache is static; this one normalises the
        # inputs first (see the module's docstring).
        module.get_compiled_call = call = _CompiledCall(step)
        if hasattr(module, "_get_negative_compiled_call"):
            # VibeVoice's generate() decodes classifier-free guidance's negative branch through a second compiled call
            # of the same module, which transformers otherwise compiles with its own defaults: Inductor and CUDA
            # graphs, outside the studio's backend and CUDA-graph setting. It takes the same compiled step.
            module._get_negative_compiled_call = call
        config = CompileConfig()
        config._compile_all_devices = True  # transformers compiles on CUDA-like devices only unless told
        return config

    def warm_up(self, run: Callable[[int, str], Any]) -> bool:
        """Compile now, through `run(steps, text)` (a short generate() on the compiled path) twice; returns whether
        it compiled. Never raises: a failed compile leaves the model eager and says why in the log."""
        with self._lock:
            if self.state in (self.COMPILING, self.COMPILED):
                return self.state == self.COMPILED
            self.state = self.COMPILING
        started = time.monotonic()
        self._warming.on = True
        try:
            with lowered_priority():
                self.policy.prepare(self.device_kind)  # unless the studio did, while idle
                try:
                    self._warm_up_calls(run)
                except Exception as error:
                    if not self.precompile:
                        raise
                    # torch fails a compile whose trace cannot be saved: compile again, keeping nothing
                    log.warning("the compiled decoder's trace cannot be kept on disk (%s); compiling it for this "
                                "process only", _short(error))
                    self.precompile, self.loaded_trace = False, False
                    forget_traces(self._traced)
                    self._compiled.clear()
                    self._warm_up_calls(run)
        except Exception as error:  # the eager path still serves
            self.state, self.reason = self.FAILED, _short(error)
            log.warning("compiling the decoder failed (%s); runs stay eager", self.reason)
            return False
        finally:
            self._warming.on = False
        self.compile_s = time.monotonic() - started
        if self.precompile:
            save_traces()
        self.state = self.COMPILED
        log.info("decoder compiled in %.1f s (backend %s)", self.compile_s, self.policy.backend)
        return True

    def _warm_up_calls(self, run: Callable[[int, str], Any]) -> None:
        """The warm-up's runs: two, the second compiling the graph every later run takes; or one, on a trace an
        earlier process saved (known once the first run has asked for its compiled step). That one loads the trace
        and checks its guards; its text lengths are symbolic sizes of the saved graph, so a second text would only
        check the same guards again. Should a later run's step fail them, that run decodes eager (step)."""
        for steps, text in zip(WARM_UP_STEPS, WARM_UP_TEXTS):
            run(steps, text)
            if self.loaded_trace:
                break


class CompiledDecoding:
    """Mixed into a model adapter whose decoder compiles: its compiler once `compile_decoder()` was asked for (the
    manager's background compile), forgotten on a move (compiled for the old device: eager until compiled again),
    and the path the next run's decoder takes, for the estimate line.

    A family whose generate() takes transformers' static cache as it is (Dia, CSM, VibeVoice, Pocket TTS) needs
    nothing more than `**self.compiled_kwargs(self.model)` in its generate() call: `compile_decoder` then warms up
    through the adapter's own generate(), two short requests each stopped after a few steps. MusicGen and Bark
    override it with warm-ups of their own."""

    compiler: DecodeCompiler | None = None
    # Whether the warm-up needs the device to itself (the manager holds it as for a run): the generic warm-up runs the
    # adapter's own generate(), which seeds and samples from torch's one global generator.
    compile_holds_device = True

    def move(self, torch_device: str) -> None:
        super().move(torch_device)
        self.compiler = None

    def decode_path(self) -> str:
        return self.compiler.describe() if self.compiler is not None else EAGER_PATH

    def ready_compiler(self) -> DecodeCompiler | None:
        """The compiler, if this run decodes through it (never while it compiles, but for the warm-up's own)."""
        compiler = self.compiler
        return compiler if compiler is not None and compiler.usable() else None

    def compiled_kwargs(self, module) -> dict[str, Any]:
        """For `module.generate()`: nothing (eager), or a static cache (generate() makes a fresh one per call, as
        long as the longest it has needed) and the compile config that routes its decode steps through the compiled
        step."""
        compiler = self.ready_compiler()
        if compiler is None:
            return {}
        return {"cache_implementation": "static", "compile_config": compiler.compile_config(module, contiguous_ids)}

    def compile_decoder(self, policy: CompilePolicy, device_kind: str, make_request: Callable[[str], Any]) -> bool:
        """Compile now (the manager calls this in the background after a load, when the device is idle): the adapter's
        own generate() on `make_request(text)` for the warm-up's two texts, each stopped after its few steps, on the
        compiled path. Returns whether later runs take it."""
        from studio.errors import Cancelled
        from studio.run import RunContext

        compiler = DecodeCompiler(policy, device_kind)
        self.compiler = compiler

        def run(steps: int, text: str) -> None:
            before = compiler.compiled_steps
            ctx = RunContext()
            ctx.on_progress = lambda done, total: ctx.cancel.set() if compiler.compiled_steps >= before + steps else None
            try:
                self.generate(make_request(text), ctx)
            except Cancelled:
                pass  # stopped once it had taken its steps
            if compiler.compiled_steps == before:
                raise RuntimeError("the warm-up decoded no step through the compiled step")

        return compiler.warm_up(run)


class _CompiledCall:
    """A module's `get_compiled_call`: hands generate() the compiled step. It lives in the module's attributes, so
    Dynamo's precompile pickles it with the module's state; it pickles as nothing, not as the step's closure (which
    holds the compiler and its lock)."""

    def __init__(self, step: Callable) -> None:
        self.step = step

    def __call__(self, _config) -> Callable:
        return self.step

    def __reduce__(self):
        return _no_compiled_call, ()


def _no_compiled_call() -> None:
    return None


def contiguous_ids(inputs: dict) -> dict:
    """One decode step's inputs in the compiled graph's layout: generate() slices the growing sequence, a stride that
    changes every step; the step gets a contiguous copy."""
    ids = inputs.get("input_ids")
    if ids is not None:
        inputs["input_ids"] = ids.contiguous()
    return inputs


def _short(error: BaseException, limit: int = 160) -> str:
    """An error's first sentence, for a log line and the estimate (torch's compile errors run to pages)."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[:limit - 1] + "…"
