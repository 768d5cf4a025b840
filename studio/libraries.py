"""The one place that imports the heavy libraries (torch, transformers, diffusers), under one lock.

Why not just `import transformers` wherever it is needed: transformers and diffusers are lazy modules whose
__init__ ends by replacing itself in sys.modules with a _LazyModule. A thread that runs `from transformers import X`
while another thread is still inside that __init__ waits for the import to finish, then reads X from the module
object it found *before* the swap, which has no X: "cannot import name 'AutoTokenizer' from 'transformers'". So
`"transformers" in sys.modules` does not mean usable. Here a library counts as imported only once ensure() has
finished importing it; a thread that asks while another is importing waits for it.

Nothing is imported when this module is imported.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time

LIBRARIES = ("torch", "transformers", "diffusers")  # the order ensure() imports them in
# Resolved right after the import, so the lazy module's first-used entries are loaded under the lock too.
_FIRST_USED = {
    "transformers": ("AutoConfig", "AutoTokenizer", "PreTrainedModel"),
    "diffusers": ("DiffusionPipeline",),
}

_lock = threading.Lock()
_done: set[str] = set()  # what ensure() has finished importing (not sys.modules: see above)


def _check(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in LIBRARIES]
    if unknown:
        raise ValueError(f"not a heavy library: {unknown} (known: {', '.join(LIBRARIES)})")


def imported(*names: str) -> bool:
    """True when ensure() has finished importing every one of `names`."""
    _check(names)
    return all(name in _done for name in names)


def ensure(*names: str) -> float:
    """Import `names` (torch, then transformers, then diffusers) under the one lock; wait while another thread does.

    Returns the seconds this call spent importing: 0.0 when all were imported already, including by a thread
    this call waited for.
    """
    _check(names)
    if imported(*names):
        return 0.0
    spent = 0.0
    with _lock:
        for name in LIBRARIES:
            if name not in names or name in _done:
                continue
            began = time.perf_counter()
            importlib.import_module(name)
            module = sys.modules[name]  # the lazy module that replaced the one being initialised
            for attribute in _FIRST_USED.get(name, ()):
                getattr(module, attribute)
            _done.add(name)
            spent += time.perf_counter() - began
    return spent
