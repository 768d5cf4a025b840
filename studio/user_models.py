"""Repos the user adds to the catalog (a fine-tune or a mirror of a known family), and the check of their config.

Two sources: `--add-model REPO=FAMILY` (repeatable; STUDIO_ADD_MODEL takes comma-separated entries) and the
settings file `<output-dir>/models.json`:

    {"models": [{"repo": "me/musicgen-finetune", "family": "musicgen", "like": "facebook/musicgen-small",
                 "label": "My MusicGen"}]}

FAMILY is a family name (`Family.name`, e.g. musicgen) or a catalog repo id; the new entry copies that catalog
entry's tasks, settings, sizes and speed figures (with a family name: the family's smallest entry). A mistake in
a flag stops the start with the fix; a mistake in the file is a warning naming the file and line, and the studio
starts without that entry (or without the file, when it does not parse).

Before an added repo's weights are read, its config is checked against what the family loads (`Family.accepts`:
config.json's model_type for transformers families, model_index.json's _class_name for diffusers ones).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from studio.catalog import Accepts, Catalog, ModelSpec, echo
from studio.errors import InvalidInput, ModelUnavailable

log = logging.getLogger(__name__)

SETTINGS_FILE = "models.json"
FLAG = "--add-model"
ENV = "STUDIO_ADD_MODEL"
EXAMPLE = "me/musicgen-finetune=musicgen"
ENTRY_KEYS = ("repo", "family", "like", "label")
MAX_LABEL_CHARS = 80
# The hub's rule for a repo id (huggingface_hub.utils.validate_repo_id) with the owner required: letters, digits,
# "-", "_" and "."; no "--" or ".."; at most 96 characters a part.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_RE = re.compile(rf"^{_PART}/{_PART}$")


@dataclass(frozen=True)
class AddedModel:
    """One entry as the user wrote it: the repo, the family or catalog repo id it is like, and where it was written."""

    repo: str
    family: str  # a family name, or a catalog repo id to copy
    like: str = ""  # the file's optional catalog repo id to copy, when `family` is a family name
    label: str = ""
    source: str = FLAG  # FLAG, ENV, or the settings file's path: what ModelSpec.added_by says
    where: str = ""  # the entry as a message names it: "--add-model 'me/x=musicgen'", "outputs/models.json, line 3"


# ------------------------------------------------------------------------------------------------ flags
def parse_entries(text: str, source: str = FLAG) -> tuple[AddedModel, ...]:
    """The REPO=FAMILY entries of one flag value or of STUDIO_ADD_MODEL (comma-separated), syntax checked."""
    entries = []
    for item in str(text).split(","):
        where = f"{source} {echo(item.strip())}" if source == FLAG else f"{source} entry {echo(item.strip())}"
        repo, sep, family = (part.strip() for part in item.partition("="))
        if not sep:
            raise InvalidInput(f"{where} must be REPO=FAMILY, e.g. {FLAG} {EXAMPLE} (FAMILY: a family name, or a "
                               f"catalog repo id whose settings the new model copies)")
        if not repo or not family:
            missing = "repo id before =" if not repo else "family after ="
            raise InvalidInput(f"{where} has no {missing}: write REPO=FAMILY, e.g. {FLAG} {EXAMPLE}")
        entries.append(AddedModel(check_repo_id(repo, where), family, source=source, where=where))
    return tuple(entries)


def check_repo_id(repo: Any, where: str) -> str:
    """A Hugging Face repo id as owner/name, or InvalidInput naming `where` and the fix."""
    if not isinstance(repo, str) or not _REPO_RE.match(repo) or "--" in repo or ".." in repo:
        raise InvalidInput(f"{where}: {echo(repo)} is not a Hugging Face repo id: write owner/name as on the hub, "
                           f"e.g. me/musicgen-finetune (letters, digits, '-', '_', '.')")
    return repo


# ------------------------------------------------------------------------------------------------ the file
def settings_file(output_dir: Path) -> Path:
    return Path(output_dir) / SETTINGS_FILE


def read_settings_file(path: Path) -> tuple[list[AddedModel], list[str]]:
    """The entries of the settings file and a warning for each thing wrong in it; nothing raises.

    A file that does not parse gives one warning (with its line) and no entries; an entry with a mistake gives a
    warning and is left out, the others stay.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (FileNotFoundError, NotADirectoryError):  # no file, or no output folder (the start says that one)
        return [], []
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return [], [f"{path}: cannot read it ({reason}); the studio goes on without the models it adds: fix or "
                    f"remove the file"]
    ignored = "the studio goes on without the models it adds"
    try:
        data = json.loads(text) if text.strip() else {"models": []}
    except json.JSONDecodeError as error:
        return [], [f"{path}, line {error.lineno} column {error.colno}: not valid JSON ({error.msg}); {ignored}: "
                    f'fix the file, e.g. {{"models": [{{"repo": "me/musicgen-finetune", "family": "musicgen"}}]}}']
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return [], [f'{path}, line 1: the file must be a JSON object with a "models" list, e.g. {{"models": '
                    f'[{{"repo": "me/musicgen-finetune", "family": "musicgen"}}]}}; {ignored}']
    entries, warnings = [], []
    for number, item in enumerate(models, 1):
        where = f"{path}, entry {number}" + (f" (line {line})" if (line := _line_of(text, item)) else "")
        try:
            entries.append(_file_entry(item, path, where))
        except InvalidInput as error:
            warnings.append(f"{error}; the studio goes on without this entry")
    return entries, warnings


