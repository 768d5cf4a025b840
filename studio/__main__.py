"""Headless CLI: `python -m studio generate ...` runs one generation through the same manager as the web app."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from studio.errors import StudioError
from studio.settings import add_arguments, add_model_argument, settings_from

log = logging.getLogger("studio")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit 2, as for any bad input
        self.exit(2, f"error: {message} (see `python -m studio generate --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m studio", description="Audio Studio from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = commands.add_parser("generate", help="generate one clip and print its metadata as JSON")
    gen.add_argument("--model", required=True, help="a repo id from the catalog, e.g. facebook/musicgen-small")
    gen.add_argument("--prompt", required=True, help="what to hear; for speech models, the text to speak")
    gen.add_argument("--duration", help="seconds of new audio (music and sound effects); with --audio, the new "
                     "music that follows the clip: the output file holds the clip, then the new music")
    gen.add_argument("--audio", metavar="FILE", help="an audio clip (WAV, FLAC, OGG or MP3) for the model's audio "
                     "input: the clip MusicGen continues, the melody MusicGen melody follows, the clip Stable Audio "
                     "varies")
    gen.add_argument("--extend", metavar="SECONDS", help="MusicGen: keep going past the 30 s window until the "
                     "output (the --audio clip included) is SECONDS long, up to 300")
    gen.add_argument("--voice", help="a voice preset (speech models that have them), or a saved voice for a model "
                     "that clones (Pocket TTS, Dia): see `python -m studio voices list`")
    gen.add_argument("--seed", help="seed for a repeatable result (default: random)")
    gen.add_argument("--format", help="wav, flac, mp3 or ogg (default: what --out ends in, else wav)")
    gen.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="any other setting of the model, e.g. --set guidance_scale=4 (repeatable); an audio "
                     "setting takes a file as NAME=@FILE, and a text setting reads its value from a UTF-8 text file "
                     "the same way (--set lyrics=@song.txt)")
    gen.add_argument("--out", required=True, help="file to write")
    gen.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    add_arguments(gen)
    models = commands.add_parser("models", help="list the catalog, with the models you added")
    models.add_argument("--markdown", action="store_true", help="as the README's table (the built-in catalog only)")
    add_model_argument(models)
    models.add_argument("--output-dir", metavar="DIR",
                        help="whose models.json adds models (STUDIO_OUTPUT_DIR; default ./outputs)")
    _voice_commands(commands)
    return parser


def _voice_commands(commands) -> None:
    """`voices list|save|delete|rename`: the voice library of the output folder (studio.voices)."""
    from studio.voices import CONSENT_TEXT

    voices = commands.add_parser("voices", help="list, save, rename or delete the saved voices (the voice library)")
    actions = voices.add_subparsers(dest="action", required=True, parser_class=_Parser)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help)
        sub.add_argument("--output-dir", metavar="DIR",
                         help="whose voices/ folder (STUDIO_OUTPUT_DIR; default ./outputs)")
        add_model_argument(sub)
        return sub

    listing = action("list", "the saved voices: name, length, rate, transcript; broken ones with the reason")
    listing.add_argument("--json", action="store_true", help="as a JSON array (as the API's /voices)")
    save = action("save", "save a clip as a voice; prints the voice as JSON")
    save.add_argument("name", help="1-40 letters, digits, spaces, '-' or '_'; not a model's preset voice")
    save.add_argument("--audio", required=True, metavar="FILE", help="the clip (WAV, FLAC, OGG or MP3), 1 to 60 s of "
                      "one speaker; 5-10 s of clean speech work best")
    save.add_argument("--transcript", default="", help="the words said in the clip (Dia needs them)")
    save.add_argument("--consent", action="store_true", help=f"confirm: \"{CONSENT_TEXT}\" (required)")
    delete = action("delete", "delete a saved voice")
    delete.add_argument("name")
    rename = action("rename", "rename a saved voice")
    rename.add_argument("old")
    rename.add_argument("new")


def _voices(args: argparse.Namespace) -> int:
    from studio.clips import read_clip
    from studio.user_models import catalog_for
    from studio.voices import MAX_SECONDS, VoiceLibrary

    settings = settings_from(args)
    library = VoiceLibrary(settings.output_dir, catalog_for(settings))
    if args.action == "list":
        voices = library.list()
        if args.json:
            print(json.dumps([v.to_dict() for v in voices], ensure_ascii=False))
        elif not voices:
            print(f"no voices saved in {library.folder}")
        for voice in voices if not args.json else ():
            if voice.broken:
                print(f"{voice.name:40} BROKEN: {voice.problem}")
            else:
                words = f"  {voice.transcript!r}" if voice.transcript else ""
                print(f"{voice.name:40} {voice.seconds:6.1f} s  {voice.sample_rate / 1000:g} kHz{words}")
        return 0
    if args.action == "save":
        if not args.consent:  # before the clip is read: nothing is done without it
            from studio.voices import CONSENT_FIX

            raise StudioError(f"the voice {args.name!r} was not saved: {CONSENT_FIX}")
        clip = read_clip(Path(args.audio).expanduser(), name=Path(args.audio).name, what="--audio",
                         max_seconds=MAX_SECONDS)
        voice = library.save(args.name, clip, args.transcript, consent=True, via="cli")
    elif args.action == "delete":
        voice = library.delete(args.name)
    else:
        voice = library.rename(args.old, args.new)
    print(json.dumps({"action": args.action, **voice.to_dict()}, ensure_ascii=False))
    return 0


def _params(args: argparse.Namespace, spec, catalog) -> dict:
    from studio.catalog import echo

    params: dict = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise StudioError(f"--set {echo(item)} must look like NAME=VALUE, e.g. --set guidance_scale=4")
        param = spec.param(name.strip())
        if param is not None and param.is_audio:
            if not value.startswith("@") or not value[1:].strip():
                raise StudioError(f"--set {echo(item)}: {name.strip()} is an audio input; give a file as "
                                  f"{name.strip()}=@FILE, e.g. --set {name.strip()}=@clip.wav")
            params[name.strip()] = value[1:].strip()
            continue
        if value.startswith("@") and param is not None:
            if param.kind is not str:
                takes = "true or false" if param.kind is bool else "a number"
                raise StudioError(f"--set {echo(item)}: {name.strip()} takes {takes}, not a file (NAME=@FILE is for "
                                  "audio and text settings): give the value itself")
            params[name.strip()] = _read_text(item, value[1:].strip())
            continue
        params[name.strip()] = _number_or_text(value, param.kind if param is not None else str)
    if args.duration is not None:
        params["duration"] = args.duration
    if args.audio is not None:
        if spec.param("audio") is None:
            takers = ", ".join(s.repo_id for s in catalog if s.param("audio") is not None)
            raise StudioError(f"{spec.repo_id} takes no audio input; drop --audio (models that do: {takers})")
        params["audio"] = args.audio
    if args.extend is not None:
        if spec.param("extend_to") is None:  # not every MusicGen model does (melody follows a tune)
            takers = ", ".join(s.repo_id for s in catalog if s.param("extend_to") is not None)
            raise StudioError(f"{spec.repo_id} does not extend audio; drop --extend (models that do: {takers})")
        params["extend_to"] = args.extend
    if args.voice is not None:
        params["voice"] = args.voice
    return params


MAX_TEXT_FILE_BYTES = 1_000_000  # far more than any text setting takes (lyrics: about 6,000 characters)


def _read_text(item: str, path: str) -> str:
    """The text of `path` for `--set NAME=@FILE` of a text setting (lyrics from a file), as UTF-8."""
    from studio.catalog import echo

    if not path:
        raise StudioError(f"--set {echo(item)}: name the file after @, e.g. --set lyrics=@song.txt")
    file = Path(path).expanduser()
    shown = echo(path, PATH_CHARS)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise StudioError(f"--set {echo(item)}: {shown} is not a file; give a UTF-8 text file")
        if size > MAX_TEXT_FILE_BYTES:
            raise StudioError(f"--set {echo(item)}: {shown} has {size:,} bytes; a text setting takes at most "
                              f"{MAX_TEXT_FILE_BYTES:,}: give a shorter file")
        data = file.read_bytes()
    except FileNotFoundError:
        raise StudioError(f"--set {echo(item)}: there is no file {shown}; check the path") from None
    except OSError as error:
        raise StudioError(f"--set {echo(item)}: cannot read {shown} ({error.strerror}); check the path and its "
                          "permissions") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the text
    except UnicodeDecodeError as error:
        message = f"--set {echo(item)}: {shown} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        raise StudioError(message) from None


def _number_or_text(value: str, kind: type):
    """Numbers stay text: each setting's own validation parses them and names the setting when it can't.

    "true" and "false" become booleans for a true-or-false setting only: for a text one (a negative prompt)
    they are words."""
    lowered = value.strip().lower()
    return lowered == "true" if kind is bool and lowered in ("true", "false") else value.strip()


def _generate(args: argparse.Namespace) -> int:
    from studio.audio import check_format
    from studio.user_models import catalog_for

    if not args.verbose:  # stdout is the JSON; keep stderr for errors, not library chatter and progress bars
        for variable in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(variable, "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Everything a user can get wrong is checked before torch is imported or a model is loaded.
    settings = settings_from(args)
    fmt = check_format(args.format or _format_of(Path(args.out)))
    out = _check_out(Path(args.out), fmt)
    from studio.voices import VoiceLibrary

    catalog = catalog_for(settings)  # the models/ package's and the repos the user adds
    catalog = catalog.with_voice_library(VoiceLibrary(settings.output_dir, catalog))  # --voice may name a saved one
    spec = catalog.get(args.model)
    params = _params(args, spec, catalog)
    if "duration" in params and spec.param("duration") is None:
        raise StudioError(f"{spec.repo_id} makes speech whose length follows the text; drop --duration")
    if "voice" in params and spec.param("voice") is None:
        raise StudioError(f"{spec.repo_id} has no voice presets; drop --voice")
    request = catalog.make_request(args.model, args.prompt, seed=args.seed, params=params)

    from studio.run import RunContext
    from studio.service import Studio

    ctx = RunContext()
    if args.verbose:
        ctx.on_stage = lambda stage: log.info("%s", stage)
    studio = Studio(settings, catalog=catalog)
    result = studio.generate(request, fmt=fmt, out=out, ctx=ctx)
    json.dump(result.metadata, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not studio.history.wait_idle(HISTORY_WAIT_S):  # another process holds the database: give it a moment
        inside = result.path.resolve().parent == settings.output_dir.expanduser().resolve()
        print(f"note: another process holds {settings.history_db}; this result will be listed in History "
              + ("at the studio's next start" if inside else
                 f"only if its file and sidecar are moved into {settings.output_dir}"), file=sys.stderr)
    return 0


def _format_of(out: Path) -> str:
    """The format --out names by its ending (song.flac: flac) when --format is not given; wav otherwise."""
    from studio.audio import FORMATS

    suffix = out.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "wav"


HISTORY_WAIT_S = 10.0  # how long a CLI run waits for a busy history database before leaving its row to the next start


PATH_CHARS = 300  # of a path quoted in a message: longer than any sensible one, short of a flood


def _check_out(out: Path, fmt: str) -> Path:
    from studio.catalog import echo

    shown = echo(str(out), PATH_CHARS)
    if out.suffix.lower().lstrip(".") not in ("", fmt):
        raise StudioError(f"--out {shown} ends in {echo(out.suffix)} but --format is {fmt}: make them agree")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        if out.is_dir():
            example = echo(str(out / f"clip.{fmt}"), PATH_CHARS)
            raise StudioError(f"--out {shown} is a directory: name a file, e.g. {example}")
        if not parent.is_dir():
            raise StudioError(f"--out {shown}: the folder {echo(str(parent), PATH_CHARS)} does not exist; "
                              "create it or choose another")
    except OSError as error:  # e.g. a name longer than the file system allows
        raise StudioError(f"--out {shown}: {error.strerror}; choose another file name") from None
    return out


def catalog_rows(catalog) -> list[dict]:
    """One row per model (MMS languages folded into one), with memory needs at default settings.

    Sizes come from the sizer (studio.sizer), as for a plan: what "auto" picks on a GPU and on a CPU, the weights in that
    precision (exact when downloaded, else from the parameter count) plus working memory.
    """
    from studio.catalog import CPU_NATIVE_BF16, fold_languages, format_parameters
    from studio.settings import format_bytes
    from studio.sizer import Sizer

    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8"}
    sizer = Sizer(catalog)

    def need(spec, request, kind: str) -> str:
        sizes = sizer.sizes(spec, request, kind)
        return f"{format_bytes(sizes.weights + sizes.working)} ({short[sizes.dtype]})"

    def cpu_need(spec, request) -> str:
        """The CPU's figure; both where auto's pick depends on the CPU (so the table is the same on every machine)."""
        preferred = catalog.family(spec).preferred_dtypes
        if CPU_NATIVE_BF16 not in preferred:
            return need(spec, request, "cpu")
        plain, native = (catalog.make_request(spec.repo_id, "example", seed=0, params={"precision": dtype})
                         for dtype in (preferred.get("cpu", "float32"), preferred[CPU_NATIVE_BF16]))
        return f"{need(spec, plain, 'cpu')}; {need(spec, native, 'cpu')} with native bf16"

    rows = []
    for stem, specs in fold_languages(catalog):
        spec = specs[0]
        if stem is not None:
            codes = [s.language for s in specs]
            repo = stem + "{" + ",".join(codes[:4]) + f",… {len(codes)} languages}}"
            label = spec.label.rsplit(" ", 1)[0]
        else:
            repo, label = spec.repo_id, spec.label
        request = catalog.make_request(spec.repo_id, "example", seed=0)
        rows.append({
            "id": spec.repo_id, "repo": repo, "label": label, "tasks": ", ".join(spec.tasks),
            "params": format_parameters(spec.parameters, billions=False),
            "gpu": need(spec, request, "cuda"), "cpu": cpu_need(spec, request),
            "rate": f"{spec.sample_rate / 1000:g} kHz"
            + (" stereo" if spec.channels == 2 else ""), "license": spec.license,
            "added": f"user-added ({_added_by(spec.added_by)}), like {spec.like}" if spec.added_by else "",
        })
    return rows


def _added_by(source: str) -> str:
    from studio.user_models import ENV, FLAG

    return source if source in (FLAG, ENV) else Path(source).name


def _models(args: argparse.Namespace) -> int:
    from studio.catalog import Catalog
    from studio.user_models import catalog_for

    markdown = args.markdown
    # The README's table is the built-in catalog's: a user's additions (flags, models.json) are listed only as text.
    catalog = Catalog.discover("models") if markdown else catalog_for(settings_from(args))
    rows = catalog_rows(catalog)
    if markdown:
        print("| model | tasks | parameters | GPU memory, default settings | CPU RAM (auto precision) | output "
              "| licence |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| `{r['repo']}` ({r['label']}) | {r['tasks']} | {r['params']} | {r['gpu']} | {r['cpu']} | "
                  f"{r['rate']} | {r['license']} |")
    else:
        measured = measured_choices(catalog, settings_from(args))
        for r in rows:
            print(f"{r['repo']:44} {r['tasks']:14} {r['gpu']:>16} {r['license']}"
                  + (f"  [{r['added']}]" if r["added"] else ""))
            if r["id"] in measured:
                print(f"{'':44} auto on this CPU: {measured[r['id']]}")
    return 0


def measured_choices(catalog, settings) -> dict[str, str]:
    """auto's precision on this CPU and why, by model, where the precision probe or the model's runs measured it
    (studio.precision_probe); nothing before a model's first run here."""
    from studio.estimate import Calibration
    from studio.precision_probe import PrecisionSpeeds
    from studio.sizer import Sizer

    if not settings.precision_probe_file.exists() and not settings.calibration_file.exists():
        return {}
    sizer = Sizer(catalog, Calibration(settings.calibration_file), PrecisionSpeeds(settings.precision_probe_file))
    choices = {spec.repo_id: sizer.auto_choice(spec) for spec in catalog}
    return {model: choice.reason() for model, choice in choices.items() if choice is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "voices":
            return _voices(args)
        return _generate(args)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
