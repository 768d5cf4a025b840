"""The model picker: one entry per model, except families with one repo per language, which get one entry
and a language picker (MMS-TTS: facebook/mms-tts-eng, -deu, ... appear once, as "MMS-TTS").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from studio.catalog import ModelSpec, fold_languages

PREFERRED_LANGUAGE = "eng"


@dataclass(frozen=True)
class ModelGroup:
    """One entry of the model dropdown: a single model, or a family of per-language models."""

    key: str  # the dropdown's value: the repo id, or the repo prefix for a language family
    label: str
    specs: tuple[ModelSpec, ...]

    @property
    def by_language(self) -> bool:
        return len(self.specs) > 1 or self.specs[0].language is not None

    @property
    def default(self) -> ModelSpec:
        return next((s for s in self.specs if s.language == PREFERRED_LANGUAGE), self.specs[0])

    def languages(self) -> list[tuple[str, str]]:
        """(language name, repo id) pairs for the language dropdown, in catalog order."""
        return [(language_name(self, spec), spec.repo_id) for spec in self.specs]

    def spec_for(self, language: str | None) -> ModelSpec:
        return next((s for s in self.specs if s.repo_id == language), self.default)


def language_name(group: ModelGroup, spec: ModelSpec) -> str:
    """'MMS-TTS German' in the group 'MMS-TTS' -> 'German'; the code when the label says nothing more."""
    name = spec.label[len(group.label):].strip(" -·") if spec.label.startswith(group.label) else spec.label
    return name or (spec.language or spec.repo_id)


def group_models(specs: list[ModelSpec]) -> list[ModelGroup]:
    """Group per-language repos of one family into one entry, keeping the catalog's order (featured first)."""
    groups = []
    for stem, members in fold_languages(specs):
        if stem is None:
            groups.append(ModelGroup(members[0].repo_id, members[0].label, members))
            continue
        key = stem.rstrip("-_")
        label = os.path.commonprefix([s.label for s in members]).strip(" -·") or key
        if len(members) == 1:  # a lone language repo: its own label says which language
            label = members[0].label
        groups.append(ModelGroup(key, label, members))
    return groups


def find_group(groups: list[ModelGroup], repo_id: str) -> ModelGroup | None:
    """The group holding `repo_id` (or whose key it is)."""
    for group in groups:
        if group.key == repo_id or any(s.repo_id == repo_id for s in group.specs):
            return group
    return None
