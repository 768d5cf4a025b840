"""The page's parts without a browser: the model picker, the memory panel, estimate and progress text, the run
registry and its cancel paths, history rows, restoring settings into a tab, and the launch options."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import pytest

from studio.estimate import Estimate
from studio.settings import Settings
from studio.ui import text
from studio.ui.picker import find_group, group_models
from studio.ui.runs import ProgressBridge, RunRegistry

# ------------------------------------------------------------------ the model picker


def test_per_language_models_are_one_entry_with_a_language_picker(catalog):
    groups = group_models(catalog.for_task("speech"))
    mms = [g for g in groups if g.by_language]
    assert len(mms) == 1 and mms[0].label == "MMS-TTS" and mms[0].key == "facebook/mms-tts"
    assert [g.key for g in groups][:2] == ["suno/bark-small", "suno/bark"]  # the featured model stays first
    languages = dict(mms[0].languages())
    assert languages["English"] == "facebook/mms-tts-eng" and languages["German"] == "facebook/mms-tts-deu"
    assert len(languages) == len([s for s in catalog.for_task("speech") if s.language])
    assert mms[0].default.repo_id == "facebook/mms-tts-eng"
    assert mms[0].spec_for("facebook/mms-tts-fra").repo_id == "facebook/mms-tts-fra"
    assert find_group(groups, "facebook/mms-tts-deu") is mms[0]
    assert find_group(groups, "nope/none") is None
    assert all(not g.by_language for g in group_models(catalog.for_task("music")))


def test_the_speech_default_is_pocket_tts_on_a_cpu_and_bark_on_a_gpu(catalog):
    # Pocket TTS runs faster than real time on a CPU (docs/benchmarks.md), Bark small some 20x slower: the picker
    # and the API default to the model the hardware runs well.
    assert catalog.for_task("speech", "cpu")[0].repo_id == "eustlb/pocket-tts"
    for kind in ("cuda", "mps", "sim", None):  # sim: the tests' simulated GPU
        assert catalog.for_task("speech", kind)[0].repo_id == "suno/bark-small", kind
    # A model featured on one kind of hardware only is not featured on another: it keeps its catalog place.
    order = [s.repo_id for s in catalog.for_task("speech", "cuda")]
    assert order.index("eustlb/pocket-tts") > 0
    assert catalog.for_task("music", "cpu")[0].repo_id == catalog.for_task("music", "cuda")[0].repo_id


@pytest.mark.parametrize("device, env, simulated, expected", [
    ("cpu", {}, False, "cpu"), ("cuda:1", {}, False, "cuda"), ("mps", {}, False, "mps"),
    ("auto", {"CUDA_VISIBLE_DEVICES": "-1"}, False, "cpu"), ("cpu", {}, True, "sim"),
])
def test_the_device_kind_is_known_before_the_devices_are_decided(monkeypatch, device, env, simulated, expected):
    import sys

    from studio.device import expected_device_kind

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "platform", "linux")
    settings = Settings(device=device, simulated_memory=(8 * 10**9,) if simulated else None)
    assert expected_device_kind(settings) == expected


def test_voice_and_format_labels_read_as_words():
    assert text.voice_label("v2/en_speaker_6") == "English · speaker 6"
    assert text.voice_label("v2/zh_speaker_0") == "Chinese · speaker 0"
    assert text.voice_label("announcer") == "announcer"
    assert text.format_choices(["wav", "mp3"]) == [("WAV", "wav"), ("MP3", "mp3")]
    assert text.model_choice_label("MusicGen small", 1_400_000_000, "CC-BY-NC-4.0") == \
        "MusicGen small · 1.4 GB · CC-BY-NC-4.0"


# ------------------------------------------------------------------ the memory panel

SNAPSHOT = {
    "device": "Simulated GPU <8 GB>", "device_kind": "sim", "total_bytes": 8_000_000_000,
    "budget_bytes": 6_000_000_000, "used_bytes": 1_500_000_000, "ram_bytes": 0,
    "models": [
        {"id": "suno/bark-small", "label": "Bark small", "state": "in use", "bytes": 1_000_000_000,
         "placement": "device", "pinned": False, "last_used": 1000.0},
        {"id": 'evil/"><img src=x>', "label": "<b>Evil</b>", "state": "on device", "bytes": 500_000_000,
         "placement": "device", "pinned": True, "last_used": 1000.0 - 600},
        {"id": "facebook/musicgen-small", "label": "MusicGen small", "state": "on disk", "bytes": 0,
         "placement": None, "pinned": False, "last_used": None},
    ],
}


def test_the_memory_panel_has_a_row_with_actions_per_model_and_escapes_everything():
    panel = text.memory_html(SNAPSHOT, now=1000.0)
    assert panel.count('<li class="mem-model"') == 3
    assert "1.5 GB</b> used of 6.0 GB budget" in panel and "8.0 GB total" in panel
    assert 'style="width:75.00%"' in panel and 'style="width:18.75%"' in panel  # budget and used, of the total
    assert "Simulated GPU &lt;8 GB&gt;" in panel
    assert "<img" not in panel and "<b>Evil" not in panel and "&lt;b&gt;Evil" in panel
    assert "Unload after run" in panel  # the model in use goes when its run ends
    assert 'data-pinned="true" aria-pressed="true"' in panel and ">Pinned<" in panel
    assert "used 10 min ago" in panel  # an idle model says when it was last used
    bark = panel[panel.index('data-model="suno/bark-small"'):panel.index("</li>")]
    assert ">in use now<" in bark and "used" not in bark.replace("data-action", "")  # in use: not "used N ago"
    musicgen = panel[panel.index('data-model="facebook/musicgen-small"'):]
    assert 'data-action="unload" data-model="facebook/musicgen-small" disabled' in musicgen  # nothing to unload
    assert 'data-action="pin" data-model="facebook/musicgen-small"' in musicgen and \
        'title="Only a loaded model can be pinned; it loads on first use" disabled>Pin<' in musicgen


def test_an_empty_manager_says_models_load_on_first_use():
    panel = text.memory_html({**SNAPSHOT, "used_bytes": 0, "models": []}, now=0)
    assert "No model loaded yet" in panel and 'data-action="unload-all" disabled' in panel


# Two devices: each model row names its device; each device lists its own rows and has its own bar.
_BARK = {"id": "suno/bark", "label": "Bark", "state": "in use", "bytes": 2_000_000_000, "placement": "device",
         "pinned": False, "last_used": 1000.0, "device": "GPU <0>"}
_AUDIOLDM = {"id": "cvssp/audioldm2", "label": "AudioLDM 2", "state": "on device", "bytes": 9_500_000_000,
             "placement": "device", "pinned": True, "last_used": 1000.0, "device": "GPU 1"}
_SMALL = {"id": "suno/bark-small", "label": "Bark small", "state": "in RAM", "bytes": 0, "placement": None,
          "pinned": False, "last_used": 1000.0 - 600, "device": None}
_DISK = {"id": "facebook/musicgen-small", "label": "MusicGen small", "state": "on disk", "bytes": 0,
         "placement": None, "pinned": True, "last_used": None, "device": None}
TWO_DEVICES = {
    "device": "2 GPUs", "device_kind": "cuda", "total_bytes": 18_000_000_000, "budget_bytes": 15_000_000_000,
    "used_bytes": 11_500_000_000, "ram_bytes": 700_000_000, "models": [_BARK, _AUDIOLDM, _SMALL, _DISK],
    "devices": [
        {"name": "GPU <0>", "total_bytes": 8_000_000_000, "budget_bytes": 6_000_000_000, "used_bytes": 2_000_000_000,
         "models": [_BARK]},
        {"name": "GPU 1", "total_bytes": 10_000_000_000, "budget_bytes": 9_000_000_000,
         "used_bytes": 9_500_000_000, "models": [_AUDIOLDM]},
    ],
}


def _blocks(panel: str) -> list[str]:
    """The panel cut at each device block: [before the first, device 0, device 1, ..., the off-device block]."""
    return panel.split('<section class="mem-dev')


def test_with_two_devices_each_has_its_bar_and_its_models_then_the_models_on_none():
    panel = text.memory_html(TWO_DEVICES, now=1000.0)
    first, second, rest = _blocks(panel)[1:]
    assert _blocks(panel)[0] == '<div class="mem mem-multi">'
    # Each device: its name (escaped), its own bar (budget and used, of its own total) and legend.
    assert '<div class="mem-device" title="cuda">GPU &lt;0&gt;</div>' in first
    assert 'class="mem-budget" style="width:75.00%"' in first and 'class="mem-used" style="width:25.00%"' in first
    assert "<b>2.0 GB</b> used of 6.0 GB budget</span><span>8.0 GB total" in first
    assert 'aria-label="2.0 GB used of 6.0 GB budget on GPU &lt;0&gt;"' in first
    assert '<div class="mem-device" title="cuda">GPU 1</div>' in second
    assert 'class="mem-budget" style="width:90.00%"' in second
    assert 'class="mem-used mem-over" style="width:95.00%"' in second  # over its budget, not the total's
    assert "<b>9.5 GB</b> used of 9.0 GB budget</span><span>10.0 GB total" in second
    assert panel.count('<div class="mem-bar"') == 2 and "2 GPUs" not in panel  # no bar for the totals
    # Each model once, under its device; the rows on no device once, in the last block with the RAM line.
    for block, model in ((first, "suno/bark"), (second, "cvssp/audioldm2")):
        assert block.count('<li class="mem-model"') == 1 and f'<li class="mem-model" data-model="{model}"' in block
    assert rest.startswith(' mem-host"') and ">RAM and disk<" in rest
    assert rest.count('<li class="mem-model"') == 2
    assert '<li class="mem-model" data-model="suno/bark-small"' in rest
    assert '<li class="mem-model" data-model="facebook/musicgen-small"' in rest
    for model in ("suno/bark", "cvssp/audioldm2", "suno/bark-small", "facebook/musicgen-small"):
        assert panel.count(f'<li class="mem-model" data-model="{model}"') == 1
    assert panel.count('class="mem-ram"') == 1 and "700 MB of models kept in RAM" in rest
    # The buttons the panel's script reads are the single-device ones; Unload all comes last, once.
    assert 'data-action="pin" data-model="facebook/musicgen-small" data-pinned="true"' in rest
    assert 'data-action="unload" data-model="suno/bark">Unload after run<' in first
    assert panel.count('data-action="unload-all"') == 1
    assert panel.endswith('<button class="mem-btn mem-unload-all" data-action="unload-all">Unload all</button></div>')


def test_with_two_devices_a_row_no_device_lists_is_still_shown_once():
    stray = {**_SMALL, "id": "x/stray", "device": "GPU 9"}  # names a device the snapshot does not list
    snapshot = {**TWO_DEVICES, "ram_bytes": 0, "models": [_BARK, _AUDIOLDM, stray],
                "devices": [{**TWO_DEVICES["devices"][0], "models": [_BARK]},
                            {**TWO_DEVICES["devices"][1], "models": []}]}
    first, second, rest = _blocks(text.memory_html(snapshot, now=1000.0))[1:]
    assert "No model on this device." in second and '<li class="mem-model"' not in second
    assert 'data-model="x/stray"' in rest and 'data-model="cvssp/audioldm2"' in rest
    assert 'class="mem-ram"' not in rest
    empty = text.memory_html({**snapshot, "used_bytes": 0, "models": [],
                              "devices": [{**d, "used_bytes": 0, "models": []} for d in snapshot["devices"]]}, now=0)
    assert empty.count('<div class="mem-bar"') == 2 and "mem-host" not in empty
    assert empty.count("No model loaded yet") == 1 and "No model on this device" not in empty
    assert 'data-action="unload-all" disabled' in empty


# The single-device panel, byte for byte (a snapshot listing its one device must give the same).
ONE_DEVICE = {
    "device": "GPU <0>", "device_kind": "cuda", "total_bytes": 8_000_000_000, "budget_bytes": 6_000_000_000,
    "used_bytes": 1_000_000_000, "ram_bytes": 500_000_000,
    "models": [{"id": "suno/bark-small", "label": "Bark small", "state": "on device", "bytes": 1_000_000_000,
                "placement": "device", "pinned": True, "last_used": 1000.0}],
}
ONE_DEVICE_HTML = (
    '<div class="mem"><div class="mem-device" title="cuda">GPU &lt;0&gt;</div><div class="mem-bar" role="img"'
    ' aria-label="1.0 GB used of 6.0 GB budget"><div class="mem-budget" style="width:75.00%"></div>'
    '<div class="mem-used" style="width:12.50%"></div></div><div class="mem-legend"><span><b>1.0 GB</b> used of'
    ' 6.0 GB budget</span><span>8.0 GB total</span></div><div class="mem-note">Budget: what the studio may use of'
    ' the total, after the reserve and other programs.</div><div class="mem-ram">500 MB of models kept in RAM</div>'
    '<ul class="mem-models"><li class="mem-model" data-model="suno/bark-small" data-state="on device">'
    '<div class="mem-line"><span class="mem-name" title="suno/bark-small">Bark small</span>'
    '<span class="mem-size">1.0 GB</span></div><div class="mem-line mem-sub"><span class="mem-state'
    ' mem-state-on-device">on device</span><span class="mem-when">used just now</span></div>'
    '<div class="mem-actions"><button class="mem-btn mem-pin" data-action="pin" data-model="suno/bark-small"'
    ' data-pinned="true" aria-pressed="true" title="Pinned: never unloaded to make room for another model. Click to'
    ' unpin; Unload still unloads it">Pinned</button><button class="mem-btn mem-unload" data-action="unload"'
    ' data-model="suno/bark-small" title="Unload it and unpin it">Unload</button></div></li></ul>'
    # Unload all skips pinned models: with only a pinned one loaded it has nothing to do.
    '<button class="mem-btn mem-unload-all" data-action="unload-all" disabled>Unload all</button></div>'
)


def test_with_one_device_or_none_listed_the_panel_is_unchanged():
    assert text.memory_html(ONE_DEVICE, now=1000.0) == ONE_DEVICE_HTML
    row = {**ONE_DEVICE["models"][0], "device": "GPU <0>"}
    listed = {**ONE_DEVICE, "models": [row], "devices": [
        {"name": "GPU <0>", "total_bytes": 8_000_000_000, "budget_bytes": 6_000_000_000,
         "used_bytes": 1_000_000_000, "models": [row]}]}
    assert text.memory_html(listed, now=1000.0) == ONE_DEVICE_HTML
    assert text.memory_html({**ONE_DEVICE, "devices": []}, now=1000.0) == ONE_DEVICE_HTML
    # The existing snapshot too: adding a one-entry devices list changes nothing.
    one = {**SNAPSHOT, "devices": [{"name": SNAPSHOT["device"], "total_bytes": SNAPSHOT["total_bytes"],
                                    "budget_bytes": SNAPSHOT["budget_bytes"], "used_bytes": SNAPSHOT["used_bytes"],
                                    "models": SNAPSHOT["models"]}]}
    assert text.memory_html(one, now=1000.0) == text.memory_html(SNAPSHOT, now=1000.0)


def test_unload_messages_say_what_happened():
    assert text.unload_message({"a/b": "unloaded"}) == "Unloaded a/b."
    assert text.unload_message({"a/b": "deferred"}) == "a/b is in use and will unload after the current run."
    assert text.unload_message({"a/b": "not loaded"}) == "Nothing to unload: no model is loaded."


def _row(state: str, *, pinned: bool = False, size: int = 0, last_used: float | None = 1000.0 - 600) -> dict:
    return {"id": "facebook/musicgen-small", "label": "MusicGen small", "state": state, "bytes": size,
            "placement": "device" if size else None, "pinned": pinned, "last_used": last_used}


def _panel(*rows: dict) -> str:
    return text.memory_html({**SNAPSHOT, "models": list(rows)}, now=1000.0)


def test_pin_is_offered_only_while_the_model_is_loaded_and_unload_all_skips_pinned_models():
    pin = 'data-action="pin" data-model="facebook/musicgen-small"'
    for state, size in (("on device", 10**9), ("in RAM", 10**9), ("loading", 0), ("downloading", 0), ("in use", 10**9)):
        assert f'{pin} data-pinned="false" aria-pressed="false" title="Pin: never unload this model to make room for ' \
               f'another model">Pin<' in _panel(_row(state, size=size)), state
    for state in ("on disk", "not downloaded"):
        assert 'disabled>Pin<' in _panel(_row(state)), state
    # Pinned ahead and not loaded yet: it says so, and Pin (to unpin) stays enabled; Unload has nothing to do.
    ahead = _panel(_row("on disk", pinned=True))
    assert "pinned: stays loaded once it loads" in ahead and 'disabled>Pinned<' not in ahead and '>Pinned<' in ahead
    assert 'data-action="unload" data-model="facebook/musicgen-small" disabled' in ahead
    # Unload all is there for what it would unload: a loaded model that is not pinned.
    assert 'data-action="unload-all" disabled' in _panel(_row("on device", pinned=True, size=10**9))
    assert 'data-action="unload-all">' in _panel(_row("on device", size=10**9))
    assert 'title="Unload it and unpin it"' in _panel(_row("on device", pinned=True, size=10**9))


def test_a_model_in_use_says_in_use_now_and_an_idle_one_when_it_was_used():
    busy = _panel(_row("in use", size=10**9, last_used=1000.0 - 540))
    assert ">in use now<" in busy and "min ago" not in busy and 'data-state="in use"' in busy
    for state in ("loading", "downloading"):
        assert "min ago" not in _panel(_row(state, last_used=1000.0 - 540)), state
    assert "used 9 min ago" in _panel(_row("on device", size=10**9, last_used=1000.0 - 540))


def test_toasts_name_models_by_their_label_and_say_what_pinning_does():
    labels = {"facebook/musicgen-small": "MusicGen small", "suno/bark-small": "Bark small",
              "cvssp/audioldm2": "AudioLDM 2"}
    assert text.unload_message({"suno/bark-small": "unloaded"}, labels) == "Unloaded Bark small."
    assert text.unload_message({"facebook/musicgen-small": "unloaded"}, labels, ["facebook/musicgen-small"]) == \
        "Unloaded MusicGen small and unpinned it."
    assert text.unload_message({"suno/bark-small": "deferred"}, labels, ["suno/bark-small"]) == \
        "Bark small is in use and will unload after the current run; unpinned."
    everything = {"facebook/musicgen-small": "pinned", "suno/bark-small": "unloaded", "cvssp/audioldm2": "not loaded"}
    assert text.unload_message(everything, labels) == \
        "Unloaded Bark small. Kept 1 pinned model: MusicGen small (its own Unload unloads it)."
    two = {"facebook/musicgen-small": "pinned", "cvssp/audioldm2": "pinned"}
    assert text.unload_message(two, labels) == \
        "Kept 2 pinned models: MusicGen small, AudioLDM 2 (each one's Unload unloads it)."
    assert text.unload_message({"facebook/musicgen-small": "not loaded"}, labels, ["facebook/musicgen-small"]) == \
        "MusicGen small was not loaded; unpinned it."
    assert text.pin_message("MusicGen small", "pinned") == \
        "Pinned MusicGen small: it is never unloaded to make room for another model (Unload still unloads it)."
    assert text.pin_message("MusicGen small", "pinned once loaded") == \
        "Pinned MusicGen small, which is not loaded now: once it loads, it is never unloaded to make room."
    assert text.pin_message("MusicGen small", "unpinned") == \
        "Unpinned MusicGen small: it may be unloaded when another model needs the room."


def test_the_budget_is_explained_once_under_the_first_bar():
    note = "Budget: what the studio may use of the total, after the reserve and other programs."
    single = text.memory_html(SNAPSHOT, now=1000.0)
    assert single.count(note) == 1 and single.index("8.0 GB total") < single.index(note)
    multi = text.memory_html(TWO_DEVICES, now=1000.0)
    first = _blocks(multi)[1]
    assert multi.count(note) == 1 and note in first


GB = 10**9


def test_a_cpu_budget_does_not_flicker_and_a_gpu_budget_is_exact():
    shown: dict[str, int] = {}
    seen = []
    # Free RAM moving by a few hundred MB each second around 22.9 GB: the figure shown stays put.
    for exact in (22.9, 23.1, 22.8, 23.2, 22.95, 23.05, 22.7):
        snapshot = {**SNAPSHOT, "device_kind": "cpu", "total_bytes": 32 * GB, "budget_bytes": int(exact * GB)}
        panel = text.memory_html(text.steady_snapshot(snapshot, shown), now=1000.0)
        seen += re.findall(r"</b> used of (.+?) budget</span>", panel)
    assert seen == ["23.0 GB"] * len(seen), seen
    # A real change (a program took 3 GB) shows at once, rounded to 0.5 GB.
    snapshot = text.steady_snapshot({**SNAPSHOT, "device_kind": "cpu", "budget_bytes": int(19.8 * GB)}, shown)
    assert snapshot["budget_bytes"] == int(20 * GB)
    assert text.steady_budget(int(3.27 * GB), None, "mps") == int(3.3 * GB)  # 0.1 GB steps under 5 GB
    # A GPU's own memory: exact. Each device of several is steadied apart; the exact figures are not changed.
    assert text.steady_budget(7_612_345_678, 7_600_000_000, "cuda") == 7_612_345_678
    devices = {**TWO_DEVICES, "device_kind": "cpu",
               "devices": [{**d, "kind": "cpu", "budget_bytes": d["budget_bytes"] + 123_456_789}
                           for d in TWO_DEVICES["devices"]]}
    steady = text.steady_snapshot(devices, {})
    assert [d["budget_bytes"] for d in steady["devices"]] == [6 * GB, 9 * GB]
    assert devices["devices"][0]["budget_bytes"] == 6_123_456_789


# ------------------------------------------------------------------ estimate and progress


def _estimate(**changes) -> Estimate:
    values = dict(model="m/x", seconds=24.0, bytes=2_300_000_000, fits=True, evicts=("suno/bark-small",),
                  weights_bytes=2_000_000_000, working_bytes=300_000_000, load_seconds=3.0, compute_seconds=21.0,
                  placement="device", resident=True, cached=True, budget_bytes=7_600_000_000, dtype="float16")
    values.update(changes)
    return Estimate(**values)


def test_the_estimate_line_is_the_estimate_summary():
    line = text.estimate_html(_estimate())
    assert "about 24 s · needs 2.3 GB of 7.6 GB · float16 · will unload suno/bark-small" in line
    # The precision is named when it is not float32 (it changes both figures).
    assert "about 24 s · needs 2.3 GB of 7.6 GB · will unload" in text.estimate_html(_estimate(dtype="float32"))
    assert "of 7.6 GB · int8 · loads in ~3.0 s" in text.estimate_html(_estimate(dtype="int8", resident=False))
    assert "studio-estimate-ok" in line
    assert "studio-estimate-warn" in text.estimate_html(_estimate(placement="offload"))
    assert "studio-estimate-bad" in text.estimate_html(_estimate(fits=False))
    assert "&lt;x&gt;" in text.estimate_html(None, problem="<x>")


def test_time_left_hands_over_from_the_estimate_to_the_step_rate():
    assert text.remaining_seconds(estimated_total=30, elapsed=10) == 20
    assert text.remaining_seconds(estimated_total=None, elapsed=10) is None
    # Steps seen: the measured rate alone (1 s a step -> 90 s for the other 90), plus the part after the steps
    # (decoding, saving) scaled from the same measure, whatever the estimate said (see tests/test_progress.py).
    assert text.remaining_seconds(estimated_total=30, elapsed=12, done=10, total=100, per_step=1.0) == \
        pytest.approx(90 + 100 * text.TAIL_SHARE / (1 - text.TAIL_SHARE))
    assert text.progress_desc("loading", 12.0) == "Loading the model · about 12 s left"
    assert text.progress_desc("saving", 0.1) == "Saving the file · almost done"


def test_the_progress_bridge_reports_stages_steps_and_time_left():
    calls = []
    now = [100.0]
    bridge = ProgressBridge(threading.Event(), lambda value, desc=None, **_: calls.append((value, desc)),
                            estimated_s=20.0, clock=lambda: now[0])
    ctx = bridge.context
    ctx.stage("loading")
    now[0] += 5
    ctx.stage("generating")
    now[0] += 2
    ctx.progress(10, 50)
    assert calls[0] == (0.0, "Loading the model · about 20 s left")
    assert calls[1] == (0.25, "Generating · about 15 s left")
    # 10 steps in 2 s: 8 s for the other 40, and a ninth of the 10 s of steps for decoding and saving.
    left = 8 + 10 / 9
    assert calls[2] == (pytest.approx(7 / (7 + left)), f"Generating · 10/50 steps · about {left:.1f} s left")


def test_the_bridge_cancels_the_run_when_gradio_drops_the_request():
    cancel = threading.Event()
    dropped = threading.Event()
    with ProgressBridge(cancel, lambda *a, **k: None, cancelled=dropped.is_set, tick_s=0.01) as bridge:
        bridge.context.stage("loading")
        assert not cancel.is_set()
        dropped.set()  # e.g. an API client's job.cancel(): the ticker notices even between steps
        assert cancel.wait(2)


def test_a_cancel_while_queued_stops_the_run_as_it_starts():
    now = [0.0]
    runs = RunRegistry(clock=lambda: now[0])
    assert runs.cancel("s:music") == 0
    runs.cancel_queued("s:music")
    with runs.track("s:speech") as other:
        assert not other.is_set()  # another tab of the session is not touched
    with runs.track("s:music") as event:
        assert event.is_set()
    with runs.track("s:music") as event:
        assert not event.is_set()  # used once
    runs.cancel_queued("s:music")
    now[0] += RunRegistry.PENDING_TTL_S + 1
    with runs.track("s:music") as event:
        assert not event.is_set()  # a stale Cancel is forgotten


# ------------------------------------------------------------------ history


@dataclass
class Item:
    id: int
    created: str
    task: str
    model: str
    prompt: str
    duration: float


def test_history_rows_show_the_label_and_escape_the_prompt():
    items = [Item(7, "2026-01-02T03:04:05+00:00", "music", "facebook/musicgen-small", "<script>x</script> beat", 8.0),
             Item(6, "2026-01-01T00:00:00+00:00", "sfx", "cvssp/audioldm2", "rain " * 100, 4.25)]
    listing = text.history_html(items, selected=6, labels={"facebook/musicgen-small": "MusicGen small"})
    assert listing.count("<button") == 2 and 'data-id="7"' in listing
    assert "<script>" not in listing and "&lt;script&gt;x&lt;/script&gt; beat" in listing
    assert "MusicGen small" in listing and "cvssp/audioldm2" in listing and "Sound effects" in listing
    assert 'hist-row hist-selected" data-id="6"' in listing and "4.2 s" in listing
    assert "…" in listing  # the long prompt is clipped
    assert text.history_html([]) == ""


# ------------------------------------------------------------------ restoring a past run into its tab


def test_restoring_puts_the_model_language_and_settings_back(make_studio):
    import gradio as gr

    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    endpoints = Endpoints(make_studio())
    with gr.Blocks() as demo, gr.Tabs():
        speech = build_tab(demo, "speech", endpoints)
        music = build_tab(demo, "music", endpoints)

    updates = dict(zip(speech.restore_outputs(),
                       speech.restore_updates("facebook/mms-tts-deu", "Guten Morgen", 42, {"speaking_rate": 1.5},
                                              "flac")))
    assert updates[speech.model]["value"] == "facebook/mms-tts"
    assert updates[speech.language]["visible"] is True and updates[speech.language]["value"] == "facebook/mms-tts-deu"
    assert updates[speech.prompt]["value"] == "Guten Morgen" and updates[speech.seed]["value"] == 42
    assert updates[speech.fmt]["value"] == "flac"
    rate = next(c.component for c in speech.plan if c.name == "speaking_rate")
    voice = next(c.component for c in speech.plan if c.name == "voice")
    assert updates[rate]["value"] == 1.5 and updates[voice]["visible"] is False
    assert "needs" in updates[speech.estimate]

    updates = dict(zip(music.restore_outputs(),
                       music.restore_updates("facebook/musicgen-small", "lofi", 7, {"duration": 12.0}, "wav")))
    duration = next(c.component for c in music.plan if c.name == "duration")
    assert updates[duration]["value"] == 12.0 and updates[music.language]["visible"] is False

    from studio.errors import InvalidInput

    with pytest.raises(InvalidInput, match="not a speech model"):
        speech.restore_updates("facebook/musicgen-small", "x", 1, {}, "wav")


# ------------------------------------------------------------------ launch


def test_mcp_is_turned_on_when_asked_and_its_package_is_there(monkeypatch, tmp_path, caplog):
    from studio.ui import launch

    settings = Settings(mcp=True, output_dir=tmp_path)
    monkeypatch.setattr(launch, "mcp_available", lambda: True)
    assert launch.launch_options(settings, None)["mcp_server"] is True
    monkeypatch.setattr(launch, "mcp_available", lambda: False)
    with caplog.at_level("WARNING"):
        options = launch.launch_options(settings, None)
    assert "mcp_server" not in options and 'pip install "gradio[mcp]' in caplog.text
    assert "mcp_server" not in launch.launch_options(Settings(output_dir=tmp_path), None)


def test_a_list_of_logins_is_passed_on_as_is():
    from studio.ui.launch import launch_auth

    logins = [("ann", "pass-one"), ("bob", "pass-two")]
    assert launch_auth(Settings(auth=tuple(logins), share=True)) == (logins, None)  # --auth @FILE, two lines
    assert launch_auth(Settings(auth=(("ann", "pass-one"),))) == ([("ann", "pass-one")], None)  # one line


# ------------------------------------------------------------------ the page is built without the device


def test_building_the_page_asks_the_device_nothing(catalog, tmp_path):
    """With --device auto, asking the device anything imports torch: the page must be up before that."""
    from studio.device import CpuDevice, Devices
    from studio.service import Studio
    from studio.ui.app import build_app

    asked = []

    def choose():
        asked.append(True)
        return [CpuDevice()]

    studio = Studio(Settings(output_dir=tmp_path / "out"), catalog=catalog, device=Devices(choose))
    build_app(studio)
    assert asked == []


def test_the_undo_line_names_the_deleted_prompt_as_text():
    line = text.deleted_html("<b>lofi</b> " + "beat " * 40)
    assert "&lt;b&gt;lofi&lt;/b&gt;" in line and "<b>" not in line and "…" in line
    assert "Deleted" in line and "trash" in line
    assert "the generation" in text.deleted_html("")


def test_history_handlers_delete_into_the_trash_and_undo_through_the_facade(make_studio):
    import json

    from studio.ui import history_tab
    from studio.ui.endpoints import Endpoints

    studio = make_studio()
    out = studio.settings.output_dir
    path = out / "lofi.wav"
    meta = {"model": "facebook/mms-tts-eng", "task": "speech", "text": "lofi beat", "seed": 1, "duration": 1.0,
            "sample_rate": 16000, "settings": {}, "format": "wav"}
    path.write_bytes(b"RIFF")
    path.with_name("lofi.wav.json").write_text(json.dumps(meta))
    item = studio.history.add(path, meta)
    endpoints = Endpoints(studio)

    after = history_tab.delete(endpoints, item.id, "", history_tab.ALL)
    shown, listed, undo_parts = after[:6], after[6:8], after[8:]
    assert shown[4] is None and listed[0] == "" and "No generations yet" in listed[1]
    assert undo_parts[0]["visible"] is True and "lofi beat" in undo_parts[1] and undo_parts[2] == item.id
    assert not path.exists() and studio.history.get(item.id) is None

    back = history_tab.undo(endpoints, undo_parts[2], "", history_tab.ALL)
    shown, listed, undo_parts = back[:6], back[6:8], back[8:]
    assert shown[0]["value"] == str(path.resolve()) and shown[4] == item.id  # selected again, its file served
    assert f'data-id="{item.id}"' in listed[0] and listed[1] == "1 generation"
    assert undo_parts[0]["visible"] is False and undo_parts[2] is None
    with pytest.raises(Exception, match="Nothing to undo"):
        history_tab.undo(endpoints, item.id, "", history_tab.ALL)


def test_the_settings_row_quotes_text_values_and_separates_settings_clearly():
    from studio.catalog import PRECISION_HELP
    from studio.ui.text import metadata_markdown

    shown = metadata_markdown({"model": "cvssp/audioldm2", "task": "sfx", "prompt": "rain", "seed": 1,
                               "settings": {"negative_prompt": "Low quality.", "guidance_scale": 3.5, "steps": 25}})
    assert "negative prompt “Low quality.” · guidance scale 3.5 · steps 25" in shown
    assert "Low quality.," not in shown
    assert "docs/" not in PRECISION_HELP  # the page's help names no file of the repository


# ------------------------------------------------------------------ audio in: the input, Use as input, Extend, Reuse

SMALL, MELODY, STEREO = "facebook/musicgen-small", "facebook/musicgen-melody", "facebook/musicgen-stereo-small"
NO_AUDIO = "cvssp/audioldm2-music"  # a music model that takes no clip


def _music_tab(studio):
    import gradio as gr

    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    with gr.Blocks() as demo, gr.Tabs():
        return build_tab(demo, "music", Endpoints(studio))


def _control(tab, name: str):
    return next(c for c in tab.plan if c.name == name)


def _values(tab, model: str, *, last: dict | None = None, **settings) -> dict:
    """The tab's values as the page sends them, set for `model` with its defaults and `settings`."""
    spec = tab.catalog.get(model)
    values = {tab.model: model, tab.language: None, tab.prompt: "lofi beat", tab.seed: -1, tab.fmt: "wav",
              tab.ui.shown: model, tab.ui.last: last}
    for control in tab.plan:
        param = spec.param(control.name)
        values[control.component] = settings.get(control.name, param.default if param is not None else None)
    return values


