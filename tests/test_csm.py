"""CSM speaks a two-speaker script turn by turn at 24 kHz: segments per turn, seeds, one progress bar over the script,
cancel within a frame, voices from clips and transcripts, codes Mimi cannot decode kept out, bad input refused, and
the gated repo's message offline.

On the tiny checkpoint (tests/tiny_csm.py: a one-layer CSM with 4 codebooks and a tiny Mimi inside, under the real
repo id). Random weights never sample the all-zero EOS frame, so every turn lasts exactly its cap (models/csm.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.speech_fixtures import (  # noqa: F401 (one_thread: autouse)
    cpu_studio, one_thread, run_with_reports, two_voices, write_clips)

CSM = "sesame/csm-1b"
RATE = 24000
HOP = 1920
SCRIPT = "Speaker 1: Hi there!\nSpeaker 2: Hello, how are you?\nSpeaker 1: Fine, thanks."


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 1.5 s voice clips that differ: a 220 Hz tone and a noise burst."""
    return two_voices(tmp_path_factory.mktemp("clips"), 1.5, RATE)


def _request(studio, text=SCRIPT, seed=3, **params):
    return studio.request("speech", CSM, text, seed=seed, params=params)


def _plan(studio, request):
    from models.csm import plan

    return plan(studio.catalog.get(CSM), request.prompt, request.params)


@pytest.fixture(scope="module")
def first(studio, clips):
    """The script with a voice for Speaker 2, every progress report kept."""
    request = _request(studio, audio_2=clips[1], transcript_2="A burst of noise.")
    result, reports = run_with_reports(studio, request)
    return request, result, reports


def test_every_turn_is_spoken_in_order_with_its_speaker_and_segments_cover_the_output(studio, first):
    request, result, _ = first
    plan = _plan(studio, request)
    audio = result.audio
    assert audio.sample_rate == RATE and audio.samples.ndim == 1 and np.abs(audio.samples).max() > 0
    segments = audio.info["segments"]
    assert [(s["speaker"], s["text"]) for s in segments] == [
        (1, "Hi there!"), (2, "Hello, how are you?"), (1, "Fine, thanks.")]
    # Each turn runs to its cap (9 characters -> 1.125 s at 8 a second -> 15 frames; 19 -> 30; 13 -> 21), in order,
    # 0.2 s apart, the first from 0 and the last to the end of the output.
    assert plan.caps == (15, 30, 21)
    assert [round((s["end"] - s["start"]) * RATE) for s in segments] == [cap * HOP for cap in plan.caps]
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(audio.duration, abs=1e-4)
    for before, after in zip(segments, segments[1:]):
        assert after["start"] == pytest.approx(before["end"] + 0.2, abs=1e-4)
    # Each turn has the earlier ones as context (Speaker 2's voice clip is context of every turn besides them).
    assert [s["context_turns"] for s in segments] == [0, 1, 2]
    assert audio.info["metadata"]["segments"] == segments  # kept in the file's metadata too


def test_one_progress_bar_runs_over_the_whole_script_frame_by_frame(studio, first):
    request, _, reports = first
    total = sum(_plan(studio, request).caps)
    assert reports == [(frame, total) for frame in range(1, total + 1)]


def test_a_seed_repeats_the_dialogue(studio, first, clips):
    request, result, _ = first
    again = studio.manager.run(_request(studio, audio_2=clips[1], transcript_2="A burst of noise.")).audio.samples
    assert np.array_equal(again, result.audio.samples)


def test_cancel_stops_within_one_frame_in_a_later_turn(studio):
    cancel = threading.Event()
    reports = []
    stop_at = 15 + 2  # the third frame of the second turn

    def on_progress(done, total):
        reports.append(done)
        if done == stop_at:
            cancel.set()

    with pytest.raises(Cancelled):
        studio.manager.run(_request(studio), RunContext(cancel=cancel, on_progress=on_progress))
    assert reports == list(range(1, stop_at + 1))


def test_speaker_ones_clip_reaches_the_model(studio, clips):
    runs = [studio.manager.run(_request(studio, "Hi there!", audio=clip, transcript="A sound.")).audio
            for clip in clips]
    tone, noise = (run.samples for run in runs)
    assert tone.shape == noise.shape == (15 * HOP,)
    assert runs[0].info["voices"] == [1]
    # The clip is the conversation's first turn, re-encoded by Mimi: another clip, same seed and text, other speech.
    assert not np.allclose(tone, noise)


