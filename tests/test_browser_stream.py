"""Hearing a run while it is made, in Debian's Chromium (issue 16): on a multi-sentence text the Speech tab's live
player plays its first piece while the run still goes on (no result yet), its audio clock runs, and the result then
comes as always; the Stream switch shows where the model streams, and a model that does not says why instead.

The app is test_browser.py's (tiny checkpoints, a simulated 8 GB GPU). Screenshots of the Speech tab while a run
streams, at 1280x900 and 390x844, go to test-artifacts/ (stream-speech-desktop.png, stream-speech-phone.png).
"""

from __future__ import annotations

import shutil

import pytest

from tests.test_browser import ARTIFACTS, SECOND, _expect_text, _tab, browser, server  # noqa: F401
from tests.test_browser_tab import _model_option, _pick

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
# A short first sentence (Pocket TTS speaks it alone: models.common.speech_chunks; tiny random weights run each chunk
# to its cap) and long sentences after it, to make while the first plays.
TEXT = "Hello. " + " ".join(f"Sentence {n} of a text that is read aloud one chunk after the other." for n in range(1, 7))
# Recorded in the page as it happens (the page's own clock and what it shows then), so that a slow poll from the test
# cannot make a piece look late: when the live player first plays, and when the result's details first show.
WATCH_STREAM = """
window.__stream = {};
const note = (key) => { if (!(key in window.__stream)) window.__stream[key] = {
    t: performance.now(), cancel: !!(document.querySelector('#speech-cancel') || {}).disabled === false,
    result: /Seed/.test((document.querySelector('#speech-details') || {}).innerText || '') }; };
new MutationObserver(() => {
  const live = document.querySelector('#speech-live .studio-live');
  if (live && live.dataset.state === 'playing') note('playing');
  if (/Seed/.test((document.querySelector('#speech-details') || {}).innerText || '')) note('result');
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def _open(browser, url: str, size: str):
    page = browser.new_page(viewport=SIZES[size])
    page.set_default_timeout(20 * SECOND)
    page.add_init_script(WATCH_STREAM)
    page.goto(url)
    page.locator("#music-estimate .studio-estimate").wait_for()
    _tab(page, "speech")
    _pick(page, "#speech-model", _model_option(page, "speech", "Pocket TTS"))
    return page


def test_the_live_player_plays_before_the_run_ends_and_the_result_follows(server, browser):
    url, _ = server
    page = _open(browser, url, "desktop")
    switch = page.locator("#speech-stream input[type=checkbox]")
    assert switch.is_visible() and switch.is_checked()
    assert not page.locator("#speech-stream-note").is_visible()
    page.locator("#speech-prompt textarea").fill(TEXT)
    _expect_text(page.locator("#speech-estimate"), r"first audio in about [\d.]+ s", 10)
    page.locator("#speech-generate").click()
    page.wait_for_function("() => window.__stream.playing", timeout=60 * SECOND)
    page.screenshot(path=str(ARTIFACTS / "stream-speech-desktop.png"))
    page.wait_for_function("() => window.__stream.result", timeout=60 * SECOND)
    seen = page.evaluate("() => window.__stream")
    # The first piece played while the run was still making the rest: no result yet, and the result came after.
    assert seen["playing"]["t"] < seen["result"]["t"] and not seen["playing"]["result"], seen
    # The page's audio clock ran over the pieces: they were played, not only received.
    page.wait_for_function("() => window.studioLive.last.speech.heard > 0.2", timeout=10 * SECOND)
    status = page.evaluate("() => window.studioLive.last.speech")
    assert status["pieces"] >= 2, status
    # The result then comes as without streaming: its player, download and details.
    _expect_text(page.locator("#speech-download"), r"Download WAV", 5)
    # Stop ends the live player at once; the result stays.
    stop = page.locator("#speech-live .studio-live-stop")
    if stop.is_visible():
        stop.click()
        _expect_text(page.locator("#speech-live"), r"stopped", 5)
    page.close()


def test_the_switch_shows_where_a_model_streams_and_a_note_where_it_does_not(server, browser):
    url, _ = server
    page = _open(browser, url, "phone")
    page.locator("#speech-prompt textarea").fill(TEXT)
    page.locator("#speech-generate").scroll_into_view_if_needed()
    page.locator("#speech-generate").click()
    page.wait_for_function("() => window.__stream.playing", timeout=60 * SECOND)
    page.screenshot(path=str(ARTIFACTS / "stream-speech-phone.png"))
    page.wait_for_function("() => window.__stream.result", timeout=60 * SECOND)
    # Off: no live player, and the estimate no longer says when it is first heard.
    page.locator("#speech-stream input[type=checkbox]").uncheck()
    page.wait_for_function("() => !/first audio/.test(document.querySelector('#speech-estimate').innerText)",
                           timeout=10 * SECOND)
    _pick(page, "#speech-model", _model_option(page, "speech", "Dia"))
    _expect_text(page.locator("#speech-stream-note"), r"Dia .* makes its audio in one piece: it plays when done", 10)
    assert not page.locator("#speech-stream").is_visible()
    _tab(page, "sfx")
    _expect_text(page.locator("#sfx-stream-note"), r"denoises the whole clip at once: it plays when done", 10)
    page.close()