def _file_entry(item: Any, path: Path, where: str) -> AddedModel:
    if not isinstance(item, dict):
        raise InvalidInput(f'{where}: an entry must be an object such as {{"repo": "me/musicgen-finetune", '
                           f'"family": "musicgen"}}, not {echo(item)}')
    unknown = sorted(set(item) - set(ENTRY_KEYS))
    if unknown:
        raise InvalidInput(f"{where}: unknown key {echo(unknown[0])}; an entry's keys are {', '.join(ENTRY_KEYS)}")
    for key in ENTRY_KEYS:
        if key in item and not isinstance(item[key], str):
            raise InvalidInput(f"{where}: {key} must be text, not {echo(item[key])}")
    repo, family, like = (item.get(key, "").strip() for key in ("repo", "family", "like"))
    if not repo:
        raise InvalidInput(f'{where}: "repo" is missing or empty: name the repo id, e.g. "me/musicgen-finetune"')
    if not family and not like:
        raise InvalidInput(f'{where}: "family" is missing or empty: name a family such as "musicgen", or a '
                           f"catalog repo id to copy")
    label = " ".join(item.get("label", "").split())
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidInput(f"{where}: the label has {len(label)} characters; at most {MAX_LABEL_CHARS}: shorten it")
    return AddedModel(check_repo_id(repo, where), family or like, like, label, source=str(path), where=where)


def _line_of(text: str, item: Any) -> int | None:
    """The line of the file where the entry's repo id is written (JSON keeps no positions once parsed)."""
    repo = item.get("repo") if isinstance(item, dict) else None
    at = text.find(json.dumps(repo)) if isinstance(repo, str) else -1
    return text.count("\n", 0, at) + 1 if at >= 0 else None


# ------------------------------------------------------------------------------------------------ the catalog
def catalog_for(settings: Any) -> Catalog:
    """The catalog of the models/ package with the repos `settings` (studio.settings.Settings) add."""
    catalog = Catalog.discover("models")
    add_models(catalog, settings.add_models, settings.output_dir)
    return catalog