def _wav(path, seconds: float, rate: int = 32000):
    import numpy as np
    import soundfile as sf

    sf.write(path, (0.2 * np.sin(np.arange(int(seconds * rate)) / 9.0)).astype("float32"), rate)
    return path


def _result(studio, model: str = SMALL, seconds: float = 4.0, **extra) -> dict:
    """A result's metadata with its file in the output folder, as a run of `model` writes them."""
    out = studio.settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    path = _wav(out / "20260101-000000-music-riff-s7-lofi-beat-abc123.wav", seconds)
    return {"model": model, "task": "music", "prompt": "lofi beat", "seed": 7, "duration": seconds,
            "sample_rate": 32000, "format": "wav", "file": path.name,
            "settings": {"duration": 1.0, "guidance_scale": 2.5}, **extra}


def test_the_audio_input_is_full_width_with_its_help_under_it_and_follows_model_switches(make_studio):
    from studio.ui import controls as ctl
    from studio.ui.tab import on_model

    tab = _music_tab(make_studio())
    audio = _control(tab, "audio")
    assert tab.ui.audio_input is audio and audio.component.elem_id == "music-input-audio"
    assert audio.note.elem_id == "music-input-audio-note" and "the result starts with it" in audio.note.value
    assert tab.ui.use_input is not None and tab.ui.extend is not None and not tab.ui.extend.visible

    # small -> melody: the same input, now the melody to follow (its label and note say so), the clip kept.
    clip = {"path": "/tmp/gradio/x/riff.wav", "orig_name": "riff.wav"}
    values = _values(tab, SMALL, audio=clip)
    values[tab.model] = MELODY
    updates = on_model(tab, values)
    assert updates[audio.component]["visible"] is True and updates[audio.component]["label"] == "Melody"
    assert "value" not in updates[audio.component] and "tune to follow" in updates[audio.note]["value"]
    # melody -> a model without audio: the input and its note hide; the clip is not sent; -> stereo: both show
    # again, and the clip the control holds stays (the page sends a file payload, never handed back).
    values[tab.model], values[tab.ui.shown] = NO_AUDIO, MELODY
    updates = on_model(tab, values)
    assert updates[audio.component]["visible"] is False and updates[audio.note]["visible"] is False
    assert "audio" not in ctl.active_settings(tab.plan, tab.catalog.get(NO_AUDIO), values)
    values[tab.model], values[tab.ui.shown] = STEREO, NO_AUDIO
    updates = on_model(tab, values)
    assert updates[audio.component]["visible"] is True and "value" not in updates[audio.component]
    assert updates[audio.note]["visible"] is True
    assert ctl.active_settings(tab.plan, tab.catalog.get(STEREO), values)["audio"] == clip


