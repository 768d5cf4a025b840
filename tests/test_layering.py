"""Dependencies point one way (app -> studio.ui -> studio core <- models), heavy libraries load lazily,
and the catalog that models/ fills is consistent."""

from __future__ import annotations

import ast
import collections
import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studio.catalog import TASKS, Catalog, ModelSpec

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "diffusers", "accelerate")

# --------------------------------------------------------------------------------------------
# Static: what each layer's source imports
# --------------------------------------------------------------------------------------------


def imported_modules(source: str, filename: str = "<source>") -> set[str]:
    """Every module name `source` imports: import x.y, from x import y, importlib.import_module("x"), __import__("x").

    Relative imports (`from . import x`) stay inside their package and are left out.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
    return found


def _is_under(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def violations(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for path in sorted(folder.rglob("*.py")):
        for module in sorted(imported_modules(path.read_text(encoding="utf-8"), str(path))):
            if _is_under(module, forbidden):
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    return problems


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import gradio", {"gradio"}),
        ("import gradio as gr", {"gradio"}),
        ("import os, gradio.themes", {"os", "gradio.themes"}),
        ("from gradio import Blocks", {"gradio", "gradio.Blocks"}),
        ("from gradio.components import Audio", {"gradio.components", "gradio.components.Audio"}),
        ("import importlib\nimportlib.import_module('gradio')", {"importlib", "gradio"}),
        ("from importlib import import_module\nimport_module('torch.cuda')", {"importlib", "importlib.import_module",
                                                                             "torch.cuda"}),
        ("__import__('transformers')", {"transformers"}),
        ("def f():\n    import torch\n", {"torch"}),  # lazy imports count too: they still run in that layer
        ("if TYPE_CHECKING:\n    from diffusers import X\n", {"diffusers", "diffusers.X"}),
        ("from . import sibling", set()),
    ],
)
def test_the_import_scanner_sees_every_form(source, expected):
    assert imported_modules(source) == expected


def test_forbidden_matching_is_by_package_not_prefix():
    assert _is_under("gradio.components", ("gradio",))
    assert _is_under("gradio", ("gradio",))
    assert not _is_under("gradio_client", ("gradio",))
    assert not _is_under("torchaudio", ("torch",))


def test_models_never_import_gradio_or_the_ui():
    files = list((ROOT / "models").rglob("*.py"))
    assert len(files) >= 3, "models/ should hold the model family modules"
    assert violations(ROOT / "models", ("gradio", "studio.ui")) == []


def test_ui_never_imports_heavy_libraries():
    ui = ROOT / "studio" / "ui"
    if not ui.is_dir():
        pytest.skip("studio/ui does not exist yet")
    assert list(ui.rglob("*.py")), "studio/ui exists but holds no modules"
    assert violations(ui, HEAVY) == []


# --------------------------------------------------------------------------------------------
# Dynamic: the core and the catalog load without torch
# --------------------------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, sys
    import studio.catalog, studio.settings, studio.estimate, studio.manager, studio.service
    from studio.catalog import Catalog
    catalog = Catalog.discover("models")
    print(json.dumps({"specs": len(list(catalog)),
                      "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
    """
) % (HEAVY,)


def _probe_heavy_imports() -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_and_catalog_import_no_heavy_library():
    result = _probe_heavy_imports()
    assert result["specs"] > 0, "the probe should have discovered the catalog"
    roots = sorted({m.split(".")[0] for m in result["heavy"]})
    assert roots == [], f"imported at start-up (should wait until a model is needed): {roots}"


def test_the_probe_would_see_torch():
    # Guards the test above against passing vacuously, e.g. if sys.modules were inspected in the wrong process.
    proc = subprocess.run([sys.executable, "-c", "import torch\n" + _PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "torch" in json.loads(proc.stdout.strip().splitlines()[-1])["heavy"]


# --------------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------------

REQUIRED = (
    "facebook/musicgen-small",
    "facebook/musicgen-medium",
    "facebook/musicgen-large",
    "facebook/musicgen-melody",
    "facebook/musicgen-stereo-small",
    "suno/bark-small",
    "suno/bark",
    "facebook/mms-tts-eng",
)


def _family_modules():
    import models

    for info in sorted(pkgutil.iter_modules(models.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"models.{info.name}")
        if hasattr(module, "SPECS") and hasattr(module, "FAMILY"):
            yield module


def test_no_repo_id_is_declared_twice():
    # Read SPECS straight from the modules: the catalog's dict could not show a duplicate.
    ids = [spec.repo_id for module in _family_modules() for spec in module.SPECS]
    assert len(ids) >= len(REQUIRED)
    duplicates = [repo for repo, n in collections.Counter(ids).items() if n > 1]
    assert duplicates == []


def test_registering_a_repo_id_twice_is_refused(catalog):
    spec = catalog.get("facebook/musicgen-small")
    fresh = Catalog()
    fresh.register(catalog.family(spec), [spec])
    with pytest.raises(ValueError, match="musicgen-small"):
        fresh.register(catalog.family(spec), [spec])


def test_family_names_are_unique_across_modules():
    names = [module.FAMILY.name for module in _family_modules()]
    assert len(names) == len(set(names)), names


def test_required_models_are_in_the_catalog(catalog):
    missing = [repo for repo in REQUIRED if repo not in catalog]
    assert missing == []


def test_catalog_holds_every_declared_spec(catalog):
    declared = {spec.repo_id for module in _family_modules() for spec in module.SPECS}
    assert set(catalog.ids()) == declared


def _specs() -> list[ModelSpec]:
    return list(Catalog.discover("models"))


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: s.repo_id)
def test_spec_is_consistent(spec, catalog):
    family = catalog.family(spec)  # raises KeyError when the family was never registered
    assert family.name == spec.family
    assert spec.tasks and all(task in TASKS for task in spec.tasks), spec.tasks
    assert "cpu" in spec.speed, "speed_prior falls back to the CPU figure, so every spec needs one"
    assert spec.parameters > 0 and spec.sample_rate > 0 and spec.channels in (1, 2)
    names = [p.name for p in spec.params]
    assert len(names) == len(set(names)), f"a setting is declared twice: {names}"
    # The CLI and UI decide "has a duration" from the duration Param; the spec's max must agree with it.
    duration = spec.param("duration")
    if spec.max_duration is None:
        assert duration is None
    else:
        assert duration is not None and duration.maximum == spec.max_duration


@pytest.mark.parametrize("spec", _specs(), ids=lambda s: s.repo_id)
def test_every_param_default_passes_its_own_validation(spec):
    for param in spec.params:
        if param.is_audio:  # a clip has no default; one that is not required may be left out
            assert param.default is None and param.minimum is not None and param.maximum is not None, param
            assert param.required or param.validate(None, model=spec.repo_id) is None, param.name
            continue
        assert param.kind in (int, float, str, bool), param
        assert isinstance(param.default, param.kind) or (param.kind is float and type(param.default) is int), param
        assert param.validate(param.default, model=spec.repo_id) == param.default, param.name
        if param.minimum is not None and param.maximum is not None:
            assert param.minimum <= param.maximum, param.name
        if param.choices is not None:
            assert param.default in param.choices, param.name
    voice = spec.param("voice")
    if voice is not None and spec.voices:
        assert voice.default in spec.voices, "the default voice should be one of the published presets"
    elif voice is not None:  # a model that clones and has no presets: the Voice is a saved voice, none by default
        assert voice.default == "" and spec.param("audio") is not None, voice
