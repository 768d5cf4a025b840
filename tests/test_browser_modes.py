"""A model with modes in Debian's Chromium: the mode shows its settings (lyrics for a song, the clip and its range
for a repaint) and says what it does, and a 4-minute 48 kHz stereo result plays at once in the tab and in History.

The app serves the real catalog plus tests/modes_family.py's two models with modes (a tone of any length at
48 kHz stereo), on a simulated 8 GB GPU. A screenshot of the Repaint mode goes to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.test_browser import ARTIFACTS, SECOND, VIEWPORT, _expect_text, _set_duration, _tab, browser  # noqa: F401
from tests.test_browser_audio import _fits_width
from tests.test_browser_tab import _model_option, _open, _pick, _settle, _toasts

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]

# The browser's own player knows a result's length from its header; the waveform player knew it only once it had
# decoded the whole file (2.3-3.0 s for this one on a 2-core CPU; see tab.WAVEFORM_MAX_S).
PLAYABLE = """(sel) => { const a = document.querySelector(sel + ' audio');
                         return a && a.duration > 239 && a.duration < 241; }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, studio): the app with the models with modes, a simulated 8 GB GPU, output in a temporary folder."""
    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings
    from tests.modes_family import catalog_with_modes, install
    from tests.serving import launched

    install(Path(os.environ["HF_HOME"]))
    settings = Settings(output_dir=tmp_path_factory.mktemp("modes-out"), memory_reserve=0)
    studio = Studio(settings, catalog=catalog_with_modes(), device=SimulatedDevice(8 * 10**9))
    with launched(studio) as url:
        yield url + "/", studio


def _mode(page, label: str) -> None:
    _pick(page, "#music-input-mode", label)
    _settle(page, "music")


def test_the_mode_shows_its_settings_and_a_four_minute_song_plays_at_once(server, browser):
    url, _ = server
    page = _open(browser, url)
    page.locator("#music-input-mode").wait_for(state="hidden")  # MusicGen, the featured model, has no modes
    _pick(page, "#music-model", _model_option(page, "music", "Song editor (test)"))
    _settle(page, "music")

    # Song: the mode in words, what it does under it, lyrics in a box of 8 lines; no clip.
    assert page.locator("#music-input-mode input").input_value() == "Song"
    _expect_text(page.locator("#music-input-mode-note"), r"Writes a song in the prompt's style")
    lyrics = page.locator("#music-input-lyrics textarea")
    assert lyrics.get_attribute("rows") == "8"
    page.locator("#music-input-audio").wait_for(state="hidden")

    # Repaint: the clip and its range show, lyrics and Duration go; the estimate says what is missing (the clip
    # the hidden input of MusicGen's would not be sent anyway).
    _mode(page, "Repaint")
    for shown in ("#music-input-audio", "#music-input-repaint_start", "#music-input-repaint_end"):
        page.locator(shown).wait_for()
    for hidden in ("#music-input-lyrics", "#music-input-duration", "#music-input-cover_strength"):
        page.locator(hidden).wait_for(state="hidden")
    _expect_text(page.locator("#music-input-mode-note"), r"Regenerates the part of the clip .* Needs a clip")
    _expect_text(page.locator("#music-estimate"), r"Repaint needs a clip in Audio to edit")
    page.screenshot(path=str(ARTIFACTS / "modes-repaint.png"), full_page=True)

    # Back to Song, 4 minutes with lyrics: the result plays in the browser's own player, its length known at once.
    _mode(page, "Song")
    lyrics.fill("[verse]\nNeon lights on the empty street\n\n[chorus]\nWe run until the morning comes")
    page.locator("#music-prompt textarea").fill("upbeat synth-pop")
    _set_duration(page, "music", 240)
    _expect_text(page.locator("#music-estimate"), r"about .* · needs")
    page.locator("#music-generate").click()
    _expect_text(page.locator("#music-details"), r"240\.00 s at 48 kHz stereo", 60)
    arrived = time.monotonic()
    page.wait_for_function(PLAYABLE, arg="#music-audio", timeout=10 * SECOND)
    playable_s = time.monotonic() - arrived
    assert page.locator("#music-audio #waveform").count() == 0  # nothing decoded into the page
    assert "Download WAV · 69.1 MB" in page.locator("#music-download").inner_text()
    details = page.locator("#music-details").inner_text()
    assert "mode song · duration 240 · lyrics “[verse] Neon lights" in details, details

    # On a phone's width the lyrics box, the mode and the player keep to the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    for part in ("#music-input-lyrics", "#music-audio", "#music-input-mode"):
        _fits_width(page, part)
    page.set_viewport_size(VIEWPORT)

    # History plays it the same way.
    _tab(page, "history")
    page.locator("#history-list button[data-id]", has_text="upbeat synth-pop").first.click()
    started = time.monotonic()
    page.wait_for_function(PLAYABLE, arg="#history-audio", timeout=10 * SECOND)
    history_s = time.monotonic() - started
    assert not _toasts(page, "error")
    print(f"4-minute result playable {playable_s:.2f} s after it arrived; in History {history_s:.2f} s after a click")
    page.close()
