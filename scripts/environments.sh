# shellcheck shell=bash
# Fresh virtual environments that nothing installed on the machine takes part in (sourced, not run): used by
# .ci/run and scripts/lock_requirements.sh. See the README's "Tested versions".

LOCK_FILE=requirements-lock.txt

# Variables through which a machine's own packages would reach into a virtual environment's Python.
isolate_from_machine() {
    unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV
    export PYTHONNOUSERSITE=1
}

# A new, empty virtual environment at DIR (anything there before is removed): fresh_venv DIR
fresh_venv() {
    "${PYTHON:-python3}" -m venv --clear "$1"
}

# Run a command with DIR's interpreter first on PATH, as `. DIR/bin/activate` would: in_venv DIR CMD ...
# (the protocol scripts call `python3`, which must be the environment's).
in_venv() {
    local dir="$1"
    shift
    PATH="$dir/bin:$PATH" VIRTUAL_ENV="$dir" "$@"
}

# The exact versions installed in DIR, one `name==version` per line, pip itself left out (it comes with the
# environment, not from our requirements; setuptools is a requirement, so --all keeps it): frozen DIR
frozen() {
    in_venv "$1" python -m pip freeze --all --exclude pip
}

# The `name==version` lines of the lock file, without its comments.
locked() {
    grep -v '^#' "$LOCK_FILE" | grep -v '^$'
}

# Fail, showing the differences, unless DIR holds exactly the locked versions: check_matches_lock DIR
check_matches_lock() {
    local installed
    installed="$(frozen "$1")"
    if [ "$installed" != "$(locked)" ]; then
        echo "error: the environment at $1 differs from $LOCK_FILE (< lock, > installed):" >&2
        diff <(locked) <(echo "$installed") >&2 || true
        return 1
    fi
}
