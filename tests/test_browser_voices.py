"""The Voice library in Debian's Chromium: a voice recorded from a fake microphone is named, confirmed and saved,
listed, picked in Pocket TTS's Voice dropdown (no reload) and spoken in; the result plays and says it was cloned.
Screenshots of the Speech tab with the library open, at a desktop's and a phone's width, go to test-artifacts/.
"""

from __future__ import annotations

import shutil

import pytest

from tests.test_browser import (  # noqa: F401 (server is a fixture)
    ARTIFACTS, VIEWPORT, _expect_text, _tab, chromium_browser, server,
)
from tests.test_browser_audio import _fits_width
from tests.test_browser_tab import _open, _pick, _settle, _toasts

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]
PHONE = {"width": 390, "height": 844}
OPTION = "[data-testid=dropdown-option]"  # a dropdown's choices (the fake microphone adds <option>s of its own)


def _options(page, dropdown: str) -> list[str]:
    page.locator(f"{dropdown} input").click()
    page.locator(OPTION).first.wait_for()
    options = page.locator(OPTION).evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    page.locator(f"{dropdown} input").blur()
    page.locator(OPTION).first.wait_for(state="detached")
    return options


@pytest.fixture(scope="module")
def microphone_browser():
    """Chromium with a fake microphone (a beep) that needs no permission prompt."""
    with chromium_browser("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream") as chromium:
        yield chromium


def test_a_recorded_voice_is_saved_picked_and_spoken_in(server, microphone_browser):
    url, studio = server
    page = _open(microphone_browser, url)
    _tab(page, "speech")
    page.locator("#speech-voice-library").get_by_text("Voice library").first.click()
    clip = page.locator("#voice-clip")

    # Record about 2 s from the fake microphone.
    clip.locator("button[aria-label='Record audio']").click()
    clip.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(2200)
    clip.get_by_role("button", name="Stop", exact=True).first.click()
    _expect_text(clip, r"0:0[12]")

    # Saving without the confirmation is refused with the fix; with it, the voice is listed.
    page.locator("#voice-name input").fill("Mic voice")
    page.locator("#voice-save").click()
    _expect_text(page.locator(".toast-body.error").last, r"confirm you have the right to use this voice", 10)
    page.locator("#voice-consent input").check()
    page.locator("#voice-save").click()
    _expect_text(page.locator("#voice-list"), r"Mic voice\s+[12]\.\d s")
    assert studio.voices.get("Mic voice").consent["via"] == "page"
    page.screenshot(path=str(ARTIFACTS / "voices-library.png"), full_page=True)

    # On a phone's width the library keeps to the screen.
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(400)
    for part in ("#voice-clip", "#voice-list", "#voice-consent", "#voice-pick"):
        _fits_width(page, part)
    page.screenshot(path=str(ARTIFACTS / "voices-library-phone.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)

    # Pocket TTS's Voice lists it beside its presets, without a reload; speak in it.
    _pick(page, "#speech-model", next(o for o in _options(page, "#speech-model") if o.startswith("Pocket TTS")))
    _settle(page, "speech")
    assert "Mic voice (saved)" in _options(page, "#speech-input-voice")
    _pick(page, "#speech-input-voice", "Mic voice (saved)")
    page.locator("#speech-prompt textarea").fill("Hi.")
    _expect_text(page.locator("#speech-estimate"), r"voice of the [12]\.\d s clip 'Mic voice\.wav' \(cloned\)")
    page.locator("#speech-generate").click()
    details = _expect_text(page.locator("#speech-details"), r"Voice\s+Mic voice · cloned \(voice library\) · "
                                                            r"consent confirmed \d{4}-\d\d-\d\d", 90)
    assert "voice “Mic voice”" in details, details
    # The result loads into its player (its length shows) and plays: the clock moves past 0:00.
    player = page.locator("#speech-audio")
    _expect_text(player.locator("#duration"), r"0:01", 10)
    player.get_by_role("button", name="Play", exact=True).click()
    _expect_text(player.locator("#time"), r"0:01", 10)
    assert not _toasts(page, "error")[1:]  # only the refusal above
    page.close()
