#!/usr/bin/env bash
# Refresh requirements-lock.txt: resolve requirements-dev.txt's ranges (runtime and test dependencies) in a
# fresh virtual environment and write the exact version of every package installed there, transitive ones
# included. Run it after changing a range, then run `bash .ci/run`, which tests the new lock.
#   bash scripts/lock_requirements.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,5p' "$0" | cut -c3-; exit 0 ;;
    "") ;;
    *) echo "error: lock_requirements.sh takes no arguments" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
source scripts/environments.sh
isolate_from_machine
work="$(mktemp -d "${TMPDIR:-/tmp}/lock.XXXXXX")"
trap 'rm -rf "$work"' EXIT

fresh_venv "$work/venv"
in_venv "$work/venv" python -m pip install -q -r requirements-dev.txt
platform="$(in_venv "$work/venv" python -c \
    'import platform; print(f"CPython {platform.python_version()} on {platform.system()} {platform.machine()}")')"
{
    echo "# The exact versions the tests run with (.ci/run installs this file and checks \`pip freeze --all"
    echo "# --exclude pip\` equals it). Resolved from requirements-dev.txt by scripts/lock_requirements.sh on"
    echo "# $platform; elsewhere, install the ranges of requirements-dev.txt."
    frozen "$work/venv"
} > "$work/lock"
mv "$work/lock" "$LOCK_FILE"
echo "wrote $LOCK_FILE ($(locked | wc -l) packages, $platform)"
