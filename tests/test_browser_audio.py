"""Audio in, as a person meets it in Debian's Chromium: upload a clip (its waveform, the trim tool, the estimate),
continue it, Use as input from History, record from a (fake) microphone, Extend a result, and an upload over
the limit. The app is test_browser.py's (tiny checkpoints, a simulated 8 GB GPU).

Screenshots of the Music tab with a clip loaded and of a continuation, at 1280x900 and 390x844 (light), go to
test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.test_browser import (  # noqa: F401  (server and browser are fixtures)
    ARTIFACTS, CHROMIUM_ARGS, SECOND, _expect_text, _set_duration, _tab, _wait_result, browser, server,
)
from tests.test_browser_tab import WATCH_TOASTS, _model_option, _pick, _settle, _toasts

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
RATE = 32000  # MusicGen's: the clip is taken as it is
INPUT = "#music-input-audio"
FRAME = RATE // 50  # one EnCodec frame


@pytest.fixture(scope="module")
def riff(tmp_path_factory):
    """A 3 s mono WAV: a tone with a beat, so its waveform has a shape."""
    t = np.arange(3 * RATE) / RATE
    path = tmp_path_factory.mktemp("clips") / "riff.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype("float32"),
             RATE)
    return path


def _open(browser, url: str, size: str = "desktop"):
    page = browser.new_page(viewport=SIZES[size], accept_downloads=True)
    page.set_default_timeout(20 * SECOND)
    page.add_init_script(WATCH_TOASTS)
    page.goto(url)
    page.locator("#music-estimate .studio-estimate").wait_for()
    if size == "phone":  # the memory sidebar starts closed on a narrow screen
        page.locator("#memory-sidebar.open").wait_for(state="detached")
    return page


def _waveform_drawn(page, seconds: str) -> None:
    """Wait until the audio input shows a drawn waveform (wavesurfer's canvases, in its shadow root) of that length."""
    page.wait_for_function(
        """(sel) => { const host = document.querySelector(sel + ' #waveform > div');
             const canvases = host && host.shadowRoot ? [...host.shadowRoot.querySelectorAll('canvas')] : [];
             return canvases.length > 0 && canvases.every(c => c.width > 0 && c.height > 0); }""",
        arg=INPUT, timeout=10 * SECOND)
    _expect_text(page.locator(f"{INPUT} #duration"), seconds, 5)


def _player_ready(page, seconds: str) -> None:
    """Wait until the result's player has loaded the file (its length shows), so a screenshot shows its waveform."""
    _expect_text(page.locator("#music-audio #duration"), seconds, 10)
    page.wait_for_timeout(300)


def _upload(page, path) -> None:
    page.locator(f"{INPUT} input[type=file]").set_input_files(str(path))


def _fits_width(page, selector: str) -> None:
    """The element is inside the viewport's width, and nothing in it scrolls sideways."""
    box = page.locator(selector).bounding_box()
    width = page.viewport_size["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (selector, box, width)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width + 1


def _download(page, name: str):
    with page.expect_download() as download:
        page.locator("#music-download").click()
    path = ARTIFACTS / name
    download.value.save_as(path)
    return sf.info(str(path))


def _continue(page, riff=None, seconds: float = 1) -> str:
    """Load `riff` (unless the input holds it), continue it by `seconds` with MusicGen small; the result's details."""
    if riff is not None:
        _upload(page, riff)
        _waveform_drawn(page, "0:03")
    page.locator("#music-prompt textarea").fill("a warm synth riff")
    _set_duration(page, "music", seconds)
    _expect_text(page.locator("#music-estimate"), rf"continues the 3\.0 s clip by {seconds:.1f} s: "
                                                  rf"{3 + seconds:.1f} s in all")
    page.locator("#music-generate").click()
    return _wait_result(page, "music", 90)


def test_a_clip_and_its_continuation_fit_a_phone(server, browser, riff):
    url, _ = server
    page = _open(browser, url, "phone")
    _upload(page, riff)
    _waveform_drawn(page, "0:03")
    _expect_text(page.locator(f"{INPUT}-note"), r"the result starts with it")
    _fits_width(page, INPUT)
    page.screenshot(path=str(ARTIFACTS / "audio-in-clip-phone.png"), full_page=True)
    assert "Continued riff.wav (3.0 s) by 1.0 s" in _continue(page)
    _fits_width(page, "#music-result-actions")
    _fits_width(page, "#music-details")
    _player_ready(page, "0:04")
    page.screenshot(path=str(ARTIFACTS / "audio-in-result-phone.png"), full_page=True)
    assert not _toasts(page, "error")
    page.close()


def test_upload_trim_and_continue_a_clip(server, browser, riff):
    url, _ = server
    page = _open(browser, url)
    _upload(page, riff)
    _waveform_drawn(page, "0:03")
    _expect_text(page.locator("#music-estimate"), r"continues the 3\.0 s clip by 8\.0 s: 11\.0 s in all")
    _expect_text(page.locator(f"{INPUT}-note"), r"the result starts with it")
    page.screenshot(path=str(ARTIFACTS / "audio-in-clip-desktop.png"), full_page=True)

    # Model switches: stereo small continues the same clip; melody follows it as a melody; AudioLDM 2 music takes
    # none (the input and its note hide, and the estimate is for text alone); back on small the clip is there
    # again. No error on the way.
    estimate = page.locator("#music-estimate")
    for model, takes, says in (("MusicGen stereo small", True, r"continues the 3\.0 s clip"),
                               ("MusicGen melody", True, r"follows the melody of 'riff\.wav' \(3\.0 s\)"),
                               ("AudioLDM 2 music", False, r"\A(?![\s\S]*(continues|follows))[\s\S]*about "),
                               ("MusicGen small", True, r"continues the 3\.0 s clip")):
        _pick(page, "#music-model", _model_option(page, "music", model))
        _settle(page, "music")
        for part in (INPUT, f"{INPUT}-note"):
            page.locator(part).wait_for(state="visible" if takes else "hidden")
        _expect_text(estimate, says)
    _waveform_drawn(page, "0:03")
    assert not _toasts(page, "error")

    # The trim tool: a region over the waveform, and Trim sends the shorter clip (the estimate follows); Clear
    # empties the input, and the estimate is for text alone again.
    inp = page.locator(INPUT)
    inp.locator("button[aria-label='Trim audio to selection']").click()
    inp.get_by_role("button", name="Trim", exact=True).click()
    _expect_text(page.locator("#music-estimate"), r"continues the [0-2]\.\d s clip")
    inp.locator("button[aria-label='Clear']").click()
    _expect_text(page.locator("#music-estimate"), r"\A(?![\s\S]*continues)[\s\S]*about .* · needs", 10)

    # Continue the 3 s clip by 1 s with MusicGen small: the result starts with the clip, 4 s in all.
    details = _continue(page, riff)
    assert "Continued riff.wav (3.0 s) by 1.0 s" in details and "audio riff.wav" in details, details
    info = _download(page, "continued.wav")
    assert info.samplerate == RATE and abs(info.frames - 4 * RATE) <= FRAME, info.frames
    for button in ("Use as input", "Extend by 30 s"):
        assert page.locator("#music-result-actions").get_by_role("button", name=button).is_visible(), button
    _player_ready(page, "0:04")
    page.screenshot(path=str(ARTIFACTS / "audio-in-result-desktop.png"), full_page=True)
    assert not _toasts(page, "error")
    page.close()


def test_use_as_input_from_history_selects_the_tab_and_fills_its_input(server, browser):
    url, studio = server
    continued = [item for item in studio.history.list("warm synth riff") if item.task == "music"]
    if not continued:
        pytest.skip("needs the continuation of test_upload_trim_and_continue_a_clip")
    page = _open(browser, url)
    # The tab is on a model that takes no audio: Use as input goes back to the result's own model, and says so.
    _pick(page, "#music-model", _model_option(page, "music", "AudioLDM 2 music"))
    _settle(page, "music")
    page.locator(INPUT).wait_for(state="hidden")
    _tab(page, "history")
    page.locator("#history-list button[data-id]", has_text="warm synth riff").first.click()
    _expect_text(page.locator("#history-details"), r"Continued riff\.wav \(3\.0 s\) by 1\.0 s", 10)
    page.locator("#history-use-input").click()
    page.wait_for_function("() => document.querySelector('[role=tab][aria-selected=true]')?.textContent.trim()"
                           " === 'Music'", timeout=10 * SECOND)
    _waveform_drawn(page, "0:04")
    assert "MusicGen small" in page.locator("#music-model input").input_value()
    said = [toast["text"] for toast in _toasts(page, "info")]
    assert any("AudioLDM 2 music takes no audio input: switched to MusicGen small" in t for t in said), said
    _expect_text(page.locator("#music-estimate"), r"continues the 4\.0 s clip")
    assert not _toasts(page, "error")
    page.close()


def test_extend_runs_at_once_and_makes_the_result_longer(server, browser, riff):
    url, _ = server
    page = _open(browser, url)
    _upload(page, riff)
    _waveform_drawn(page, "0:03")
    page.locator("#music-prompt textarea").fill("a drone to extend")
    _set_duration(page, "music", 0.5)
    page.locator("#music-generate").click()
    _expect_text(page.locator("#music-details"), r"Continued riff\.wav \(3\.0 s\) by 0\.5 s", 90)
    page.locator("#music-advanced").get_by_text("Advanced").first.click()  # where Extend to is
    extend = page.locator("#music-extend")
    assert extend.inner_text() == "Extend by 30 s"
    extend.click()
    # The run starts at once, as Generate's does: Cancel is enabled, the estimate names the windows and the length.
    page.wait_for_function("() => !document.querySelector('#music-cancel').disabled", timeout=10 * SECOND)
    _expect_text(page.locator("#music-estimate"), r"continues the 3\.5 s clip by 30\.0 s: 33\.5 s in all, in 2 windows")
    assert float(page.locator("#tab-music input[type=number][aria-label*='Extend to' i]").first.input_value()) == 33.5
    page.screenshot(path=str(ARTIFACTS / "audio-in-extending.png"), full_page=True)
    details = _expect_text(page.locator("#music-details"), r"Continued \S+ \(3\.5 s\) by 30\.0 s", 180)
    assert "33.50 s at 32 kHz" in details and "2, each hearing the end of the one before" in details, details
    info = _download(page, "extended.wav")
    assert abs(info.frames - 33.5 * RATE) <= FRAME, info.frames
    page.wait_for_function("() => document.querySelector('#music-cancel').disabled", timeout=10 * SECOND)
    assert not _toasts(page, "error")
    page.close()


def test_a_microphone_recording_is_an_input(server, browser):
    """Chromium's fake microphone (a beep): record about 2 s, stop; the waveform appears and Generate works."""
    url, _ = server
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    chromium = browser.browser_type.launch(executable_path=shutil.which("chromium"), args=args)
    try:
        page = _open(chromium, url)
        inp = page.locator(INPUT)
        inp.locator("button[aria-label='Record audio']").click()
        inp.get_by_role("button", name="Record", exact=True).click()
        page.wait_for_timeout(2200)
        inp.get_by_role("button", name="Stop", exact=True).first.click()
        _waveform_drawn(page, r"0:0[12]")
        _expect_text(page.locator("#music-estimate"), r"continues the [12]\.\d s clip")
        page.locator("#music-prompt textarea").fill("a beep, continued")
        _set_duration(page, "music", 0.5)
        page.locator("#music-generate").click()
        details = _wait_result(page, "music", 90)
        assert re.search(r"Continued \S+ \([12]\.\d s\) by 0\.5 s", details), details
        assert not _toasts(page, "error")
        _player_ready(page, "0:0[23]")
        page.screenshot(path=str(ARTIFACTS / "audio-in-recorded.png"), full_page=True)
        page.close()
    finally:
        chromium.close()


def test_an_upload_over_the_limit_is_refused_on_the_page(server, browser, riff, tmp_path):
    from studio.clips import MAX_UPLOAD_BYTES

    url, _ = server
    big = tmp_path / "long-take.wav"
    with open(big, "wb") as stream:  # a WAV header and a sparse body one byte over the limit: no disk to speak of
        stream.write(riff.read_bytes()[:44])
        stream.truncate(MAX_UPLOAD_BYTES + 1)
    page = _open(browser, url)
    _upload(page, big)
    _expect_text(page.locator(".toast-body.error"), r"exceed the maximum allowed size of 110\.8 Mb: \"long-take\.wav\"",
                 10)
    page.wait_for_timeout(800)  # the toast's fade-in
    page.screenshot(path=str(ARTIFACTS / "audio-in-too-big.png"))
    assert "continues" not in page.locator("#music-estimate").inner_text()
    page.close()
