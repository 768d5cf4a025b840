"""A child process for the CPU-threading prototype: MusicGen decoder steps at 2 and 1 torch threads.

Run as `python -m bench.omp_probe STEPS ROUNDS` with HF_HOME set and OMP_WAIT_POLICY as the parent chose;
prints one JSON object: {"threads_2": [seconds...], "threads_1": [...], "cpu_2": [...], "cpu_1": [...]}.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import torch
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    steps, rounds = int(sys.argv[1]), int(sys.argv[2])
    repo = "facebook/musicgen-small"
    model = MusicgenForConditionalGeneration.from_pretrained(repo, dtype=torch.float32).eval()
    inputs = AutoTokenizer.from_pretrained(repo)(["80s pop track"], return_tensors="pt")

    def run() -> None:
        torch.manual_seed(0)
        with torch.inference_mode():
            model.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=steps, top_k=250)

    run()
    out: dict[str, list[float]] = {"threads_2": [], "threads_1": [], "cpu_2": [], "cpu_1": []}
    for _ in range(rounds):
        for threads in (2, 1):
            torch.set_num_threads(threads)
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            out[f"threads_{threads}"].append(time.perf_counter() - wall)
            out[f"cpu_{threads}"].append(time.process_time() - cpu)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
