"""Load: 8 gradio_client clients x 5 mixed requests against one served app whose budget fits one model at a time.

Every request must come back with its own audio (the model, seed and prompt its client sent), none lost or
swapped; at most one generation runs on the device at any instant; what is resident never exceeds the budget;
waiting jobs see their place in the queue.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.serving import serving

MUSIC, SPEECH, SFX = "facebook/musicgen-small", "facebook/mms-tts-eng", "cvssp/audioldm2"
GB = 10**9
CLIENTS, PER_CLIENT = 8, 5
RATES = {MUSIC: 32000, SPEECH: 16000, SFX: 16000}


class RunCounter:
    """Wraps each loaded model's generate(): how many run at once, and the device bytes seen while they do."""

    def __init__(self, device) -> None:
        self.device = device
        self.active = 0
        self.max_active = 0
        self.runs = 0
        self.max_placed = 0
        self.on_device: list[tuple[str, set[str]]] = []  # (model generating, models on the device meanwhile)
        self.resident = lambda: set()
        self._lock = threading.Lock()

    def loader(self, catalog):
        def load(spec, torch_device, dtype):
            model = catalog.family(spec).load(spec, torch_device, dtype)
            inner = model.generate

            def generate(request, ctx):
                with self._lock:
                    self.active += 1
                    self.runs += 1
                    self.max_active = max(self.max_active, self.active)
                    self.max_placed = max(self.max_placed, self.device.placed_bytes())
                    self.on_device.append((spec.repo_id, self.resident()))
                try:
                    return inner(request, ctx)
                finally:
                    with self._lock:
                        self.max_placed = max(self.max_placed, self.device.placed_bytes())
                        self.active -= 1

            model.generate = generate
            return model

        return load


class ResidentSampler:
    """Samples the simulated device's placed bytes every 5 ms, between the accountant's own peak checks."""

    def __init__(self, device) -> None:
        self.device = device
        self.max_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self.max_seen = max(self.max_seen, self.device.placed_bytes())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _plan(client: int, i: int) -> dict:
    """Request i of `client`: a mix of the three endpoints, each with a seed and prompt unique to it."""
    seed = 1000 * (client + 1) + i
    kind = (client + i) % 3
    if kind == 0:
        return {"model": MUSIC, "prompt": f"client {client} tune {i}", "duration": 0.5, "seed": seed, "api_name": "/music"}
    if kind == 1:
        return {"model": SPEECH, "text": f"client {client} line {i}", "seed": seed, "api_name": "/speech"}
    return {"model": SFX, "prompt": f"client {client} noise {i}", "duration": 0.5, "steps": 2, "seed": seed,
            "api_name": "/sfx"}


def _budget(make_studio) -> tuple[int, str]:
    """Room for any one run alone; the largest run (sound effects) leaves no room for any other model's weights.

    The tiny checkpoints' working memory dwarfs their weights, so smaller runs may keep another model resident;
    the largest one cannot, and every swap to it must evict first.
    """
    from studio.ui.endpoints import Endpoints

    endpoints = Endpoints(make_studio(8 * GB))
    estimates = {
        MUSIC: endpoints.estimate("music", MUSIC, "x", {"duration": 0.5}),
        SPEECH: endpoints.estimate("speech", SPEECH, "client 7 line 4", {}),
        SFX: endpoints.estimate("sfx", SFX, "x", {"duration": 0.5, "steps": 2}),
    }
    largest = max(estimates, key=lambda m: estimates[m].bytes)
    budget = estimates[largest].bytes + 100_000
    for model, estimate in estimates.items():
        if model != largest:
            assert estimate.weights_bytes + estimates[largest].bytes > budget, "the tiny models no longer evict"
    return budget, largest


@pytest.mark.reliability("Load", "8 clients x 5 mixed requests, budget for one model",
                         "gradio_client submit() from 8 clients at once: /music (musicgen-small 0.5 s), /speech "
                         "(mms-tts-eng), /sfx (audioldm2, 2 steps, 0.5 s); SimulatedDevice capped to the largest run")
