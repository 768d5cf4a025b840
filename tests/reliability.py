"""The hardening record: tests marked `reliability` are collected with their outcome into docs/reliability.md.

Mark a test (or each parametrized case) with what is tried and how, and note what was observed:

    @pytest.mark.reliability("Bad input", "duration NaN", "API /music, CLI, page handler")
    def test_nan(reliability):
        ...
        reliability.note("error names the value and the range; next request served")

The document is rewritten at the end of a run that collected the whole suite (plain `pytest`, as CI runs it),
so it always shows the last complete run's outcomes; a filtered run (-k, -m, a file) leaves it alone.

Under pytest-xdist the tests run in worker processes: each report carries its case (outcome and notes) in its
`user_properties`, and the controller, which writes the document, gathers them from the reports.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
AREAS = ("Bad input", "Load", "Faults", "Security")
INTRO = {
    "Bad input": "Each case goes through the named entry points; every one must answer with one clear message naming "
                 "the value and the fix, keep the server up, serve the next good request, and lose nothing already "
                 "generated.",
    "Load": "Concurrent gradio_client clients against one server whose budget fits one model at a time.",
    "Faults": "Failures injected while loading, generating, downloading and writing; the studio must recover or "
              "explain, and stay consistent.",
    "Security": "What a shared page exposes, and what a prompt or a model repo can make the studio do.",
}


@dataclass
class Case:
    area: str
    case: str
    how: str
    test: str
    outcome: str = "not run"
    notes: list[str] = field(default_factory=list)
    order: int = 0  # its place in the collection: the document lists cases in it, whichever worker ran them


class Recorder:
    """The `reliability` fixture: notes what the test observed (figures, messages) for the document."""

    def __init__(self, case: Case | None) -> None:
        self._case = case

    def note(self, text: str) -> None:
        if self._case is not None:
            self._case.notes.append(str(text))


_cases: dict[str, Case] = {}


def _marker_case(item) -> Case | None:
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return None
    args = list(marker.args) + [marker.kwargs.get(k) for k in ("area", "case", "how")[len(marker.args):]]
    area, case, how = (args + [None, None, None])[:3]
    if area not in AREAS:
        raise pytest.UsageError(f"{item.nodeid}: reliability area {area!r} is not one of {AREAS}")
    if item.get_closest_marker("browser") is not None:  # test.sh runs the browser tests apart (see _whole_suite)
        raise pytest.UsageError(f"{item.nodeid}: a reliability case must not be a browser test")
    return _cases.setdefault(item.nodeid, Case(area, case or item.name, how or "", item.nodeid))


@pytest.fixture
def reliability(request) -> Recorder:
    return Recorder(_marker_case(request.node))


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "reliability(area, case, how): a hardening case recorded in docs/reliability.md")


def pytest_collection_modifyitems(session, config, items) -> None:
    for order, item in enumerate(items):
        case = _marker_case(item)
        if case is not None:
            case.order = order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    case = _cases.get(item.nodeid)
    if case is None:
        return
    if report.failed:
        case.outcome = "FAILED"
    elif report.skipped and case.outcome == "not run":
        case.outcome = "skipped"
    elif report.when == "call" and report.passed and case.outcome == "not run":
        case.outcome = "passed"
    if _is_worker(item.config):  # for the controller (pytest_runtest_logreport), which writes the document
        # One entry, the latest: a test's reports share its item's list of properties.
        report.user_properties[:] = [p for p in report.user_properties if p[0] != _PROPERTY]
        report.user_properties.append((_PROPERTY, dataclasses.asdict(case)))


_PROPERTY = "reliability-case"


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report) -> None:
    """On the xdist controller: the case as the worker last saw it (each phase's report carries it)."""
    for name, value in getattr(report, "user_properties", ()):
        if name == _PROPERTY:
            _cases[value["test"]] = Case(**value)


def _whole_suite(config) -> bool:
    """Whether this run holds every reliability case: no selection by keyword, file, failure or mark, except test.sh's
    first part (`-m "not browser"`), which leaves out only browser tests, and no reliability case is one."""
    option = config.option
    if option.keyword or option.markexpr not in ("", "not browser") or getattr(option, "lf", False) \
            or getattr(option, "deselect", None):
        return False
    tests_dir = ROOT / "tests"
    args = [Path(a.split("::")[0]).resolve() for a in config.args] or [ROOT]
    return all(a in (ROOT, tests_dir) for a in args)


def pytest_sessionfinish(session, exitstatus) -> None:
    if not _cases or _is_worker(session.config) or not _whole_suite(session.config) or session.shouldstop:
        return
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(sorted(_cases.values(), key=lambda c: c.order)), encoding="utf-8")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(cases: list[Case]) -> str:
    passed = sum(c.outcome == "passed" for c in cases)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability",
        "",
        "Generated by the test suite (`tests/reliability.py`) at the end of every complete `pytest` run: do not edit "
        "by hand. Each row is a test marked `reliability`; its result is that test's outcome in the run, with what "
        "it observed.",
        "",
        f"Last complete run: {when}, Python {platform.python_version()} on {platform.machine()}: "
        f"**{passed} of {len(cases)} cases passed**.",
        "",
        "| area | cases | passed |",
        "|---|---|---|",
    ]
    for area in AREAS:
        mine = [c for c in cases if c.area == area]
        lines.append(f"| {area} | {len(mine)} | {sum(c.outcome == 'passed' for c in mine)} |")
    for area in AREAS:
        mine = [c for c in cases if c.area == area]
        if not mine:
            continue
        lines += ["", f"## {area}", "", INTRO[area], "", "| case | how | result | test |", "|---|---|---|---|"]
        for c in mine:
            result = c.outcome if c.outcome != "passed" else "passed"
            if c.notes:
                result += ": " + "; ".join(c.notes)
            lines.append(f"| {_cell(c.case)} | {_cell(c.how)} | {_cell(result)} | `{_cell(c.test)}` |")
    return "\n".join(lines) + "\n"