def test_use_as_input_puts_the_result_in_and_keeps_the_settings(make_studio):
    from studio.ui.tab import on_use_input

    studio = make_studio()
    tab = _music_tab(studio)
    metadata = _result(studio)
    values = _values(tab, STEREO, last=metadata, duration=3.0)
    updates = on_use_input(tab, values)
    file = str(studio.settings.output_dir.resolve() / metadata["file"])
    assert updates[_control(tab, "audio").component]["value"] == file
    assert tab.model not in updates and _control(tab, "duration").component not in updates  # nothing else moves
    assert "continues the 4.0 s clip by 3.0 s: 7.0 s in all" in updates[tab.estimate]


def test_use_as_input_on_a_model_without_audio_switches_to_one_and_says_so(make_studio, monkeypatch):
    import gradio as gr

    from studio.ui.tab import on_use_input

    said = []
    monkeypatch.setattr(gr, "Info", lambda message, *a, **k: said.append(message))
    studio = make_studio()
    tab = _music_tab(studio)
    audio = _control(tab, "audio")
    # The result's own model takes audio: the tab goes back to it, carrying the settings it holds.
    values = _values(tab, NO_AUDIO, last=_result(studio, STEREO), duration=12.0)
    updates = on_use_input(tab, values)
    assert updates[tab.model]["value"] == STEREO and updates[tab.ui.shown] == STEREO
    assert updates[audio.component]["value"].endswith("abc123.wav") and updates[audio.component]["visible"] is True
    assert updates[audio.note]["visible"] is True
    assert updates[_control(tab, "duration").component]["value"] == 12.0
    assert "facebook/musicgen-stereo-small" in updates[tab.note]
    assert said == ["AudioLDM 2 music takes no audio input: switched to MusicGen stereo small, which "
                    "takes it as its audio to continue."]
    # A result of a model that takes none: the first of the tab's models that does.
    updates = on_use_input(tab, _values(tab, NO_AUDIO, last=_result(studio, NO_AUDIO)))
    assert updates[tab.model]["value"] == SMALL
    assert "continues the 4.0 s clip" in updates[tab.estimate]


