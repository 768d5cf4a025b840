"""Devices: 'auto' is decided lazily (no torch at start); the simulated device enforces its byte budget."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from studio.device import CpuDevice, DeferredDevice, SimulatedDevice, is_out_of_memory, pick_device
from studio.errors import InvalidInput
from studio.settings import Settings
from tests.conftest import ROOT

MB = 1024**2


def test_auto_device_does_not_import_torch_until_asked():
    code = (
        "import sys\n"
        "from studio.settings import Settings\n"
        "from studio.device import pick_device\n"
        "device = pick_device(Settings())\n"
        "assert 'torch' not in sys.modules, 'torch imported at start'\n"
        "print(device.kind, device.name)\n"
        "assert 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] in ("cpu", "cuda", "mps")


def test_deferred_device_decides_once_and_warm_up_decides_in_the_background():
    calls = []

    def choose():
        calls.append(1)
        return CpuDevice()

    device = DeferredDevice(choose)
    assert calls == []
    device.warm_up().join(timeout=30)
    assert calls == [1]
    assert device.kind == "cpu" and device.reading().total > 0
    assert calls == [1]


def test_explicit_cuda_without_cuda_fails_at_start():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidInput, match="--device cuda was asked for but torch finds no CUDA"):
        pick_device(Settings(device="cuda"))


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


def test_pick_device_honours_the_simulated_setting():
    device = pick_device(Settings(simulated_memory=2 * 10**9))
    assert isinstance(device, SimulatedDevice) and device.capacity == 2 * 10**9
    assert device.compute_kind == "cpu" and device.torch_device == "cpu"
