"""Devices: 'auto' is decided lazily (no torch at start); the simulated device enforces its byte budget."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from studio.device import CpuDevice, Devices, SimulatedDevice, is_out_of_memory, pick_devices
from studio.errors import InvalidInput
from studio.settings import Settings
from tests.conftest import ROOT

MB = 1024**2


def test_auto_device_does_not_import_torch_until_asked():
    code = (
        "import sys\n"
        "from studio.settings import Settings\n"
        "from studio.device import pick_devices\n"
        "devices = pick_devices(Settings())\n"
        "assert 'torch' not in sys.modules, 'torch imported at start'\n"
        "print(devices[0].kind, devices[0].name)\n"
        "assert 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] in ("cpu", "cuda", "mps")


def test_deferred_devices_decide_once_and_warm_up_decides_in_the_background():
    calls = []

    def choose():
        calls.append(1)
        return [CpuDevice()]

    devices = Devices(choose)
    assert calls == [] and not devices.resolved
    devices.warm_up().join(timeout=30)
    assert calls == [1] and devices.resolved
    assert devices[0].kind == "cpu" and devices[0].reading().total > 0 and len(devices) == 1
    assert calls == [1]


def test_explicit_cuda_without_cuda_fails_at_start():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidInput, match="--device cuda was asked for but torch finds no CUDA"):
        pick_devices(Settings(device="cuda"))


def test_simulated_device_raises_torch_oom_past_its_capacity():
    device = SimulatedDevice(100 * MB)
    device.place("a", 60 * MB)
    with pytest.raises(torch.OutOfMemoryError) as info:
        device.place("b", 50 * MB)
    assert is_out_of_memory(info.value)
    assert device.placed_bytes() == 60 * MB  # the failed placement left nothing behind
    device.place("a", 90 * MB)  # replacing a tag counts only the new size
    assert device.peak == 90 * MB
    device.occupy(20 * MB)
    assert device.reading().free == 100 * MB - 20 * MB - 90 * MB
    with pytest.raises(torch.OutOfMemoryError):
        with device.working("run", 1):
            pass


def test_simulated_working_memory_is_released_after_a_run_even_on_error():
    device = SimulatedDevice(100 * MB)
    with pytest.raises(RuntimeError):
        with device.working("run", 10 * MB):
            assert device.placed_bytes() == 10 * MB
            raise RuntimeError("boom")
    assert device.placed_bytes() == 0


def test_pick_devices_honours_the_simulated_setting():
    (device,) = pick_devices(Settings(simulated_memory=2 * 10**9))
    assert isinstance(device, SimulatedDevice) and device.capacity == 2 * 10**9
    assert device.compute_kind == "cpu" and device.torch_device == "cpu"


def test_a_list_of_simulated_sizes_makes_one_device_per_size_with_distinct_keys():
    devices = pick_devices(Settings(simulated_memory=(4 * 10**9, 2 * 10**9)))
    assert [d.capacity for d in devices] == [4 * 10**9, 2 * 10**9]
    assert [d.key for d in devices] == ["sim:0", "sim:1"]
    assert [d.name for d in devices] == ["Simulated GPU 0 (4.0 GB)", "Simulated GPU 1 (2.0 GB)"]


@pytest.mark.parametrize("env, device, expected", [
    ({}, "cpu", 1), ({}, "mps", 1), ({}, "cuda:0,cuda:2", 2), ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, "auto", 3),
    ({"CUDA_VISIBLE_DEVICES": "1,-1,0"}, "auto", 1), ({"CUDA_VISIBLE_DEVICES": ""}, "auto", 1),
])
def test_the_device_count_is_known_before_torch_is_imported(monkeypatch, env, device, expected):
    from studio.device import expected_device_count

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert expected_device_count(Settings(device=device)) == expected
    assert expected_device_count(Settings(device="auto", simulated_memory=(1, 2, 3))) == 3


def test_explicit_cuda_devices_that_torch_does_not_see_are_refused_at_start():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidInput, match=r"--device cuda:0,cuda:1 names cuda:0, but torch sees 0 CUDA device"):
        pick_devices(Settings(device="cuda:0,cuda:1"))