def test_use_as_input_says_what_is_missing(make_studio):
    from studio.ui.tab import on_use_input

    studio = make_studio()
    tab = _music_tab(studio)
    with pytest.raises(Exception, match="no result to use yet: generate something first"):
        on_use_input(tab, _values(tab, SMALL))
    metadata = _result(studio)
    (studio.settings.output_dir / metadata["file"]).unlink()
    with pytest.raises(Exception, match="is no longer in the output folder: generate it again, or pick another"):
        on_use_input(tab, _values(tab, SMALL, last=metadata))


def test_extend_restores_the_result_as_the_clip_and_asks_for_30_s_more(make_studio):
    from studio.ui.tab import extend_target, on_extend

    studio = make_studio()
    tab = _music_tab(studio)
    metadata = _result(studio, STEREO, settings={"duration": 1.0, "audio": "inputs/gone.wav", "guidance_scale": 2.5,
                                                 "keep_partial": True})
    updates = dict(zip(tab.restore_outputs(), on_extend(tab, metadata)))
    assert updates[tab.model]["value"] == STEREO and updates[tab.prompt]["value"] == "lofi beat"
    assert updates[tab.seed]["value"] == 7
    assert updates[_control(tab, "audio").component]["value"] == \
        str(studio.settings.output_dir.resolve() / metadata["file"])  # the result, not the clip it continued
    assert updates[_control(tab, "extend_to").component]["value"] == 34.0
    assert updates[_control(tab, "guidance_scale").component]["value"] == 2.5
    assert updates[_control(tab, "keep_partial").component]["value"] is True
    assert updates[tab.ui.adjusted]["visible"] is False
    # The estimate line shows the windows and the whole length.
    assert "continues the 4.0 s clip by 30.0 s: 34.0 s in all, in 2 windows" in updates[tab.estimate]

    spec = tab.catalog.get(SMALL)
    assert extend_target(spec, {"duration": 290.0}) == 300.0  # never past the model's longest
    assert extend_target(spec, {"duration": 299.5}) is None and extend_target(tab.catalog.get(MELODY), metadata) is None
    with pytest.raises(Exception, match="makes at most 300 s: it cannot be extended further"):
        on_extend(tab, _result(studio, SMALL, seconds=299.6))
    with pytest.raises(Exception, match="MusicGen melody does not extend audio; these models do: "
                                        "MusicGen small"):
        on_extend(tab, _result(studio, MELODY))


