"""Packaging: what a wheel built from this checkout carries, and the
install step of tools/demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory):
    """One wheel built from this checkout, with the build's whole output."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--disable-pip-version-check",
         "-w", str(out), ROOT],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = [name for name in os.listdir(out) if name.endswith(".whl")]
    return os.path.join(out, wheel), result.stdout + result.stderr


def test_the_wheel_ships_the_license_the_type_marker_and_every_lua_file(built_wheel):
    path, _log = built_wheel
    names = set(zipfile.ZipFile(path).namelist())
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert "greenq/py.typed" in names
    assert "greenq/contrib/gunicorn.py" in names
    scripts = os.path.join(ROOT, "greenq", "scripts")
    for folder in (scripts, os.path.join(scripts, "include")):
        for lua in os.listdir(folder):
            if lua.endswith(".lua"):
                relative = os.path.relpath(os.path.join(folder, lua), ROOT).replace(os.sep, "/")
                assert relative in names, relative


def test_the_build_gives_no_deprecation_or_ignored_package_warning(built_wheel):
    _path, log = built_wheel
    assert "SetuptoolsDeprecationWarning" not in log
    assert "would be ignored" not in log


def _fake_checkout(tmp_path):
    """tools/demo in a folder of its own, with a .venv whose python and
    greenq only write down how they were called."""
    os.makedirs(tmp_path / "tools")
    shutil.copy(os.path.join(ROOT, "tools", "demo"), tmp_path / "tools" / "demo")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    bin_dir = tmp_path / ".venv" / "bin"
    os.makedirs(bin_dir)
    calls = tmp_path / "calls"
    for name in ("python", "greenq"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        script.chmod(0o755)
    return calls


def _run_demo(tmp_path):
    subprocess.run(["bash", str(tmp_path / "tools" / "demo"), "--jobs", "5"], check=True,
                   timeout=60, cwd=tmp_path)


def test_tools_demo_installs_once_and_again_only_when_pyproject_changes(tmp_path):
    calls = _fake_checkout(tmp_path)
    _run_demo(tmp_path)
    _run_demo(tmp_path)
    lines = calls.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["python", "greenq", "greenq"], lines
    assert "pip install" in lines[0]
    assert lines[1] == "greenq demo --jobs 5"

    stamp = tmp_path / ".venv" / ".greenq-installed"
    os.utime(stamp, (1, 1))  # older than pyproject.toml: the dependencies changed since
    _run_demo(tmp_path)
    assert calls.read_text().splitlines()[3].startswith("python -m pip install")


def test_tools_demo_counts_the_install_tools_test_made(tmp_path):
    calls = _fake_checkout(tmp_path)
    (tmp_path / ".venv" / ".greenq-test-installed").touch()
    _run_demo(tmp_path)
    assert calls.read_text().splitlines() == ["greenq demo --jobs 5"]
