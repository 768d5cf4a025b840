"""CSM on this CPU: seconds per generated frame of a random-weight CSM of the published widths, per precision.

`nice -n 10 python -m bench.csm_cpu [--layers 2 4] [--frames 12]`. The backbone is built with `--layers` of the
published 16 (RAM); the per-frame time is fitted as fixed + per-layer x layers from the two depths and extrapolated to
16. The depth decoder (4 layers, 31 steps a frame) and the Mimi codec are the published ones (CsmConfig() and
MimiConfig(num_quantizers=32) defaults, as convert_csm.py builds them). The text table is cut to 1,000 rows (a lookup
per text token, no per-frame cost; it would add 1 GB of RAM). Generation as models/csm.py runs it: sampling,
temperature 0.9, top_k 50 in both heads, codes 2048-2050 suppressed. Mimi's decode of the frames is timed apart.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def build(layers: int, precision: str):
    import torch
    from transformers import CsmConfig, CsmForConditionalGeneration, MimiConfig

    from models.common import quantize_int8
    from models.csm import INT8_PARTS

    config = CsmConfig(num_hidden_layers=layers, text_vocab_size=1000, bos_token_id=1, pad_token_id=2,
                       audio_token_id=2, audio_eos_token_id=3, codec_config=MimiConfig(num_quantizers=32).to_dict())
    model = CsmForConditionalGeneration(config).eval()
    with torch.no_grad():
        for module in model.codec_model.quantizer.modules():
            if hasattr(module, "embed_sum"):
                module.embed_sum.normal_()
                module._embed = None
    if precision == "int8":
        quantize_int8(model, INT8_PARTS)
    elif precision == "bfloat16":
        model.to(torch.bfloat16)
        model.codec_model.float()
    return model


def frame_times(model, frames: int) -> tuple[float, float]:
    """Seconds per frame (the prefill's frame excluded) and seconds of Mimi decoding per frame."""
    import torch
    from transformers import LogitsProcessorList

    stamps: list[float] = []

    def clock(input_ids, scores):
        stamps.append(time.perf_counter())
        return scores

    torch.manual_seed(0)
    ids = torch.randint(10, 900, (1, 40))
    with torch.inference_mode():
        codes = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=frames,
                               do_sample=True, temperature=0.9, top_k=50, suppress_tokens=[2048, 2049, 2050],
                               depth_decoder_do_sample=True, depth_decoder_temperature=0.9, depth_decoder_top_k=50,
                               depth_decoder_suppress_tokens=[2048, 2049, 2050],
                               logits_processor=LogitsProcessorList([clock]))
        started = time.perf_counter()
        model.codec_model.decode(codes[0].transpose(0, 1).unsqueeze(0))
        decode = (time.perf_counter() - started) / codes.shape[1]
    per_frame = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
    return per_frame, decode


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, nargs=2, default=[2, 4])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8", "bfloat16"])
    args = parser.parse_args()
    results = {}
    for precision in args.precisions:
        times = {}
        for layers in args.layers:
            model = build(layers, precision)
            frame_times(model, 3)  # warm-up
            times[layers], decode = frame_times(model, args.frames)
            del model
        low, high = args.layers
        per_layer = (times[high] - times[low]) / (high - low)
        at16 = times[low] + per_layer * (16 - low)
        results[precision] = {"s_per_frame": {str(k): round(v, 4) for k, v in times.items()},
                              "per_layer_s": round(per_layer, 4), "s_per_frame_16_layers": round(at16, 4),
                              "mimi_decode_s_per_frame": round(decode, 4),
                              "rtf": round((at16 + decode) * 12.5, 2), "threads": torch.get_num_threads(),
                              "max_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}
        print(json.dumps({precision: results[precision]}), flush=True)


if __name__ == "__main__":
    main()