def test_reuse_brings_the_stored_clip_back_or_says_it_is_gone(make_studio):
    import shutil

    from studio.clips import read_clip, store_clip
    from studio.ui.tab import on_reuse

    studio = make_studio()
    tab = _music_tab(studio)
    audio = _control(tab, "audio")
    clip = store_clip(read_clip(_wav(studio.settings.output_dir.parent / "riff.wav", 5.0)), studio.settings.output_dir)
    metadata = _result(studio, settings={"duration": 10.0, "audio": clip.stored},
                       inputs={"audio": {**clip.describe(), "name": "riff.wav"}})
    updates = dict(zip(tab.restore_outputs(), on_reuse(tab, metadata)))
    assert updates[audio.component]["value"] == str(studio.settings.output_dir.resolve() / clip.stored)
    assert updates[tab.ui.adjusted]["visible"] is False
    assert "continues the 5.0 s clip by 10.0 s: 15.0 s in all" in updates[tab.estimate]

    shutil.rmtree(studio.settings.output_dir / "inputs")  # the stored copy is gone: the control is left empty
    updates = dict(zip(tab.restore_outputs(), on_reuse(tab, metadata)))
    assert updates[audio.component]["value"] is None and updates[audio.component]["visible"] is True
    assert updates[tab.ui.adjusted]["visible"] is True
    assert updates[tab.ui.adjusted]["value"] == (f"Audio to continue is empty: riff.wav ({clip.stored}) is no longer "
                                                 "in the output folder; upload or record the clip again.")
    assert "continues" not in updates[tab.estimate] and updates[_control(tab, "duration").component]["value"] == 10
    # A name from elsewhere is never followed out of the inputs folder.
    metadata["settings"]["audio"] = "inputs/../" + metadata["file"]
    updates = dict(zip(tab.restore_outputs(), on_reuse(tab, metadata)))
    assert updates[audio.component]["value"] is None and updates[tab.ui.adjusted]["visible"] is True


