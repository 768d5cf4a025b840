"""Settings from command-line flags and their STUDIO_* environment twins, validated."""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from studio.errors import InvalidInput

DEVICES = ("auto", "cuda", "mps", "cpu")
DEFAULT_RESERVE = 512 * 1024**2

# Decimal units as in accelerate's max_memory ("10GB" = 10**9), binary ones spelled out ("10GiB" = 2**30).
_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str, *, what: str = "size") -> int:
    """Parse '6GB', '300MB', '1.5GiB' or a plain byte count into bytes."""
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise InvalidInput(
            f"{what} {text!r} is not a size: write a number with a unit such as 6GB, 300MB or 1.5GiB"
        )
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise InvalidInput(f"{what} {text!r} must be at least one byte: write e.g. 6GB")
    return int(value)


def format_bytes(n: float) -> str:
    """Human-readable decimal size: 1.2 GB, 340 MB, 12 kB."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[str, str] | tuple[tuple[str, str], ...] | None = None  # one login, or several from @FILE
    device: str = "auto"
    memory_budget: int | None = None
    memory_reserve: int = DEFAULT_RESERVE
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    mcp: bool = False
    # Testing and demos only: pretend the accelerator holds this many bytes (see studio/device.py).
    simulated_memory: int | None = None

    @property
    def history_db(self) -> Path:
        return self.output_dir / "history.sqlite3"

    @property
    def calibration_file(self) -> Path:
        return self.output_dir / "calibration.json"


def _parse_auth(text: str) -> tuple[str, str] | tuple[tuple[str, str], ...]:
    """USER:PASS, or @FILE naming a file of USER:PASS lines (blank lines and # comments ignored)."""
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise InvalidInput(f"--auth {text!r}: cannot read {path} ({error.strerror}): name a file of USER:PASS lines")
        pairs = tuple(_parse_pair(line.strip(), where=f" (in {path})") for line in lines
                      if line.strip() and not line.strip().startswith("#"))
        if not pairs:
            raise InvalidInput(f"--auth {text!r}: {path} has no USER:PASS lines")
        return pairs
    return _parse_pair(text)


def _parse_pair(text: str, where: str = "") -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        # The value may be a password: name the rule, never echo it.
        raise InvalidInput(f"--auth must be USER:PASS with both parts non-empty{where}, e.g. --auth me:a-long-password, "
                           "or @FILE with one USER:PASS per line")
    return user, password


def _parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise InvalidInput(f"--port {text!r} must be a whole number from 1 to 65535, e.g. 7860")
    return port


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInput(f"{name}={text!r} must be true or false (1/0, yes/no)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by the web app and the CLI; defaults come from STUDIO_* variables."""
    parser.add_argument("--host", help="address to serve on (STUDIO_HOST; default 127.0.0.1)")
    parser.add_argument("--port", help="port to serve on (STUDIO_PORT; default 7860)")
    parser.add_argument("--share", action="store_true", default=None,
                        help="open a temporary public Gradio link, always password-protected (STUDIO_SHARE)")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login, or @FILE of USER:PASS lines (STUDIO_AUTH)")
    parser.add_argument("--device", help="auto, cuda, mps or cpu (STUDIO_DEVICE; default auto)")
    parser.add_argument("--memory-budget", metavar="SIZE",
                        help="cap on device memory the studio uses, e.g. 6GB (STUDIO_MEMORY_BUDGET)")
    parser.add_argument("--memory-reserve", metavar="SIZE",
                        help="memory always left free, default 512MiB (STUDIO_MEMORY_RESERVE)")
    parser.add_argument("--output-dir", metavar="DIR", help="where results and history go (STUDIO_OUTPUT_DIR; default ./outputs)")
    parser.add_argument("--mcp", action="store_true", default=None, help="also serve Gradio's MCP server (STUDIO_MCP)")


def settings_from(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over STUDIO_* variables, which win over defaults."""
    source: list[str | None] = [None]  # the environment variable of the value being checked, if any
    try:
        return _settings_from(args, env, source)
    except InvalidInput as error:
        if source[0]:  # the bad value came from the environment: say where, since no flag was typed
            raise InvalidInput(f"{error} (from the environment variable {source[0]})") from None
        raise


def _settings_from(args: argparse.Namespace | None, env: Mapping[str, str] | None, source: list) -> Settings:
    env = os.environ if env is None else env
    values = vars(args) if args is not None else {}

    def pick(flag: str, var: str) -> str | None:
        value = values.get(flag)
        source[0] = None if value is not None or env.get(var) is None else var
        return value if value is not None else env.get(var)

    kwargs: dict = {}
    if (host := pick("host", "STUDIO_HOST")) is not None:
        if not host.strip():
            raise InvalidInput("--host must not be empty: use 127.0.0.1 for this machine only or 0.0.0.0 for the network")
        kwargs["host"] = host.strip()
    if (port := pick("port", "STUDIO_PORT")) is not None:
        kwargs["port"] = _parse_port(str(port))
    source[0] = "STUDIO_SHARE" if values.get("share") is None else None
    share = values.get("share")
    kwargs["share"] = bool(share) if share is not None else _parse_bool("STUDIO_SHARE", env.get("STUDIO_SHARE", ""))
    source[0] = "STUDIO_MCP" if values.get("mcp") is None else None
    mcp = values.get("mcp")
    kwargs["mcp"] = bool(mcp) if mcp is not None else _parse_bool("STUDIO_MCP", env.get("STUDIO_MCP", ""))
    if (auth := pick("auth", "STUDIO_AUTH")) is not None:
        kwargs["auth"] = _parse_auth(auth)
    if (device := pick("device", "STUDIO_DEVICE")) is not None:
        device = device.strip().lower()
        if device not in DEVICES:
            raise InvalidInput(f"--device {device!r} is not one of {', '.join(DEVICES)}: pick one, or leave it as auto")
        kwargs["device"] = device
    if (budget := pick("memory_budget", "STUDIO_MEMORY_BUDGET")) is not None:
        kwargs["memory_budget"] = parse_size(budget, what="--memory-budget")
    if (reserve := pick("memory_reserve", "STUDIO_MEMORY_RESERVE")) is not None:
        if str(reserve).strip() in ("0", "0B"):
            kwargs["memory_reserve"] = 0
        else:
            kwargs["memory_reserve"] = parse_size(reserve, what="--memory-reserve")
    if (out := pick("output_dir", "STUDIO_OUTPUT_DIR")) is not None:
        if not str(out).strip():
            raise InvalidInput("--output-dir must not be empty: name a folder, e.g. --output-dir outputs")
        kwargs["output_dir"] = Path(out).expanduser()
    source[0] = "STUDIO_SIMULATED_MEMORY"
    if (simulated := env.get("STUDIO_SIMULATED_MEMORY")):
        kwargs["simulated_memory"] = parse_size(simulated, what="STUDIO_SIMULATED_MEMORY")
    return Settings(**kwargs)


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="app.py", description="Audio Studio: music, speech and sound effects.")
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), env)