def add_models(catalog: Catalog, flags: Iterable[AddedModel], output_dir: Path | None) -> list[ModelSpec]:
    """Add the flags' entries (a mistake raises InvalidInput) and the settings file's (a mistake is a warning,
    logged, and the entry left out) to `catalog`; returns the specs added. A flag's entry wins over the file's."""
    added = []
    flagged: dict[str, AddedModel] = {}
    for entry in flags:
        earlier = flagged.get(entry.repo)
        if earlier is not None and earlier.family != entry.family:
            raise InvalidInput(f"{entry.where}: {entry.repo} is added twice, as {earlier.family} and as "
                               f"{entry.family}: keep one")
        if earlier is None:
            flagged[entry.repo] = entry
            if (spec := _add(catalog, entry)) is not None:
                added.append(spec)
    if output_dir is None:
        return added
    entries, warnings = read_settings_file(settings_file(output_dir))
    for entry in entries:
        if entry.repo in flagged:
            if flagged[entry.repo].family != entry.family:
                warnings.append(f"{entry.where}: {entry.repo} is also given by {flagged[entry.repo].where}, as "
                                f"{flagged[entry.repo].family}: the flag wins; remove one of them")
            continue
        try:
            if (spec := _add(catalog, entry)) is not None:
                added.append(spec)
        except (InvalidInput, ModelUnavailable) as error:
            warnings.append(f"{error}; the studio goes on without this entry")
    for warning in warnings:
        log.warning("%s", warning)
    return added


def _add(catalog: Catalog, entry: AddedModel) -> ModelSpec | None:
    """Add one entry; None when the catalog already has the repo under the same family (nothing to do)."""
    template, bare = _template(catalog, entry)
    family = catalog.family(template)
    if entry.repo in catalog:
        existing = catalog.get(entry.repo)
        if existing.family != family.name:
            raise InvalidInput(f"{entry.where}: {entry.repo} is already in the catalog as a {existing.family} "
                               f"model; it cannot be added as {family.name}: drop the entry")
        log.info("%s: %s is in the catalog already", entry.where, entry.repo)
        return None
    if not family.accepts:
        raise InvalidInput(f"{entry.where}: the {family.name} family does not say which configs it loads "
                           f"(Family.accepts), so {entry.repo} cannot be checked before loading: it cannot be added")
    smallest = " (the family's smallest; name a catalog repo id instead of the family to copy another)" if bare else ""
    spec = replace(
        template, repo_id=entry.repo, label=entry.label or entry.repo, featured_in=(), language=None, gated=False,
        added_by=entry.source, like=template.repo_id,
        description=f"Added by you ({_source_name(entry.source)}): a {family.name} model with the settings, sizes "
                    f"and speed figures of {template.repo_id}{smallest} until its own files are downloaded.",
    )
    check_repo(catalog, spec, download=False)  # a config already cached is checked now, the rest before the load
    catalog.register(family, [spec])
    log.info("added %s as a %s model like %s%s (%s)", spec.repo_id, family.name, template.repo_id, smallest,
             entry.where)
    return spec


def _source_name(source: str) -> str:
    return source if source in (FLAG, ENV) else Path(source).name


def _template(catalog: Catalog, entry: AddedModel) -> tuple[ModelSpec, bool]:
    """The catalog entry the new one copies, and whether it was picked for a bare family name."""
    families = [family.name for family in catalog.families()]
    if entry.family in catalog:
        template = catalog.get(entry.family)
        if entry.like and entry.like != entry.family:
            raise InvalidInput(f'{entry.where}: "family" {echo(entry.family)} is already a repo id to copy; drop '
                               f'"like" {echo(entry.like)} or give the family name in "family"')
        return _original(catalog, template, entry), False
    if entry.family not in families:
        close = difflib.get_close_matches(entry.family, families, n=1)
        example = f"did you mean {entry.repo}={close[0]}?" if close else f"e.g. {entry.repo}=musicgen"
        raise InvalidInput(f"{entry.where}: {echo(entry.family)} is neither a model family ({', '.join(families)}) "
                           f"nor a repo id of the catalog: name one ({example}), or a catalog repo id to copy "
                           f"(`python -m studio models` lists them)")
    members = [spec for spec in catalog if spec.family == entry.family and not spec.added_by]
    if entry.like:
        template = catalog.get(entry.like) if entry.like in catalog else None
        if template is None or template.family != entry.family:
            choices = ", ".join(spec.repo_id for spec in members[:8])
            raise InvalidInput(f'{entry.where}: "like" {echo(entry.like)} is not a {entry.family} model of the '
                               f"catalog: name one of {choices}")
        return _original(catalog, template, entry), False
    return min(members, key=lambda spec: spec.parameters), True  # min keeps the first of equals: the catalog's


