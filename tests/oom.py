"""Out-of-memory on demand, for the manager's ladder: loaders that fail the first times they are called."""

from __future__ import annotations


def loader_out_of_memory(catalog, times: int, message: str = "simulated: CUDA out of memory while loading"):
    """A loader raising torch.OutOfMemoryError on its first `times` calls, then loading for real."""
    left = {"n": times}

    def load(spec, torch_device, dtype):
        import torch

        if left["n"] > 0:
            left["n"] -= 1
            raise torch.OutOfMemoryError(message)
        return catalog.family(spec).load(spec, torch_device, dtype)

    return load
