#!/usr/bin/env bash
# Install everything the tests need into .venv (once), then run the whole test suite.
# Usage: bash test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# Browser tests drive Debian's Chromium through Playwright (never `playwright install`: it downloads a browser).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "warning: could not install chromium; browser tests will be skipped" >&2
    else
        echo "warning: chromium not found; browser tests will be skipped (install Debian's chromium)" >&2
    fi
fi

# pytest's exit code 5 (no tests collected) is a failure here.
run_pytest() {
    local status
    set +e
    .venv/bin/python -m pytest "$@"
    status=$?
    set -e
    if [ "$status" -eq 5 ]; then
        echo "error: pytest collected no tests ($*)" >&2
        return 1
    fi
    return "$status"
}

if [ "$#" -gt 0 ]; then  # a developer's selection: one run, as given
    run_pytest "$@"
    exit $?
fi

# The whole suite in two parts. The tests that drive no browser run on two workers (pytest-xdist; each test module
# stays on one worker): most of their time is one busy core, a tiny model or a CLI process. Then the browser tests
# run alone: a page that competes with a second worker for the two cores missed its timeouts (measured: three of
# them failed when the browser tests ran beside a worker). A failure in the first part still runs the second.
# The tiny checkpoints are built by the first test process that needs them and copied by the rest (tests/conftest.py).
STUDIO_TESTS_TINY_CACHE="$(mktemp -d)"
export STUDIO_TESTS_TINY_CACHE
trap 'rm -rf "$STUDIO_TESTS_TINY_CACHE"' EXIT
status=0
run_pytest -m "not browser" -n 2 --dist loadgroup || status=$?
run_pytest -m browser || status=$((status ? status : $?))
exit "$status"
