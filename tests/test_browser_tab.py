"""A task tab in Debian's Chromium, driven by Playwright: switching models shows no error and keeps the
settings the new model accepts, the estimate follows Unload all, and the layout stays put.

The app is served in-process over the tiny checkpoints with a simulated 8 GB GPU (as in test_browser.py).
Every toast the page shows is recorded from the moment it appears (a MutationObserver set before the page
loads), so a toast that flashes by is still caught.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.test_browser import (  # noqa: F401  (server and browser are fixtures)
    ARTIFACTS, SECOND, VIEWPORT, _expect_text, _tab, browser, server,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]

# Records every toast (gradio's `.toast-body`, with its kind as a class: error, warning, info, success).
WATCH_TOASTS = """
window.__toasts = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll('.toast-body')) {
    if (el.__seen) continue;
    el.__seen = true;
    window.__toasts.push(el);
  }
}).observe(document, {subtree: true, childList: true});
"""
READ_TOASTS = "() => (window.__toasts || []).map(el => ({cls: el.className, text: el.textContent.trim()}))"


def _open(browser, url: str, *, dark: bool = False, wait_estimate: bool = True):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(20 * SECOND)
    page.add_init_script(WATCH_TOASTS)
    page.goto(url + ("?__theme=dark" if dark else ""))
    if wait_estimate:
        page.locator("#music-estimate .studio-estimate").wait_for()
    page.locator("#memory-panel .mem-device").first.wait_for()
    return page


def _toasts(page, kind: str | None = None) -> list[dict]:
    toasts = page.evaluate(READ_TOASTS)
    return [t for t in toasts if kind is None or kind in t["cls"].split()]


def _options(page, dropdown: str) -> list[str]:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option").first.wait_for()
    options = page.get_by_role("option").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    page.locator(f"{dropdown} input").blur()  # closes the list (Escape would leave it half-open)
    page.get_by_role("option").first.wait_for(state="detached")
    return options


def _pick(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).first.click()


def _duration_box(page, task: str):
    return page.locator(f"#tab-{task} input[type=number][aria-label*='Duration' i]").first


def _set_duration(page, task: str, seconds: float) -> None:
    box = _duration_box(page, task)
    box.fill(str(seconds))
    box.press("Enter")


def _settle(page, task: str) -> None:
    """Wait until the tab's pending events are done (no progress shown), then a little more (for a toast)."""
    page.wait_for_timeout(150)
    page.wait_for_function(f"() => !document.querySelector('#tab-{task} .wrap.pending, #tab-{task} .eta-bar')",
                           timeout=10 * SECOND)
    page.wait_for_timeout(150)


# ------------------------------------------------------------------ item 1: no error a user did not cause


def test_switching_through_every_model_shows_no_error(server, browser):
    url, studio = server
    page = _open(browser, url)
    seen = []
    for task in ("music", "speech", "sfx"):
        _tab(page, task)
        options = _options(page, f"#{task}-model")
        assert len(options) == len({g for g in options}), options
        for option in options[1:] + options[:1]:  # every model once, ending where the tab started
            _pick(page, f"#{task}-model", option)
            _settle(page, task)
            seen.append((task, option))
            if page.locator(f"#{task}-language").is_visible():
                for language in _options(page, f"#{task}-language"):
                    _pick(page, f"#{task}-language", language)
                    page.wait_for_timeout(100)
                _settle(page, task)
            errors = _toasts(page, "error")
            assert not errors, f"switching to {option} ({task}) showed {errors}"
    assert len(seen) >= len(studio.catalog.for_task("music")) + 2
    assert not _toasts(page, "error") and not _toasts(page, "warning")
    page.close()


# ------------------------------------------------------------------ item 2: a model switch keeps the settings


def _model_option(page, task: str, name: str) -> str:
    return next(o for o in _options(page, f"#{task}-model") if o.startswith(name))


def _duration(page, task: str) -> float:
    return float(_duration_box(page, task).input_value())


