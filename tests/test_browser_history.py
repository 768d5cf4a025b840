"""The History tab in Debian's Chromium: delete a generation, Undo it, and it plays and downloads again.

Screenshots of the tab with the Undo bar (1280x800 light and dark, and a 390x844 phone) go to test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.test_browser import (  # noqa: F401 (browser is a fixture)
    ARTIFACTS, SECOND, _expect_text, _generate, _pick, _tab, _wait_result, browser,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]

TEXT = "Lofi beat for the undo test."
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def served(tmp_path_factory, catalog, tiny_cache):
    """(url, studio): the app over the tiny checkpoints on a simulated 8 GB GPU, output in a temporary folder."""
    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings
    from tests.serving import launched

    settings = Settings(output_dir=tmp_path_factory.mktemp("history-out"), memory_reserve=0)
    studio = Studio(settings, catalog=catalog, device=SimulatedDevice(8 * 10**9))
    if getattr(studio, "history", None) is None:
        pytest.skip("the history store is not available")
    with launched(studio) as url:
        yield url + "/", studio


def _page(browser, url: str, size: str = "desktop", *, dark: bool = False):
    page = browser.new_page(viewport=SIZES[size], accept_downloads=True)
    page.set_default_timeout(20 * SECOND)
    page.goto(url + ("?__theme=dark" if dark else ""))
    page.locator("#music-estimate .studio-estimate").wait_for()
    if size == "phone":  # on a narrow screen the memory sidebar starts closed, leaving the studio to the person
        page.locator("#memory-sidebar.open").wait_for(state="detached")
    return page


def _open_history(page) -> None:
    """The History tab, from the tab bar or, on a narrow screen, from gradio's overflow menu of tabs."""
    tab = page.get_by_role("tab", name="History", exact=True)
    if not tab.is_visible():
        page.locator("#studio-tabs .overflow-menu button").first.click()
        tab = page.locator("#studio-tabs .overflow-dropdown button", has_text="History")
    tab.click()
    page.locator("#history-list").wait_for(state="visible")


def _select(page, text: str) -> None:
    page.locator("#history-list button[data-id]", has_text=text).first.click()
    _expect_text(page.locator("#history-details"), r"Seed", 10)


def _delete_then_see_undo(page, text: str) -> None:
    _select(page, text)
    page.locator("#history-delete").click()
    _expect_text(page.locator("#history-undo"), re.escape(f"Deleted “{text}” · its file waits in the trash"), 10)
    page.locator("#history-undo-button").wait_for(state="visible")
    page.locator("#history-actions").wait_for(state="hidden")
    page.wait_for_function(f"() => !document.querySelector('#history-list')?.innerText.includes({text!r})",
                           timeout=10 * SECOND)


def test_delete_then_undo_brings_the_generation_back_and_it_plays_and_downloads(served, browser):
    url, studio = served
    page = _page(browser, url)
    _tab(page, "speech")
    _pick(page, "#speech-model", re.compile("MMS-TTS"))
    page.locator("#speech-language").wait_for(state="visible")
    _generate(page, "speech", TEXT)
    _wait_result(page, "speech")

    _tab(page, "history")
    _expect_text(page.locator("#history-list"), re.escape(TEXT), 10)
    [item] = studio.history.list("undo test")
    audio = studio.history.path_of(item)
    sidecar = audio.with_name(audio.name + ".json")
    original = audio.read_bytes()
    assert page.locator("#history-undo").is_hidden()

    # Delete: the row goes, the file and its sidecar wait in the trash, and the page offers Undo.
    _delete_then_see_undo(page, TEXT)
    _expect_text(page.locator("#history-count"), r"No generations yet", 10)
    assert studio.history.get(item.id) is None and not audio.exists() and not sidecar.exists()
    trashed = {p.name for p in (studio.settings.output_dir / ".trash").rglob("*") if p.is_file()}
    assert {audio.name, sidecar.name} <= trashed
    page.screenshot(path=str(ARTIFACTS / "history-undo.png"))

    # Undo: listed again under its id and selected; it plays, and downloads as the same bytes.
    page.locator("#history-undo-button").click()
    _expect_text(page.locator("#history-list"), re.escape(TEXT), 10)
    page.locator("#history-undo").wait_for(state="hidden")
    _expect_text(page.locator("#history-count"), r"^1 generation$", 10)
    assert studio.history.get(item.id) == item and audio.read_bytes() == original and sidecar.is_file()
    assert page.locator(f'#history-list button[data-id="{item.id}"][aria-pressed="true"]').count() == 1
    _expect_text(page.locator("#history-details"), r"Seed", 10)
    _expect_text(page.locator("#history-audio"), r"0:(0[1-9]|[1-5]\d)", 10)  # the player has the clip's length
    with page.expect_download() as download:
        page.locator("#history-download").click()
    assert Path(download.value.path()).read_bytes() == original
    page.screenshot(path=str(ARTIFACTS / "history-undone.png"))
    page.close()


@pytest.mark.parametrize("size, dark", [("desktop", True), ("phone", False)], ids=["dark", "phone"])
def test_the_undo_bar_in_the_dark_and_on_a_phone(served, browser, size, dark):
    url, studio = served
    text = f"Deleted and undone, {'dark' if dark else size}."
    studio_run = _endpoints(studio).generate("speech", "facebook/mms-tts-eng", text, seed=1)
    page = _page(browser, url, size, dark=dark)
    _open_history(page)
    _expect_text(page.locator("#history-list"), re.escape(text), 10)
    _delete_then_see_undo(page, text)
    page.locator("#history-undo").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"history-undo-{'dark' if dark else size}.png"))
    box = page.locator("#history-undo-button").bounding_box()
    assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= SIZES[size]["width"]
    page.locator("#history-undo-button").click()
    _expect_text(page.locator("#history-list"), re.escape(text), 10)
    _expect_text(page.locator("#history-audio"), r"0:(0[1-9]|[1-5]\d)", 10)  # selected again, playable
    assert studio.history.get(studio_run.history_id) is not None and studio_run.path.is_file()
    page.close()


def _endpoints(studio):
    from studio.ui.endpoints import Endpoints

    return Endpoints(studio)