def test_codes_mimi_cannot_decode_are_never_sampled(studio):
    """A model that prefers code 2049 everywhere: unguarded it samples codes Mimi has no row for; the adapter's run
    suppresses them in both heads and decodes."""
    import torch

    from models.csm import load

    adapter = load(studio.catalog.get(CSM), "cpu", "float32")
    model = adapter.model
    with torch.no_grad():
        model.lm_head.weight[2049] = 50 * model.backbone_model.norm.weight.sign()
        model.depth_decoder.codebooks_head.weight[:, :, 2049] = 50 * model.depth_decoder.model.norm.weight.sign()
    inputs = adapter.processor.apply_chat_template([{"role": "0", "content": [{"type": "text", "text": "Hi."}]}],
                                                   tokenize=True, return_dict=True)
    torch.manual_seed(0)
    with torch.inference_mode():
        raw = model.generate(**inputs, max_new_tokens=3, do_sample=True)
    assert (raw >= 2048).any()  # what would crash Mimi's decode
    request = _request(studio, "Hi.")
    audio = adapter.generate(request, RunContext())
    assert audio.samples.shape == (13 * HOP,) and np.isfinite(audio.samples).all()


def test_estimates_count_context_frames_and_the_three_parts(studio, catalog, clips):
    from models.csm import FAMILY, work_units, working_bytes

    spec = catalog.get(CSM)
    one = _request(studio, "Hi there!")
    two = _request(studio, "Hi there! [S2] Hello.")
    cloned = _request(studio, "Hi there! [S2] Hello.", audio=clips[0], transcript="A sound.")
    assert work_units(spec, cloned) > work_units(spec, two) > work_units(spec, one) > 0
    assert working_bytes(spec, cloned, 4) > working_bytes(spec, one, 4) > 0
    parts = FAMILY.components(spec, 4)
    assert set(parts) == {"backbone", "depth_decoder", "codec"} and all(parts.values())
    assert not FAMILY.companion_repos  # Mimi is inside the repo (codec_model.* in its model.safetensors)
    assert "2 turns of Speaker 1 and Speaker 2" in studio.manager.estimate_run(two).work


@pytest.mark.parametrize("text, params, words", [
    ("[S1] Hi. [S3] Hello.", {}, ["[S3]", "two voices", "[S1] and [S2]"]),
    ("Speaker 1: Hi.\nSpeaker 2:\n", {}, ["turn 2 ([S2]) is empty", "write what Speaker 2 says"]),
    ("(laughs)", {}, ["only non-verbal cues"]),
    (SCRIPT, {"audio": "clip"}, ["Speaker 1's voice clip 'clip.wav'", "no transcript", "type them in transcript"]),
    (SCRIPT, {"audio_2": "clip"}, ["Speaker 2's voice clip", "transcript_2"]),
    (SCRIPT, {"transcript": "Hello."}, ["without Speaker 1's voice clip", "clear transcript"]),
    (SCRIPT, {"audio": "short", "transcript": "Hi."}, ["0.5 s long", "at least 1 s"]),
    (SCRIPT, {"audio": "long", "transcript": "Hi."}, ["'long.wav' is 42.0 s long", "40.9"]),
    ("[S1] " + "Words and words. " * 60, {}, ["turn 1 (Speaker 1, 1019 characters", "holds 2048",
                                              "max_position_embeddings", "split the turn"]),
])
def test_bad_input_is_refused_naming_the_value_and_the_fix(studio, tmp_path, text, params, words):
    params = write_clips(tmp_path, params, {"clip": 1.5, "short": 0.5, "long": 42.0}, RATE)
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", CSM, text, seed=1, params=params)
    message = str(error.value)
    for word in words:
        assert word in message, message


def test_the_gated_repo_missing_offline_says_how_to_get_it(tiny_cache, catalog, tmp_path):
    """The manager's real load path with the repo out of the (offline) cache: the gated repo's message, no file."""
    from studio.device import CpuDevice
    from studio.errors import StudioError
    from studio.service import Studio
    from studio.settings import Settings

    repo = tiny_cache / "hub" / "models--sesame--csm-1b"
    aside = tmp_path / "aside"
    repo.rename(aside)
    try:
        fresh = Studio(Settings(output_dir=tmp_path / "out", memory_reserve=0), catalog=catalog, device=CpuDevice())
        with pytest.raises(StudioError) as error:
            fresh.generate(fresh.request("speech", CSM, "Hi.", seed=1, params={}))
    finally:
        aside.rename(repo)
    message = str(error.value)
    assert "gated" in message and "accept its licence" in message and "HF_TOKEN" in message, message
    assert f"https://huggingface.co/{CSM}" in message
    assert not list((tmp_path / "out").rglob("*.wav"))