def test_history_use_as_input_selects_the_tab_with_the_item_in_its_audio_input(make_studio, monkeypatch):
    import json

    import gradio as gr

    from studio.ui import history_tab
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    monkeypatch.setattr(gr, "Info", lambda *a, **k: None)
    studio = make_studio()
    endpoints = Endpoints(studio)
    with gr.Blocks() as demo, gr.Tabs():
        handles = {task: build_tab(demo, task, endpoints) for task in ("music", "speech")}
    music = handles["music"]
    metadata = _result(studio, SMALL)
    path = studio.settings.output_dir / metadata["file"]
    path.with_name(path.name + ".json").write_text(json.dumps(metadata))
    item = studio.history.add(path, metadata)
    assert history_tab.show_item(endpoints, item)[-1]["visible"] is True  # music takes audio; speech does not (yet)

    values = {"selected": item.id, **_values(music, NO_AUDIO)}
    updates = history_tab.use_as_input(endpoints, handles, "selected", values)
    assert isinstance(updates[0], gr.Tabs) and updates[0].selected == "music"
    mine = dict(zip(music.restore_outputs(), updates[1:1 + len(music.restore_outputs())]))
    assert mine[_control(music, "audio").component]["value"] == str(path.resolve())
    assert mine[music.model]["value"] == SMALL and "value" not in mine[music.prompt]  # the prompt is kept
    assert all(u == gr.skip() for u in updates[1 + len(music.restore_outputs()):])  # the speech tab is untouched


