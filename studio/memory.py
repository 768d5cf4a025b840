"""What /memory returns, typed: totals over the devices, one row per model, and the same per device."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True)
class ModelRow:
    id: str
    label: str
    state: str
    bytes: int  # weights while loaded, else 0
    placement: str | None
    dtype: str | None
    pinned: bool
    last_used: float | None  # epoch seconds
    device: str | None  # the name of the device holding it


@dataclass(frozen=True, kw_only=True)
class DeviceRow:
    name: str
    kind: str
    total_bytes: int
    budget_bytes: int
    used_bytes: int
    models: tuple[ModelRow, ...]


@dataclass(frozen=True, kw_only=True)
class MemorySnapshot:
    """What /memory returns: totals over the devices, one row per model, and the same per device."""

    device: str
    device_kind: str
    total_bytes: int
    budget_bytes: int
    used_bytes: int
    ram_bytes: int
    models: tuple[ModelRow, ...]
    devices: tuple[DeviceRow, ...]

    def to_dict(self) -> dict:
        return asdict(self) | {"models": [asdict(m) for m in self.models],
                               "devices": [asdict(d) | {"models": [asdict(m) for m in d.models]} for d in self.devices]}
