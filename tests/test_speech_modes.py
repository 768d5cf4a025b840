"""The Speech tab's modes: Single voice, Dialogue and Long form on every speech model that can do them, a saved voice
per speaker in Dialogue (`voice_2` .. `voice_N` through the voice library, as `voice` is for speaker 1), a tag for a
second speaker refused in a one-voice mode, one progress bar over a Long form text, and the page showing a speaker's
voice controls in Dialogue only.

Runs on the tiny checkpoints (tests/tiny_vibevoice.py, tests/tiny_models.py's MMS-TTS); the page without a browser,
through the tab's own handlers as tests/test_ui_modes.py does.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import soundfile

from studio.catalog import MODE
from studio.errors import InvalidInput
from studio.run import RunContext
from tests.speech_fixtures import cpu_studio, one_thread  # noqa: F401 (fixtures: one torch thread, a CPU studio)

VIBEVOICE = "vibevoice/VibeVoice-1.5B-hf"
CSM = "sesame/csm-1b"
DIA = "nari-labs/Dia-1.6B-0626"
POCKET = "eustlb/pocket-tts"
BARK = "suno/bark-small"
MMS = "facebook/mms-tts-eng"
SCRIPT = "Speaker 1: Hello. Speaker 2: Hi there."
FAST = {"num_diffusion_steps": 2}
RATE = 24000


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 2 s voice clips that differ, as float WAVs (a saved voice keeps them bit-exact): a tone and noise."""
    folder = tmp_path_factory.mktemp("clips")
    t = np.arange(2 * RATE) / RATE
    samples = {"tone": (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
               "noise": (0.3 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)}
    paths = {}
    for name, wave in samples.items():
        paths[name] = str(folder / f"{name}.wav")
        soundfile.write(paths[name], wave, RATE, subtype="FLOAT")
    return paths


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, clips, tmp_path_factory):
    """A studio with the two clips saved as the voices "tone" and "noise", each with a transcript."""
    from studio.clips import read_clip

    studio = cpu_studio(catalog, tmp_path_factory)
    for name, path in clips.items():
        studio.voices.save(name, read_clip(path), f"A {name}.", consent=True)
    return studio


