#!/usr/bin/env bash
# Run the whole test suite (lint, type check, then pytest) on a prepared machine; prepares it first.
# --quick: lint, type check and the unit tests only (marker "unit"), on an already prepared
# machine (scripts/bootstrap.sh once); further arguments go to pytest either way.
# The full suite runs on AGATA_TEST_WORKERS pytest-xdist workers (default 2; 1 runs it in one
# process), a module's tests on one worker, long modules first (tests/scheduling.py).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
if [ "${1:-}" = "--quick" ]; then
  quick=true
  shift
fi
if $quick; then
  [ -x .venv/bin/pytest ] || { echo "[test] no .venv: run scripts/bootstrap.sh first" >&2; exit 1; }
else
  scripts/bootstrap.sh
  # The container tests need a Docker engine and the task image; without them they are skipped.
  if ! scripts/docker_engine.sh; then
    echo "[test] no Docker engine (see above): the container tests will be skipped" >&2
  fi
fi
# Python's bytecode cache on: a process compiles none of our modules a previous one compiled
# (these machines set PYTHONDONTWRITEBYTECODE; a cloud task manager's start then costs about 10 %
# more CPU), and pytest keeps its rewritten test modules between runs.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/ruff check .
.venv/bin/mypy
set +e
if $quick; then
  .venv/bin/pytest -m unit "$@"
else
  workers="${AGATA_TEST_WORKERS:-2}"
  spread=()
  if [ "$workers" -gt 1 ] && ! printf '%s\n' "$@" | grep -qE '^(-n|--numprocesses)'; then
    spread=(-n "$workers" --dist loadfile)
  fi
  .venv/bin/pytest "${spread[@]}" "$@"
fi
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 0
fi
exit "$status"
