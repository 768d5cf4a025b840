"""The compiled decoder (issue 17, part 2): MusicGen's per-token step (and Bark's semantic and coarse stages') under
torch.compile with a static KV cache,
compiled in the background after a load while eager runs serve, the same audio as eager, and the estimate naming
the path. The tiny checkpoint compiles with Inductor in about 30 s on two cores, so only one test pays for that; the
others trace with Dynamo and run without Inductor (STUDIO_COMPILE_BACKEND=eager), which checks the same seams:
no graph break per layer, the static cache, the step's inputs."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from studio.compiling import COMPILED_PATH, COMPILING_PATH, CompilePolicy

MUSIC = "facebook/musicgen-small"
MELODY = "facebook/musicgen-melody"
BARK = "suno/bark-small"


def _compiling_studio(make_studio, monkeypatch, backend: str, tmp_path):
    """A CPU studio that compiles after every load (with `backend`), its compile cache in tmp_path."""
    from studio import manager as manager_module

    monkeypatch.setattr(manager_module, "PROBE_IDLE_S", 0.05)
    monkeypatch.setenv("STUDIO_COMPILE_BACKEND", backend)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    studio = make_studio()
    studio.manager.compile_policy = CompilePolicy.from_environment("on")  # "auto" compiles int8 only
    return studio


def _music(studio, precision: str, seconds: float = 0.5, **params):
    request = studio.request("music", MUSIC, "a compiled tune", seed=7,
                             params={"duration": seconds, "precision": precision, **params})
    return request, studio.manager.run(request)


def _held_warm_ups(monkeypatch):
    """Every warm-up waits, once it has begun, until the test sets `release`: (entered, release, the real warm_up)."""
    from models import compiled as compiled_module

    entered, release = threading.Event(), threading.Event()
    real_warm_up = compiled_module.DecodeCompiler.warm_up

    def held_warm_up(self, run):
        entered.set()
        release.wait(60)
        return real_warm_up(self, run)

    monkeypatch.setattr(compiled_module.DecodeCompiler, "warm_up", held_warm_up)
    return entered, release, real_warm_up


def test_the_policy_compiles_where_the_bench_measured_it_pays(monkeypatch):
    monkeypatch.delenv("STUDIO_COMPILE", raising=False)
    auto = CompilePolicy.from_environment()
    assert auto.mode == "auto" and auto.applies("musicgen", "cpu", "int8")
    assert auto.applies("musicgen_melody", "cpu", "int8") and not auto.applies("musicgen_melody", "cpu", "bfloat16")
    # Measured not to pay (bfloat16 on a CPU: 1.01x), or not measured (GPUs): eager unless STUDIO_COMPILE=on.
    assert not auto.applies("musicgen", "cpu", "bfloat16") and not auto.applies("musicgen", "cuda", "float16")
    assert not auto.applies("musicgen", "mps", "int8")
    assert not auto.applies("bark", "cpu", "int8")  # 1.05x compiled, after half a minute of compiling: not worth it
    assert CompilePolicy.from_environment("on").applies("bark", "cuda", "float16")
    assert not CompilePolicy.from_environment("0").applies("musicgen", "cpu", "int8")
    assert CompilePolicy.from_environment("sometimes").mode == "auto"  # an unknown mode is warned about, not fatal
    monkeypatch.setenv("STUDIO_CUDA_GRAPHS", "1")
    graphs = CompilePolicy.from_environment("on")
    assert graphs.compile_mode("cuda") == "reduce-overhead" and graphs.compile_mode("cpu") is None
    monkeypatch.delenv("STUDIO_CUDA_GRAPHS")
    assert CompilePolicy.from_environment("on").compile_mode("cuda") is None  # off until verified on a GPU
    # Where some model may compile: what the studio prepares torch's compiler for, while idle
    assert auto.may_apply("cpu") and not auto.may_apply("cuda") and not auto.may_apply("mps")
    assert CompilePolicy.from_environment("on").may_apply("cuda")
    assert not CompilePolicy.from_environment("off").may_apply("cpu")


def test_the_compile_cache_is_the_studios_folder_unless_the_user_set_one(monkeypatch, tmp_path, catalog):
    # torch puts its own default (a folder in /tmp, which many systems empty at boot) into the environment when Dynamo
    # is imported, which transformers' model modules do: the compiled kernels and traces went there, not to
    # HF_HOME/audio-studio-compiled. The studio sets its folder when it is made, before any model loads.
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from studio.device import CpuDevice
    from studio.manager import PipelineManager

    def manager(mode: str, folder: str) -> None:
        PipelineManager(catalog, CpuDevice(), compile_policy=CompilePolicy(mode=mode, cache_dir=tmp_path / folder))

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    manager("off", "never")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # compiling off: torch's default, if anything compiles
    manager("auto", "studio")
    assert cache_dir() == str(tmp_path / "studio")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    manager("on", "studio")
    assert cache_dir() == str(tmp_path / "mine")
    # A folder that cannot be made (here: a file is in the way) leaves torch's default; the studio starts all the same
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    (tmp_path / "a file").write_text("not a folder")
    manager("auto", "a file/compiled")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


@pytest.mark.parametrize("mode, backend, saved, prepared", [
    ("auto", "inductor", True, ["cpu"]),
    ("auto", "inductor", False, []),  # nothing compiled on this machine yet: the first compile prepares for itself
    ("off", "inductor", True, []),
    ("on", "eager", True, []),
])
def test_a_studio_that_compiled_before_prepares_torchs_compiler_while_idle(make_studio, monkeypatch, tmp_path, mode,
                                                                             backend, saved, prepared):
    # Importing Inductor and picking the CPU's vector instructions took 1.8 s of a second process's compile of
    # musicgen-small: a studio that has compiled on this machine before (a saved trace in its compile cache) does it
    # after its warm-up's imports, once no run goes, and never while one goes.
    from studio import compiling
    from studio import manager as manager_module

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "compiled"))
    if saved:
        (tmp_path / "compiled" / "dynamo" / "a_saved_trace").mkdir(parents=True)

    monkeypatch.setattr(manager_module, "PROBE_IDLE_S", 0.05)
    calls, done = [], threading.Event()

    def prepare_compiler(kind, cache_dir=None):
        calls.append((kind, sorted(studio.manager._busy)))
        done.set()
        return 0.0

    monkeypatch.setattr(compiling, "prepare_compiler", prepare_compiler)
    monkeypatch.setenv("STUDIO_COMPILE_BACKEND", backend)
    studio = make_studio()
    studio.manager.compile_policy = CompilePolicy.from_environment(mode)
    studio.manager._busy.add("a run")  # a run goes: the preparation waits for it
    studio.manager.warm_up().join(timeout=60)
    assert not done.wait(0.5) and calls == []
    studio.manager._busy.discard("a run")
    with studio.manager._slots:
        studio.manager._slots.notify_all()
    assert done.wait(10 if prepared else 1) == bool(prepared)
    assert calls == [(kind, []) for kind in prepared]


@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_compiled_runs_make_the_eager_audio_and_the_estimate_names_the_path(make_studio, monkeypatch, tmp_path,
                                                                            precision):
    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    request, eager = _music(studio, precision)  # loads, and schedules the compile for when the device is idle
    assert manager.compile_done(MUSIC, 120)
    assert manager.decode_path(MUSIC) == COMPILED_PATH
    model = manager._entries[MUSIC].model
    assert model.compiler.ready and model.compiler.compile_s > 0

    before = model.compiler.compiled_steps
    assert manager.estimate_run(request).decoder == COMPILED_PATH
    assert COMPILED_PATH in manager.estimate_run(request).summary()
    _, compiled = _music(studio, precision)
    assert model.compiler.compiled_steps > before, "the run did not decode through the compiled step"
    # Same seed, same tokens: the compiled step computes the same function (rounding aside: tiny weights keep the
    # sampled tokens the same).
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)
    # Its time is learnt apart from eager runs.
    keys = [key for key in manager.calibration._runs if key.endswith("+compiled")]
    assert keys and precision in keys[0]


@pytest.mark.parametrize("follows", ["a melody", "the text alone"])
def test_musicgen_melody_decodes_through_the_compiled_step_and_makes_the_eager_audio(make_studio, monkeypatch,
                                                                                     tmp_path, follows):
    """MusicGen melody has no cross-attention: the chroma (a clip's, or one-hot C frames without one) and the text sit
    in its decoder's cache as a prefix ahead of the music, so the compiled step's cache and window count it."""
    import soundfile as sf

    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    params = {"duration": 0.5, "precision": "int8"}
    if follows == "a melody":
        rate = 32000
        t = np.arange(2 * rate) / rate
        sf.write(tmp_path / "riff.wav", (0.4 * np.sin(2 * np.pi * (220 + 110 * t) * t)).astype(np.float32), rate)
        params["audio"] = str(tmp_path / "riff.wav")
    request = studio.request("music", MELODY, "a compiled tune that follows", seed=7, params=params)
    eager = manager.run(request)
    assert manager.compile_done(MELODY, 120) and manager.decode_path(MELODY) == COMPILED_PATH, \
        manager.decode_path(MELODY)
    compiler = manager._entries[MELODY].model.compiler
    before = compiler.compiled_steps
    assert manager.estimate_run(request).decoder == COMPILED_PATH
    compiled = manager.run(request)
    assert compiler.compiled_steps > before, "the run did not decode through the compiled step"
    assert ("melody_s" in compiled.audio.info) == (follows == "a melody")
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)
    # Its trace was saved for a later process (a trace torch cannot save is compiled for the process alone). A later
    # process loads only an Inductor trace: checked by hand with Inductor (it loaded and made the eager audio), not
    # here, to keep the suite to one Inductor compile.
    assert compiler.precompile and any((tmp_path / "inductor" / "dynamo").iterdir())


def test_auto_knows_musicgen_melody_apart_from_the_other_sizes(make_studio, monkeypatch, tmp_path):
    """MusicGen melody (twice musicgen-small's layers, a prefix in place of cross-attention) is measured apart: `auto`
    compiles it where the bench measured melody, not wherever it measured musicgen-small."""
    from studio import compiling
    from studio.compiling import EAGER_PATH

    assert ("musicgen_melody", "cpu", "int8") in compiling.PAYS  # measured 1.31x (docs/benchmarks.md)
    monkeypatch.setattr(compiling, "PAYS", {("musicgen", "cpu", "int8")})  # as if only musicgen-small were measured
    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    studio.manager.compile_policy = CompilePolicy.from_environment("auto")
    studio.manager.run(studio.request("music", MELODY, "an eager tune", seed=7,
                                      params={"duration": 0.5, "precision": "int8"}))
    assert studio.manager.compile_done(MELODY, 5) and studio.manager.decode_path(MELODY) == EAGER_PATH
    assert studio.manager._entries[MELODY].model.compiler is None


def test_a_compiled_step_reads_the_written_part_of_the_cache_and_a_longer_run_compiles_nothing(
        make_studio, monkeypatch, tmp_path):
    """A static cache is as long as the run; a step's attention reads what is written, rounded up to WINDOW_STEP
    (the rest is masked): the window, the cache's and the text's lengths are symbolic sizes of the one graph the
    warm-up makes, so a new window or a longer run compiles no graph of its own."""
    import torch
    from torch._dynamo.utils import counters

    from models import compiled as compiled_module

    torch._dynamo.reset()  # graphs an earlier test left for the same code would serve this model's steps
    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    before = counters["stats"]["unique_graphs"]
    _, eager = _music(studio, "int8", 1.0)
    assert manager.compile_done(MUSIC, 120) and manager.decode_path(MUSIC) == COMPILED_PATH
    # The run's and the text's lengths are symbolic from the first trace: the warm-up's two calls made one graph.
    assert counters["stats"]["unique_graphs"] - before == 1
    seen = []
    real_set_window = compiled_module.set_window

    def watched(cache, last, mark=True):
        real_set_window(cache, last, mark)
        layer = cache.layers[0]
        seen.append((last, int(layer.cumulative_length), layer.window.shape[0], layer.max_cache_len))

    monkeypatch.setattr(compiled_module, "set_window", watched)
    graphs = counters["stats"]["unique_graphs"]
    _, compiled = _music(studio, "int8", 1.0)
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)
    assert seen and all(last == written for last, written, _, _ in seen)  # the new token goes where the cache ends
    assert all(last < window <= last + compiled_module.WINDOW_STEP and window < length
               for last, _, window, length in seen)  # never the whole cache: Inductor would compile a second graph
    assert seen[0][2] < seen[0][3] and len({window for _, _, window, _ in seen}) > 2  # the windows grew with the run
    _music(studio, "int8", 1.5)  # longer: a longer cache, more windows
    # A continuation: the clip's frames are in the cache before the first compiled step, and every window holds them.
    import soundfile

    clip = tmp_path / "clip.wav"
    soundfile.write(clip, 0.3 * np.sin(np.linspace(0, 440 * 2 * np.pi, 32000)).astype(np.float32), 32000)
    seen.clear()
    model_steps = manager._entries[MUSIC].model.compiler.compiled_steps
    _music(studio, "int8", 0.5, audio=str(clip))
    assert manager._entries[MUSIC].model.compiler.compiled_steps > model_steps and seen
    assert seen[0][0] > 50 and all(last == written and last < window for last, written, window, _ in seen), seen[:3]
    assert counters["stats"]["unique_graphs"] == graphs, "a window or a run's length compiled a graph of its own"


def test_bark_compiles_its_semantic_and_coarse_stages_and_speaks_as_eager(make_studio, monkeypatch, tmp_path):
    from torch._dynamo.utils import counters

    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    request = studio.request("speech", BARK, "Hello there, compiled speech.", seed=3,
                             params={"precision": "int8", "max_chunk_seconds": 1.0})  # the default voice's history
    breaks = sum(counters["graph_break"].values())
    eager = manager.run(request)
    assert manager.compile_done(BARK, 120) and manager.decode_path(BARK) == COMPILED_PATH
    # No graph break in a step (Bark makes its positions from the static cache's counter, a tensor: traced whole).
    assert sum(counters["graph_break"].values()) == breaks, dict(counters["graph_break"])
    model = manager._entries[BARK].model
    assert len(model.compiler._compiled) == 2, "one compiled step each for the semantic and the coarse stage"
    assert manager.estimate_run(request).decoder == COMPILED_PATH
    before, graphs = model.compiler.compiled_steps, counters["stats"]["unique_graphs"]
    compiled = manager.run(request)
    # Every semantic token but the first (the prefill is eager) and every coarse token but each window's first,
    # through the graphs the warm-up made (a run of another length compiles nothing).
    assert model.compiler.compiled_steps - before > 40
    assert counters["stats"]["unique_graphs"] == graphs
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)


@pytest.mark.parametrize("repo", ["nari-labs/Dia-1.6B-0626", "sesame/csm-1b", "vibevoice/VibeVoice-1.5B-hf",
                                  "eustlb/pocket-tts"])
def test_the_newer_speech_models_compile_through_their_own_generate_and_speak_as_eager(make_studio, monkeypatch,
                                                                                       tmp_path, repo):
    """Their generate() takes transformers' static cache as it is: the warm-up is two short requests through the
    adapter's own generate(), each stopped after a few compiled steps."""
    from torch._dynamo.utils import counters

    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    request = studio.request("speech", repo, "Hello there.", seed=3, params={"precision": "int8"})
    breaks, inductor = sum(counters["graph_break"].values()), sum(counters["inductor"].values())
    eager = manager.run(request)
    assert manager.compile_done(repo, 120) and manager.decode_path(repo) == COMPILED_PATH, manager.decode_path(repo)
    assert sum(counters["graph_break"].values()) == breaks, dict(counters["graph_break"])  # int8 head included
    # Everything compiled with the studio's backend (VibeVoice's second, negative branch too: transformers would
    # compile it with Inductor and CUDA graphs, whatever the studio's settings).
    assert sum(counters["inductor"].values()) == inductor, dict(counters["inductor"])
    model = manager._entries[repo].model
    before = model.compiler.compiled_steps
    assert before > 0, "the warm-up decoded nothing through the compiled step"
    compiled = manager.run(request)
    assert model.compiler.compiled_steps > before, "the run did not decode through the compiled step"
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)
    model.move(model.torch_device)  # compiled for the device it had: a move forgets it
    assert manager.decode_path(repo) == "eager"


def test_a_warm_up_that_samples_holds_the_device_and_a_run_waits_for_it(make_studio, monkeypatch, tmp_path):
    """The newer speech models warm up through their own generate(), which seeds and samples from torch's one global
    generator: a run beside it would not make what its seed makes, so it waits, told so, and then makes exactly
    what the same seed made before."""
    from studio.run import RunContext

    repo = "eustlb/pocket-tts"
    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    entered, release, _ = _held_warm_ups(monkeypatch)
    request = studio.request("speech", repo, "Hello there.", seed=3, params={"precision": "int8"})
    first = manager.run(request)
    assert entered.wait(30)
    waits, done = [], {}
    worker = threading.Thread(target=lambda: done.setdefault("run", manager.run(
        request, RunContext(on_wait=lambda ahead, seconds: waits.append(ahead)))))
    worker.start()
    worker.join(2)
    assert worker.is_alive() and waits and waits[-1] == 1, "the run did not wait for the warm-up"
    release.set()
    worker.join(120)
    assert manager.compile_done(repo, 120) and manager.decode_path(repo) == COMPILED_PATH
    np.testing.assert_allclose(done["run"].audio.samples, first.audio.samples, atol=1e-4)


def test_runs_go_eager_while_it_compiles_and_a_failed_compile_leaves_the_model_eager(make_studio, monkeypatch,
                                                                                      tmp_path):
    from models import compiled as compiled_module

    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    manager = studio.manager
    entered, release, real_warm_up = _held_warm_ups(monkeypatch)
    request, _ = _music(studio, "int8")
    assert entered.wait(30)
    assert manager.decode_path(MUSIC) == "eager"  # not started compiling: held before its first step
    model = manager._entries[MUSIC].model
    model.compiler.state = model.compiler.COMPILING
    assert manager.estimate_run(request).decoder == COMPILING_PATH
    _, during = _music(studio, "int8")  # a run while it compiles: eager, and it works
    assert during.audio.duration > 0
    assert model.compiler._compiled == {} and model.compiler.compiled_steps == 0, \
        "a run while it compiles built or took the compiled step"
    model.compiler.state = model.compiler.EAGER
    release.set()
    assert manager.compile_done(MUSIC, 120) and manager.decode_path(MUSIC) == COMPILED_PATH

    # A backend that does not exist: the compile fails, the model stays eager, and the line says why.
    manager.unload(MUSIC)
    monkeypatch.setattr(compiled_module.DecodeCompiler, "warm_up", real_warm_up)
    manager.compile_policy = CompilePolicy(mode="on", backend="no-such-backend")
    _music(studio, "int8")
    assert manager.compile_done(MUSIC, 120)
    assert manager.decode_path(MUSIC).startswith("eager (compile failed: ")
    _, after = _music(studio, "int8")
    assert after.audio.duration > 0


def _count_calls(monkeypatch, owner, name: str) -> list[int]:
    """Counts the calls of `owner.name` from now on, in a one-element list."""
    calls, real = [0], getattr(owner, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.skipif(os.environ.get("STUDIO_SKIP_INDUCTOR") == "1", reason="STUDIO_SKIP_INDUCTOR=1")
def test_inductor_compiles_the_tiny_decoder_and_keeps_it_on_disk(make_studio, monkeypatch, tmp_path, caplog):
    """The real compiler, once, on the tiny checkpoint: C++ kernels built and kept in the compile cache, one graph
    (a window as long as the cache made Inductor guard on it and compile a second: models.compiled.windowed_length),
    and Dynamo's trace kept beside them, so that compiling the model again (as a later process does) traces
    nothing."""
    import torch
    from torch._dynamo.utils import counters

    from models.compiled import SAVED_TRACE_WARM_UP_STEPS, WARM_UP_STEPS
    from studio import compiling

    torch._dynamo.reset()
    studio = _compiling_studio(make_studio, monkeypatch, "inductor", tmp_path)
    manager = studio.manager
    before = counters["stats"]["unique_graphs"]
    _, eager = _music(studio, "int8")
    assert manager.compile_done(MUSIC, 240), "the tiny decoder did not compile within 4 minutes"
    assert manager.decode_path(MUSIC) == COMPILED_PATH, manager.decode_path(MUSIC)
    assert counters["stats"]["unique_graphs"] - before == 1
    assert not manager._entries[MUSIC].model.compiler.loaded_trace
    assert manager._entries[MUSIC].model.compiler.compiled_steps == sum(WARM_UP_STEPS) - len(WARM_UP_STEPS)
    assert compiling.prepare_compiler("cpu") == 0.0, "the compile did not prepare torch's compiler first"
    _, compiled = _music(studio, "int8")
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)
    assert any((tmp_path / "inductor").rglob("*.py")), "nothing kept in the compile cache"
    assert any((tmp_path / "inductor" / "dynamo").iterdir()), "Dynamo's trace was not kept"

    # Compiling again with Dynamo's memory dropped and the model loaded anew: what a later process does. The trace
    # is found on disk, no graph is traced, the compiled run makes the same audio.
    torch._dynamo.reset()
    hits, graphs = counters["dynamo_cache"]["dynamo_cache_hit"], counters["stats"]["unique_graphs"]
    manager.unload(MUSIC)
    builds = _count_calls(monkeypatch, torch._dynamo.guards.CheckFunctionManager, "build_guards")
    shape_guards = _count_calls(monkeypatch, torch._dynamo.guards, "install_symbolic_shape_guard")
    _music(studio, "int8")
    assert manager.compile_done(MUSIC, 240) and manager.decode_path(MUSIC) == COMPILED_PATH
    assert counters["dynamo_cache"]["dynamo_cache_hit"] == hits + 1
    assert counters["stats"]["unique_graphs"] == graphs, "the saved trace was not used: it traced again"
    assert builds == [1], "the saved trace's guards were not built exactly once (models.compiled._load_saved_guards_once)"
    assert shape_guards == [1], "the saved shape guards were not loaded as C++ (keep_traces)"
    assert manager._entries[MUSIC].model.compiler.loaded_trace
    # Its warm-up compiled nothing, so it was one run of a few steps (DecodeCompiler.warm_up_steps), not two of 12
    # and 20
    warm_up_steps = manager._entries[MUSIC].model.compiler.compiled_steps
    assert 0 < warm_up_steps <= SAVED_TRACE_WARM_UP_STEPS, warm_up_steps
    _, again = _music(studio, "int8")
    np.testing.assert_allclose(again.audio.samples, eager.audio.samples, atol=1e-4)

    # A step the saved trace fails on (torch cannot trace that function again in the process: a new trace's globals
    # clash with the saved one's): the run finishes eager, with the eager audio, and so do later runs.
    compiler = manager._entries[MUSIC].model.compiler
    (module_id,) = compiler._compiled

    def clash(**inputs):
        raise AssertionError("Name '__builtins_dict___0' already exists in scope")

    compiler._compiled[module_id] = clash
    _, after = _music(studio, "int8")
    np.testing.assert_allclose(after.audio.samples, eager.audio.samples, atol=1e-4)
    assert manager.decode_path(MUSIC).startswith("eager (compile failed: AssertionError"), manager.decode_path(MUSIC)
    # torch warns once per guard the saved trace leaves out (some thousand for MusicGen): the log does not
    assert not [r for r in caplog.records if "caching_precompile" in r.getMessage()]


def test_a_damaged_trace_on_disk_is_compiled_again(make_studio, monkeypatch, tmp_path):
    import torch

    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    _, eager = _music(studio, "int8")
    assert studio.manager.compile_done(MUSIC, 120) and studio.manager.decode_path(MUSIC) == COMPILED_PATH
    entries = list((tmp_path / "inductor" / "dynamo").rglob("entry"))
    assert entries, "no trace kept"
    for entry in entries:
        entry.write_bytes(b"\x80\x04 not a pickle")
    torch._dynamo.reset()
    studio.manager.unload(MUSIC)
    _music(studio, "int8")
    assert studio.manager.compile_done(MUSIC, 120) and studio.manager.decode_path(MUSIC) == COMPILED_PATH
    _, compiled = _music(studio, "int8")
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)


