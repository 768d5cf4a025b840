"""Pure text for the page: dropdown labels, the estimate line, the result and memory tables (Markdown)."""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

from studio.catalog import ModelSpec
from studio.estimate import format_seconds
from studio.settings import format_bytes

STAGE_LABELS = {
    "queued": "Waiting for the device",
    "downloading": "Downloading the model",
    "loading": "Loading the model",
    "generating": "Generating",
    "decoding": "Decoding audio",
    "saving": "Saving the file",
}


def model_choices(specs: Iterable[ModelSpec]) -> list[tuple[str, str]]:
    """(shown, value) pairs: the label people know, and the repo id the API takes."""
    return [(f"{spec.label} · {spec.repo_id}", spec.repo_id) for spec in specs]


def model_note(spec: ModelSpec) -> str:
    size = f"{spec.parameters / 1e6:,.0f}M parameters" if spec.parameters < 1e9 else f"{spec.parameters / 1e9:.1f}B parameters"
    parts = [spec.description, f"{size} · license {spec.license}"]
    return " ".join(_escape(p) for p in parts if p)


def estimate_line(summary: str) -> str:
    return f"**Estimate:** {_escape(summary)}"


def _cell(value: Any) -> str:
    return _escape(str(value)).replace("|", "\\|").replace("\n", " ")


def _escape(text: str) -> str:
    # Prompts are user text: keep Markdown from turning them into links, headings or HTML.
    for ch in "\\`*_[]<>#":
        text = text.replace(ch, "\\" + ch)
    return text


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {_cell(name)} | {_cell(value)} |" for name, value in rows]
    return "\n".join(lines)


def metadata_markdown(metadata: Mapping[str, Any]) -> str:
    """What people want to know about a result, as a small two-column table (the file holds everything)."""
    if not metadata:
        return ""
    text = metadata.get("text", metadata.get("prompt", ""))
    rows: list[tuple[str, Any]] = [
        ("Model", metadata.get("model", "")),
        ("Text" if "text" in metadata else "Prompt", _clip(text, 160)),
        ("Seed", metadata.get("seed", "")),
        ("Length", f"{metadata.get('duration', 0):.2f} s at {metadata.get('sample_rate', 0) / 1000:g} kHz"
                   f"{' stereo' if metadata.get('channels') == 2 else ''}"),
        ("Took", f"{format_seconds(metadata.get('elapsed_s', 0))} (estimated {format_seconds(metadata.get('estimated_s', 0))})"),
    ]
    if metadata.get("peak_bytes"):
        rows.append(("Peak memory", format_bytes(metadata["peak_bytes"])))
    rows.append(("Ran on", f"{metadata.get('device', '')} · {metadata.get('placement', '')} · {metadata.get('dtype', '')}"))
    settings = metadata.get("settings") or {}
    if settings:
        rows.append(("Settings", ", ".join(f"{k} {_short(v)}" for k, v in settings.items())))
    for note in metadata.get("recoveries") or ():
        rows.append(("Recovered", note))
    rows.append(("File", f"{metadata.get('file', '')} ({metadata.get('format', '')})"))
    rows.append(("License", metadata.get("license", "")))
    return _table(rows)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ago(then: float | None, now: float) -> str | None:
    if not then:
        return None
    seconds = max(0.0, now - then)
    if seconds < 60:
        return f"used {seconds:.0f} s ago"
    if seconds < 3600:
        return f"used {seconds / 60:.0f} min ago"
    return f"used {seconds / 3600:.1f} h ago"


def memory_markdown(snapshot: Mapping[str, Any], *, now: float | None = None) -> str:
    """The memory panel: the device, used of budget of total, then one row per model the manager knows."""
    now = time.time() if now is None else now
    used, budget, total = snapshot["used_bytes"], snapshot["budget_bytes"], snapshot["total_bytes"]
    lines = [
        f"**{_escape(snapshot['device'])}**",
        "",
        f"{format_bytes(used)} used of {format_bytes(budget)} budget  ",
        f"{format_bytes(total)} total",
    ]
    if snapshot.get("ram_bytes"):
        lines[-1] += "  "
        lines.append(f"{format_bytes(snapshot['ram_bytes'])} of models kept in RAM")
    models = snapshot.get("models") or []
    if not models:
        lines += ["", "No model loaded yet: each loads on first use."]
        return "\n".join(lines)
    lines.append("")
    for row in models:
        size = format_bytes(row["bytes"]) if row.get("bytes") else None
        details = [row["state"], size, "pinned" if row.get("pinned") else None, _ago(row.get("last_used"), now)]
        lines.append(f"- **{_escape(row.get('label') or row['id'])}**  \n"
                     f"  {' · '.join(_escape(d) for d in details if d)}")
    return "\n".join(lines)
