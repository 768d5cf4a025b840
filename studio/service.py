"""The studio's one path from a request to a finished file: validate, run through the manager, export, describe."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from studio import __version__
from studio.audio import check_format, output_path, remove_abandoned_writes, write_audio
from studio.catalog import Catalog, Request, text_key
from studio.compiling import CompilePolicy
from studio.clips import store_clip
from studio.device import Device, Devices, expected_device_count, pick_devices
from studio.errors import StudioError
from studio.estimate import Calibration, Estimate
from studio.precision_probe import PrecisionSpeeds
from studio.history import History
from studio.manager import PipelineManager
from studio.run import RunContext
from studio.settings import Settings
from studio.user_models import catalog_for
from studio.voices import VoiceLibrary, clone_marks

log = logging.getLogger(__name__)


@dataclass
class Generation:
    path: Path
    metadata: dict[str, Any]
    history_id: int | None = None  # None if the history has no row for it yet (the file is written all the same)


class Studio:
    """Owns the catalog, the device and the one PipelineManager; the CLI and the web app both go through it."""

    def __init__(self, settings: Settings, *, catalog: Catalog | None = None,
                 device: Device | Sequence[Device] | Devices | None = None, manager: PipelineManager | None = None,
                 history: History | None = None) -> None:
        self.settings = settings
        self.history = history if history is not None else History(settings.history_db, settings.output_dir)
        remove_abandoned_writes(settings.output_dir)  # temporaries and placeholders of a run killed while saving
        # The models/ package's, with the repos the user adds (flags, <output-dir>/models.json), knowing the voices
        # saved in <output-dir>/voices (`voice="my-voice"`).
        models = catalog or catalog_for(settings)
        self.voices = VoiceLibrary(settings.output_dir, models)
        self.catalog = models.with_voice_library(self.voices)
        self.manager = manager or PipelineManager(
            self.catalog, device if device is not None else pick_devices(settings),
            calibration=Calibration(settings.calibration_file),
            budget_cap=settings.memory_budget,
            reserve=settings.memory_reserve,
            speeds=PrecisionSpeeds(settings.precision_probe_file) if settings.precision_probe else None,
            compile_policy=CompilePolicy.from_environment(settings.compile),
        )
        if isinstance(settings.memory_budget, tuple):
            # One budget per device: check the count now, even if that means deciding 'auto' (importing torch)
            # before the page is served; a mismatch found later would fail every memory reading on the page.
            settings.budget_caps(len(self.devices))

    @property
    def device(self) -> Device:
        """The first device (the only one on most machines)."""
        return self.manager.device

    @property
    def devices(self) -> Devices:
        return self.manager.devices

    def run_slots(self) -> int:
        """How many generations may run at once: one per device."""
        return len(self.devices) if self.devices.resolved else expected_device_count(self.settings)

    def request(self, task: str | None, model: Any, prompt: Any, *, seed: Any = None,
                params: Mapping[str, Any] | None = None) -> Request:
        return self.catalog.make_request(model, prompt, task=task, seed=seed, params=params)

    def estimate(self, request: Request) -> Estimate:
        return self.manager.estimate_run(request)

    def keep_inputs(self, request: Request) -> Request:
        """The request with each audio input stored in the output folder (once per clip), as its metadata names it."""
        clips = request.clips()
        if not clips:
            return request
        stored = {name: store_clip(clip, self.settings.output_dir) for name, clip in clips.items()}
        return replace(request, params={**request.params, **stored})

    def generate(self, request: Request, *, fmt: str = "wav", out: Path | None = None,
                 ctx: RunContext | None = None, metadata: Mapping[str, Any] | None = None) -> Generation:
        """Run `request` and write the result to `out` (or a fresh name in the output directory); `metadata` is
        added to the result's (e.g. `source: "api"` for a request of the OpenAI-compatible endpoint)."""
        fmt = check_format(fmt)
        ctx = ctx or RunContext()
        started = time.monotonic()
        request = self.keep_inputs(request)
        result = self.manager.run(request, ctx)
        ctx.stage("saving")
        spec = self.catalog.get(request.model)
        audio = result.audio
        extra = dict(metadata or {})
        metadata: dict[str, Any] = {
            "model": spec.repo_id,
            "task": request.task,
            text_key(request.task): request.prompt,
            "seed": request.seed,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "duration": round(audio.duration, 4),
            "elapsed_s": round(time.monotonic() - started, 3),
            "generate_s": round(result.compute_s, 3),
            "load_s": round(result.load_s, 3),
            "estimated_s": round(result.estimate.seconds, 3),
            "estimated_bytes": result.estimate.bytes,
            "peak_bytes": result.peak_bytes,
            "settings": request.settings(),
            "format": fmt,
            "device": result.device,
            "placement": result.placement,
            "dtype": result.dtype,
            "recoveries": result.recoveries,
            "license": spec.license,
            "studio_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if request.clips():
            metadata["inputs"] = {name: clip.describe() for name, clip in request.clips().items()}
        metadata.update(clone_marks(request))  # a cloned voice says so: which, from where, the owner's consent
        metadata.update(audio.info.get("metadata", {}))  # what the adapter says of the result (a partial extend)
        metadata.update(extra)
        if out is None:
            path = output_path(self.settings.output_dir, task=request.task, model_id=spec.repo_id,
                               seed=request.seed, prompt=request.prompt, ext=fmt)
        else:
            path = Path(out)
        metadata["file"] = path.name
        write_audio(path, audio.samples, audio.sample_rate, fmt, metadata)
        log.info("wrote %s (%.1f s of audio in %.1f s)", path, audio.duration, metadata["elapsed_s"])
        history_id = None
        try:
            # None while the database is held by another process: the row is then written in the background.
            item = self.history.record(path, metadata)
            history_id = item.id if item is not None else None
        except StudioError as error:  # the file is safe on disk; the next start indexes it from its sidecar
            log.error("%s was written but not added to the history: %s", path, error)
        except Exception:
            log.exception("%s was written but not added to the history", path)
        metadata["history_id"] = history_id
        return Generation(path=path, metadata=metadata, history_id=history_id)
