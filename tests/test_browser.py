"""The page in Debian's Chromium, driven by Playwright: tabs, estimate, generate, download, memory, cancel, history.

The app is served in-process over the tiny checkpoints with a simulated 8 GB GPU. Screenshots of every tab
(light and dark) and of the memory panel during a run go to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="Debian's chromium is not installed (apt-get install chromium); browser tests skipped"),
]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
TABS = {"music": "Music", "speech": "Speech", "sfx": "Sound effects", "history": "History"}
SECOND = 1000  # Playwright timeouts are in milliseconds


@contextlib.contextmanager
def chromium_browser(*extra_args: str):
    """Debian's Chromium under Playwright with CHROMIUM_ARGS and `extra_args`; test-artifacts/ made for screenshots.
    The browser test modules' browser fixtures are this."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                              args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, catalog, tiny_cache):
    """(url, studio): the app on a free port, a simulated 8 GB GPU, output in a temporary folder."""
    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings
    from tests.serving import launched

    settings = Settings(output_dir=tmp_path_factory.mktemp("browser-out"), memory_reserve=0)
    studio = Studio(settings, catalog=catalog, device=SimulatedDevice(8 * 10**9))
    with launched(studio) as url:
        yield url + "/", studio


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _open(browser, url: str, *, dark: bool = False):
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.set_default_timeout(20 * SECOND)
    page.goto(url + ("?__theme=dark" if dark else ""))
    page.locator("#music-estimate .studio-estimate").wait_for()
    page.locator("#memory-panel .mem-device").first.wait_for()
    return page


def _tab(page, task: str) -> None:
    page.get_by_role("tab", name=TABS[task], exact=True).click()


def _expect_text(locator, pattern: str, timeout_s: float = 20) -> str:
    """Wait until the locator's text matches `pattern` (a regex); returns the text."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        try:
            text = locator.inner_text(timeout=1000)
        except Exception:
            text = ""
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared; last text: {text!r}")


def _snap(target, name: str) -> None:
    """Keep a screenshot of `target` (a page or a locator) in test-artifacts/ for a person to look at.

    For pictures taken while a long run holds the server's cores on purpose: an element that does not hold still
    for Playwright within 15 s is noted as a warning, not a failure (the test's assertions check the page; a
    failed picture left the long run going and failed the next test too, in CI)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        target.screenshot(path=str(ARTIFACTS / name), timeout=15 * SECOND)
    except PlaywrightTimeout as error:
        warnings.warn(f"no screenshot {name}: {str(error).splitlines()[0]}", stacklevel=2)


def _memory_row(page, model_id: str):
    return page.locator(f'#memory-panel li.mem-model[data-model="{model_id}"]')


def _generate(page, task: str, prompt: str, *, duration: float | None = None, stream: bool = True) -> None:
    _tab(page, task)
    page.locator(f"#{task}-prompt textarea").fill(prompt)
    if duration is not None:
        _set_duration(page, task, duration)
    if not stream:
        page.locator(f"#{task}-stream input[type=checkbox]").uncheck()
    page.locator(f"#{task}-generate").click()


# The long run the cancel and queue tests hold the server with. Not streamed: the tiny Bark makes its pieces far
# faster than real time, and what streaming shows is tests/test_browser_stream.py's.
def _generate_long_speech(page) -> None:
    _generate(page, "speech", LONG_TEXT, stream=False)


def _set_duration(page, task: str, seconds: float) -> None:
    box = page.locator(f"#tab-{task} input[type=number][aria-label*='Duration' i]").first
    if not box.count():
        box = page.locator(f"#tab-{task} .studio-tab input[type=number]").first
    box.fill(str(seconds))
    box.press("Enter")


def _wait_result(page, task: str, timeout_s: float = 60) -> str:
    """Wait for the result's details table (the audio is in the player by then); returns the details text."""
    return _expect_text(page.locator(f"#{task}-details"), r"Seed", timeout_s)


def test_every_tab_and_the_estimate_follows_the_duration(server, browser):
    url, _ = server
    for dark in (False, True):
        page = _open(browser, url, dark=dark)
        for task in TABS:
            _tab(page, task)
            page.wait_for_timeout(600)
            page.screenshot(path=str(ARTIFACTS / f"tab-{task}{'-dark' if dark else ''}.png"))
        page.close()

    page = _open(browser, url)
    estimate = page.locator("#music-estimate")
    before = _expect_text(estimate, r"about .* · needs .* of ")
    _set_duration(page, "music", 2)
    after = _expect_text(estimate, r"about .* · needs", 10)
    deadline = time.monotonic() + 10
    while after == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        after = estimate.inner_text()
    assert after != before, "the estimate did not change with the duration"

    # MMS-TTS appears once, with a language picker that picks the per-language repo.
    _tab(page, "speech")
    page.locator("#speech-model input").click()
    page.get_by_role("option").first.wait_for()
    options = page.get_by_role("option").all_inner_texts()
    assert sum("MMS-TTS" in option for option in options) == 1, options
    page.get_by_role("option", name=re.compile("MMS-TTS")).click()
    language = page.locator("#speech-language")
    language.wait_for(state="visible")
    language.locator("input").click()
    page.get_by_role("option", name="German", exact=True).click()
    _expect_text(page.locator("#speech-note"), r"facebook/mms-tts-deu", 5)
    page.locator("#speech-prompt textarea").fill("Guten Morgen")
    _expect_text(page.locator("#speech-estimate"), r"about .* · needs", 10)
    page.screenshot(path=str(ARTIFACTS / "tab-speech-mms.png"))
    page.close()