def test_history_restore_brings_the_stored_clip_back(make_studio):
    import json

    import gradio as gr

    from studio.clips import read_clip, store_clip
    from studio.ui import history_tab
    from studio.ui.endpoints import Endpoints
    from studio.ui.tab import build_tab

    studio = make_studio()
    endpoints = Endpoints(studio)
    with gr.Blocks() as demo, gr.Tabs():
        handles = {"music": build_tab(demo, "music", endpoints)}
    music = handles["music"]
    clip = store_clip(read_clip(_wav(studio.settings.output_dir.parent / "riff.wav", 5.0)), studio.settings.output_dir)
    metadata = _result(studio, settings={"duration": 10.0, "audio": clip.stored},
                       inputs={"audio": {**clip.describe(), "name": "riff.wav"}})
    path = studio.settings.output_dir / metadata["file"]
    path.with_name(path.name + ".json").write_text(json.dumps(metadata))
    item = studio.history.add(path, metadata)
    updates = history_tab.restore(endpoints, handles, item.id)
    mine = dict(zip(music.restore_outputs(), updates[1:]))
    assert mine[_control(music, "audio").component]["value"] == str(studio.settings.output_dir.resolve() / clip.stored)
    assert "continues the 5.0 s clip by 10.0 s" in mine[music.estimate]


