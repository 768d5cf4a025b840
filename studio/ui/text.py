"""Pure text for the page: dropdown labels, the estimate, progress, the result table, the memory panel, history rows.

Everything here is a plain function of plain data, so it is tested without a browser. User text (prompts,
model ids from the API) is escaped for the place it goes: Markdown cells or HTML.
"""

from __future__ import annotations

import html
import re
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from studio.catalog import TASK_LABELS, ModelSpec, format_parameters, metadata_text
from studio.estimate import Estimate, format_seconds
from studio.settings import format_bytes

STAGE_LABELS = {
    "queued": "Waiting for the device",
    "downloading": "Downloading the model",
    "loading": "Loading the model",
    "generating": "Generating",
    "decoding": "Decoding audio",
    "saving": "Saving the file",
}

# Bark presets are named v2/<language>_speaker_<n>.
VOICE_LANGUAGES = {
    "en": "English", "de": "German", "es": "Spanish", "fr": "French", "hi": "Hindi", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "tr": "Turkish",
    "zh": "Chinese",
}


# ------------------------------------------------------------------ models and voices


def model_choice_label(label: str, need_bytes: int | None, license: str) -> str:
    """What the model dropdown shows: 'MusicGen small · 1.4 GB · CC-BY-NC-4.0'."""
    parts = [label]
    if need_bytes:
        parts.append(format_bytes(need_bytes))
    parts.append(license)
    return " · ".join(parts)


def model_note(spec: ModelSpec) -> str:
    """One line under the picker: what the model is good for, its repo id, size and licence (Markdown)."""
    size = f"{format_parameters(spec.parameters)} parameters"
    text = f"{_escape(spec.description)} `{spec.repo_id}` · {size} · licence {_escape(spec.license)}"
    if "-NC" in spec.license.upper():
        text += " (non-commercial)"
    return text.strip()


def voice_label(voice: str) -> str:
    """'v2/en_speaker_6' -> 'English · speaker 6'; anything else is shown as it is."""
    name = voice.rsplit("/", 1)[-1]
    lang, sep, rest = name.partition("_speaker_")
    if sep and rest.isdigit():
        return f"{VOICE_LANGUAGES.get(lang, lang)} · speaker {rest}"
    return voice


def voice_choices(voices: Iterable[str]) -> list[tuple[str, str]]:
    return [(voice_label(v), v) for v in voices]


def format_choices(formats: Iterable[str]) -> list[tuple[str, str]]:
    return [(f.upper(), f) for f in formats]


# ------------------------------------------------------------------ estimate and progress


def estimate_html(estimate: Estimate | None, *, problem: str | None = None, first_audio: bool = False) -> str:
    """The line above Generate: 'about 24 s · needs 2.3 GB of 7.6 GB · float16 · will unload suno/bark-small';
    `first_audio`: for a run that streams, also when it is first heard ('about 24 s · first audio in about 5 s')."""
    if estimate is None:
        return f'<div class="studio-estimate studio-estimate-wait">{html.escape(problem or "")}</div>'
    kind = "ok" if estimate.fits and estimate.placement == "device" else "warn" if estimate.fits else "bad"
    summary = html.escape(estimate.summary(first_audio=first_audio))
    share = ""
    if estimate.budget_bytes and estimate.fits and estimate.placement == "device":
        percent = min(100.0, 100.0 * estimate.bytes / estimate.budget_bytes)
        share = f'<div class="studio-meter"><div style="width:{percent:.1f}%"></div></div>'
    return (f'<div class="studio-estimate studio-estimate-{kind}"><span class="studio-estimate-title">Estimate</span>'
            f'<span class="studio-estimate-text">{summary}</span>{share}</div>')


def remaining_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 0.5:
        return "almost done"
    return f"about {format_seconds(seconds)} left"


