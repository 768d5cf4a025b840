"""The compiled MusicGen decoder's cache layer (models.compiled.windowed). A module of its own, at top level, because
transformers is imported here (models.compiled imports it only when a model compiles) and because Dynamo's
precompile saves the cache's type by its import path: a class defined inside a function cannot be saved."""

from __future__ import annotations

from transformers.cache_utils import StaticLayer


class WindowedStaticLayer(StaticLayer):
    """A static cache layer whose attention reads only its first `len(window)` positions, the part written so far
    rounded up (the rest is masked anyway): a step reads the cache's bytes it needs, not the whole run's. A
    static cache otherwise hands attention its whole length every step, which for musicgen-small's 5 s run is
    100 MB of float32 per step, and at the end of a 30 s run more than its int8 weights (bench.rtf_floor).

    The window is a tensor's length, not an int, so that the compiled graph takes it as a symbolic size from its
    first trace (maybe_mark_dynamic) and no window compiles a graph of its own."""

    window = None  # a tensor as long as the window; None: the whole cache, as StaticLayer

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if self.window is None:
            return keys, values
        length = self.window.shape[0]
        return keys[:, :, :length], values[:, :, :length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.window is None:
            return super().get_mask_sizes(query_length)
        return self.window.shape[0], 0
