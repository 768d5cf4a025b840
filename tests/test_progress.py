"""Progress and the studio's own queue: the bar and the time left never go back on a first run (the estimate is
far off), a run waiting for its device says how many runs are ahead and how long they take, and the wording of
results, errors and estimates (CPU runs, capitals, long runs, the memory reserve)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from studio.run import RunContext
from studio.ui import text
from studio.ui.runs import STEP_REPORT_EVERY_S, ProgressBridge, RunRegistry

MUSIC, SPEECH = "facebook/musicgen-small", "facebook/mms-tts-eng"
MB = 1024**2


# ------------------------------------------------------------------ a run driven on a fake clock


class Run:
    """A ProgressBridge on a fake clock with a recording progress callable; `wait` moves the clock in ticks."""

    def __init__(self, tick: float = 0.25, **bridge) -> None:
        self.now = 1000.0
        self.calls: list[tuple[float | None, str]] = []
        self.bridge = ProgressBridge(threading.Event(), self._record, clock=lambda: self.now, **bridge)
        self.ctx = self.bridge.context
        self.tick = tick

    def _record(self, value, desc=None, **_):
        self.calls.append((value, desc))

    def wait(self, seconds: float) -> None:
        """Time passes; the ticker reports every `tick` seconds meanwhile."""
        end = self.now + seconds
        while self.now + self.tick < end:
            self.now += self.tick
            self.bridge.report()
        self.now = end

    def steps(self, start: int, end: int, total: int, seconds_each: float, first_s: float | None = None) -> None:
        for done in range(start, end + 1):
            self.wait(first_s if first_s is not None and done == start else seconds_each)
            self.ctx.progress(done, total)


def _left(desc: str) -> float | None:
    """The time left a progress text states, in seconds ('almost done' is 0); None when it states none."""
    if "almost done" in desc:
        return 0.0
    match = re.search(r"about (.+?) left", desc)
    if not match:
        return None
    said = match.group(1)
    if said.endswith(" h"):
        return float(said[:-2]) * 3600
    minutes = re.match(r"(\d+) min(?: (\d+) s)?$", said)
    if minutes:
        return int(minutes.group(1)) * 60 + int(minutes.group(2) or 0)
    return float(said.rstrip(" s"))


def _check_monotonic(calls, *, tolerance_s: float = 1.0) -> None:
    """The bar never goes back; once a step has been reported, the time left never rises by more than
    `tolerance_s` (the rounding of the text and the noise of a measured rate) from one report to the next."""
    shares = [value for value, _ in calls if value is not None]
    assert shares, calls
    for before, after in zip(shares, shares[1:]):
        assert after >= before, ("the bar went back", before, after, calls)
    assert all(0 <= share <= 1 for share in shares)
    first_step = next(i for i, (_, desc) in enumerate(calls) if re.search(r"\d+/\d+ steps", desc))
    lefts = [(desc, _left(desc)) for _, desc in calls[first_step:]]
    lefts = [(desc, left) for desc, left in lefts if left is not None]
    for (desc_a, a), (desc_b, b) in zip(lefts, lefts[1:]):
        assert b <= a + tolerance_s, ("the time left jumped up", desc_a, desc_b)


def _after(calls, prefix: str):
    return [(value, desc) for value, desc in calls if desc.startswith(prefix)]


def test_a_first_musicgen_run_with_a_slow_estimate_counts_down_to_the_end():
    # The prior says 120 s; the run takes about 11 s. Before the fix the last step showed "almost done" at
    # 84.6 % and the decoding then "about 23 s left" at 20.4 %.
    run = Run(estimated_s=120.0)
    run.ctx.stage("queued")
    run.wait(0.1)
    run.ctx.stage("loading")
    run.wait(4.0)
    run.ctx.stage("generating")
    run.steps(1, 100, 100, 0.05, first_s=1.5)
    run.ctx.stage("decoding")  # MusicGen's on_last: the codec decodes after the last token
    run.wait(0.8)
    run.ctx.stage("saving")
    run.wait(0.3)
    run.bridge.report()
    _check_monotonic(run.calls)
    last_step = _after(run.calls, "Generating · 100/100 steps")[-1]
    decoding = _after(run.calls, "Decoding audio")
    saving = _after(run.calls, "Saving the file")
    assert decoding and saving
    assert all(_left(desc) < 2.0 for _, desc in decoding + saving), decoding + saving  # scaled from the measure
    assert decoding[0][0] >= last_step[0] and saving[-1][0] > 0.85, (last_step, decoding[0], saving[-1])


@pytest.mark.parametrize("chunks", [1, 3])
def test_bark_steps_across_its_decoding_and_saving_never_go_back(chunks):
    # Bark reports 100 steps a chunk on one scale, decodes inside it and goes back to "generating"; before the
    # fix 73/100 steps was followed by "Saving the file · about 1 min 44 s left – 9.1 %".
    run = Run(estimated_s=300.0)
    run.ctx.stage("queued")
    run.ctx.stage("loading")
    run.wait(6.0)
    run.ctx.stage("generating")
    total = 100 * chunks
    for chunk in range(chunks):
        base = 100 * chunk
        run.steps(base + 1, base + 73, total, 0.1, first_s=0.9 if chunk == 0 else None)
        run.wait(0.5)
        run.ctx.progress(base + 95, total)  # fine tokens, all at once
        run.ctx.stage("decoding")
        run.wait(0.7)
        run.ctx.progress(base + 100, total)
        run.ctx.stage("generating")
    run.ctx.stage("saving")
    run.wait(0.3)
    run.bridge.report()
    _check_monotonic(run.calls)
    saving = _after(run.calls, "Saving the file")
    assert saving and all(_left(desc) < 3.0 for _, desc in saving), saving


def test_an_estimate_that_is_too_fast_stalls_the_bar_and_never_reverses_it():
    run = Run(estimated_s=2.0)
    run.ctx.stage("queued")
    run.ctx.stage("loading")
    run.wait(3.0)  # the whole estimate gone in the load
    run.ctx.stage("generating")
    run.steps(1, 50, 50, 0.4, first_s=1.0)
    run.ctx.stage("decoding")
    run.wait(1.0)
    run.ctx.stage("saving")
    run.wait(0.2)
    _check_monotonic(run.calls)
    # Once steps are measured the text tells the truth: about 0.4 s x 40 + the part after them, at step 10.
    at_ten = _after(run.calls, "Generating · 10/50 steps")[0][1]
    assert 15 <= _left(at_ten) <= 20, at_ten


def test_a_load_longer_than_planned_does_not_eat_the_time_planned_for_generating():
    from studio.estimate import Estimate

    estimate = Estimate(model="m/x", seconds=12.0, bytes=1, fits=True, evicts=(), weights_bytes=1, working_bytes=0,
                        load_seconds=2.0, compute_seconds=10.0, placement="device", resident=False, cached=True,
                        budget_bytes=10, dtype="float32")
    run = Run(estimate=estimate)
    run.ctx.stage("queued")
    run.ctx.stage("loading")
    run.wait(8.0)  # four times the planned load
    assert _left(run.calls[-1][1]) == pytest.approx(10.0, abs=0.5), run.calls[-1]
    run.ctx.stage("generating")
    run.wait(30.0)  # no step yet, far past the plan: the bar must not reach its end before a step is seen
    assert _left(run.calls[-1][1]) == pytest.approx(1.0, abs=0.2) and run.calls[-1][0] < 0.98, run.calls[-1]
    run.steps(1, 20, 20, 0.5)
    run.ctx.stage("saving")
    run.wait(0.2)
    _check_monotonic(run.calls)


def test_a_retried_generation_starts_its_count_afresh_and_the_bar_holds():
    run = Run(estimated_s=20.0)
    run.ctx.stage("loading")
    run.wait(1.0)
    run.ctx.stage("generating")
    run.steps(1, 30, 60, 0.1)
    run.ctx.stage("loading")  # out of memory: loaded again elsewhere, then generated from the start
    run.wait(1.0)
    run.ctx.stage("generating")
    run.steps(1, 60, 60, 0.2)
    run.ctx.stage("saving")
    shares = [value for value, _ in run.calls if value is not None]
    assert all(b >= a for a, b in zip(shares, shares[1:]))
    at_40 = _after(run.calls, "Generating · 40/60 steps")[-1][1]
    assert _left(at_40) == pytest.approx(0.2 * 20 + 0.2 * 60 / 9, abs=0.6), at_40  # the retry's own rate


def test_time_left_is_the_estimate_until_steps_then_the_measured_rate_and_the_part_after_them():
    assert text.remaining_seconds(estimated_total=30, elapsed=10) == 20
    assert text.remaining_seconds(estimated_total=30, elapsed=40) == 0
    assert text.remaining_seconds(estimated_total=None, elapsed=10) is None
    # 10 of 100 steps at 0.5 s: 45 s for the other 90, plus a ninth of the 50 s of steps for decoding and saving.
    assert text.remaining_seconds(estimated_total=600, elapsed=12, done=10, total=100, per_step=0.5) == \
        pytest.approx(45 + 50 / 9)
    # Between steps the count keeps going down, but never below the steps after the current one.
    assert text.remaining_seconds(estimated_total=600, elapsed=12, done=10, total=100, per_step=0.5,
                                  since_step=0.3) == pytest.approx(44.7 + 50 / 9)
    assert text.remaining_seconds(estimated_total=600, elapsed=12, done=10, total=100, per_step=0.5,
                                  since_step=5) == pytest.approx(44.5 + 50 / 9)
    # After the last step only the part after it is left, counting down to 0 whatever the estimate said.
    assert text.remaining_seconds(estimated_total=600, elapsed=60, done=100, total=100, per_step=0.5,
                                  since_steps_end=2) == pytest.approx(50 / 9 - 2)
    assert text.remaining_seconds(estimated_total=600, elapsed=70, done=100, total=100, per_step=0.5,
                                  since_steps_end=20) == 0
    assert text.progress_desc("generating", 8.0, steps=(12, 50)) == "Generating · 12/50 steps · about 8.0 s left"
    assert text.progress_desc("saving", 0.1) == "Saving the file · almost done"


def test_a_fast_model_tells_the_page_a_few_times_a_second_not_at_every_step():
    # 2000 steps in 2 s (a tiny checkpoint, or MusicGen on a GPU): Gradio sends each report as a message that the
    # page takes tens of milliseconds over, so reporting every step kept the page too busy to take a click.
    run = Run(tick=60)
    run.ctx.stage("generating")
    run.steps(1, 2000, 2000, seconds_each=0.001)
    steps = [desc for _, desc in run.calls if "steps" in desc]
    assert steps[0].startswith("Generating · 1/2000 steps")  # the first step shows at once
    assert steps[-1].startswith("Generating · 2000/2000 steps")  # and the last
    assert len(steps) <= 2 / STEP_REPORT_EVERY_S + 2, len(steps)
    run.ctx.stage("decoding")  # a new stage shows at once
    assert run.calls[-1][1].startswith("Decoding")
    # A slow model's every step is told.
    slow = Run(tick=60)
    slow.ctx.stage("generating")
    slow.steps(1, 10, 10, seconds_each=STEP_REPORT_EVERY_S)
    assert len([desc for _, desc in slow.calls if "steps" in desc]) == 10


def test_a_real_first_run_reports_a_bar_that_never_goes_back(make_studio):
    from studio.ui.endpoints import Endpoints

    endpoints = Endpoints(make_studio(1024 * MB))
    calls = []
    result = endpoints.generate("music", MUSIC, "lofi", params={"duration": 0.5}, session="s",
                                progress=lambda value, desc=None, **_: calls.append((value, desc)))
    assert result.path.exists()
    descs = [desc for _, desc in calls]
    assert any(desc.startswith("Loading the model") for desc in descs)
    assert any(re.match(r"Generating · \d+/\d+ steps", desc) for desc in descs)
    assert descs[-1].startswith("Saving the file")
    shares = [value for value, _ in calls if value is not None]
    assert shares and all(b >= a for a, b in zip(shares, shares[1:])), calls


# ------------------------------------------------------------------ waiting for the device


def test_the_waiting_text_names_the_runs_ahead_and_their_time():
    assert text.waiting_desc(1, 15.2) == "Waiting for the device: 1 run ahead, about 15 s"
    assert text.waiting_desc(3, 125) == "Waiting for the device: 3 runs ahead, about 2 min 05 s"
    assert text.waiting_desc(1, 0.0) == "Waiting for the device: 1 run ahead, finishing"
    assert text.waiting_desc(0, 0.0) == "Waiting for the device"


def test_a_queued_bridge_shows_the_wait_with_an_empty_bar_then_its_own_progress():
    runs = RunRegistry()
    with runs.track("s:music") as cancel:
        calls = []
        bridge = ProgressBridge(cancel, lambda value, desc=None, **_: calls.append((value, desc)), estimated_s=5.0,
                                waiting=lambda queued: runs.set_waiting(cancel, queued))
        bridge.context.stage("queued")
        bridge.context.waiting(1, 15.2)
        assert calls[-1] == (0.0, "Waiting for the device: 1 run ahead, about 15 s")
        assert runs.waiting("s:music") and not runs.waiting("s:speech")
        bridge.context.stage("loading")
        assert not runs.waiting("s:music")  # started: a Cancel now stops a run, not a queued request
        assert calls[-1][1].startswith("Loading the model · about 5.0 s left") and calls[-1][0] == pytest.approx(0.0, abs=0.01)
    assert not runs.waiting("s:music")


def _holding_studio(make_studio, catalog):
    """A studio whose runs wait in generate() until `release` is set; `started` is set as one starts."""
    release, started = threading.Event(), threading.Event()
    studio = make_studio(1024 * MB)
    base = studio.manager._loader

    def loader(spec, torch_device, dtype):
        model = (base or catalog.family(spec).load)(spec, torch_device, dtype)
        inner = model.generate

        def generate(request, ctx):
            started.set()
            release.wait(60)
            return inner(request, ctx)

        model.generate = generate
        return model

    studio.manager._loader = loader
    return studio, release, started


def test_runs_waiting_for_the_device_are_told_who_is_ahead_and_for_how_long(make_studio, catalog):
    from studio.errors import Cancelled

    studio, release, started = _holding_studio(make_studio, catalog)
    manager = studio.manager
    first_request = studio.request("music", MUSIC, "first", seed=1, params={"duration": 0.5})
    order, waits = [], {"second": [], "third": []}
    first = threading.Thread(target=lambda: (manager.run(first_request, RunContext()), order.append("first")))
    first.start()
    assert started.wait(60)
    planned = manager._running[next(iter(manager._busy))][1]
    assert planned > 0  # the running run's own estimate, made as it took the device

    def queued(name, text_, ctx):
        try:
            manager.run(studio.request("speech", SPEECH, text_, seed=1), ctx)
            order.append(name)
        except Cancelled:
            order.append(f"{name} cancelled")

    contexts = {name: RunContext(on_wait=lambda ahead, s, name=name: waits[name].append((ahead, s)))
                for name in waits}
    second = threading.Thread(target=queued, args=("second", "the second one", contexts["second"]))
    second.start()
    deadline = time.monotonic() + 10
    while not waits["second"] and time.monotonic() < deadline:
        time.sleep(0.02)
    third = threading.Thread(target=queued, args=("third", "the third one", contexts["third"]))
    third.start()
    while not waits["third"] and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    ahead, seconds = waits["second"][-1]
    assert ahead == 1 and 0 <= seconds <= planned  # the run on the device: its estimate minus its time so far
    ahead, seconds = waits["third"][-1]
    speech = studio.estimate(studio.request("speech", SPEECH, "the second one", seed=1)).seconds
    assert ahead == 2 and seconds == pytest.approx(waits["second"][-1][1] + speech, abs=0.6)
    assert [a for a, _ in waits["second"]] == [1] * len(waits["second"])

    # The run on the device knows its time left better than its estimate once it has measured steps.
    manager._running[next(iter(manager._busy))][2].remaining = lambda: 7.0
    time.sleep(0.6)
    assert waits["second"][-1] == (1, 7.0)
    contexts["second"].cancel.set()  # a Cancel while queued: it leaves, and the third moves up
    second.join(5)
    assert order == ["second cancelled"]
    deadline = time.monotonic() + 5
    while waits["third"][-1][0] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waits["third"][-1][0] == 1
    release.set()
    first.join(60)
    third.join(60)
    assert order == ["second cancelled", "first", "third"]
    assert not manager._busy and not manager._waiting and not manager._running


def test_runs_waiting_for_one_device_take_it_in_the_order_they_came(make_studio, catalog):
    studio, release, started = _holding_studio(make_studio, catalog)
    manager = studio.manager
    order = []
    first = threading.Thread(target=lambda: manager.run(studio.request("speech", SPEECH, "zero", seed=1)))
    first.start()
    assert started.wait(60)
    threads = []
    for n in range(1, 5):
        ready = threading.Event()
        ctx = RunContext(on_wait=lambda ahead, s, ready=ready: ready.set(),
                         on_stage=lambda stage, n=n: order.append(n) if stage == "generating" else None)
        thread = threading.Thread(target=manager.run, args=(studio.request("speech", SPEECH, f"run {n}", seed=1), ctx))
        thread.start()
        assert ready.wait(10)  # in line before the next one comes
        threads.append(thread)
    release.set()
    for thread in [first, *threads]:
        thread.join(60)
    assert order == [1, 2, 3, 4]


def test_the_page_lets_waiting_runs_into_the_studio_queue(make_studio):
    from studio.ui.endpoints import WAITING_PER_DEVICE, Endpoints

    endpoints = Endpoints(make_studio(1024 * MB))
    assert WAITING_PER_DEVICE >= 1
    assert endpoints.run_slots() == endpoints.studio.run_slots() * (1 + WAITING_PER_DEVICE)


# ------------------------------------------------------------------ wording: CPU runs, capitals, long runs, reserve


def _metadata(**changes):
    values = {"model": SPEECH, "text": "hi", "seed": 5, "sample_rate": 16000, "channels": 1, "duration": 1.0,
              "elapsed_s": 0.4, "estimated_s": 1.2, "device": "CPU (2 cores)", "placement": "device",
              "dtype": "float32"}
    values.update(changes)
    return values


def test_a_run_on_the_cpu_says_so_once():
    assert "| Ran on | CPU (2 cores) · float32 |" in text.metadata_markdown(_metadata())
    assert "| Ran on | CPU (2 cores) · float32 |" in text.metadata_markdown(_metadata(placement="cpu"))
    gpu = text.metadata_markdown(_metadata(device="Simulated GPU (8.0 GB)"))
    assert "| Ran on | Simulated GPU (8.0 GB) · whole on the device · float32 |" in gpu
    offload = text.metadata_markdown(_metadata(device="NVIDIA RTX 3060", placement="offload", dtype="float16"))
    assert "| Ran on | NVIDIA RTX 3060 · CPU offload · float16 |" in offload


def test_errors_start_with_a_capital_unless_they_start_with_a_name():
    import gradio as gr

    from studio.errors import InvalidInput
    from studio.ui.endpoints import user_errors

    def refuse(message):
        @user_errors
        def fn():
            raise InvalidInput(message)

        with pytest.raises(gr.Error) as error:
            fn()
        return error.value.message

    assert refuse("duration must be between 1 and 30 s, but is 999") == "Duration must be between 1 and 30 s, but is 999"
    assert refuse("the prompt is empty: describe what you want to hear").startswith("The prompt is empty")
    assert refuse("facebook/nope is not a model of this studio") == "facebook/nope is not a model of this studio"
    assert refuse("--memory-budget 5 is too small") == "--memory-budget 5 is too small"
    assert refuse("precision int8 needs ...") == "Precision int8 needs ..."
    assert refuse("<b>bold</b> text") == "&lt;b&gt;bold&lt;/b&gt; text"  # still escaped
    assert text.sentence("") == "" and text.sentence("x") == "X"


def _estimate(**changes):
    from studio.estimate import Estimate

    values = dict(model="m/x", seconds=24.0, bytes=38_000_000, fits=True, evicts=(), weights_bytes=30_000_000,
                  working_bytes=8_000_000, load_seconds=3.0, compute_seconds=21.0, placement="device", resident=True,
                  cached=True, budget_bytes=7_600_000_000, dtype="float32")
    values.update(changes)
    return Estimate(**values)


def test_a_long_estimate_says_how_to_make_it_quicker():
    assert "quicker" not in _estimate(seconds=590, faster="steps").summary()
    long_run = _estimate(seconds=4300, faster="steps").summary()
    assert long_run.startswith("about 1.2 h") and long_run.endswith("a long run: fewer steps or a faster model "
                                                                     "would be quicker")
    assert _estimate(seconds=4300).summary().endswith("a long run: a faster model would be quicker")
    assert "fewer inference steps" in _estimate(seconds=4300, faster="inference_steps").summary()


def test_the_estimate_of_a_model_with_steps_names_them_when_it_is_long(make_studio):
    studio = make_studio(1024 * MB)
    estimate = studio.estimate(studio.request("sfx", "cvssp/audioldm2", "rain", seed=1, params={"steps": 2}))
    assert estimate.faster == "steps"
    assert studio.estimate(studio.request("music", MUSIC, "beat", seed=1, params={"duration": 1})).faster is None


def test_a_reserve_that_takes_all_the_memory_is_named_with_its_fix():
    mib = 512 * 2**20
    said = _estimate(budget_bytes=0, placement="cpu", reserve_bytes=mib).summary()
    assert "the reserve (512 MiB) takes all of this device's memory: lower --memory-reserve" in said
    refused = _estimate(budget_bytes=0, fits=False, reserve_bytes=mib).summary()
    assert refused.startswith("does not fit in float32: needs 38.0 MB of 0 B; the reserve (512 MiB) takes all")
    assert "reserve" not in _estimate(budget_bytes=0, fits=False).summary()  # a budget taken by models: as before


def test_the_manager_says_when_the_reserve_leaves_no_budget(make_studio):
    small = make_studio(300 * 10**6, reserve=512 * 2**20)  # like STUDIO_SIMULATED_MEMORY=300MB, default reserve
    estimate = small.estimate(small.request("speech", SPEECH, "hi", seed=1))
    assert estimate.budget_bytes == 0 and estimate.reserve_bytes == 512 * 2**20
    assert "the reserve (512 MiB) takes all of this device's memory: lower --memory-reserve" in estimate.summary()
    roomy = make_studio(8 * 10**9, reserve=512 * 2**20)
    assert roomy.estimate(roomy.request("speech", SPEECH, "hi", seed=1)).reserve_bytes == 0


def test_a_run_beside_a_busy_device_waits_as_many_runs_as_devices_and_never_shares_its_model(make_studio, catalog):
    # With the runs now waiting inside the manager, its slots alone keep the web page's old promise: one run per
    # device in all (a CPU fallback beside a busy accelerator included) and never one pipeline in two runs.
    studio, release, started = _holding_studio(make_studio, catalog)
    manager = studio.manager
    first = threading.Thread(target=lambda: manager.run(studio.request("speech", SPEECH, "zero", seed=1)))
    first.start()
    assert started.wait(60)
    assert manager._blocked(MUSIC) and manager._blocked(SPEECH)  # one device: one run at a time, wherever
    with manager._slots:
        manager._busy.clear()  # as if the run were on another slot, with room for more runs
        assert manager._blocked(SPEECH) and not manager._blocked(MUSIC)
        manager._busy.add(next(iter(manager._running)))
    release.set()
    first.join(60)
    assert not manager._blocked(SPEECH) and not manager._blocked(MUSIC)