def progress_desc(stage: str, remaining: float | None, *, steps: tuple[int, int] | None = None,
                  share: float | None = None) -> str:
    """The progress bar's text: 'Generating · 12/50 steps · about 8 s left'; a stage that reports its share of work
    done (converting a checkpoint once): 'Converting, once · 40% · about 1 min 10 s left'."""
    parts = [STAGE_LABELS.get(stage, stage.capitalize())]
    if steps is not None:
        parts.append(f"{steps[0]}/{steps[1]} steps")
    elif share is not None:
        parts.append(f"{100 * share:.0f}%")
    rest = remaining_text(remaining)
    if rest:
        parts.append(rest)
    return " · ".join(parts)


def waiting_desc(ahead: int, seconds: float | None) -> str:
    """A run waiting for its device: 'Waiting for the device: 1 run ahead, about 15 s'."""
    if ahead <= 0:
        return STAGE_LABELS["queued"]
    text = f"{STAGE_LABELS['queued']}: {'1 run' if ahead == 1 else f'{ahead} runs'} ahead"
    if seconds is None:
        return text
    return text + (f", about {format_seconds(seconds)}" if seconds >= 0.5 else ", finishing")


# The part of a run after its last step (decoding, saving) as a share of its compute, until it is measured.
TAIL_SHARE = 0.1


def remaining_seconds(*, estimated_total: float | None, elapsed: float, done: int = 0, total: int | None = None,
                      per_step: float | None = None, since_step: float = 0.0, since_steps_end: float | None = None,
                      tail_share: float = TAIL_SHARE) -> float | None:
    """Time left of a run that has run `elapsed` seconds.

    Before any step is seen: the estimate minus the time spent (None without an estimate). Once steps are seen
    (`done` of `total`, `per_step` seconds each as measured): the steps to go at that rate, less the time since the
    latest step (never below the steps after the current one), plus the part after the last step (decoding,
    saving) scaled from the same measure: `tail_share` of the whole compute, so tail_share / (1 - tail_share) of
    the steps' time. After the last step (`since_steps_end` seconds ago) only that part is left. Nothing here
    goes back to the estimate once steps are measured, so the time left does not jump when a stage changes.
    """
    if not (total and done > 0 and per_step is not None):
        return None if estimated_total is None else max(0.0, estimated_total - elapsed)
    per_step = max(0.0, per_step)
    tail = per_step * total * tail_share / max(1e-6, 1.0 - tail_share)
    if since_steps_end is not None or done >= total:
        return max(0.0, tail - (since_steps_end or 0.0))
    to_go = total - done
    return max(per_step * to_go - since_step, per_step * (to_go - 1), 0.0) + tail


# ------------------------------------------------------------------ result


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
    key, text = metadata_text(metadata)
    rows: list[tuple[str, Any]] = [
        ("Model", metadata.get("model", "")),
        (key.capitalize(), _clip(text, 160)),
        ("Seed", metadata.get("seed", "")),
        ("Length", f"{metadata.get('duration', 0):.2f} s at {metadata.get('sample_rate', 0) / 1000:g} kHz"
                   f"{' stereo' if metadata.get('channels') == 2 else ''}"),
        ("Took", f"{format_seconds(metadata.get('elapsed_s', 0))} (estimated {format_seconds(metadata.get('estimated_s') or 0)})"),
    ]
    if metadata.get("source") == "api":  # a request of the OpenAI-compatible API (studio.openai_speech)
        rows.append(("From", _api_source(metadata.get("api") or {})))
    if metadata.get("peak_bytes"):
        rows.append(("Peak memory", format_bytes(metadata["peak_bytes"])))
    # On the CPU "whole on the device" (or "on the CPU") would only repeat the device's name.
    on_cpu = str(metadata.get("device") or "").startswith("CPU") and metadata.get("placement") in ("device", "cpu")
    placement = None if on_cpu else _placement(metadata.get("placement"))
    ran_on = [metadata.get("device"), placement, metadata.get("dtype")]
    if any(ran_on):
        rows.append(("Ran on", " · ".join(str(p) for p in ran_on if p)))
    inputs = metadata.get("inputs") or {}
    if metadata.get("voice_cloned"):
        rows.append(("Voice", _cloned_voice(metadata)))
    rows += _audio_rows(metadata, inputs)
    settings = metadata.get("settings") or {}
    if settings:
        # An audio input by the name the user knows it by, not its stored copy's digest.
        named = {k: (inputs[k].get("name") or v) if isinstance(inputs.get(k), Mapping) else v
                 for k, v in settings.items() if v is not None}  # an optional clip not given: nothing to say
        rows.append(("Settings", " · ".join(f"{k.replace('_', ' ')} {_setting(v)}" for k, v in named.items())))
    for note in metadata.get("recoveries") or ():
        rows.append(("Recovered", note))
    if metadata.get("file"):
        rows.append(("File", f"{metadata.get('file', '')} ({str(metadata.get('format', '')).upper()})"))
    if metadata.get("license"):
        rows.append(("Licence", metadata["license"]))
    return _table(rows)