def _original(catalog: Catalog, template: ModelSpec, entry: AddedModel) -> ModelSpec:
    """A template that is itself user-added stands for the catalog entry it copies."""
    return catalog.get(template.like) if template.added_by and template.like in catalog else template


# ------------------------------------------------------------------------------------------------ the check
def check_repo(catalog: Catalog, spec: ModelSpec, *, download: bool = True) -> None:
    """Refuse, before any weights are read, a repo whose config is not one the family loads (Family.accepts).

    With `download`, the config is fetched when it is not cached (hf_hub_download of that one file), as the
    manager's load does; without, a repo whose config is not cached passes, to be checked at its load.
    """
    family = catalog.family(spec)
    found = _find_config(spec, family.accepts, download)
    if found is None:
        return
    rule, config = found
    value = rule.read(config)
    if isinstance(value, str) and value in rule.values:
        return
    said = f"says {rule.key} {echo(value)}" if value is not None else f"has no {rule.key}"
    other = _family_of(catalog, rule, value)
    if other is not None:
        fix = f"it is a {other} model: add it as {spec.repo_id}={other}"
    else:
        fix = "no family of the studio loads it: check the repo id, or remove the entry"
    raise ModelUnavailable(
        f"{spec.repo_id} is not a {family.name} model: its {rule.file} {said}, and {family.name} loads "
        f"{rule.describe()}; {fix} ({_entry_name(spec)})"
    )


def _entry_name(spec: ModelSpec) -> str:
    return f"it was added by {spec.added_by}" if spec.added_by in (FLAG, ENV) else f"it is added in {spec.added_by}"


def _family_of(catalog: Catalog, rule: Accepts, value: Any) -> str | None:
    """The family whose accepts has `value` for the same file and key, when there is one."""
    return next((family.name for family in catalog.families() if any(
        r.file == rule.file and r.key == rule.key and value in r.values for r in family.accepts)), None)


def _find_config(spec: ModelSpec, accepts: tuple[Accepts, ...], download: bool) -> tuple[Accepts, Mapping] | None:
    """The first of the family's config files the repo has, parsed, with its rule; None when none is cached and
    `download` is off. The hub's "no such file" moves on to the next alternative; a repo that has none is refused."""
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

    from studio.weights import offline, repair_hint

    unknown = []
    for rule in accepts:
        found = try_to_load_from_cache(spec.repo_id, rule.file)
        if found is _CACHED_NO_EXIST:  # the hub said so before, and the cache remembers
            continue
        if not isinstance(found, str):
            if not download or offline():
                unknown.append(rule.file)
                continue
            found = _download(spec.repo_id, rule.file)
            if found is None:
                continue
        try:
            config = json.loads(Path(found).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelUnavailable(f"{spec.repo_id}'s {rule.file} in the cache is not valid JSON ({error}): "
                                   f"{repair_hint(spec.repo_id)}") from None
        return rule, config if isinstance(config, Mapping) else {}
    files = " or ".join(rule.file for rule in accepts)
    if unknown and not download:
        return None
    if unknown:
        raise ModelUnavailable(f"{spec.repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set, so its "
                               f"{files} cannot be checked nor its weights downloaded: run once online, or copy the "
                               f"model into the cache")
    raise ModelUnavailable(f"{spec.repo_id} has no {files}: it is not a {spec.family} model ({_entry_name(spec)}); "
                           f"check the repo id")


def _download(repo_id: str, filename: str) -> str | None:
    """The one config file fetched into the HF cache, before any weights; None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename)
    except RemoteEntryNotFoundError:
        return None
