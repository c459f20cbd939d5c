"""The locked environment: every package the project installs has an exact version in requirements.lock,
and the environment the tests run in is that one (a fresh clone gets the packages the figures were made with)."""
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.lock: '{line}' is not name==version"
            pins[_canonical(name)] = version
    return pins


def test_every_requirement_is_locked_and_setup_uses_the_lock():
    pins = _lock()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~\[ ]", line)[0]
            assert _canonical(name) in pins, f"{name} of requirements.txt has no exact version in requirements.lock"
    assert '-c "$_se_lock"' in (ROOT / "utils" / "setup_env.sh").read_text()


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not running in the project's virtual environment")
def test_the_environment_is_the_locked_one():
    pins = _lock()
    installed = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    skip = {"pip", "setuptools", "wheel"}
    unlocked = sorted(n for n in installed if n not in pins and n not in skip)
    differ = sorted(f"{n} {installed[n]} (lock: {pins[n]})" for n in installed if n in pins and installed[n] != pins[n])
    assert not unlocked, f"installed but not in requirements.lock: {unlocked}"
    assert not differ, f"installed at other versions than requirements.lock: {differ}"