def test_generate_shows_progress_then_the_player_and_downloads(server, browser):
    url, studio = server
    import soundfile as sf

    page = _open(browser, url)
    _generate(page, "music", "lo-fi hip hop beat with mellow piano", duration=1)
    _expect_text(page.locator("#music-audio"), r"(Loading|Generating|Waiting|Decoding|Saving)", 20)
    details = _wait_result(page, "music")
    assert "facebook/musicgen-small" in details and "1.00 s at 32 kHz" in details
    page.locator("#music-audio audio, #music-audio .waveform-container").first.wait_for(state="attached")
    page.screenshot(path=str(ARTIFACTS / "result-music.png"))

    with page.expect_download() as download:
        page.locator("#music-download").click()
    path = ARTIFACTS / "downloaded.wav"
    download.value.save_as(path)
    samples, rate = sf.read(path)
    assert rate == 32000 and abs(len(samples) / rate - 1.0) < 0.05

    # The memory panel shows the model on the device, then gone after Unload (an unloaded model leaves no row).
    row = _memory_row(page, "facebook/musicgen-small")
    _expect_text(row, r"on device", 5)
    row.locator("button[data-action=pin]").click()
    _expect_text(row.locator("button[data-action=pin]"), r"Pinned", 5)
    assert [m["pinned"] for m in studio.manager.snapshot()["models"] if m["id"] == "facebook/musicgen-small"] == [True]
    row.locator("button[data-action=pin]").click()
    _expect_text(row.locator("button[data-action=pin]"), r"^Pin$", 5)
    row.locator("button[data-action=unload]").click()
    row.wait_for(state="detached", timeout=5 * SECOND)
    assert studio.manager.state_of("facebook/musicgen-small") == "on disk"

    # "Reuse these settings" puts the prompt back after it was changed.
    page.locator("#music-prompt textarea").fill("something else")
    page.locator("#music-reuse").click()
    page.wait_for_function(
        "() => document.querySelector('#music-prompt textarea').value.startsWith('lo-fi hip hop')", timeout=5 * SECOND)
    page.close()


LONG_TEXT = " ".join(f"This is sentence number {n} of a long speech that Bark reads one sentence at a time."
                     for n in range(1, 25))


def test_cancel_a_long_run_and_a_queued_request(server, browser):
    url, studio = server
    bark = "suno/bark-small"
    page = _open(browser, url)
    other = _open(browser, url, dark=True)  # another browser session, ready before the long run starts
    _tab(other, "music")
    other.locator("#music-prompt textarea").fill("short jingle")
    _set_duration(other, "music", 1)

    _generate_long_speech(page)  # two dozen sentences, each thousands of steps on the tiny Bark
    try:
        _cancel_a_long_run_and_a_queued_request(page, other, studio, bark)
    except BaseException:  # leave no long run going to hold up the next test, then fail with the cause
        for tab, task in ((page, "speech"), (other, "music")):
            with contextlib.suppress(Exception):
                tab.locator(f"#{task}-cancel").click(timeout=5 * SECOND)
        raise
    other.locator("#music-generate").click()  # the studio is ready for the next run
    _wait_result(other, "music", 60)
    other.close()
    page.close()


def _cancel_a_long_run_and_a_queued_request(page, other, studio, bark: str) -> None:
    """The long run shows its steps, the other session's run waits for the device, both are cancelled."""
    _expect_text(page.locator("#speech-audio"), r"\d+/[\d.]+k? steps", 40)
    other.locator("#music-generate").click()  # waits for the device: the page says who is ahead and how long
    _expect_text(other.locator("#music-audio"), r"Waiting for the device: 1 run ahead, (about \d|finishing)", 10)
    row = _memory_row(page, bark)
    _expect_text(row, r"in use", 20)  # the panel's next refresh: slow while the tiny Bark holds both cores
    _snap(page, "memory-during-run.png")
    _snap(page.locator("#memory-sidebar"), "memory-panel-during-run.png")
    _snap(other, "queued-dark.png")
    _snap(other.locator("#memory-sidebar"), "memory-panel-during-run-dark.png")

    other.locator("#music-cancel").click()  # still queued: it will leave without running
    _expect_text(other.locator("body"), r"leaves the queue", 5)
    page.bring_to_front()  # the person goes back to the first tab
    row.locator("button[data-action=unload]").click()  # in use: it goes when the run ends
    _expect_text(page.locator("body"), r"will unload after the current run", 20)  # the server is busy with Bark
    assert "steps" in page.locator("#speech-audio").inner_text(), "the long run ended before it could be cancelled"

    page.locator("#speech-cancel").click()
    row.wait_for(state="detached", timeout=15 * SECOND)  # stopped within a step, then unloaded as asked: no row
    _expect_text(page.locator("#speech-audio"), r"^Result$", 10)  # no progress, no error, no result
    _expect_text(other.locator("#music-audio"), r"^Result$", 10)
    assert studio.manager.state_of(bark) == "on disk"
    assert studio.manager.state_of("facebook/musicgen-small") != "in use"  # the queued run never started work
    assert not list(Path(studio.settings.output_dir).glob("*sentence-number*")), "the cancelled run wrote a file"


