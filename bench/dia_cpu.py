"""Dia on this CPU: seconds per generated frame of a random-weight Dia of the published widths, per precision.

`nice -n 10 python -m bench.dia_cpu [--layers 6] [--frames 48]`. The decoder is built with `--layers` of the
published 18 (RAM: the whole float32 model is 6.4 GB); the per-frame time is fitted as fixed + per-layer x layers
from runs at two depths and extrapolated to 18. The encoder (12 layers) runs once per run and is timed apart; the
DAC codec of descript/dac_44khz's published config decodes the frames, timed apart. Guidance on (batch 2) and off.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def build(layers: int):
    import torch
    from transformers import DiaConfig, DiaForConditionalGeneration, GenerationConfig

    config = DiaConfig(decoder_config={"num_hidden_layers": layers})  # the published widths are the defaults
    with torch.device("cpu"):
        model = DiaForConditionalGeneration(config).eval()
    generation = GenerationConfig.from_model_config(config)
    generation.update(do_sample=True, top_k=45, top_p=0.95, temperature=1.2, guidance_scale=3.0, max_length=3072)
    model.generation_config = generation
    return model


def frames_time(model, frames: int, guidance: float) -> float:
    """Seconds per decoder step, the encoder and the first step (prefill) excluded."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stamps: list[float] = []

    class Clock(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    text = torch.tensor([[1] + list(b" Hello there, this is a test of Dia on a CPU. ") + [2] + list(b" Nice!")])
    decoder = torch.full((1, 16, 9), 1025)
    decoder[:, 0] = 1026
    for channel, delay in enumerate((0, 8, 9, 10, 11, 12, 13, 14, 15)):
        decoder[:, : delay + 1, channel] = 1026
    with torch.inference_mode():
        model.generate(input_ids=text, attention_mask=torch.ones_like(text), decoder_input_ids=decoder,
                       decoder_attention_mask=torch.ones(1, 16, dtype=torch.long), max_new_tokens=frames,
                       guidance_scale=guidance, stopping_criteria=StoppingCriteriaList([Clock()]))
    steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    steps.sort()
    return steps[len(steps) // 2]  # the median step


def dac_time(seconds: float) -> float:
    import torch
    from transformers import DacConfig, DacModel

    dac = DacModel(DacConfig(encoder_hidden_size=64, downsampling_ratios=[2, 4, 8, 8], decoder_hidden_size=1536,
                             n_codebooks=9, codebook_size=1024, codebook_dim=8, sampling_rate=44100)).eval()
    frames = round(seconds * 44100 / 512)
    codes = torch.randint(0, 1024, (1, 9, frames))
    with torch.inference_mode():
        started = time.perf_counter()
        dac.decode(audio_codes=codes)
        return (time.perf_counter() - started) / frames


def main() -> None:
    import torch

    from models.common import quantize_int8
    from models.dia import INT8_PARTS

    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, nargs=2, default=[3, 6])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8", "bfloat16"])
    args = parser.parse_args()
    out: dict = {"threads": torch.get_num_threads()}
    for precision in args.precisions:
        per_depth = {}
        for layers in args.layers:
            torch.manual_seed(0)
            model = build(layers)
            if precision == "int8":
                quantize_int8(model, INT8_PARTS)
            elif precision == "bfloat16":
                model = model.to(torch.bfloat16)
            per_depth[layers] = {g: frames_time(model, args.frames, g) for g in (3.0, 1.0)}
            del model
        low, high = args.layers
        fit = {}
        for guidance in (3.0, 1.0):
            per_layer = (per_depth[high][guidance] - per_depth[low][guidance]) / (high - low)
            fixed = per_depth[low][guidance] - per_layer * low
            fit[f"guidance {guidance:g}"] = {"fixed_s": round(fixed, 4), "per_layer_s": round(per_layer, 4),
                                             "s_per_frame_18_layers": round(fixed + 18 * per_layer, 4),
                                             "measured": {k: round(v[guidance], 4) for k, v in per_depth.items()}}
        out[precision] = fit
        print(json.dumps({precision: fit}), flush=True)
    out["dac_s_per_frame"] = round(dac_time(2.0), 4)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
