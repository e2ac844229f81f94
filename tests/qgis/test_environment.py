"""Finding the engine's Python, and the child's environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from qgis.core import QgsSettings

from lovecs_qgis import environment
from lovecs_qgis.environment import (
    ENV_VAR,
    SETTINGS_KEY,
    EngineNotFound,
    check_python,
    engine_env,
    find_engine_python,
)
from lovecs_qgis.paths import engine_root


@pytest.fixture
def clean_choice(monkeypatch):
    """No user setting, no environment variable, no cached choice (restored afterwards)."""
    settings = QgsSettings()
    saved = settings.value(SETTINGS_KEY, None)
    settings.remove(SETTINGS_KEY)
    monkeypatch.delenv(ENV_VAR, raising=False)
    environment.forget_choice(keep_checks=True)  # a check of a real Python takes seconds
    yield settings
    if saved is not None:
        settings.setValue(SETTINGS_KEY, saved)
    else:
        settings.remove(SETTINGS_KEY)
    environment.forget_choice(keep_checks=True)


def fake_python(tmp_path: Path, name: str, body: str) -> str:
    """An executable named like a Python that behaves as ``body`` (a shell script)."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_engine_env_puts_the_plugin_engine_first():
    env = engine_env({"PYTHONPATH": "/somewhere/else", "HOME": "/h"})
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert parts == [str(engine_root()), "/somewhere/else"]
    assert (Path(parts[0]) / "lovecs_core" / "cli" / "main.py").is_file()
    assert env["HOME"] == "/h" and env["PYTHONUNBUFFERED"] == "1"


def test_check_python_accepts_the_test_interpreter_and_caches(clean_choice):
    check = check_python(sys.executable)
    assert check.ok and check.detail.startswith("torch ")
    assert check_python(sys.executable) is check


def test_check_python_explains_what_is_missing(tmp_path, clean_choice):
    no_torch = fake_python(
        tmp_path,
        "python3-no-torch",
        "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1\n",
    )
    check = check_python(no_torch)
    assert not check.ok and check.detail == "ModuleNotFoundError: No module named 'torch'"
    assert not check_python(str(tmp_path / "absent")).ok


def test_automatic_choice_finds_a_python_with_torch(clean_choice):
    python = find_engine_python()
    assert check_python(python).ok
    assert python in [p for p, _ in environment.candidate_pythons()]


def test_a_configured_python_that_cannot_run_the_engine_is_an_error(
    tmp_path, clean_choice, monkeypatch
):
    bad = fake_python(
        tmp_path,
        "python-bad",
        "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1\n",
    )
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(EngineNotFound) as err:
        find_engine_python()
    message = str(err.value)
    assert bad in message and ENV_VAR in message and "No module named 'torch'" in message
    assert "pip install torch" in message and "lovecs/python" in message  # how to fix it


def test_the_qgis_setting_wins_over_the_environment(tmp_path, clean_choice, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "not-this-one"))
    clean_choice.setValue(SETTINGS_KEY, sys.executable)
    assert find_engine_python() == sys.executable


def test_no_working_candidate_lists_every_try(tmp_path, clean_choice, monkeypatch):
    bad = fake_python(tmp_path, "python3", "echo 'ImportError: no torch' >&2; exit 1\n")
    monkeypatch.setattr(environment, "candidate_pythons", lambda: [(bad, "a test candidate")])
    with pytest.raises(EngineNotFound) as err:
        find_engine_python()
    assert f"{bad} (a test candidate): ImportError: no torch" in str(err.value)


def test_engine_python_file_is_a_candidate(tmp_path, monkeypatch, clean_choice):
    plugin = tmp_path / "lovecs_qgis"
    plugin.mkdir()
    (plugin / environment.ENGINE_PYTHON_FILE).write_text("/opt/venv/bin/python\n")
    monkeypatch.setattr(environment, "PLUGIN_DIR", plugin)
    candidates = environment.candidate_pythons()
    assert candidates[0] == ("/opt/venv/bin/python", str(plugin / environment.ENGINE_PYTHON_FILE))
    assert candidates[-1][0] == "/usr/bin/python3"
    assert len({p for p, _ in candidates}) == len(candidates)
