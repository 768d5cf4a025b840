"""The speech families that offload in parts (models.common.PartSwitcher): on a simulated GPU too small for the whole
model, the plan says offload, the run speaks, and the device never holds more than the budget; every part visits."""

from __future__ import annotations

import pytest

from studio.catalog import DTYPE_BYTES
from tests.speech_fixtures import one_thread  # noqa: F401 (autouse)

CASES = {
    "eustlb/pocket-tts": ("Hi there.", {"precision": "float32"}),
    "sesame/csm-1b": ("[S1] Hi there. [S2] Hello.", {"precision": "float32"}),
    "vibevoice/VibeVoice-1.5B-hf": ("Speaker 1: Hi. Speaker 2: Hello.", {"precision": "float32"}),
}


@pytest.mark.parametrize("repo", list(CASES))
def test_a_model_too_big_for_the_gpu_runs_in_parts_within_the_budget(make_studio, repo):
    text, params = CASES[repo]
    probe = make_studio(4096 * 2**20)
    estimate = probe.estimate(probe.request("speech", repo, text, seed=1, params=params))
    spec = probe.catalog.get(repo)
    parts = probe.catalog.family(spec).components(spec, DTYPE_BYTES[estimate.dtype])
    assert len(parts) >= 2
    largest = max(parts.values()) + estimate.working_bytes
    budget = (largest + estimate.weights_bytes + estimate.working_bytes) // 2  # the largest part fits, not all
    studio = make_studio(4096 * 2**20, budget=budget, host_capacity=10_000 * 2**20)
    request = studio.request("speech", repo, text, seed=1, params=params)
    assert studio.estimate(request).placement == "offload"
    result = studio.manager.run(request)
    assert result.placement == "offload" and result.audio.samples.size > 0
    # Within the budget, and above the working memory alone: the parts that ran were booked on the device.
    assert estimate.working_bytes + min(parts.values()) <= studio.device.peak <= budget