def test_switching_models_keeps_the_settings_the_new_model_accepts(server, browser):
    url, _ = server
    page = _open(browser, url)
    adjusted = page.locator("#music-adjusted")
    _set_duration(page, "music", 12)
    _expect_text(page.locator("#music-estimate"), r"about .* · needs")
    _pick(page, "#music-model", _model_option(page, "music", "MusicGen stereo small"))
    _settle(page, "music")
    _expect_text(page.locator("#music-note"), r"facebook/musicgen-stereo-small", 5)
    assert _duration(page, "music") == 12
    assert not adjusted.is_visible()  # nothing had to change

    # 40 s on Stable Audio Open (up to 47.55 s), then MusicGen small (up to 30 s): 30 s, and a note says so.
    _pick(page, "#music-model", _model_option(page, "music", "Stable Audio Open"))
    _settle(page, "music")
    assert _duration(page, "music") == 12
    _set_duration(page, "music", 40)
    _settle(page, "music")
    assert _duration(page, "music") == 40
    _pick(page, "#music-model", _model_option(page, "music", "MusicGen small"))
    _settle(page, "music")
    assert _duration(page, "music") == 30
    note = _expect_text(adjusted, r"Duration is 30 s now: MusicGen small takes 0\.5–30 s \(it was 40 s\)", 5)
    assert "rror" not in note
    page.locator("#tab-music").screenshot(path=str(ARTIFACTS / "tab-music-clamped.png"))

    # An advanced setting still at the old model's default takes the new model's (MusicGen guidance 3, Stable
    # Audio's 7); the note goes once the user changes a setting.
    page.locator("#music-advanced").get_by_text("Advanced").first.click()
    guidance = page.locator("#music-advanced input[type=number][aria-label*='Guidance' i]").first
    assert float(guidance.input_value()) == 3
    _pick(page, "#music-model", _model_option(page, "music", "Stable Audio Open"))
    _settle(page, "music")
    assert float(guidance.input_value()) == 7 and _duration(page, "music") == 30
    _set_duration(page, "music", 20)
    adjusted.wait_for(state="hidden", timeout=5 * SECOND)
    assert not _toasts(page, "error")
    page.close()


# ------------------------------------------------------------------ item 7: the estimate follows Unload all


def test_the_estimate_follows_unload_all_without_touching_a_control(server, browser):
    url, studio = server
    page = _open(browser, url)
    estimate = page.locator("#music-estimate")
    page.locator("#music-prompt textarea").fill("a short drone")
    _set_duration(page, "music", 0.5)
    _expect_text(estimate, r"loads in")
    page.locator("#music-generate").click()
    _expect_text(page.locator("#music-details"), r"Seed", 60)
    _expect_text(estimate, r"\A(?![\s\S]*loads in)[\s\S]*about .* · needs", 10)  # resident: no load time
    page.locator("#memory-panel button[data-action=unload-all]").click()
    _expect_text(estimate, r"loads in", 10)
    assert studio.manager.state_of("facebook/musicgen-small") == "on disk"
    assert not _toasts(page, "error")
    page.close()


# ------------------------------------------------------------------ item 9: a steady layout, one download, Cancel


def test_generate_stays_put_and_labels_stay_the_same_while_the_page_loads(server, browser):
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(20 * SECOND)
    page.add_init_script(WATCH_TOASTS)
    page.goto(url)
    generate = page.locator("#music-generate")
    generate.wait_for()
    # Measured once gradio has mounted the tab (Generate and Cancel laid out side by side): in the first frames
    # gradio itself is still placing its components, which is not the estimate moving Generate.
    page.wait_for_function("""() => {
        const g = document.querySelector('#music-generate'), c = document.querySelector('#music-cancel');
        if (!g || !c) return false;
        const a = g.getBoundingClientRect(), b = c.getBoundingClientRect();
        return b.width > 0 && Math.abs(a.top - b.top) < 1 && a.right <= b.left;
    }""")
    before = generate.bounding_box()
    labels_before = _options(page, "#music-model")
    _expect_text(page.locator("#music-estimate"), r"about .* · needs")
    page.wait_for_timeout(500)
    after = generate.bounding_box()
    assert abs(after["y"] - before["y"]) <= 4, (before, after)
    assert _options(page, "#music-model") == labels_before
    assert all(re.search(r"parameters", label) for label in labels_before), labels_before
    page.close()


def test_one_download_and_cancel_only_while_a_run_of_the_tab_is_on(server, browser):
    url, _ = server
    page = _open(browser, url)
    cancel = page.locator("#music-cancel")
    assert cancel.is_disabled()
    assert "secondary" in cancel.get_attribute("class") and "stop" not in cancel.get_attribute("class")
    generate_box, cancel_box = page.locator("#music-generate").bounding_box(), cancel.bounding_box()
    assert cancel_box["width"] < generate_box["width"] / 2
    page.locator("#music-prompt textarea").fill("a short drone")
    _set_duration(page, "music", 0.5)
    page.locator("#music-generate").click()
    page.wait_for_function("() => !document.querySelector('#music-cancel').disabled", timeout=5 * SECOND)
    _expect_text(page.locator("#music-details"), r"Seed", 60)
    page.wait_for_function("() => document.querySelector('#music-cancel').disabled", timeout=10 * SECOND)
    # The result: the Download button (format and size), and no second download in the player's toolbar.
    _expect_text(page.locator("#music-download"), r"Download WAV · ", 5)
    assert page.locator("#music-audio a[download], #music-audio button[aria-label*='ownload' i]").count() == 0
    assert not _toasts(page, "error")
    page.close()
