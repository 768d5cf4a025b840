"""The memory panel and the page around it in Debian's Chromium: on a phone (390x844) the studio comes first, every
tab is reachable and the panel is one thumb-sized tap away; on a desktop the panel is open beside the studio; Pin,
Unload all and Unload follow the rules (README "How memory is managed") and their toasts name models by label.

Screenshots at 1280x800 and 390x844, light and dark, go to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import time

from tests.test_browser import (  # noqa: F401  (server and browser are fixtures)
    ARTIFACTS, CHROMIUM_ARGS, SECOND, TABS, _expect_text, _memory_row, _tab, _wait_result, browser, pytestmark,
    server,
)

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
TOGGLE = "#memory-sidebar > .toggle-button"
MUSIC = "facebook/musicgen-small"
BARK = "suno/bark-small"


def _open(browser, url: str, viewport: dict, *, dark: bool = False):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(20 * SECOND)
    page.goto(url + ("?__theme=dark" if dark else ""))
    page.locator("#music-estimate .studio-estimate").wait_for()
    page.locator("#memory-panel .mem-device").first.wait_for(state="attached")
    page.wait_for_timeout(1200)  # the sidebar's slide (0.3 s) and the panel's first refreshes are over
    return page


def _sidebar_open(page) -> bool:
    return "open" in (page.locator("#memory-sidebar").get_attribute("class") or "").split()


def _wait_sidebar(page, open_: bool) -> None:
    deadline = time.monotonic() + 5
    while _sidebar_open(page) != open_ and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert _sidebar_open(page) == open_, f"the sidebar did not {'open' if open_ else 'close'}"
    page.wait_for_timeout(500)  # its slide


def _inside(page, locator) -> bool:
    """Wholly inside the viewport."""
    box, size = locator.bounding_box(), page.viewport_size
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= size["width"] + 0.5 \
        and box["y"] + box["height"] <= size["height"] + 0.5


def _wait_inside(page, locator, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not _inside(page, locator) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert _inside(page, locator), f"{locator} is not on screen: {locator.bounding_box()}"


# The caret of a dropdown against the end of its text: what is left of the text's room minus where the caret starts.
CARET_GAP = """(id) => {
  const input = document.querySelector(`#${id} input[role=combobox]`);
  const caret = document.querySelector(`#${id} .icon-wrap`);
  const text = input.getBoundingClientRect().right - parseFloat(getComputedStyle(input).paddingRight);
  return caret.getBoundingClientRect().left - text;
}"""


def _toast(page, pattern: str) -> str:
    """Wait until a toast says `pattern` (a regex); returns the text of every toast on the page."""
    toasts = page.locator("[data-testid='toast-body']")
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = "\n".join(toasts.all_inner_texts())
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(100)
    raise AssertionError(f"no toast says {pattern!r}; toasts: {text!r}")


def test_on_a_phone_the_studio_comes_first_every_tab_is_there_and_the_panel_is_a_tap_away(server, browser):
    url, _ = server
    for dark in (True, False):  # the light page goes on to a run
        page = _open(browser, url, PHONE, dark=dark)
        suffix = "-dark" if dark else ""
        assert not _sidebar_open(page), "the memory panel covers the studio on a phone"
        page.screenshot(path=str(ARTIFACTS / f"panel-phone{suffix}.png"))
        # Every tab is on screen (the tabs wrap: none hides behind a "…" menu) and can be clicked.
        assert not page.locator("#studio-tabs .overflow-menu").is_visible()
        for task, name in TABS.items():
            tab = page.get_by_role("tab", name=name, exact=True)
            assert tab.is_visible() and _inside(page, tab), f"the {name} tab is not on screen"
            tab.click(timeout=5 * SECOND)
            assert tab.get_attribute("aria-selected") == "true"
        _tab(page, "music")
        page.locator("#music-generate").click(trial=True, timeout=5 * SECOND)  # nothing covers it
        # A long model name ends before the dropdown's caret instead of running under it.
        assert page.evaluate(CARET_GAP, "music-model") >= 0
        # The panel is one tap away: a target of at least 40x40 px, on screen; it opens over the page and closes.
        toggle = page.locator(TOGGLE)
        box = toggle.bounding_box()
        assert box["width"] >= 40 and box["height"] >= 40, box
        assert _inside(page, toggle) and toggle.get_attribute("aria-label") == "Memory panel"
        toggle.click()
        _wait_sidebar(page, True)
        _wait_inside(page, page.locator("#memory-panel .mem-device").first)
        _wait_inside(page, page.locator("#memory-panel .mem-unload-all"))
        page.screenshot(path=str(ARTIFACTS / f"panel-phone-open{suffix}.png"))
        box = toggle.bounding_box()
        assert box["width"] >= 40 and box["height"] >= 40 and _inside(page, toggle), box
        toggle.click()
        _wait_sidebar(page, False)
        if dark:
            page.close()

    # Generate on the Speech tab with text typed: a run starts and ends with its result.
    _tab(page, "speech")
    page.locator("#speech-prompt textarea").fill("Hello from a phone.")
    page.locator("#speech-generate").click(timeout=5 * SECOND)
    _expect_text(page.locator("#speech-audio"), r"(Waiting|Loading|Generating|Decoding|Saving|Seed)|queue", 20)
    _wait_result(page, "speech", 120)
    page.screenshot(path=str(ARTIFACTS / "panel-phone-result.png"), full_page=True)
    page.close()


def test_on_a_desktop_the_panel_is_open_beside_the_studio(server, browser):
    url, _ = server
    for dark in (False, True):
        page = _open(browser, url, DESKTOP, dark=dark)
        assert _sidebar_open(page)
        panel = page.locator("#memory-panel")
        assert _inside(page, panel.locator(".mem-device").first)
        _expect_text(panel, r"Budget: what the studio may use of the total, after the reserve and other programs\.")
        page.locator("#music-generate").click(trial=True, timeout=5 * SECOND)
        tabs = [page.get_by_role("tab", name=name, exact=True) for name in TABS.values()]
        assert all(tab.is_visible() and _inside(page, tab) for tab in tabs)
        page.screenshot(path=str(ARTIFACTS / f"panel-desktop{'-dark' if dark else ''}.png"))
        page.close()


def test_pin_unload_all_and_unload_follow_the_rules_and_toasts_use_labels(server, browser):
    url, studio = server
    page = _open(browser, url, DESKTOP)
    for task, prompt in (("speech", "Hi."), ("music", "a short drone")):
        _tab(page, task)
        page.locator(f"#{task}-prompt textarea").fill(prompt)
        page.locator(f"#{task}-generate").click()
        _wait_result(page, task, 120)
    music, bark = _memory_row(page, MUSIC), _memory_row(page, BARK)
    _expect_text(music, r"on device")
    _expect_text(bark, r"on device|in RAM")
    assert "min ago" not in music.inner_text() and "in use" not in music.inner_text()

    pin = music.locator("button[data-action=pin]")
    assert pin.is_enabled()
    pin.click()
    toast = _toast(page, r"Pinned MusicGen small")
    assert "never unloaded to make room for another model" in toast and MUSIC not in toast
    _expect_text(pin, r"^Pinned$", 5)

    # Unload all keeps the pinned model, loaded and pinned, and says so.
    page.locator("#memory-panel .mem-unload-all").click()
    toast = _toast(page, r"Kept 1 pinned model: MusicGen small")
    assert "Unloaded Bark small." in toast and BARK not in toast and MUSIC not in toast
    page.wait_for_function(f"() => !document.querySelector('#memory-panel li[data-model=\"{BARK}\"]')",
                           timeout=5 * SECOND)  # unloaded: no row left
    _expect_text(music, r"on device")
    _expect_text(pin, r"^Pinned$", 5)
    rows = {m["id"]: m for m in studio.manager.snapshot()["models"]}
    assert set(rows) == {MUSIC} and rows[MUSIC]["pinned"] and rows[MUSIC]["bytes"] > 0
    assert page.locator("#memory-panel .mem-unload-all").is_disabled()  # nothing left that it would unload
    page.locator("#memory-sidebar").screenshot(path=str(ARTIFACTS / "panel-pinned.png"))

    # Unload on the pinned model: the user's explicit action wins; it is unloaded and unpinned, and no row is left.
    music.locator("button[data-action=unload]").click()
    toast = _toast(page, r"Unloaded MusicGen small and unpinned it\.")
    page.wait_for_function(f"() => !document.querySelector('#memory-panel li[data-model=\"{MUSIC}\"]')",
                           timeout=5 * SECOND)
    assert studio.manager.snapshot()["models"] == [] and studio.manager.state_of(MUSIC) == "on disk"
    _expect_text(page.locator("#memory-panel"), r"No model loaded yet")
    page.close()