def test_the_result_details_name_the_clip_the_lengths_and_a_partial_extension():
    from studio.ui.text import metadata_markdown

    clip = {"file": "inputs/3f9a.wav", "name": "riff.wav", "duration": 5.0, "sample_rate": 44100, "channels": 2}
    shown = metadata_markdown({"model": SMALL, "prompt": "lofi", "seed": 1, "duration": 15.0, "prompt_s": 5.0,
                               "continuation_s": 10.0, "windows": 1, "inputs": {"audio": clip},
                               "settings": {"duration": 10.0, "audio": "inputs/3f9a.wav"}})
    assert "| Input | Continued riff.wav (5.0 s) by 10.0 s |" in shown and "Windows" not in shown
    assert "audio riff.wav" in shown and "3f9a" not in shown  # the clip by its name, not its stored copy's
    shown = metadata_markdown({"model": SMALL, "prompt": "lofi", "seed": 1, "duration": 65.0, "prompt_s": 5.0,
                               "continuation_s": 60.0, "windows": 3, "inputs": {"audio": clip}})
    assert "Continued riff.wav (5.0 s) by 60.0 s" in shown and "| Windows | 3, each hearing the end of the one" in shown
    partial = metadata_markdown({"model": SMALL, "prompt": "lofi", "seed": 1, "duration": 30.0, "partial": True,
                                 "windows_done": 1, "windows": 3, "inputs": {"audio": clip}})
    assert "Continued riff.wav (5.0 s) by 25.0 s" in partial
    assert "| Windows | partial: cancelled after 1 of 3 windows |" in partial
    assert "Input" not in metadata_markdown({"model": SMALL, "prompt": "lofi", "seed": 1, "duration": 8.0})


def test_uploads_are_capped_at_the_longest_clip_the_studio_takes(tmp_path):
    from studio import clips
    from studio.ui import launch

    options = launch.launch_options(Settings(output_dir=tmp_path), None)
    assert options["max_file_size"] == launch.MAX_UPLOAD_BYTES == clips.MAX_UPLOAD_BYTES
    assert clips.MAX_UPLOAD_BYTES >= clips.MAX_SECONDS * 48_000 * 2 * 4  # 300 s of 48 kHz stereo float WAV


def test_cancel_all_stops_every_sessions_runs():
    runs = RunRegistry()
    with runs.track("a:music") as first, runs.track("b:speech") as second, runs.track("b:speech") as third:
        assert runs.cancel_all() == 3
        assert first.is_set() and second.is_set() and third.is_set()
    assert runs.cancel_all() == 0  # none left going
