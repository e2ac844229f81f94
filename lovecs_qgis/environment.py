"""The engine's Python: which interpreter runs ``python -m lovecs_core``, and its environment.

QGIS's own Python rarely has PyTorch, so the engine may run in another interpreter (a venv).
Order of choice:

1. the QGIS setting ``lovecs/python``, then the environment variable ``LOVECS_PYTHON`` (when one
   is set it must work: no silent fallback);
2. ``engine_python.txt`` in the plugin folder (written by ``make install-plugin``/``plugin-dev``);
3. QGIS's own interpreter when it is a Python; a ``.venv`` in the source checkout; ``python3`` on
   the PATH; ``/usr/bin/python3``.

Each candidate is checked once per session with a quick subprocess importing torch and the engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .paths import PLUGIN_DIR, engine_root

SETTINGS_KEY = "lovecs/python"
ENV_VAR = "LOVECS_PYTHON"
ENGINE_PYTHON_FILE = "engine_python.txt"
CHECK_TIMEOUT_S = 120.0
CHECK_CODE = (
    "import torch, safetensors, segmentation_models_pytorch, numpy; "
    "from osgeo import gdal; import lovecs_core.cli.main; "
    "print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
)
INSTALL_HELP = """\
The LoveCS engine needs a Python 3.10+ with PyTorch, segmentation-models-pytorch, safetensors,
numpy<2 and GDAL's Python bindings. For example, on Debian/Ubuntu:
  sudo apt install python3-venv python3-gdal
  python3 -m venv --system-site-packages ~/.local/share/lovecs/venv
  ~/.local/share/lovecs/venv/bin/pip install torch torchvision segmentation-models-pytorch \\
      safetensors tqdm "numpy<2"
(from a source checkout, `make setup` builds such a venv in .venv). Then tell the plugin which
Python to use, in the QGIS Python console:
  QgsSettings().setValue("lovecs/python", "/home/you/.local/share/lovecs/venv/bin/python")
or set the environment variable LOVECS_PYTHON before starting QGIS or qgis_process."""


class EngineNotFound(RuntimeError):
    """No interpreter able to run the engine; the message lists what was tried and how to fix it."""


@dataclass(frozen=True)
class PythonCheck:
    python: str
    ok: bool
    detail: str  # "torch 2.x cpu" when ok, else the reason


_checks: dict[str, PythonCheck] = {}
_chosen: Optional[str] = None
_lock = threading.Lock()


def engine_env(base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The child's environment: ``base`` (default ``os.environ``) with the engine's folder first
    on ``PYTHONPATH``, so the engine that travels with the plugin is the one imported."""
    env = dict(os.environ if base is None else base)
    parts = [str(engine_root())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def check_python(
    python: str, refresh: bool = False, timeout: float = CHECK_TIMEOUT_S
) -> PythonCheck:
    """Can ``python`` import torch and the engine? Cached per interpreter path."""
    if not refresh and python in _checks:
        return _checks[python]
    if not Path(python).is_file() or not os.access(python, os.X_OK):
        result = PythonCheck(python, False, "not an executable file")
    else:
        try:
            proc = subprocess.run(
                [python, "-c", CHECK_CODE],
                env=engine_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            result = PythonCheck(python, False, f"could not run it ({exc})")
        else:
            if proc.returncode == 0:
                result = PythonCheck(python, True, proc.stdout.strip())
            else:
                lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
                result = PythonCheck(
                    python, False, lines[-1] if lines else f"exit code {proc.returncode}"
                )
    _checks[python] = result
    return result


def configured_python() -> Optional[tuple[str, str]]:
    """The interpreter the user chose, as ``(path, where)``: QGIS setting, then environment."""
    try:
        from qgis.core import QgsSettings

        value = str(QgsSettings().value(SETTINGS_KEY, "") or "").strip()
        if value:
            return value, f"QGIS setting {SETTINGS_KEY}"
    except ImportError:  # used outside QGIS
        pass
    value = os.environ.get(ENV_VAR, "").strip()
    return (value, f"environment variable {ENV_VAR}") if value else None


def _is_python(path: str) -> bool:
    return Path(path).name.lower().startswith("python")


def candidate_pythons() -> list[tuple[str, str]]:
    """Automatic candidates, best first, as ``(path, where)`` (duplicates removed)."""
    found: list[tuple[str, str]] = []
    recorded = PLUGIN_DIR / ENGINE_PYTHON_FILE
    if recorded.is_file():
        text = recorded.read_text(encoding="utf-8").strip()
        if text:
            found.append((text, str(recorded)))
    if sys.executable and _is_python(sys.executable):
        found.append((sys.executable, "QGIS's Python"))
    checkout = engine_root()
    for venv in (checkout / ".venv", checkout.parent / ".venv"):
        for exe in (venv / "bin" / "python", venv / "Scripts" / "python.exe"):
            if exe.is_file():
                found.append((str(exe), f"virtual environment {venv}"))
    on_path = shutil.which("python3")
    if on_path:
        found.append((on_path, "python3 on the PATH"))
    found.append(("/usr/bin/python3", "system Python"))
    seen: set[str] = set()
    unique = []
    for path, where in found:
        if path not in seen:
            seen.add(path)
            unique.append((path, where))
    return unique


def find_engine_python(refresh: bool = False) -> str:
    """The interpreter to run the engine with; raises :class:`EngineNotFound` with install help."""
    global _chosen
    with _lock:
        if _chosen is not None and not refresh and configured_python() is None:
            return _chosen
        configured = configured_python()
        if configured is not None:
            path, where = configured
            check = check_python(path, refresh)
            if check.ok:
                return path
            raise EngineNotFound(
                f"the Python set in the {where} ({path}) cannot run the LoveCS "
                f"engine: {check.detail}\n\n{INSTALL_HELP}"
            )
        tried = []
        for path, where in candidate_pythons():
            check = check_python(path, refresh)
            if check.ok:
                _chosen = path
                return path
            tried.append(f"  {path} ({where}): {check.detail}")
        raise EngineNotFound(
            "no Python able to run the LoveCS engine (PyTorch) was found. "
            "Tried:\n" + "\n".join(tried) + "\n\n" + INSTALL_HELP
        )


def forget_choice(keep_checks: bool = False) -> None:
    """Forget the chosen interpreter and, unless ``keep_checks``, every cached check (after the
    user changed the setting or installed packages)."""
    global _chosen
    with _lock:
        _chosen = None
        if not keep_checks:
            _checks.clear()
