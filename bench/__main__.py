"""python -m bench [--quick] [--only NAME[,NAME]] [--cache DIR] [--out FILE] [--doc FILE] [--tiny]

Studio vs the raw libraries on realistic-size random-weight checkpoints; writes results.json and
docs/benchmarks.md. See docs/benchmarks.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.cases import CASES, SECTIONS
    from bench.prototypes import PROTOTYPES

    names = [c.name for c in CASES] + list(SECTIONS) + list(PROTOTYPES)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small work and 3 rounds per model; bark-small and stable-audio-open-1.0 only when "
                             "named in --only (one run of either takes minutes on 2 cores)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these: {', '.join(names)}")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "cache",
                        help="where the realistic-size checkpoints are built once (default bench/cache, not committed)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json",
                        help="results file; entries of models not run now are kept from it (default bench/results.json)")
    parser.add_argument("--doc", type=Path, default=None,
                        help="readable report (default docs/benchmarks.md; with --tiny, next to --out)")
    parser.add_argument("--tiny", action="store_true",
                        help="use the tests' tiny checkpoints (a smoke test of the bench, no meaningful figures)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    parser.add_argument("--fresh", action="store_true", help="do not keep earlier entries from --out")
    parser.add_argument("--omp-wait-policy", default="PASSIVE", choices=("PASSIVE", "ACTIVE", "library"),
                        help="OpenMP threads' wait policy for both sides (default PASSIVE: with the library default, "
                             "torch's threads spin at every barrier and a run slows down many-fold while another "
                             "process keeps a core busy; 'library' leaves it unset)")
    parser.add_argument("--nice", type=int, default=-10,
                        help="scheduling priority for the bench and what it launches (default -10 when allowed: on a "
                             "shared machine other jobs otherwise swing run times several-fold; 0 leaves it alone)")
    args = parser.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    unknown = [n for n in args.only or () if n not in names]
    if unknown:
        parser.error(f"--only: unknown name {unknown[0]!r}; choose from: {', '.join(names)}")
    if args.doc is None:
        args.doc = args.out.with_suffix(".md") if args.tiny else ROOT / "docs" / "benchmarks.md"
    return args


def configure_environment(cache: Path) -> None:
    """The bench's HF cache, offline; must run before anything imports huggingface_hub."""
    for var in [v for v in os.environ if v.startswith(("HF_", "HUGGINGFACE_", "STUDIO_"))]:
        del os.environ[var]
    os.environ["HF_HOME"] = str((cache / "hf").resolve())
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def raise_priority(nice: int) -> int:
    """Run at `nice` (lower = more CPU share) when allowed; threads started later (torch's) inherit it.

    Where the kernel groups processes by session (sched_autogroup, on by default in many distributions), a
    process's nice only ranks it within its own session: against other sessions' jobs the group's nice counts,
    so that is set too (measured here: at nice -10 alone the bench got half a core of 2 beside four busy
    processes of other sessions, with the group's nice -10 as well, over one).
    """
    if nice != 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except (PermissionError, OSError):
            pass  # not allowed here: measure at the normal priority, and the report says which
        before = autogroup_nice()
        if before is not None:
            try:
                Path("/proc/self/autogroup").write_text(str(nice))
                # The group is the session's (the shell's, when run from a terminal): give it back at exit.
                atexit.register(_set_autogroup_nice, before)
            except OSError:
                pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def _set_autogroup_nice(value: int) -> None:
    try:
        Path("/proc/self/autogroup").write_text(str(value))
    except OSError:
        pass


def autogroup_nice() -> int | None:
    """This process's session group's nice where the kernel groups by session, else None."""
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return None
        return int(Path("/proc/self/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    args.effective_nice = raise_priority(args.nice)  # before torch starts its threads
    args.autogroup_nice = autogroup_nice()
    if args.omp_wait_policy != "library":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # read once, when torch's OpenMP starts
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
    configure_environment(args.cache)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from bench.main import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