def _zero_runs(samples) -> np.ndarray:
    """The lengths of the runs of exact zeros in `samples` (the silence the studio puts between chunks)."""
    padded = np.concatenate([[False], samples == 0, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


# ------------------------------------------------------------------ the modes each model offers


@pytest.mark.parametrize("repo, choices, default", [
    (VIBEVOICE, ("single voice", "dialogue", "long form"), "dialogue"),
    (CSM, ("single voice", "dialogue"), "dialogue"),
    (DIA, ("single voice", "dialogue"), "dialogue"),
    (POCKET, ("single voice", "long form"), "single voice"),
    (BARK, ("single voice", "long form"), "single voice"),
    (MMS, ("single voice", "long form"), "single voice"),
])
def test_each_speech_model_offers_the_modes_it_can_do_with_a_note_for_each(catalog, repo, choices, default):
    mode = catalog.get(repo).param(MODE)
    assert mode.choices == choices and mode.default == default and not mode.advanced
    assert [choice for choice, _ in mode.choice_help] == list(choices)
    assert "one voice" in mode.explain("single voice")
    if "long form" in choices:
        assert "one progress bar" in mode.explain("long form")


@pytest.mark.parametrize("repo, speakers", [(VIBEVOICE, 4), (CSM, 2)])
def test_a_voice_per_speaker_belongs_to_dialogue_and_speaker_1s_to_every_mode(catalog, repo, speakers):
    spec = catalog.get(repo)
    assert spec.param("voice").modes == () and spec.param("audio").modes == ()
    for k in range(2, speakers + 1):
        assert spec.param(f"voice_{k}").modes == ("dialogue",) and spec.param(f"audio_{k}").modes == ("dialogue",)
    assert spec.param(f"voice_{speakers + 1}") is None
    if repo == CSM:
        assert spec.param("transcript_2").modes == ("dialogue",)


def test_a_call_without_a_mode_keeps_working_in_the_models_default(studio):
    request = studio.request("speech", VIBEVOICE, SCRIPT, seed=1, params=FAST)
    assert request.get(MODE) == "dialogue" and request.settings()[MODE] == "dialogue"
    request = studio.request("speech", MMS, "Hello there.", seed=1)
    assert request.get(MODE) == "single voice"


@pytest.mark.parametrize("repo, text, fix", [
    (VIBEVOICE, SCRIPT, "switch Mode to Dialogue"),
    (CSM, "Hi. [S2] Hello.", "switch Mode to Dialogue"),
    (DIA, "[S1] Hi. [S2] Hello.", "switch Mode to Dialogue"),
    (POCKET, "Hi. [S2] Hello.", "pick Dia, CSM or VibeVoice (Mode: Dialogue)"),
    (MMS, "Speaker 3: Hello.", "pick Dia, CSM or VibeVoice (Mode: Dialogue)"),
])
def test_a_one_voice_mode_refuses_a_second_speaker_naming_the_fix(studio, repo, text, fix):
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", repo, text, seed=1, params={MODE: "single voice"})
    message = str(error.value)
    assert "turn for another speaker" in message and fix in message and "or remove the tag" in message
    # Speaker 1's own tag, and a cue, are one voice; so is Bark's cue in brackets (the dialogue models' parser reads
    # a bracket as a speaker tag, and refuses [sighs] as a speaker it does not have, in any mode).
    studio.request("speech", repo, "Speaker 1: Hello (sighs) there.", seed=1, params={MODE: "single voice"})
    studio.request("speech", BARK, "Speaker 1: Hello [sighs] there.", seed=1, params={MODE: "single voice"})


def test_long_form_refuses_a_second_speaker_too(studio):
    with pytest.raises(InvalidInput, match=r"Long form speaks one voice: switch Mode to Dialogue"):
        studio.request("speech", VIBEVOICE, "One.\n\n[S2] Two.", seed=1, params={MODE: "long form", **FAST})


# ------------------------------------------------------------------ a saved voice per speaker


@pytest.fixture(scope="module")
def dialogue_runs(studio, clips):
    """The same script and seed with saved voices for both speakers, and with their clips given directly."""
    saved = studio.generate(studio.request("speech", VIBEVOICE, SCRIPT, seed=4,
                                           params={"voice": "tone", "voice_2": "noise", **FAST}))
    given = studio.generate(studio.request("speech", VIBEVOICE, SCRIPT, seed=4, params={
        "audio": clips["tone"], "audio_2": clips["noise"], **FAST}))
    return saved, given


def test_voice_2_speaks_speaker_2_exactly_as_its_clip_given_as_audio_2(dialogue_runs):
    saved, given = dialogue_runs
    a, b = soundfile.read(saved.path)[0], soundfile.read(given.path)[0]
    assert a.shape == b.shape and np.array_equal(a, b)
    settings = saved.metadata["settings"]
    assert settings["voice"] == "tone" and settings["voice_2"] == "noise"
    assert "audio" not in settings and "audio_2" not in settings  # kept as the voices' names


def test_the_metadata_marks_every_cloned_speaker(dialogue_runs):
    saved, given = dialogue_runs
    marks = saved.metadata["cloned_voices"]
    assert [(m["speaker"], m["voice"], m["source"]) for m in marks] == [(1, "tone", "library"),
                                                                         (2, "noise", "library")]
    assert all(m["consent"]["confirmed"] for m in marks) and saved.metadata["voice_cloned"] is True
    assert [(m["speaker"], m["source"]) for m in given.metadata["cloned_voices"]] == [(1, "clip"), (2, "clip")]


def test_a_speakers_voice_is_not_read_outside_dialogue_and_an_unknown_one_is_refused(studio):
    request = studio.request("speech", VIBEVOICE, "Hello.", seed=1, params={MODE: "single voice", "voice_2": "noise",
                                                                            **FAST})
    assert request.get("audio_2") is None and not request.voices and "voice_2" not in request.settings()
    with pytest.raises(InvalidInput) as error:
        studio.request("speech", CSM, SCRIPT, seed=1, params={"voice_2": "nobody"})
    assert "voice_2 'nobody' is not a voice of sesame/csm-1b" in str(error.value)
    assert "noise (saved)" in str(error.value)
    # CSM's saved voice fills speaker 2's clip and its transcript.
    request = studio.request("speech", CSM, SCRIPT, seed=1, params={"voice_2": "noise"})
    assert request.get("transcript_2") == "A noise." and request.get("audio_2").seconds == 2.0


def test_dias_voice_prompt_is_speaker_1s_clip_then_speaker_2s_with_their_transcripts_tagged(studio):
    from models.dia import plan

    spec = studio.catalog.get(DIA)
    script = "[S1] Hi. [S2] Yo."
    both = studio.request("speech", DIA, script, seed=6, params={"voice": "tone", "voice_2": "noise"})
    run = plan(spec, both.prompt, both.params)
    assert run.text == "[S1] A tone. [S2] A noise. [S1] Hi. [S2] Yo."
    assert [speaker for speaker, _ in run.clips] == [1, 2] and run.prompt_seconds == pytest.approx(4.2)
    assert "continues the voices of 'tone.wav' (2.0 s, Speaker 1) then 'noise.wav' (2.0 s, Speaker 2)" in \
        studio.catalog.family(spec).describe(spec, both)
    # Speaker 2's clip reaches the model: the same seed with Speaker 1's voice alone speaks otherwise.
    one = studio.request("speech", DIA, script, seed=6, params={"voice": "tone"})
    a, b = studio.manager.run(both).audio, studio.manager.run(one).audio
    assert a.info["prompt_s"] == pytest.approx(4.2) and b.info["prompt_s"] == pytest.approx(2.0)
    assert a.samples.shape == b.samples.shape and not np.allclose(a.samples, b.samples)
    # A clip without its words is refused, naming the setting and the fix; Single voice does not read Speaker 2's.
    with pytest.raises(InvalidInput, match="audio_2.*has no transcript.*type them in transcript_2"):
        studio.request("speech", DIA, script, seed=6, params={"audio_2": both.get("audio_2")})
    single = studio.request("speech", DIA, "Hi.", seed=6, params={MODE: "single voice", "voice_2": "noise"})
    assert plan(spec, single.prompt, single.params).clips == ()


# ------------------------------------------------------------------ Long form


LONG_TEXT = "\n\n".join(f"This is paragraph {n}. It has two sentences." for n in range(1, 5))


def test_long_form_is_one_progress_bar_over_every_paragraph(studio):
    reports = []
    request = studio.request("speech", MMS, LONG_TEXT, seed=2, params={MODE: "long form"})
    result = studio.manager.run(request, RunContext(on_progress=lambda done, total: reports.append((done, total))))
    totals = {total for _, total in reports}
    done = [d for d, _ in reports]
    assert len(totals) == 1 and done == sorted(done) and reports[-1][0] == reports[-1][1]
    # A paragraph each, never merged across a break; the text's first sentence is a chunk of its own (it is heard
    # first when the run streams: models.common.speech_chunks).
    assert result.audio.info["chunks"] == 5 == reports[-1][1]
    # Paragraphs are apart by the longer pause (0.6 s of silence); Single voice merges them into one chunk after
    # the first sentence's, with the one sentence pause between the two.
    rate = result.audio.sample_rate
    assert (_zero_runs(result.audio.samples.reshape(-1)) >= round(0.6 * rate)).sum() == 3
    single = studio.manager.run(studio.request("speech", MMS, LONG_TEXT, seed=2))
    assert single.audio.info["chunks"] == 2
    assert (_zero_runs(single.audio.samples.reshape(-1)) >= round(0.15 * rate)).sum() == 1


def test_the_estimate_and_its_words_cover_the_whole_long_form_text(studio):
    short = studio.request("speech", VIBEVOICE, "One sentence here.", seed=1, params={MODE: "long form", **FAST})
    long = studio.request("speech", VIBEVOICE, LONG_TEXT, seed=1, params={MODE: "long form", **FAST})
    family = studio.catalog.family(studio.catalog.get(VIBEVOICE))
    spec = studio.catalog.get(VIBEVOICE)
    assert family.work_units(spec, long) > 3 * family.work_units(spec, short)
    assert family.describe(spec, long).startswith("4 paragraphs: Speaker 1")


# ------------------------------------------------------------------ the page


@pytest.fixture(scope="module")
def speech(studio):
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    with gr.Blocks() as demo, gr.Tabs():
        return build_tab(demo, "speech", Endpoints(studio))


def _values(tab, model: str, **settings) -> dict:
    spec = tab.catalog.get(model)
    values = {tab.model: model, tab.language: None, tab.prompt: SCRIPT, tab.seed: -1, tab.fmt: "wav",
              tab.ui.shown: model, tab.ui.last: None}
    for control in tab.plan:
        param = spec.param(control.name)
        values[control.component] = settings.get(control.name, param.default if param is not None else None)
    return values


def _shown(tab, updates, visible: bool) -> set[str]:
    return {c.name for c in tab.plan if (updates.get(c.component) or {}).get("visible") is visible}


def test_switching_the_mode_shows_a_voice_per_speaker_in_dialogue_only(speech):
    from studio.ui.tab import on_mode

    per_speaker = {"voice_2", "audio_2", "voice_3", "audio_3", "voice_4", "audio_4"}
    updates = on_mode(speech, _values(speech, VIBEVOICE, mode="dialogue"))
    assert per_speaker <= _shown(speech, updates, True)
    for mode in ("single voice", "long form"):
        updates = on_mode(speech, _values(speech, VIBEVOICE, mode=mode))
        assert per_speaker <= _shown(speech, updates, False)
        mode_control = next(c for c in speech.plan if c.name == MODE)
        assert updates[mode_control.note]["value"].startswith({"single voice": "Single voice:",
                                                               "long form": "Long form:"}[mode])
    # CSM: speaker 2's clip and its transcript follow the mode too.
    assert {"voice_2", "audio_2", "transcript_2"} <= _shown(speech, on_mode(speech, _values(speech, CSM, mode="single voice")),
                                                            False)
    # The per-speaker Voice is a dropdown of the saved voices, "None" first.
    voice_2 = next(c for c in speech.plan if c.name == "voice_2")
    assert voice_2.kind == "dropdown"
    from studio.ui import controls as ctl

    options = ctl.voice_options(speech.catalog.get(VIBEVOICE).param("voice_2"), speech.catalog.get(VIBEVOICE),
                                speech.catalog)
    assert options[0][1] == "" and ("noise (saved)", "noise") in options


def _ancestors(block) -> list:
    chain = []
    while getattr(block, "parent", None) is not None:
        block = block.parent
        chain.append(block)
    return chain


def test_each_speakers_saved_voice_and_transcript_sit_under_its_clip_and_the_library_ends_the_settings(speech):
    part: dict = {}
    for control in speech.plan:
        part.setdefault(control.name, control.component)
    # Reading order (blocks are numbered as they are made): speaker 1's Voice among the settings (Bark and Pocket TTS
    # pick presets there), then each speaker's clip with its transcript and saved voice under it.
    order = [speech.prompt, part["voice"], part["audio"], part["transcript"], part["audio_2"], part["voice_2"],
             part["transcript_2"], part["audio_3"], part["voice_3"], part["audio_4"], part["voice_4"]]
    assert [b._id for b in order] == sorted(b._id for b in order)
    advanced = next(a for a in _ancestors(part["audio_3"]) if isinstance(a, gr.Accordion))
    assert advanced.elem_id == "speech-advanced"
    assert advanced in _ancestors(part["voice_3"]) and advanced in _ancestors(part["voice_4"])
    assert advanced not in _ancestors(part["voice_2"])
    # The Voice library: the last thing of the input column, after Advanced (not under the examples, page-wide).
    library = next(a for a in _ancestors(speech.ui.below.clip) if isinstance(a, gr.Accordion))
    assert library.elem_id == "speech-voice-library"
    column = library.parent
    assert column in _ancestors(speech.model) and column.children[-2:] == [advanced, library]
