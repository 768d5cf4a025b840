"""Every family loads by repo id from the (tiny) HF cache through the product's code and generates what was asked."""

from __future__ import annotations

import numpy as np
import pytest

from studio.errors import Cancelled
from studio.run import RunContext

MUSICGEN_HOP = 640  # 32 kHz / 50 Hz: one codec frame

CASES = [
    # (repo id, prompt, params, expected channels)
    ("facebook/musicgen-small", "lofi beat with piano", {"duration": 1.0, "guidance_scale": 3.0}, 1),
    ("facebook/musicgen-stereo-small", "ambient pads", {"duration": 0.5}, 2),
    ("facebook/musicgen-melody", "folk guitar", {"duration": 0.5, "top_p": 0.9, "top_k": 0}, 1),
    ("suno/bark-small", "Hello there [laughs] ♪ la la ♪", {"voice": "v2/en_speaker_6", "max_chunk_seconds": 0.5}, 1),
    ("facebook/mms-tts-eng", "hello world", {}, 1),
    ("facebook/mms-tts-deu", "guten morgen", {"speaking_rate": 1.5}, 1),
]


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    from studio.device import CpuDevice
    from studio.service import Studio
    from studio.settings import Settings

    settings = Settings(output_dir=tmp_path_factory.mktemp("out"), memory_reserve=0)
    return Studio(settings, catalog=catalog, device=CpuDevice())


def _run(studio, model, prompt, params, seed=11, ctx=None):
    request = studio.request(None, model, prompt, seed=seed, params=params)
    return request, studio.manager.run(request, ctx or RunContext())


@pytest.mark.parametrize("model,prompt,params,channels", CASES, ids=[c[0] for c in CASES])
def test_generates_requested_audio_and_is_deterministic(studio, model, prompt, params, channels):
    spec = studio.catalog.get(model)
    seen = []
    request, first = _run(studio, model, prompt, params, ctx=RunContext(on_progress=lambda d, t: seen.append((d, t))))
    audio = first.audio

    assert audio.sample_rate == spec.sample_rate
    assert audio.channels == channels
    assert audio.samples.dtype == np.float32
    assert np.isfinite(audio.samples).all()
    assert float(np.std(audio.samples)) > 1e-5, "audio is silent"
    if "duration" in params:
        wanted = params["duration"] * spec.sample_rate
        assert abs(audio.samples.shape[-1] - wanted) <= MUSICGEN_HOP
    # Progress reaches its total, and never goes backwards.
    assert seen and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    _, again = _run(studio, model, prompt, params)
    np.testing.assert_array_equal(again.audio.samples, audio.samples)
    _, other = _run(studio, model, prompt, params, seed=12)
    assert other.audio.samples.shape != audio.samples.shape or not np.array_equal(other.audio.samples, audio.samples)
    assert request.seed == 11


def test_bark_speech_length_follows_the_cap_per_chunk(studio):
    _, short = _run(studio, "suno/bark-small", "Hi.", {"max_chunk_seconds": 0.5})
    _, longer = _run(studio, "suno/bark-small", "Hi.", {"max_chunk_seconds": 1.0})
    # Random weights never say "done", so each chunk runs to its cap: twice the cap, about twice the audio.
    assert 1.6 < longer.audio.duration / short.audio.duration < 2.4


def test_long_text_is_spoken_in_chunks(studio):
    text = " ".join(["This is a sentence that goes on for a while."] * 12)
    _, result = _run(studio, "facebook/mms-tts-eng", text, {})
    assert result.audio.info["chunks"] > 1


@pytest.mark.parametrize("model,prompt,params,cancel_at", [
    ("facebook/musicgen-small", "drums", {"duration": 1.0}, 5),
    ("suno/bark-small", "One. Two. Three.", {"max_chunk_seconds": 0.5}, 10),
    ("facebook/mms-tts-eng", "One sentence here. " * 40, {}, 1),
])
def test_cancel_stops_within_one_step(studio, model, prompt, params, cancel_at):
    progress = []
    ctx = RunContext()

    def on_progress(done, total):
        progress.append(done)
        if done >= cancel_at:
            ctx.cancel.set()

    ctx.on_progress = on_progress
    request = studio.request(None, model, prompt, seed=1, params=params)
    with pytest.raises(Cancelled):
        studio.manager.run(request, ctx)
    # The step that saw the cancel was the last one reported.
    assert progress[-1] == min(d for d in progress if d >= cancel_at)
    assert progress.count(progress[-1]) == 1
    # The studio is ready again at once.
    again = studio.manager.run(studio.request(None, model, prompt[:40], seed=1, params=params))
    assert again.audio.samples.size > 0


def test_voices_come_from_the_repo(studio):
    spec = studio.catalog.get("suno/bark-small")
    voices = studio.catalog.voices(spec)
    assert "v2/en_speaker_6" in voices and "announcer" in voices
    assert "v2/zh_speaker_9" not in voices  # published, but not in this (tiny) repo's speaker_embeddings_path.json


def test_bark_fused_attention_matches_the_eager_math(tiny_cache, catalog):
    """The SDPA route gives the eager attention's logits: causal with a padding mask, causal with a KV cache
    (one new token), and the fine model's non-causal passes."""
    import copy

    import torch
    from transformers import BarkModel

    from models.bark import use_fused_attention

    eager = BarkModel.from_pretrained("suno/bark-small").eval()
    fused = copy.deepcopy(eager)
    assert use_fused_attention(fused) == sum(len(m.layers) for m in (fused.semantic, fused.coarse_acoustics,
                                                                        fused.fine_acoustics))
    ids = torch.randint(0, eager.semantic.config.input_vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    with torch.inference_mode():
        a = eager.semantic(input_ids=ids, attention_mask=mask, use_cache=True)
        b = fused.semantic(input_ids=ids, attention_mask=mask, use_cache=True)
        assert torch.allclose(a.logits[0], b.logits[0], atol=1e-5)
        assert torch.allclose(a.logits[1, 4:], b.logits[1, 4:], atol=1e-5)
        step = torch.randint(0, eager.semantic.config.input_vocab_size, (2, 1))
        longer = torch.cat([mask, torch.ones_like(step)], dim=1)
        a2 = eager.semantic(input_ids=step, attention_mask=longer, past_key_values=a.past_key_values)
        b2 = fused.semantic(input_ids=step, attention_mask=longer, past_key_values=b.past_key_values)
        assert torch.allclose(a2.logits, b2.logits, atol=1e-5)
        codes = torch.randint(0, eager.fine_acoustics.config.input_vocab_size, (1, 20, 8),
                              generator=torch.Generator().manual_seed(1))
        assert torch.allclose(eager.fine_acoustics(3, input_ids=codes).logits,
                              fused.fine_acoustics(3, input_ids=codes).logits, atol=1e-5)
