"""The lock and the ranges agree: every requirement of requirements.txt / requirements-dev.txt is pinned in
requirements-lock.txt at a version its range admits, and the check .ci/run makes of a fresh environment
(scripts/environments.sh) passes on exactly the locked versions and names any difference."""
import os
import re
import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirement_lines(name: str) -> list:
    """The requirement lines of a requirements file, `-r` includes followed, comments dropped."""
    lines = []
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r "):
                lines += _requirement_lines(line[3:].strip())
            elif line:
                lines.append(line)
    return lines


def _locked() -> dict:
    pins = {}
    for line in _requirement_lines("requirements-lock.txt"):
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_exact_versions_only():
    lines = _requirement_lines("requirements-lock.txt")
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+", line) for line in lines)


@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements-dev.txt"])
def test_every_range_admits_its_locked_version(requirements):
    pins = _locked()
    for line in _requirement_lines(requirements):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} ({requirements}) is not in requirements-lock.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirements} asks for {line!r} but the lock has {pins[name]}: run scripts/lock_requirements.sh")


def _fake_venv(tmp_path, freeze_output: str) -> str:
    """A directory whose bin/python answers `python -m pip freeze ...` with `freeze_output`."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (tmp_path / "freeze.txt").write_text(freeze_output)
    python = bin_dir / "python"
    python.write_text(f"#!/bin/sh\ncat '{tmp_path / 'freeze.txt'}'\n")
    python.chmod(0o755)
    return str(tmp_path / "venv")


def _check(venv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", 'source scripts/environments.sh && check_matches_lock "$1"', "-", venv],
                          cwd=REPO, capture_output=True, text=True)


def test_the_ci_check_accepts_exactly_the_locked_versions(tmp_path):
    exact = "\n".join(_requirement_lines("requirements-lock.txt")) + "\n"
    assert _check(_fake_venv(tmp_path, exact)).returncode == 0


def test_the_ci_check_names_a_version_that_differs(tmp_path):
    lines = _requirement_lines("requirements-lock.txt")
    changed = [re.sub(r"==.*", "==0.0.1", line) if line.startswith("numpy==") else line for line in lines]
    result = _check(_fake_venv(tmp_path, "\n".join(changed + ["extra-package==1.0"]) + "\n"))
    assert result.returncode == 1
    assert "differs from requirements-lock.txt" in result.stderr
    assert "> numpy==0.0.1" in result.stderr and "> extra-package==1.0" in result.stderr
