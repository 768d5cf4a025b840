"""A test-only speech model that hands on its sentences one by one and waits for the test between them.

"Talker (test)" speaks each sentence of its text as a 0.25 s tone at 16 kHz and hands it on (RunContext.audio) as
soon as it is made, as a streaming speech adapter does; before each further sentence it waits until the test opens
`GATE` (checking for cancel every few milliseconds, as a step would), so a test can hold a run between its first and
second piece for as long as it needs. Registered into a catalog built in the test (`catalog_with_talker`), never into
the product's; its repo is installed into the tests' HF cache (`install`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from studio.catalog import Catalog, Family, ModelSpec, Request, SpeedPrior
from studio.errors import Cancelled
from studio.run import Audio, RunContext

TALKER = "studio-tests/talker"
RATE = 16000
SENTENCE_S = 0.25


class Gate:
    """What the test holds: `open` lets the talker go on past its first sentence; `stopped` says the run ended and
    how (None: it finished; "cancelled")."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.outcome: str | None = None

    def reset(self) -> None:
        self.__init__()


GATE = Gate()


def sentences(text: str) -> list[str]:
    return [part.strip() for part in text.replace("!", ".").replace("?", ".").split(".") if part.strip()]


def work_units(spec: ModelSpec, request: Request) -> float:
    return float(len(sentences(request.prompt)))


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    return int(work_units(spec, request) * SENTENCE_S * RATE * 4 * 2)


class Talker:
    def __init__(self) -> None:
        import torch

        self.layer = torch.nn.Linear(4, 4)

    def generate(self, request: Request, ctx: RunContext) -> Audio:
        parts = sentences(request.prompt)
        t = np.arange(int(SENTENCE_S * RATE), dtype=np.float32) / RATE
        pieces = []
        GATE.started.set()
        try:
            for number, _ in enumerate(parts):
                while number and not GATE.open.wait(0.005):
                    ctx.check()
                ctx.check()
                piece = (0.3 * np.sin(2 * np.pi * (200 + 40 * number) * t)).astype(np.float32)
                pieces.append(piece)
                ctx.audio(piece, RATE)
                ctx.progress(number + 1, len(parts))
        except Cancelled:
            GATE.outcome = "cancelled"
            raise
        finally:
            GATE.stopped.set()
        return Audio(np.concatenate(pieces), RATE, {})

    def modules(self) -> list:
        return [self.layer]

    def move(self, torch_device: str) -> None:
        self.layer.to(torch_device)


def load(spec: ModelSpec, torch_device: str, dtype: str) -> Talker:
    model = Talker()
    model.move(torch_device)
    return model


SPECS = (ModelSpec(repo_id=TALKER, family="talker_test", tasks=("speech",), label="Talker (test)", license="MIT",
                   parameters=20, sample_rate=RATE, channels=1, max_duration=None, params=(),
                   speed={"cpu": SpeedPrior(0.1, 0.01)}, unit="sentence", max_prompt_chars=500,
                   description="A test model that streams a tone per sentence."),)
FAMILY = Family(name="talker_test", load=load, work_units=work_units, working_bytes=working_bytes,
                precisions=("float32",), preferred_dtypes={"cuda": "float32", "mps": "float32", "cpu": "float32"},
                libraries=("torch",))


def catalog_with_talker() -> Catalog:
    catalog = Catalog.discover("models")
    catalog.register(FAMILY, SPECS)
    return catalog


def install(hf_home: Path) -> None:
    from safetensors.numpy import save_file

    from tests.tiny_models import install_repo

    def build(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps({"model_type": "talker_test"}))
        save_file({"layer.weight": np.zeros((4, 4), np.float32), "layer.bias": np.zeros(4, np.float32)},
                  str(folder / "model.safetensors"))

    install_repo(hf_home, TALKER, build)
