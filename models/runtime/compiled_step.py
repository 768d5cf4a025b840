"""The function torch.compile compiles for a decoder whose trace Dynamo's precompile keeps on disk
(models.compiled.keep_traces). A module of its own: Dynamo installs what the compiled step needs (the compiled
graph, the builtins) among this module's globals, and the saved bytecode loads modules by their name here."""

from __future__ import annotations

import collections  # noqa: F401 - the compiled bytecode loads these modules by name from this module's globals;
import hashlib      # one missing gets a per-process name that a later process cannot find
import types
from typing import Callable

import torch  # noqa: F401


def step_function(module) -> Callable:
    """A function that runs `module(**inputs)`, for torch.compile: a function of its own for each kind of module
    (its own code object, named after the module's class and the shapes and dtypes of its tensors).

    Dynamo's precompile (keep_traces) files a compiled function under its name and first line: one function shared
    by every module would keep one module's trace, the last saved, and two sizes of MusicGen would overwrite each
    other. The module's own `__call__` will not do either: Dynamo starts at its forward, here transformers'
    `can_return_tuple` wrapper, whose closure it cannot save, and files every module under nn.Module's one `__call__`.

    Unlike a compiled `__call__`, this traces the module's forward hooks too (MusicGen has none; Pocket TTS's
    progress hook takes a lock, which would break the graph): only the compilers that precompile use it."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{tensor.device.type};".encode())
    name = f"decode_step_{type(module).__name__}_{digest.hexdigest()[:16]}"
    function = types.FunctionType(_decode_step.__code__.replace(co_name=name, co_qualname=name),
                                  _decode_step.__globals__, name)
    function.__qualname__ = name
    return function


def _decode_step(module, **inputs):
    return module(**inputs)