def test_a_trace_that_cannot_be_kept_is_compiled_for_the_process(make_studio, monkeypatch, tmp_path, caplog):
    # torch fails a compile whose trace it cannot save (a guard of a kind it cannot write): the warm-up compiles
    # again without keeping it, and the model takes the compiled path all the same.
    from models import compiled as compiled_module

    def cannot_keep():
        raise RuntimeError("CLASS_MATCH guard cannot be serialized")

    monkeypatch.setattr(compiled_module, "keep_traces", cannot_keep)
    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    _, eager = _music(studio, "int8")
    assert studio.manager.compile_done(MUSIC, 120) and studio.manager.decode_path(MUSIC) == COMPILED_PATH
    compiler = studio.manager._entries[MUSIC].model.compiler
    assert not compiler.precompile and compiler.compiled_steps > 0
    assert any("cannot be kept on disk" in r.getMessage() for r in caplog.records)
    _, compiled = _music(studio, "int8")
    np.testing.assert_allclose(compiled.audio.samples, eager.audio.samples, atol=1e-4)

    # A saved trace that the warm-up fails on is deleted: the next process compiles afresh instead of failing on it.
    from torch._dynamo.package import CompilePackage

    from models.runtime.compiled_step import step_function

    saved = tmp_path / "inductor" / "dynamo" / CompilePackage.source_id_from_fn(
        step_function(studio.manager._entries[MUSIC].model.model))
    saved.mkdir(parents=True)
    (saved / "entry").write_bytes(b"a trace this process failed on")
    studio.manager.unload(MUSIC)
    _music(studio, "int8")
    assert studio.manager.compile_done(MUSIC, 120) and studio.manager.decode_path(MUSIC) == COMPILED_PATH
    assert not saved.exists()


