"""The memory-bandwidth floor of MusicGen's real-time factor on this machine (issue 17's "real time on two cores").

A decoder step at a token's rows reads every matrix it uses once, and the KV cache: on two CPU cores it cannot run
faster than those bytes over the memory's read bandwidth, whatever the kernels. Per precision, from the realistic
build's config: the bytes of one step (the decoder's self-attention, cross-attention query and output, feed-forward
and the codebooks' heads; cross-attention's keys and values of the text are made once per run, not per step; the
compiled path's cache reads, a window of the written part each step, on average over the bench's 5 s run), divided
by the read bandwidth measured here (a sum over a 512 MB tensor with torch's threads, the best of five), times the frames per
second of audio. The weights of an int8 matrix are one byte each (its scales are a few kB); its cache stays float32.

The floor is what a perfect step would reach; the compiled section's RTF is what the studio reaches.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

REPO = "facebook/musicgen-small"
SECONDS = 5.0  # the compiled section's run
TEXT_TOKENS = 12  # the bench's prompt, tokenized
WEIGHT_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}
CACHE_BYTES = {"float32": 4, "bfloat16": 2, "int8": 4}  # an int8 model's activations (and cache) are float32
READ_MB = 512
REPEATS = 5


def read_bandwidth() -> float:
    """Bytes a second torch reads from memory here (a sum over READ_MB, far beyond any cache), the best of REPEATS."""
    import torch

    data = torch.ones(READ_MB * 1024 * 1024 // 4)
    data.sum()  # pages in
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best


def step_bytes(config, precision: str, *, seconds: float = SECONDS, guidance: bool = True) -> dict[str, int]:
    """What one decoder step of MusicGen (`config`: its MusicgenConfig) reads, in bytes: weights and cache."""
    decoder = config.decoder
    width, layers, ffn = decoder.hidden_size, decoder.num_hidden_layers, decoder.ffn_dim
    per_layer = 4 * width * width + 2 * width * width + 2 * width * ffn  # self-attention, cross q/o, feed-forward
    heads = decoder.num_codebooks * width * decoder.vocab_size
    weights = (layers * per_layer + heads) * WEIGHT_BYTES[precision]
    from models.compiled import window_length

    rows = 2 if guidance else 1
    frames = round(seconds * config.audio_encoder.frame_rate)
    # Steps after the start token: the frames and the delays; each reads its window of the cache (models.compiled).
    lasts = range(1, 1 + frames + decoder.num_codebooks)
    window = sum(window_length(last) for last in lasts) / len(lasts)
    cache = round(layers * 2 * rows * width * (window + TEXT_TOKENS) * CACHE_BYTES[precision])
    return {"weights": weights, "cache": cache, "frame_rate": int(config.audio_encoder.frame_rate)}


def run_rtf_floor() -> dict:
    import torch
    from transformers import MusicgenConfig

    config = MusicgenConfig.from_pretrained(REPO)
    bandwidth = read_bandwidth()
    rows = {}
    for precision in WEIGHT_BYTES:
        need = step_bytes(config, precision)
        step_s = (need["weights"] + need["cache"]) / bandwidth
        rows[precision] = {**need, "step_s": step_s, "rtf": step_s * need["frame_rate"],
                           "weights_only_rtf": need["weights"] / bandwidth * need["frame_rate"]}
        log.info("  rtf floor %s: %.0f MB weights + %.0f MB cache a step at %.1f GB/s: RTF >= %.2f", precision,
                 need["weights"] / 1e6, need["cache"] / 1e6, bandwidth / 1e9, rows[precision]["rtf"])
    return {"repo": REPO, "seconds": SECONDS, "bandwidth": bandwidth, "threads": torch.get_num_threads(),
            "rows": rows}
