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
from studio.user_models import ENV as ADD_MODEL_ENV, FLAG as ADD_MODEL_FLAG, AddedModel, parse_entries

DEVICES = ("auto", "cuda", "mps", "cpu")
_CUDA_INDEX_RE = re.compile(r"^cuda:([0-9]+)$")
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


def _exact_size(n: int) -> str:
    """A byte count written back as a flag value parse_size reads as the same number: 12GB, 1536MiB, 1000B."""
    for unit in ("TB", "TiB", "GB", "GiB", "MB", "MiB", "KB", "KiB"):
        scale = _UNITS[unit.upper()]
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def _sizes_text(sizes: int | tuple[int, ...]) -> str:
    return ",".join(_exact_size(n) for n in (sizes if isinstance(sizes, tuple) else (sizes,)))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_bytes(n: float) -> str:
    """Human-readable decimal size: 1.2 GB, 340 MB, 12 kB."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def budget_caps(budget: int | tuple[int, ...] | None, count: int, *, where: str = "") -> tuple[int | None, ...]:
    """The memory cap of each of `count` devices: None where there is no budget, one size for every device,
    or the listed sizes when there is one per device; a list of another length is refused (`where` says
    where the device count comes from, for the message)."""
    if count < 1:
        raise ValueError(f"budget_caps needs at least one device, not {count}")
    if budget is None or not isinstance(budget, tuple):
        return (budget,) * count
    if len(budget) == count:
        return budget
    example = (budget + budget[-1:] * count)[:count]
    fix = ("give one size for all devices or one per device" if count > 1 else "give one size")
    raise InvalidInput(
        f"--memory-budget {_sizes_text(budget)!r} gives {_plural(len(budget), 'size')} but the studio has "
        f"{_plural(count, 'device')}{where}: {fix}, e.g. --memory-budget {_sizes_text(example)}"
    )


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: tuple[str, str] | tuple[tuple[str, str], ...] | None = None  # one login, or several from @FILE
    device: str = "auto"  # auto, cuda, mps, cpu, or CUDA devices listed: "cuda:1", "cuda:0,cuda:1"
    memory_budget: int | tuple[int, ...] | None = None  # one size caps every device; a tuple gives one per device
    memory_reserve: int = DEFAULT_RESERVE
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    mcp: bool = False
    # Testing and demos only: pretend there are accelerators holding these many bytes, one simulated device per
    # size (see studio/device.py). One size stays an int, as before several devices.
    simulated_memory: int | tuple[int, ...] | None = None
    # Repos to add to the catalog (--add-model REPO=FAMILY, STUDIO_ADD_MODEL), syntax checked; the catalog checks
    # the rest (studio.user_models.add_models), with <output_dir>/models.json's entries.
    add_models: tuple[AddedModel, ...] = ()
    # The bearer key of the OpenAI-compatible endpoints (/v1/audio/speech, /v1/models): --api-key, STUDIO_API_KEY.
    # Required there with --auth or --share (studio.ui.openai_api.api_key_for makes one when none is given); a secret,
    # so never in the repr.
    api_key: str | None = field(default=None, repr=False)
    # Measure which precision runs each model fastest on this CPU, for "auto" (studio.precision_probe). On unless
    # STUDIO_PRECISION_PROBE=0 (the tests turn it off: a probe would change auto under them).
    precision_probe: bool = field(default_factory=lambda: os.environ.get("STUDIO_PRECISION_PROBE", "1") != "0")
    # Compile autoregressive decoders in the background after a load (studio.compiling, models.compiled): "auto"
    # where the bench measured that it pays (the CPU), "on" on every device, "off" never. STUDIO_COMPILE; the tests
    # turn it off and on only where they test it.
    compile: str = field(default_factory=lambda: os.environ.get("STUDIO_COMPILE", "auto"))

    @property
    def precision_probe_file(self) -> Path:
        return self.output_dir / "precision_probe.json"

    @property
    def device_list(self) -> tuple[str, ...]:
        """The devices asked for: ("auto",), ("cuda",), ("cpu",), ("cuda:1",), ("cuda:0", "cuda:1")..."""
        return tuple(self.device.split(","))

    @property
    def simulated_sizes(self) -> tuple[int, ...] | None:
        """One size per simulated device, or None when nothing is simulated."""
        if self.simulated_memory is None:
            return None
        if isinstance(self.simulated_memory, tuple):
            return self.simulated_memory
        return (self.simulated_memory,)

    @property
    def known_device_count(self) -> int | None:
        """How many devices the studio will use, when the settings alone say it; None for auto and bare cuda.

        A simulation wins (one device per size), then an explicit cuda:N list; cpu and mps are one device.
        """
        if (sizes := self.simulated_sizes) is not None:
            return len(sizes)
        if self.device in ("cpu", "mps"):
            return 1
        if self.device in ("auto", "cuda"):
            return None
        return len(self.device_list)

    def budget_caps(self, count: int) -> tuple[int | None, ...]:
        """`budget_caps` of these settings, naming where a known device count comes from."""
        where = ""
        if count == self.known_device_count:  # say where the count comes from, since it may not be obvious
            if self.simulated_sizes is not None:
                where = f" (STUDIO_SIMULATED_MEMORY={_sizes_text(self.simulated_memory)})"
            else:
                where = f" (--device {self.device})"
        return budget_caps(self.memory_budget, count, where=where)

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


MIN_API_KEY_CHARS = 8


def _parse_api_key(text: str) -> str:
    """A bearer key: at least MIN_API_KEY_CHARS printable characters, no spaces (it travels in a header)."""
    key = str(text).strip()
    # The value is a secret: name the rule, never echo it.
    if len(key) < MIN_API_KEY_CHARS or not key.isprintable() or any(c.isspace() for c in key):
        raise InvalidInput(f"--api-key must be at least {MIN_API_KEY_CHARS} printable characters without spaces, "
                           "e.g. --api-key $(openssl rand -hex 16); leave it out to have one made and printed at start")
    return key


def _parse_device(text: str) -> str:
    """auto, cuda, mps or cpu; or CUDA devices by number, one or several: cuda:1, "cuda:0, cuda:1" -> "cuda:0,cuda:1"."""
    value = text.strip().lower()
    if value in DEVICES:
        return value
    fix = "e.g. --device cuda:0,cuda:1"
    items = [item.strip() for item in value.split(",")]
    if len(items) == 1 and not items[0].startswith("cuda"):  # tpu, gpu...: not a device name at all
        raise InvalidInput(f"--device {value!r} is not one of {', '.join(DEVICES)} nor CUDA devices such as "
                           f"cuda:0,cuda:1: pick one, or leave it as auto")
    if "" in items:
        raise InvalidInput(f"--device {value!r} has an empty item: separate the devices with single commas, {fix}")
    seen: list[str] = []
    for item in items:
        if item in DEVICES:
            raise InvalidInput(f"--device {value!r} lists {item}: only CUDA devices cuda:N may be listed, {fix}; "
                               f"otherwise give {item} alone")
        match = _CUDA_INDEX_RE.match(item)
        if not match:
            raise InvalidInput(f"--device {value!r}: {item!r} is not a CUDA device: write cuda:N with N a device "
                               f"number from 0 up, {fix}")
        name = f"cuda:{int(match.group(1))}"  # cuda:01 is cuda:1
        if name in seen:
            raise InvalidInput(f"--device {value!r} names {name} twice: list each device once, {fix}")
        seen.append(name)
    return ",".join(seen)


def _parse_sizes(text: str, *, what: str, example: str) -> int | tuple[int, ...]:
    """One size (an int) or a comma-separated list of two or more (a tuple); each item as parse_size reads it."""
    items = str(text).split(",")
    if len(items) == 1:
        return parse_size(text, what=what)
    if any(not item.strip() for item in items):
        raise InvalidInput(f"{what} {text!r} has an empty item: separate the sizes with single commas, e.g. {example}")
    sizes = []
    for number, item in enumerate(items, 1):
        try:
            sizes.append(parse_size(item, what=what))
        except InvalidInput as error:  # parse_size names the item; say which one of the list it is
            raise InvalidInput(f"{error} (item {number} of {text!r})") from None
    return tuple(sizes)


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
    parser.add_argument("--device",
                        help="auto, cuda, mps or cpu, or several CUDA devices: cuda:0,cuda:1 names them "
                             "(STUDIO_DEVICE; default auto: every visible CUDA device, else MPS, else the CPU)")
    parser.add_argument("--memory-budget", metavar="SIZE[,SIZE...]",
                        help="cap on device memory the studio uses, e.g. 6GB; one size caps every device, or give "
                             "one per device, e.g. 12GB,6GB (STUDIO_MEMORY_BUDGET)")
    parser.add_argument("--memory-reserve", metavar="SIZE",
                        help="memory always left free, default 512MiB (STUDIO_MEMORY_RESERVE)")
    parser.add_argument("--output-dir", metavar="DIR", help="where results and history go (STUDIO_OUTPUT_DIR; default ./outputs)")
    parser.add_argument("--mcp", action="store_true", default=None, help="also serve Gradio's MCP server (STUDIO_MCP)")
    add_model_argument(parser)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--add-model", action="append", metavar="REPO=FAMILY",
                        help="add a fine-tune or a mirror of a known family to the catalog, e.g. "
                             "me/musicgen-finetune=musicgen; FAMILY is a family name or a catalog repo id whose "
                             "settings it copies; repeatable (STUDIO_ADD_MODEL, comma-separated; more in "
                             "<output-dir>/models.json)")


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
        kwargs["device"] = _parse_device(device)
    budget_source = None
    if (budget := pick("memory_budget", "STUDIO_MEMORY_BUDGET")) is not None:
        budget_source = source[0]
        kwargs["memory_budget"] = _parse_sizes(budget, what="--memory-budget", example="--memory-budget 12GB,6GB")
    if (reserve := pick("memory_reserve", "STUDIO_MEMORY_RESERVE")) is not None:
        if str(reserve).strip() in ("0", "0B"):
            kwargs["memory_reserve"] = 0
        else:
            kwargs["memory_reserve"] = parse_size(reserve, what="--memory-reserve")
    if (out := pick("output_dir", "STUDIO_OUTPUT_DIR")) is not None:
        if not str(out).strip():
            raise InvalidInput("--output-dir must not be empty: name a folder, e.g. --output-dir outputs")
        kwargs["output_dir"] = Path(out).expanduser()
    if (added := values.get("add_model")) is not None:
        source[0] = None
        kwargs["add_models"] = tuple(entry for value in added for entry in parse_entries(value, ADD_MODEL_FLAG))
    elif env.get(ADD_MODEL_ENV, "").strip():
        source[0] = None  # the entries name the variable themselves
        kwargs["add_models"] = parse_entries(env[ADD_MODEL_ENV], ADD_MODEL_ENV)
    if (key := pick("api_key", "STUDIO_API_KEY")) is not None:
        kwargs["api_key"] = _parse_api_key(key)
    source[0] = "STUDIO_SIMULATED_MEMORY"
    if (simulated := env.get("STUDIO_SIMULATED_MEMORY")):
        kwargs["simulated_memory"] = _parse_sizes(simulated, what="STUDIO_SIMULATED_MEMORY",
                                                  example="STUDIO_SIMULATED_MEMORY=4GB,2GB")
    settings = Settings(**kwargs)
    if (count := settings.known_device_count) is not None:
        source[0] = budget_source  # a mismatch is the budget's to fix: name its variable if it came from one
        settings.budget_caps(count)
    return settings


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="app.py", description="Audio Studio: music, speech and sound effects.")
    add_arguments(parser)
    parser.add_argument("--api-key", metavar="KEY",
                        help="the bearer key of the OpenAI-compatible speech API (/v1/audio/speech), required there "
                             "with --auth or --share; without it one is made and printed at start (STUDIO_API_KEY)")
    return settings_from(parser.parse_args(argv), env)