def _pick(page, dropdown: str, option) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).first.click()


def test_the_precision_setting_changes_the_estimate(server, browser):
    url, _ = server
    page = _open(browser, url)
    page.locator("#music-advanced").get_by_text("Advanced").first.click()
    precision = page.locator("#music-advanced").get_by_label("Precision")
    estimate = page.locator("#music-estimate")
    for option in ("int8", "float32"):
        precision.click()
        page.get_by_role("option", name=option, exact=True).click()
        if option == "int8":  # named in the line when not float32; int8 weighs and takes less than float32
            int8 = _expect_text(estimate, r"about .* · needs .* · int8")
    float32 = _expect_text(estimate, r"(?s)\A(?!.*int8).*about .* · needs ", 10)
    needs = [re.search(r"needs (\S+ \S+)", line).group(1) for line in (int8, float32)]
    assert needs[0] != needs[1], (int8, float32)
    page.locator("#tab-music").screenshot(path=str(ARTIFACTS / "precision-float32.png"))
    page.close()


def test_restore_a_history_item_into_its_tab(server, browser):
    url, studio = server
    if getattr(studio, "history", None) is None:
        pytest.skip("the history store is not available")
    page = _open(browser, url)
    text = "Good morning from the history test."
    _tab(page, "speech")
    _pick(page, "#speech-model", re.compile("MMS-TTS"))
    page.locator("#speech-language").wait_for(state="visible")
    _generate(page, "speech", text)
    _wait_result(page, "speech")

    # Move away from what made it: another model, another text.
    _pick(page, "#speech-model", re.compile("Bark small"))
    page.locator("#speech-language").wait_for(state="hidden")
    page.locator("#speech-prompt textarea").fill("")

    _tab(page, "history")
    listing = page.locator("#history-list")
    _expect_text(listing, re.escape(text), 10)
    page.locator("#history-search textarea, #history-search input").first.fill("no such words")
    _expect_text(page.locator("#history-count"), r"Nothing matches", 10)
    page.locator("#history-search textarea, #history-search input").first.fill("good MORNING")
    _expect_text(page.locator("#history-count"), r"^1 generation$", 10)
    listing.locator("button[data-id]", has_text=text).first.click()
    _expect_text(page.locator("#history-details"), r"Seed", 10)
    _expect_text(page.locator("#history-audio"), r"0:(0[1-9]|[1-5]\d)", 10)  # the player has the clip's length
    page.screenshot(path=str(ARTIFACTS / "history-selected.png"))

    page.locator("#history-restore").click()
    page.wait_for_function(f"() => document.querySelector('#speech-prompt textarea')?.value === {text!r}",
                           timeout=10 * SECOND)
    assert page.get_by_role("tab", name="Speech", exact=True).get_attribute("aria-selected") == "true"
    assert "MMS-TTS" in page.locator("#speech-model input").input_value()
    assert page.locator("#speech-language input").input_value() == "English"
    _expect_text(page.locator("#speech-note"), r"facebook/mms-tts-eng", 5)
    page.screenshot(path=str(ARTIFACTS / "history-restored.png"))

    _tab(page, "history")  # and delete it, with its file
    item = studio.history.list("Good morning")[0]
    page.locator("#history-delete").click()
    _expect_text(page.locator("#history-count"), r"Nothing matches", 10)
    assert studio.history.get(item.id) is None and not studio.history.path_of(item).exists()
    page.close()


def test_two_devices_show_two_budget_bars_and_the_run_names_its_device(browser, catalog, tiny_cache, tmp_path):
    from studio.device import pick_devices
    from studio.service import Studio
    from studio.settings import Settings
    from tests.serving import launched

    settings = Settings(output_dir=tmp_path / "out", memory_reserve=0, simulated_memory=(4 * 10**9, 2 * 10**9))
    studio = Studio(settings, catalog=catalog, device=pick_devices(settings))
    with launched(studio) as url:
        page = _open(browser, url + "/")
        blocks = page.locator("#memory-panel section.mem-dev")
        _expect_text(page.locator("#memory-panel"), r"Simulated GPU 0 \(4\.0 GB\)[\s\S]*Simulated GPU 1 \(2\.0 GB\)")
        assert blocks.count() >= 2
        # The estimate line names the device a run will use when there is more than one.
        _expect_text(page.locator("#music-estimate"), r"on Simulated GPU 0 \(4\.0 GB\)")
        _generate(page, "music", "a drone", duration=0.5)
        _expect_text(page.locator("#memory-panel section.mem-dev").first, r"MusicGen small", 120)
        page.screenshot(path=str(ARTIFACTS / "two-devices.png"), full_page=True)
        page.close()
