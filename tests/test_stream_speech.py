"""Speech that streams (issue 16): each family that speaks chunk by chunk (or turn by turn, or frame by frame) hands
each finished piece on as it is made (RunContext.audio), and the pieces joined are the run's audio, bit for bit; the
estimate knows when the first piece comes. Dia makes its audio in one piece and does not stream.

On the tiny checkpoints (tests/tiny_models.py and the tiny_* modules): one run a family, shared by its asserts.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.common import PARAGRAPH_PAUSE_S, SENTENCE_PAUSE_S, speech_chunks
from studio.catalog import MODE
from studio.run import RunContext
from tests.speech_fixtures import cpu_studio, one_thread  # noqa: F401 (one_thread: autouse)

SIX = ("The rain had stopped by noon. We walked down to the harbour. The boats were back. A gull sat on every post. "
       "Nobody said a word. Then the bell rang.")
# (model, text, settings, pieces the run hands on): a few chunks each, kept short (tiny models run to their caps).
STREAMING = {
    "bark": ("suno/bark-small", "Hello there. How are you today? Fine.", {"max_chunk_seconds": 0.5}, 2),
    "mms_tts": ("facebook/mms-tts-eng", SIX, {}, 2),
    "pocket_tts": ("eustlb/pocket-tts", "Hi there. How are you?", {}, 2),
    "csm": ("sesame/csm-1b", "Speaker 1: Hi!\nSpeaker 2: Hello.\nSpeaker 1: Bye.", {}, 3),
    "vibevoice": ("vibevoice/VibeVoice-1.5B-hf", "Speaker 1: Hello.", {"num_diffusion_steps": 2}, None),
}


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


@pytest.fixture(scope="module")
def runs(studio):
    """family -> (request, the run's result, the pieces handed on as (samples, rate))."""
    out = {}
    for family, (model, text, params, _) in STREAMING.items():
        pieces: list[tuple[np.ndarray, int]] = []
        request = studio.request("speech", model, text, seed=5, params=params)
        result = studio.manager.run(request, RunContext(on_audio=lambda s, r: pieces.append((s.copy(), r))))
        out[family] = (request, result, pieces)
    return out


@pytest.mark.parametrize("family", list(STREAMING))
def test_the_pieces_handed_on_joined_are_the_audio_bit_for_bit(runs, family):
    _, result, pieces = runs[family]
    audio = result.audio
    expected = STREAMING[family][3]
    assert len(pieces) == (expected if expected is not None else round(audio.samples.shape[-1] / 3200)) > 1
    assert {rate for _, rate in pieces} == {audio.sample_rate}
    joined = np.concatenate([samples for samples, _ in pieces], axis=-1)
    assert joined.dtype == np.float32 and joined.shape == audio.samples.shape
    assert np.array_equal(joined, audio.samples)  # bit for bit: the file is the same streamed or not


def test_the_pause_before_a_chunk_opens_its_piece(runs):
    _, result, pieces = runs["mms_tts"]
    rate = result.audio.sample_rate
    second = pieces[1][0]
    pause = int(SENTENCE_PAUSE_S * rate)
    assert not second[:pause].any() and second[pause:].any()
    _, csm, turns = runs["csm"]
    gap = round(0.2 * csm.audio.sample_rate)  # models.csm.TURN_GAP_S
    assert all(not piece[:gap].any() for piece, _ in turns[1:]) and turns[0][0][:gap].any()
    # The segments CSM reports start where each turn's piece ends its gap.
    starts = np.cumsum([0] + [piece.shape[-1] for piece, _ in turns[:-1]])
    for segment, start, (piece, _) in zip(csm.audio.info["segments"][1:], starts[1:], turns[1:]):
        assert segment["start"] == pytest.approx((start + gap) / csm.audio.sample_rate, abs=1e-3)


@pytest.mark.parametrize("family", list(STREAMING))
def test_the_estimate_says_when_the_first_piece_comes(studio, runs, family):
    request, _, _ = runs[family]
    spec = studio.catalog.get(request.model)
    fam = studio.catalog.family(spec)
    first, whole = fam.first_audio_units(spec, request), fam.work_units(spec, request)
    assert 0 < first < whole
    estimate = studio.estimate(request)
    assert estimate.load_seconds <= estimate.first_audio_seconds < estimate.seconds


def test_a_one_chunk_request_has_no_first_audio_and_dia_does_not_stream(studio):
    for model, text in (("facebook/mms-tts-eng", "Hello."), ("suno/bark-small", "Hello.")):
        assert studio.estimate(studio.request("speech", model, text, seed=1)).first_audio_seconds is None
    dia = studio.request("speech", "nari-labs/Dia-1.6B-0626", "[S1] Hi. [S2] Hello. [S1] Bye.", seed=1)
    assert studio.catalog.family(studio.catalog.get(dia.model)).first_audio_units is None
    assert studio.estimate(dia).first_audio_seconds is None


def test_the_first_sentence_is_a_chunk_of_its_own_whatever_the_chunk_size():
    # Six sentences fit one 400-character MMS chunk; without the first alone nothing could be heard before the end.
    assert [c for c, _ in speech_chunks(SIX, 400)] == [SIX.split(". ")[0] + ".", SIX.split(". ", 1)[1]]
    # The other chunks still merge up to the size; a text of one sentence is one chunk.
    assert len(speech_chunks(SIX, 60)) == 4 and speech_chunks("Just one.", 400) == [("Just one.", 0.0)]
    # Long form: only the text's first sentence stands alone; paragraphs keep their longer pause.
    long = speech_chunks("One. Two.\n\nThree. Four.", 400, long_form=True)
    assert long == [("One.", 0.0), ("Two.", SENTENCE_PAUSE_S), ("Three. Four.", PARAGRAPH_PAUSE_S)]
    assert speech_chunks("Hi.\n\nThere.", 400, long_form=True)[1] == ("There.", PARAGRAPH_PAUSE_S)


def test_long_form_streams_paragraph_pauses_inside_the_pieces(studio):
    pieces: list = []
    request = studio.request("speech", "facebook/mms-tts-eng", "One two.\n\nThree four.", seed=2,
                             params={MODE: "long form"})
    audio = studio.manager.run(request, RunContext(on_audio=lambda s, r: pieces.append(s.copy()))).audio
    assert len(pieces) == 2 and np.array_equal(np.concatenate(pieces), audio.samples)
    assert not pieces[1][:int(PARAGRAPH_PAUSE_S * audio.sample_rate)].any()


def test_the_page_and_api_core_passes_the_pieces_on_and_the_estimate_line_says_when(studio):
    """Endpoints.generate (the page's and the API's shared core) hands the run's pieces to `on_audio` through the
    ProgressBridge's RunContext; the estimate's line names the time to first audio when asked."""
    from studio.ui.endpoints import Endpoints

    endpoints = Endpoints(studio)
    pieces: list = []
    result = endpoints.generate("speech", "facebook/mms-tts-eng", SIX, seed=4,
                                on_audio=lambda samples, rate: pieces.append((samples.copy(), rate)))
    assert len(pieces) == 2 and {rate for _, rate in pieces} == {result.metadata["sample_rate"]}
    joined = sum(samples.shape[-1] for samples, _ in pieces)
    assert joined == round(result.metadata["duration"] * result.metadata["sample_rate"])
    estimate = endpoints.estimate("speech", "facebook/mms-tts-eng", SIX)
    assert "first audio in about" in estimate.summary(first_audio=True)
    assert "first audio" not in estimate.summary()