def test_concurrent_clients_get_their_own_audio_within_the_budget(make_studio, catalog, reliability):
    from gradio_client import Client
    from gradio_client.utils import Status

    from studio.estimate import Calibration
    from studio.manager import PipelineManager
    from studio.service import Studio

    budget, largest = _budget(make_studio)
    base = make_studio(8 * GB, budget=budget)
    counter = RunCounter(base.device)
    manager = PipelineManager(catalog, base.device, calibration=Calibration(base.settings.calibration_file),
                              budget_cap=budget, reserve=0, loader=counter.loader(catalog))
    studio = Studio(base.settings, catalog=catalog, device=base.device, manager=manager, history=base.history)
    counter.resident = lambda: {row["id"] for row in manager.snapshot()["models"] if row["placement"] == "device"}

    started = time.monotonic()
    with serving(studio) as first, ResidentSampler(studio.device) as sampler:
        url = first.src
        clients = [first] + [Client(url, verbose=False) for _ in range(CLIENTS - 1)]
        try:
            # Every client submits all its requests at once: 40 jobs meet one device queue.
            jobs = [[(plan, c.submit(**plan)) for plan in (_plan(n, i) for i in range(PER_CLIENT))]
                    for n, c in enumerate(clients)]
            flat = [pair for per_client in jobs for pair in per_client]
            ranks: dict[int, list[int]] = {}  # places in Gradio's queue
            studio_waits: dict[int, list[int]] = {}  # runs ahead, said by jobs waiting in the studio's own queue
            sizes: list[int] = []
            deadline = time.monotonic() + 240
            while not all(job.done() for _, job in flat) and time.monotonic() < deadline:
                for plan, job in flat:
                    status = job.status()
                    if status.code == Status.IN_QUEUE and status.rank is not None:
                        ranks.setdefault(plan["seed"], []).append(status.rank)
                        if status.queue_size is not None:
                            sizes.append(status.queue_size)
                    said = [unit.desc for unit in status.progress_data or () if unit.desc]
                    ahead = re.match(r"Waiting for the device: (\d+) runs? ahead", said[-1]) if said else None
                    if status.code == Status.PROGRESS and ahead:
                        studio_waits.setdefault(plan["seed"], []).append(int(ahead.group(1)))
                time.sleep(0.1)
            results = [(plan, job.result(timeout=5)) for plan, job in flat]
        finally:
            for c in clients[1:]:
                c.close()
    wall = time.monotonic() - started

    # Every request answered with its own audio: the model, seed and prompt its client sent.
    assert len(results) == CLIENTS * PER_CLIENT
    seeds = set()
    for plan, (path, meta) in results:
        model, text_key = plan["model"], "text" if plan["api_name"] == "/speech" else "prompt"
        assert (meta["model"], meta["seed"], meta[text_key]) == (model, plan["seed"], plan[text_key]), (plan, meta)
        assert f"-s{plan['seed']}-" in Path(meta["file"]).name
        info = sf.info(path)
        assert info.samplerate == RATES[model] == meta["sample_rate"]
        assert info.frames / info.samplerate == pytest.approx(meta["duration"], abs=1e-3)
        if "duration" in plan:
            assert meta["duration"] == pytest.approx(plan["duration"], abs=0.05)
        else:
            assert meta["duration"] > 0
        seeds.add(meta["seed"])
    assert len(seeds) == CLIENTS * PER_CLIENT  # none answered twice, none lost

    # The history holds each one once.
    assert studio.history.count() == CLIENTS * PER_CLIENT

    # One generation at a time, and never more resident than the budget.
    assert counter.runs == CLIENTS * PER_CLIENT and counter.max_active == 1
    assert studio.device.peak <= budget and sampler.max_seen <= budget and counter.max_placed <= budget
    assert studio.manager.max_resident_seen <= budget
    assert studio.device.ooms == 0
    alone = [others for model, others in counter.on_device if model == largest]
    assert alone and all(others == {largest} for others in alone), alone  # the largest run always had the device alone
    swaps = sum(1 for (a, _), (b, _) in zip(counter.on_device, counter.on_device[1:]) if a != b)
    most = max(studio.device.peak, sampler.max_seen, studio.manager.max_resident_seen)

    # Waiting jobs were told their place: in Gradio's queue (beyond the requests the studio lets in) and, inside
    # the studio's own queue, how many runs are ahead of them on the device.
    waited = {seed: max(r) for seed, r in ranks.items()}
    assert waited and max(waited.values()) >= 1, ranks
    assert studio_waits and max(max(r) for r in studio_waits.values()) >= 2, studio_waits
    reliability.note(f"{len(results)} of {CLIENTS * PER_CLIENT} requests served in {wall:.0f} s, each with its "
                     f"client's model, seed and prompt (0 swapped, 0 lost)")
    reliability.note(f"at most {counter.max_active} generation on the device at once; {swaps} model switches; "
                     f"{len(alone)} {largest} runs each with the device to itself")
    reliability.note(f"max resident {most / 1e6:.1f} MB of a {budget / 1e6:.1f} MB budget; 0 bytes over; 0 OOM")
    reliability.note(f"{len(waited)} jobs saw a queue rank, up to rank {max(waited.values())}"
                     + (f" of a queue of {max(sizes)}" if sizes else ""))
    reliability.note(f"{len(studio_waits)} jobs waited in the studio's queue, told up to "
                     f"{max(max(r) for r in studio_waits.values())} runs ahead")
