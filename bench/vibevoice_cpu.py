"""VibeVoice on this CPU: seconds per generated frame of a random-weight VibeVoice-1.5B of the published widths.

`nice -n 10 python -m bench.vibevoice_cpu [--layers 2 5] [--frames 10] [--dtypes float32 int8 bfloat16]`. The
language model is built with `--layers` of the published 28 (RAM: the tokenizers alone are 4.1 GB in float32); the
per-frame time is fitted as fixed + per-layer x layers from the two depths and extrapolated to 28. The rest is the
library's default config, which is the 1.5B's (acoustic and semantic tokenizers, the 4-layer diffusion head). Each
frame's parts are timed apart by forward hooks: the LM's passes (the guided and the unconditioned branch), the
diffusion head's steps, the acoustic decoder, the semantic encoder. Also the acoustic encoder's peak RAM per second
of a voice sample (float32), which bounds the voice clips' length (models/vibevoice.py MAX_PROMPT_S).

Random weights would choose among the four tokens the generation allows at random; the token table gets a constant
dimension that makes the audio placeholder win (as in tests/tiny_vibevoice.py), so every run makes its frames.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

TEXT = dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
            num_key_value_heads=2, max_position_embeddings=65536, rope_theta=1000000.0, tie_word_embeddings=True)
FULL_LAYERS = 28


def build(layers: int, dtype: str):
    import torch
    from transformers import GenerationConfig, VibeVoiceConfig, VibeVoiceForConditionalGeneration

    config = VibeVoiceConfig(text_config={**TEXT, "num_hidden_layers": layers})
    model = VibeVoiceForConditionalGeneration(config).eval()
    embed = model.model.language_model.embed_tokens.weight
    with torch.no_grad():
        embed[:, 0] = 4.0
        embed[config.audio_token_id, 0] = 12.0
        for projector in (model.model.multi_modal_projector, model.model.semantic_connector):
            projector.linear_2.bias[0] = 4.0
    model.generation_config = GenerationConfig(
        do_sample=False, guidance_scale=1.3, noise_scheduler_class="DPMSolverMultistepScheduler",
        noise_scheduler_config={"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    elif dtype == "int8":
        from models.common import quantize_int8
        from models.vibevoice import INT8_PARTS, _quantize_head

        quantize_int8(model, INT8_PARTS)
        _quantize_head(model)
    return model, config


class PartClock:
    """Seconds spent in each part's forward calls (nested calls counted once, by the outermost)."""

    def __init__(self, parts: dict) -> None:
        self.seconds = {name: 0.0 for name in parts}
        for name, module in parts.items():
            module.register_forward_pre_hook(lambda _m, _a, n=name: self._enter(n))
            module.register_forward_hook(lambda _m, _a, _o, n=name: self._leave(n))
        self._open: dict[str, float] = {}

    def _enter(self, name):
        self._open[name] = time.perf_counter()

    def _leave(self, name):
        self.seconds[name] += time.perf_counter() - self._open.pop(name)


def run(model, config, frames: int, steps: int) -> dict:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stamps: list[float] = []

    class Clock(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    inner = model.model
    clock = PartClock({"lm": inner.language_model, "diffusion_head": inner.diffusion_head,
                       "decoder": inner.audio_tower.decoder, "semantic": inner.semantic_tokenizer_encoder})
    ids = torch.full((1, 200), 300, dtype=torch.long)  # a 200-token prompt
    ids[0, -1] = config.audio_bos_token_id
    torch.manual_seed(0)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=frames,
                             num_diffusion_steps=steps, return_dict_in_generate=True,
                             stopping_criteria=StoppingCriteriaList([Clock()]))
    made = out.audio[0].shape[-1] // 3200 if out.audio[0] is not None else 0
    per_frame = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))  # the prefill step left out
    return {"frames": made, "s_per_frame": per_frame, "parts_s_per_frame": {k: v / frames for k, v in
                                                                            clock.seconds.items()}}


def encoder_peak_bytes_per_sample(model, seconds: float = 10.0) -> float:
    """The acoustic encoder's peak RSS growth encoding one clip, per sample (float32)."""
    import torch

    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    peak, done = [rss()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    clip = torch.randn(1, 1, int(seconds * 24000)) * 0.1
    base = rss()
    watcher = threading.Thread(target=sample)
    watcher.start()
    with torch.inference_mode():
        model.model.audio_tower.encode(clip, sample=True)
    done.set()
    watcher.join()
    return (peak[0] - base) / clip.numel()


def main() -> None:
    import resource

    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, nargs=2, default=[2, 5])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "int8", "bfloat16"])
    parser.add_argument("--steps", type=int, nargs="+", default=[10])
    args = parser.parse_args()
    # Random-init tokenizers shrink a signal to denormal floats through their seven stages (a trained model's do not),
    # and x86 computes denormals some 100x slower: measured here, 31 s a frame at 2 layers without this, most of it in
    # the diffusion head and the decoder. Flushing them to zero times what a trained model computes.
    torch.set_flush_denormal(True)
    results = {"threads": torch.get_num_threads(), "flush_denormal": True}
    for dtype in args.dtypes:
        fits = {}
        for layers in args.layers:
            model, config = build(layers, dtype)
            if dtype == "float32" and layers == args.layers[0]:
                results["encoder_bytes_per_sample"] = encoder_peak_bytes_per_sample(model)
            for steps in args.steps:
                measured = run(model, config, args.frames, steps)
                fits[(layers, steps)] = measured
                print(json.dumps({"dtype": dtype, "layers": layers, "steps": steps, **measured}), flush=True)
            del model
        for steps in args.steps:
            (l1, a), (l2, b) = ((l, fits[(l, steps)]["s_per_frame"]) for l in args.layers)
            per_layer = (b - a) / (l2 - l1)
            full = a + per_layer * (FULL_LAYERS - l1)
            results[f"{dtype}/steps{steps}"] = {"per_layer_s": per_layer, "s_per_frame_28": full,
                                                "rtf": full * 7.5}
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