def test_auto_compiles_only_where_it_pays(make_studio, monkeypatch, tmp_path):
    studio = _compiling_studio(make_studio, monkeypatch, "eager", tmp_path)
    studio.manager.compile_policy = CompilePolicy.from_environment("auto")
    _music(studio, "float32")  # float32 on a CPU: not measured to pay, so no compile is scheduled
    assert studio.manager.compile_done(MUSIC, 5) and studio.manager.decode_path(MUSIC) == "eager"
    assert studio.manager._entries[MUSIC].model.compiler is None
    _music(studio, "int8")  # a reload in int8: compiled in the background
    assert studio.manager.compile_done(MUSIC, 120) and studio.manager.decode_path(MUSIC) == COMPILED_PATH


def test_an_int8_graph_is_the_same_whatever_the_process_prepared_before():
    # The compile cache finds a graph by its code: a layer's key to its packed weights written into the graph as a
    # number made the graph depend on how many int8 layers the process had prepared before (another model loaded
    # first), so a second process compiled everything again. The key is an input of the graph.
    import torch

    from models.common import quantize_int8
    from models.compiled import prepare_int8

    def int8_model():
        torch.manual_seed(0)
        model = torch.nn.Module()
        model.part = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
        quantize_int8(model, ("part",))
        return model

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    x = torch.randn(2, 16)
    model = int8_model()
    outputs = []
    for other_models_before in (0, 3):
        for _ in range(other_models_before):
            prepare_int8(int8_model())  # what the process prepared before: its keys come first
        prepare_int8(model)
        torch._dynamo.reset()
        outputs.append(torch.compile(model.part, backend=record, fullgraph=True)(x))
    assert len(graphs) == 2 and "int8_linear" in graphs[0]
    assert graphs[0] == graphs[1]
    assert torch.equal(outputs[0], model.part(x)) and torch.equal(outputs[1], outputs[0])