def _api_source(api: Mapping[str, Any]) -> str:
    """'the OpenAI-compatible API (/v1/audio/speech; model tts, voice alloy)': what the client asked for."""
    asked = [f"{name} {api[name]}" for name in ("model", "voice") if isinstance(api.get(name), str) and api[name]]
    return f"the OpenAI-compatible API ({api.get('endpoint') or '/v1/audio/speech'}" + \
        (f"; {', '.join(asked)})" if asked else ")")


def _cloned_voice(metadata: Mapping[str, Any]) -> str:
    """'my-voice · cloned (voice library) · consent confirmed 2026-05-01' for each cloned speaker."""
    parts = []
    for voice in metadata.get("cloned_voices") or ():
        who = f"Speaker {voice.get('speaker')}: " if len(metadata.get("cloned_voices")) > 1 else ""
        consent = voice.get("consent") or {}
        if voice.get("source") == "library":
            confirmed = str(consent.get("confirmed") or "")[:10]
            parts.append(f"{who}{voice.get('voice')} · cloned (voice library) · consent "
                         + (f"confirmed {confirmed}" if confirmed else "not recorded"))
        else:
            parts.append(f"{who}cloned from the clip given for this run · consent not asked")
    return "; ".join(parts) or "cloned"


def _audio_rows(metadata: Mapping[str, Any], inputs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The input clip and how much was added to it ("Continued riff.wav (5.0 s) by 10.0 s"), the windows an
    extension took, and whether it was cancelled part way ("partial: cancelled after 1 of 3 windows")."""
    rows = []
    clip = inputs.get("audio") if isinstance(inputs.get("audio"), Mapping) else None
    if clip is not None:
        name, have = clip.get("name") or clip.get("file") or "the clip", float(clip.get("duration") or 0.0)
        if "prompt_s" in metadata or "continuation_s" in metadata or metadata.get("partial"):
            added = metadata.get("continuation_s")
            if added is None:
                added = max(0.0, float(metadata.get("duration") or 0.0) - float(metadata.get("prompt_s", have)))
            rows.append(("Input", f"Continued {name} ({float(metadata.get('prompt_s', have)):.1f} s) by "
                                  f"{float(added):.1f} s"))
        else:  # a clip the model follows rather than continues (a melody)
            rows.append(("Input", f"{name} ({have:.1f} s)"))
    windows = metadata.get("windows")
    if metadata.get("partial"):
        done = metadata.get("windows_done")
        rows.append(("Windows", f"partial: cancelled after {done} of {windows} windows" if done is not None
                     else "partial: cancelled before the end"))
    elif isinstance(windows, int) and windows > 1:
        rows.append(("Windows", f"{windows}, each hearing the end of the one before"))
    return rows


def clip_gone(label: str, stored: Any, clip: Mapping[str, Any] | None) -> str:
    """The note when a past run's audio input cannot be brought back: its stored copy was deleted."""
    name = clip.get("name") if isinstance(clip, Mapping) and clip.get("name") else None
    what = f"{name} ({stored})" if name else str(stored)
    return (f"{label} is empty: {_escape(what)} is no longer in the output folder; upload or record the clip "
            "again.")


def sentence(text: str) -> str:
    """A message to show as it is, starting with a capital, unless it starts with a name (a model id, a path,
    an option) that must keep its case: 'duration must be ...' -> 'Duration must be ...', 'facebook/x ...' stays."""
    return text[:1].upper() + text[1:] if re.match(r"[a-z]+(?=[\s,:;.!?]|$)", text) else text


def _placement(placement: Any) -> str | None:
    return {"device": "whole on the device", "offload": "CPU offload", "cpu": "on the CPU"}.get(placement, placement)


# Longer text in the settings row (lyrics of a whole song) shows its start and its length: the row stays a row.
SETTING_CHARS = 60


def _setting(value: Any) -> str:
    """A setting's value in the settings row: text in quotes, so a sentence ending in '.' reads as one; empty text
    as empty quotes; long text (lyrics) as its start and its length."""
    if isinstance(value, str) and len(value) > SETTING_CHARS:
        return f"“{_clip(value, SETTING_CHARS)}” ({len(value):,} characters)"
    if isinstance(value, str) and (" " in value.strip() or not value.strip()):
        return f"“{value.strip()}”"
    return _short(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------ memory panel


def ago(then: float | None, now: float) -> str | None:
    """Coarse on purpose: the panel re-renders only when something it shows has changed."""
    if not then:
        return None
    seconds = max(0.0, now - then)
    if seconds < 60:
        return "used just now"
    if seconds < 3600:
        return f"used {seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"used {seconds / 3600:.0f} h ago"
    return "used " + datetime.fromtimestamp(then, timezone.utc).astimezone().strftime("%b %d")


def _pct(part: float, whole: float) -> float:
    return max(0.0, min(100.0, 100.0 * part / whole)) if whole > 0 else 0.0


def memory_html(snapshot: Mapping[str, Any], *, now: float | None = None) -> str:
    """The memory panel: device, a bar of used / budget / total, then one row per model with its actions.

    With two or more entries in snapshot["devices"], one block per device (its name, its own bar, the rows of the
    models it holds), then a block for the models on no device (in RAM, on disk), then "Unload all". With one
    device or none the panel is the single-device one, from the snapshot's totals.
    Buttons carry data-action and data-model; the panel's script turns clicks into Gradio events.
    """
    now = time.time() if now is None else now
    devices = list(snapshot.get("devices") or [])
    if len(devices) >= 2:
        return _memory_html_devices(snapshot, devices, now)
    e = html.escape
    parts = [
        '<div class="mem">',
        f'<div class="mem-device" title="{e(str(snapshot.get("device_kind", "")))}">{e(str(snapshot["device"]))}</div>',
        _memory_bar(snapshot["used_bytes"], snapshot["budget_bytes"], snapshot["total_bytes"]),
    ]
    parts.append(BUDGET_NOTE)
    if snapshot.get("ram_bytes"):
        parts.append(_ram_line(snapshot["ram_bytes"]))
    models = list(snapshot.get("models") or [])
    if not models:
        parts.append('<div class="mem-empty">No model loaded yet: each loads on first use.</div>')
    else:
        parts.append(_model_list(models, now))
    parts.append(_unload_all(models))
    parts.append("</div>")
    return "".join(parts)


def _memory_html_devices(snapshot: Mapping[str, Any], devices: list[Mapping[str, Any]], now: float) -> str:
    """One block per device, then the models on none. Every model in snapshot["models"] is shown once: a row no
    device lists (device None, or a device the snapshot does not name) goes to the last block."""
    e = html.escape
    models = list(snapshot.get("models") or [])
    kind = str(snapshot.get("device_kind", ""))
    parts = ['<div class="mem mem-multi">']
    shown: set[str] = set()
    for number, device in enumerate(devices):
        name = str(device.get("name") or "")
        rows = device.get("models")
        if rows is None:  # a device entry without its rows: take them from the top-level list
            rows = [row for row in models if row.get("device") == device.get("name")]
        rows = list(rows)
        shown.update(str(row["id"]) for row in rows)
        parts.append(f'<section class="mem-dev" data-device="{e(name)}" aria-label="{e(name)}">')
        parts.append(f'<div class="mem-device" title="{e(str(device.get("kind") or kind))}">{e(name)}</div>')
        parts.append(_memory_bar(device.get("used_bytes") or 0, device.get("budget_bytes") or 0,
                                 device.get("total_bytes") or 0, where=name))
        if number == 0:  # under the first bar only
            parts.append(BUDGET_NOTE)
        if rows:
            parts.append(_model_list(rows, now))
        elif models:
            parts.append('<div class="mem-empty">No model on this device.</div>')
        parts.append("</section>")
    rest = [row for row in models if str(row["id"]) not in shown]
    if rest or snapshot.get("ram_bytes"):
        parts.append('<section class="mem-dev mem-host" aria-label="RAM and disk">'
                     '<div class="mem-device">RAM and disk</div>')
        if snapshot.get("ram_bytes"):
            parts.append(_ram_line(snapshot["ram_bytes"]))
        if rest:
            parts.append(_model_list(rest, now))
        parts.append("</section>")
    if not models:
        parts.append('<div class="mem-empty">No model loaded yet: each loads on first use.</div>')
    parts.append(_unload_all(models))
    parts.append("</div>")
    return "".join(parts)


# Under the (first) bar: what "budget" means beside "total".
BUDGET_NOTE = ('<div class="mem-note">Budget: what the studio may use of the total, after the reserve and other '
               'programs.</div>')


def steady_budget(exact: int, shown: int | None, kind: str) -> int:
    """The budget the panel shows. On a CPU or Apple MPS the budget follows the free RAM, which other programs
    move all the time: there it is rounded (to 0.5 GB, or 0.1 GB under 5 GB) and the figure shown stays until
    the exact one is a whole step away from it, so the panel does not flicker between 22.9 and 23.1 GB.
    Elsewhere (a GPU's own memory) it is the exact figure. /memory keeps the exact bytes."""
    if kind not in ("cpu", "mps") or exact <= 0:
        return exact
    step = 500_000_000 if exact >= 5_000_000_000 else 100_000_000
    if shown is not None and abs(exact - shown) < step:
        return shown
    return max(step, round(exact / step) * step)


def steady_snapshot(snapshot: Mapping[str, Any], shown: dict[str, int]) -> dict[str, Any]:
    """The snapshot with each budget as `steady_budget` shows it; `shown` keeps the figures shown last (per
    device name, and '' for the total) and is updated."""
    kind = str(snapshot.get("device_kind") or "")
    devices = []
    for device in snapshot.get("devices") or ():
        name = str(device.get("name") or "")
        budget = steady_budget(int(device.get("budget_bytes") or 0), shown.get(name), str(device.get("kind") or kind))
        shown[name] = budget
        devices.append({**device, "budget_bytes": budget})
    total = steady_budget(int(snapshot.get("budget_bytes") or 0), shown.get(""), kind)
    shown[""] = total
    return {**snapshot, "budget_bytes": total, **({"devices": devices} if "devices" in snapshot else {})}


def _memory_bar(used: int, budget: int, total: int, *, where: str | None = None) -> str:
    """The used / budget / total bar and its legend; `where` names the device in the label when there are several."""
    e = html.escape
    scale = max(total, budget, used, 1)
    over = used > budget
    label = f"{format_bytes(used)} used of {format_bytes(budget)} budget" + (f" on {where}" if where else "")
    return (
        f'<div class="mem-bar" role="img" aria-label="{e(label)}">'
        f'<div class="mem-budget" style="width:{_pct(budget, scale):.2f}%"></div>'
        f'<div class="mem-used{" mem-over" if over else ""}" style="width:{_pct(used, scale):.2f}%"></div></div>'
        f'<div class="mem-legend"><span><b>{e(format_bytes(used))}</b> used of {e(format_bytes(budget))} budget</span>'
        f'<span>{e(format_bytes(total))} total</span></div>'
    )


def _ram_line(ram_bytes: int) -> str:
    return f'<div class="mem-ram">{html.escape(format_bytes(ram_bytes))} of models kept in RAM</div>'


def _model_list(rows: Iterable[Mapping[str, Any]], now: float) -> str:
    return '<ul class="mem-models">' + "".join(_model_row(row, now) for row in rows) + "</ul>"


def _holds_memory(row: Mapping[str, Any]) -> bool:
    """Loaded (on a device, in RAM, in use) or about to be (loading, downloading)."""
    return bool(row.get("bytes")) or row.get("state") in ("in use", "loading", "downloading", "on device", "in RAM")


def _unload_all(models: Iterable[Mapping[str, Any]]) -> str:
    """Enabled while it has something to unload: a loaded model that is not pinned (pinned ones stay)."""
    loaded = any(_holds_memory(row) and not row.get("pinned") for row in models)
    disabled = "" if loaded else " disabled"
    return f'<button class="mem-btn mem-unload-all" data-action="unload-all"{disabled}>Unload all</button>'


PIN_TITLES = {
    "pinned": "Pinned: never unloaded to make room for another model. Click to unpin; Unload still unloads it",
    "loaded": "Pin: never unload this model to make room for another model",
    "unloaded": "Only a loaded model can be pinned; it loads on first use",
}


def _model_row(row: Mapping[str, Any], now: float) -> str:
    """A model's row: its label and size; its state (an idle one says when it was last used; one in use says so, not
    when; a pinned one not loaded yet says it stays once loaded); Pin (enabled while loaded, or to unpin) and
    Unload (enabled while loaded; for a pinned model it also unpins)."""
    e = html.escape
    model_id = str(row["id"])
    state = str(row.get("state") or "")
    pinned = bool(row.get("pinned"))
    loaded = _holds_memory(row)
    size = format_bytes(row["bytes"]) if row.get("bytes") else ""
    busy = state in ("in use", "loading", "downloading")
    when = None if busy or not loaded else ago(row.get("last_used"), now)
    details = [d for d in (_placement_note(row), when) if d]
    if pinned and not loaded:
        details.append("pinned: stays loaded once it loads")
    state_class = state.replace(" ", "-").lower()
    shown_state = "in use now" if state == "in use" else state
    unload_label = "Unload" if state != "in use" else "Unload after run"
    pin_title = PIN_TITLES["pinned" if pinned else "loaded" if loaded else "unloaded"]
    unload_title = ' title="Unload it and unpin it"' if pinned and loaded else ""
    return (
        f'<li class="mem-model" data-model="{e(model_id)}" data-state="{e(state)}">'
        f'<div class="mem-line"><span class="mem-name" title="{e(model_id)}">{e(str(row.get("label") or model_id))}</span>'
        f'<span class="mem-size">{e(size)}</span></div>'
        f'<div class="mem-line mem-sub"><span class="mem-state mem-state-{e(state_class)}">{e(shown_state)}</span>'
        f'<span class="mem-when">{e(" · ".join(details))}</span></div>'
        f'<div class="mem-actions">'
        f'<button class="mem-btn mem-pin" data-action="pin" data-model="{e(model_id)}" data-pinned="{str(pinned).lower()}"'
        f' aria-pressed="{str(pinned).lower()}" title="{e(pin_title)}"{"" if loaded or pinned else " disabled"}>'
        f'{"Pinned" if pinned else "Pin"}</button>'
        f'<button class="mem-btn mem-unload" data-action="unload" data-model="{e(model_id)}"{unload_title}'
        f'{"" if loaded else " disabled"}>{unload_label}</button>'
        f"</div></li>"
    )


def _placement_note(row: Mapping[str, Any]) -> str | None:
    if row.get("placement") == "offload":
        return "CPU offload"
    if row.get("placement") == "cpu" and row.get("state") == "in use":
        return "on the CPU"
    return None


def _names(ids: list[str], labels: Mapping[str, str]) -> str:
    return ", ".join(labels.get(m, m) for m in ids)


def unload_message(outcome: Mapping[str, str], labels: Mapping[str, str] | None = None,
                   unpinned: Iterable[str] = ()) -> str:
    """What Unload / Unload all did, in one or two sentences, naming models by their label (as the panel does).

    `outcome` is per model id: 'unloaded', 'deferred' (in use: after the current run), 'pinned' (kept by Unload
    all) or 'not loaded'; `unpinned` are the ids an explicit Unload unpinned.
    """
    labels = labels or {}
    unpinned = set(unpinned)
    unloaded = [m for m, what in outcome.items() if what == "unloaded"]
    deferred = [m for m, what in outcome.items() if what == "deferred"]
    kept = [m for m, what in outcome.items() if what == "pinned"]
    parts = []
    if unloaded:
        names = _names(unloaded, labels) if len(unloaded) <= 2 else f"{len(unloaded)} models"
        parts.append(f"Unloaded {names}" + (" and unpinned it." if len(unloaded) == 1 and unloaded[0] in unpinned
                                          else "."))
    if deferred:
        one = len(deferred) == 1
        parts.append(f"{_names(deferred, labels)} {'is' if one else 'are'} in use and will unload after the current "
                     f"run" + ("; unpinned." if one and deferred[0] in unpinned else "."))
    if len(kept) == 1:
        parts.append(f"Kept 1 pinned model: {_names(kept, labels)} (its own Unload unloads it).")
    elif kept:
        parts.append(f"Kept {len(kept)} pinned models: {_names(kept, labels)} (each one's Unload unloads it).")
    if not parts:
        gone = [m for m in outcome if m in unpinned]
        if gone:
            return f"{_names(gone, labels)} was not loaded; unpinned it."
        return "Nothing to unload: no model is loaded."
    return " ".join(parts)


def pin_message(label: str, outcome: str) -> str:
    """What Pin did: 'pinned', 'pinned once loaded' (the model is not loaded now) or 'unpinned'."""
    if outcome == "pinned":
        return f"Pinned {label}: it is never unloaded to make room for another model (Unload still unloads it)."
    if outcome == "pinned once loaded":
        return f"Pinned {label}, which is not loaded now: once it loads, it is never unloaded to make room."
    return f"Unpinned {label}: it may be unloaded when another model needs the room."


# ------------------------------------------------------------------ history


def history_time(created: str, *, now: datetime | None = None) -> str:
    """'14:02' today, 'Nov 23 14:02' otherwise, in local time."""
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    local = when.astimezone()
    today = (now or datetime.now(timezone.utc)).astimezone().date()
    return local.strftime("%H:%M") if local.date() == today else local.strftime("%b %d %H:%M")


def history_html(items: Iterable[Any], *, selected: int | None = None, labels: Mapping[str, str] | None = None,
                 now: datetime | None = None) -> str:
    """The History list: one clickable row per item (time, kind, model, prompt excerpt, length), newest first.

    Rows carry data-id; the list's script turns a click into a Gradio event with that id.
    """
    e = html.escape
    labels = labels or {}
    rows = []
    for item in items:
        chosen = item.id == selected
        rows.append(
            f'<li><button class="hist-row{" hist-selected" if chosen else ""}" data-id="{int(item.id)}" '
            f'aria-pressed="{str(chosen).lower()}">'
            f'<span class="hist-prompt" title="{e(_clip(item.prompt, 400))}">{e(_clip(item.prompt, 120))}</span>'
            f'<span class="hist-length">{item.duration:.1f} s</span>'
            f'<span class="hist-meta"><span class="hist-time">{e(history_time(item.created, now=now))}</span> · '
            f'<span class="hist-task">{e(TASK_LABELS.get(item.task, item.task))}</span> · '
            f'<span class="hist-model" title="{e(item.model)}">{e(labels.get(item.model, item.model))}</span></span>'
            f"</button></li>"
        )
    if not rows:
        return ""
    return f'<ul class="hist-list">{"".join(rows)}</ul>'


def deleted_html(prompt: str) -> str:
    """The line beside History's Undo button after a delete: what went, and where it waits."""
    words = _clip(prompt or "", 60) or "the generation"
    return (f'<p class="hist-deleted" role="status" style="margin: 0; font-size: var(--text-sm); line-height: 1.4">'
            f'Deleted <strong>“{html.escape(words)}”</strong> · its file waits in the trash until the next start</p>')
