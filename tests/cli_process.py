"""`python -m studio ...` for the tests, in its own process, without paying torch's import each time.

A CLI run is a new Python process that imports torch and transformers (about 5 s on two busy cores) before a tiny
model takes a fraction of a second. The tests start dozens of them, so each run here is a process forked from a
server process that imported those libraries once (multiprocessing's forkserver, one per test process). The run is
still a process of its own: its own `sys.argv`, working folder, standard output and error, exit code and `atexit`
handlers, and `studio.__main__` is run as the main module, as `python -m studio` runs it.

What a fork cannot show is the start of a new interpreter, so a run falls back to a real `python -m studio` where
that matters: with an environment that differs from the one the server started with (the libraries read some of
it at import, so a fork would keep the server's), when asked (`fresh=True`), or where the platform has no
forkserver. Tests of what a process imports at start-up start their own interpreter.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Imported once in the server: the libraries every model-loading run needs, and the studio's own modules.
PRELOAD = ["numpy", "soundfile", "torch", "transformers", "transformers.modeling_utils", "transformers.generation",
           "studio.settings", "studio.service", "studio.manager"]

_lock = threading.Lock()
_context = None
_environ: dict[str, str] | None = None


def _forkserver():
    """The forkserver context, its server started with this process's environment (None where there is none)."""
    global _context, _environ
    with _lock:
        if _context is None and "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            _environ = dict(os.environ)
            _context = context
        return _context


def _decoded(data: bytes) -> str:
    """Bytes as `subprocess.run(text=True)` decodes them (the locale's encoding, universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(data)).read()


def _run_main(args: list[str], env: dict[str, str], cwd: str, out_path: str, err_path: str) -> None:  # forked
    import atexit
    import runpy

    os.environ.clear()
    os.environ.update(env)
    out = os.open(out_path, os.O_WRONLY)
    err = os.open(err_path, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=False)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
    os.chdir(cwd)
    sys.argv = [str(ROOT / "studio" / "__main__.py"), *args]
    code = 0
    try:
        runpy.run_module("studio", run_name="__main__", alter_sys=True)
    except SystemExit as stop:  # as the interpreter takes sys.exit(): None is 0, a message goes to stderr and is 1
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _forkable(env: dict[str, str]) -> bool:
    """Whether a process forked from the server would see `env`: it differs from the server's in no variable but
    those the studio never reads (the child is given `env` as it is)."""
    assert _environ is not None
    return all(env.get(key) == _environ.get(key) for key in set(env) | set(_environ) if key not in _NOT_READ)


_NOT_READ = {"PYTEST_CURRENT_TEST"}  # pytest sets it to each test's name in turn


def run_studio(args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float,
               fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m studio *args` as `subprocess.run(..., capture_output=True, text=True, check=False)` returns it."""
    argv = [sys.executable, "-m", "studio", *args]
    env = dict(os.environ) if env is None else env
    context = None if fresh else _forkserver()
    if context is None or not _forkable(env):
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    with tempfile.TemporaryDirectory(prefix="studio-cli-") as folder:
        out, err = Path(folder, "stdout"), Path(folder, "stderr")
        out.touch()
        err.touch()
        process = context.Process(target=_run_main, args=(list(args), env, str(cwd), str(out), str(err)),
                                  daemon=True)
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(argv, timeout, _decoded(out.read_bytes()), _decoded(err.read_bytes()))
        return subprocess.CompletedProcess(argv, process.exitcode, _decoded(out.read_bytes()),
                                           _decoded(err.read_bytes()))
