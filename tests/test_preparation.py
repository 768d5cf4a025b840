"""A family's one-time preparation before a model's first load (Family.preparation / prepare), in the manager,
the estimate and the plan: with a fake family whose preparation is a counter and whose model is one small module."""

from __future__ import annotations

import pytest

from studio.catalog import Catalog, Family, ModelSpec, Param, Preparation, SpeedPrior
from studio.device import CpuDevice
from studio.errors import Cancelled, ModelUnavailable
from studio.estimate import Calibration
from studio.manager import PipelineManager
from studio.run import Audio, RunContext

REPO = "test/prepared"
PEAK = 3 * 10**9
STAGE = "converting, once"


class _Model:
    def __init__(self) -> None:
        import torch

        self.layer = torch.nn.Linear(4, 4)

    def generate(self, request, ctx):
        import numpy as np

        ctx.progress(1, 1)
        return Audio(np.zeros(100, np.float32), 1000)

    def modules(self):
        return [self.layer]

    def move(self, torch_device):
        pass


def _catalog(state: dict) -> Catalog:
    def preparation(spec):
        return None if state["done"] else Preparation(stage=STAGE, summary="converts it once", io_bytes=2 * 10**9,
                                                      peak_bytes=PEAK)

    def prepare(spec, ctx):
        state["calls"] += 1
        ctx.stage(STAGE)
        for done in (1, 2):
            ctx.progress(done, 2)
            ctx.check()
        if state.get("fail"):
            raise ModelUnavailable("the checkpoint is damaged: download it again")
        state["done"] = True

    def load(spec, torch_device, dtype):
        assert state["done"], "loaded before it was prepared"
        return _Model()

    family = Family(name="prepared", load=load, work_units=lambda spec, request: 1.0,
                    working_bytes=lambda spec, request, nbytes: 1000, preparation=preparation, prepare=prepare,
                    libraries=("torch",))
    spec = ModelSpec(repo_id=REPO, family="prepared", tasks=("sfx",), label="Prepared", license="MIT", parameters=16,
                     sample_rate=1000, channels=1, max_duration=1.0, params=(Param("duration", float, 0.1, "s"),),
                     speed={"cpu": SpeedPrior(0.1, 0.1)}, unit="step")
    catalog = Catalog()
    catalog.register(family, [spec])
    return catalog


def _write_repo(folder) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    (folder / "config.json").write_text(json.dumps({"model_type": "test"}), encoding="utf-8")
    save_file({"weight": torch.zeros(4, 4)}, str(folder / "model.safetensors"))


@pytest.fixture
def setup(tmp_path):
    from huggingface_hub import constants

    from tests.tiny_models import install_repo

    install_repo(constants.HF_HOME, REPO, _write_repo)  # in the cache: its first load reads, not downloads
    state = {"done": False, "calls": 0}
    catalog = _catalog(state)
    manager = PipelineManager(catalog, CpuDevice(), reserve=0, calibration=Calibration(tmp_path / "calibration.json"))
    return state, catalog, manager


def test_a_preparation_runs_once_before_the_first_load_with_its_stage(setup):
    state, catalog, manager = setup
    request = catalog.make_request(REPO, "hum", seed=1)
    stages, progress = [], []
    manager.run(request, RunContext(on_stage=stages.append, on_progress=lambda d, t: progress.append((d, t))))
    assert stages[:5] == ["queued", "loading", STAGE, "loading", "generating"] and state["calls"] == 1
    assert progress[:2] == [(1, 2), (2, 2)]
    manager.unload(REPO)
    stages = []
    manager.run(request, RunContext(on_stage=stages.append))
    assert STAGE not in stages and state["calls"] == 1


def test_the_estimate_and_the_plan_count_it_until_it_is_done(setup):
    state, catalog, manager = setup
    request = catalog.make_request(REPO, "hum", seed=1)
    spec = catalog.get(REPO)
    before = manager.estimate_run(request)
    # 2 GB read plus written at the prior's 2 ms per MB, plus its fixed 2 s: 6 s, inside the load's time.
    assert before.prepare_seconds == pytest.approx(6.0) and before.load_seconds > before.prepare_seconds
    assert before.prepares == "converts it once" and "converts it once (~6.0 s)" in before.summary()
    assert manager.sizer.sizes(spec, request, "cpu").load_peak == PEAK  # RAM, where a CPU run's weights go
    assert manager.sizer.sizes(spec, request, "cuda").load_peak == 0  # not the accelerator's memory
    manager.run(request)
    manager.unload(REPO)
    after = manager.estimate_run(request)
    assert after.prepare_seconds == 0 and after.prepares == "" and "converts" not in after.summary()
    assert manager.sizer.sizes(spec, request, "cpu").load_peak == 0
    # The preparation's time was measured and teaches the next estimate (here: a machine that prepared in ms).
    assert manager.timer.prepare_seconds("prepared", 2 * 10**9) < 6.0


def test_a_plan_that_cannot_hold_the_preparation_does_not_fit(setup):
    state, catalog, manager = setup
    request = catalog.make_request(REPO, "hum", seed=1)
    from studio.planner import DeviceView, Need, plan

    sizes = manager.sizer.sizes(catalog.get(REPO), request, "cpu")
    cpu = DeviceView(key="cpu", budget=PEAK - 1, used=0, accelerator=False, offload=False, separate_memory=False)
    assert not plan(Need(model=REPO, on_device=sizes, on_cpu=sizes, host_room=PEAK - 1), (), (cpu,)).fits
    roomy = DeviceView(key="cpu", budget=PEAK, used=0, accelerator=False, offload=False, separate_memory=False)
    assert plan(Need(model=REPO, on_device=sizes, on_cpu=sizes, host_room=PEAK), (), (roomy,)).fits


def test_a_failed_or_cancelled_preparation_loads_nothing(setup):
    state, catalog, manager = setup
    request = catalog.make_request(REPO, "hum", seed=1)
    state["fail"] = True
    with pytest.raises(ModelUnavailable, match="damaged: download it again"):
        manager.run(request)
    assert manager.memory().models == () and not state["done"]
    state["fail"] = False
    ctx = RunContext()
    ctx.on_progress = lambda done, total: ctx.cancel.set()
    with pytest.raises(Cancelled):
        manager.run(request, ctx)
    assert manager.memory().models == () and not state["done"]


def test_preparation_and_prepare_come_together():
    with pytest.raises(ValueError, match="preparation and prepare come together"):
        Family(name="half", load=None, work_units=None, working_bytes=None, preparation=lambda spec: None)
