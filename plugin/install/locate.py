"""Where the engine setup finds and puts things; no QGIS here.

* the engine folder (:func:`engine_home`): ``ORTHOLENS_ENGINE_DIR``, else
  ``$XDG_DATA_HOME/ortholens/engine`` (``~/.local/share/ortholens/engine``), or
  ``%APPDATA%\\ortholens\\engine`` on Windows: beside the user's model versions
  (``…/ortholens/models``) and batch jobs. It holds ``venv/`` (the engine's virtual
  environment), ``setup.log`` (the last setup's log), ``engine.json`` (what was
  installed, the self-test) and ``selftest/`` (the generated test chip, the self-test
  daemon's log);
* the engine wheel the plugin carries (:func:`bundled_wheel`);
* the installed engine of a virtual environment (:func:`installed_version`), read from
  its ``site-packages`` without running it, so the plugin can tell at once whether an
  engine can be started;
* a Python >= 3.10 with ``venv`` and ``ensurepip`` to create the environment from
  (:func:`find_python`);
* a GPU (:func:`detect_gpu`, through ``nvidia-smi``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from protocol.paths import user_data_dir

#: The engine's distribution name as pip writes it in ``*.dist-info`` folders.
DIST = "ortholens_engine"
#: The oldest Python the engine supports (``pyproject.toml``'s ``requires-python``).
MIN_PYTHON = (3, 10)
#: The plugin folder (``ortholens/`` when installed from the zip).
PLUGIN_DIR = Path(__file__).resolve().parent.parent


def engine_home() -> Path:
    """The engine folder: ``ORTHOLENS_ENGINE_DIR``, else ``<user data>/ortholens/engine``
    (see the module docstring); not created here."""
    return user_data_dir("engine", "ORTHOLENS_ENGINE_DIR")


def venv_dir(home: Optional[Path] = None) -> Path:
    """The engine's virtual environment, ``<engine folder>/venv``."""
    return Path(home or engine_home()) / "venv"


def venv_python(venv: Path) -> Path:
    """The interpreter of virtual environment ``venv`` (``bin/python``;
    ``Scripts\\python.exe`` on Windows)."""
    if sys.platform == "win32":
        return Path(venv) / "Scripts" / "python.exe"
    return Path(venv) / "bin" / "python"


def _site_packages(venv: Path) -> List[Path]:
    return (sorted(Path(venv).glob("lib/python3*/site-packages"))
            + [p for p in [Path(venv) / "Lib" / "site-packages"] if p.is_dir()])


def installed_version(python: Optional[str]) -> Optional[str]:
    """The version of the engine installed in the virtual environment of ``python``
    (``<venv>/bin/python``), read from its ``ortholens_engine-<version>.dist-info``
    folder; None when ``python`` is not a virtual environment's interpreter or has no
    engine. Runs nothing."""
    if not python:
        return None
    venv = Path(python).parent.parent
    if not (venv / "pyvenv.cfg").is_file():
        return None
    for site in _site_packages(venv):
        for info in sorted(site.glob(f"{DIST}-*.dist-info")):
            if (info / "METADATA").is_file() and (site / "backend" / "__init__.py").is_file():
                return info.name[len(DIST) + 1:-len(".dist-info")]
    return None


def installed_python(home: Optional[Path] = None) -> Optional[str]:
    """The interpreter of the engine *Set up the engine…* installed (under
    :func:`engine_home`), or None when there is none."""
    python = venv_python(venv_dir(home))
    return str(python) if python.is_file() and installed_version(str(python)) else None


def bundled_wheel(plugin_dir: Optional[Path] = None) -> Optional[Path]:
    """The engine wheel the plugin zip carries (``<plugin>/engine/ortholens_engine-*.whl``;
    the newest name when there are several), or None (a plugin run from a checkout,
    where no zip was packaged)."""
    wheels = sorted(Path(plugin_dir or PLUGIN_DIR).glob(f"engine/{DIST}-*.whl"))
    return wheels[-1] if wheels else None


def wheel_version(wheel: Path) -> str:
    """The version in a wheel's file name (``ortholens_engine-0.1.0-py3-none-any.whl``
    -> ``0.1.0``)."""
    return Path(wheel).name.split("-")[1]


@dataclass(frozen=True)
class PythonCheck:
    """A Python interpreter looked at for creating the engine's environment.

    Attributes:
        path: the interpreter (absolute).
        version: ``(major, minor, micro)``, or None when it did not run.
        problem: None when it can create the environment, else one sentence saying why
            not and what fixes it.
    """

    path: str
    version: Optional[Tuple[int, int, int]]
    problem: Optional[str]

    @property
    def ok(self) -> bool:
        """True when it can create the engine's environment."""
        return self.problem is None

    def describe(self) -> str:
        """``/usr/bin/python3.11 (Python 3.11.2)``."""
        v = ".".join(map(str, self.version)) if self.version else "?"
        return f"{self.path} (Python {v})"


_PROBE = ("import sys; print('%d.%d.%d' % sys.version_info[:3]); import venv, ensurepip; "
          "print('ok')")


def clean_env() -> dict:
    """The environment for the engine's Pythons: this process's, without the variables
    that point a Python at another installation (QGIS sets ``PYTHONHOME`` and
    ``PYTHONPATH`` to its own on some platforms)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP",
                         "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")}


def check_python(path: str, timeout_s: float = 30.0) -> PythonCheck:
    """Run ``path`` to see whether it can create the engine's environment: Python >=
    :data:`MIN_PYTHON` with the ``venv`` and ``ensurepip`` modules.

    Args:
        path: an interpreter (a file or a name on ``PATH``).
        timeout_s: how long it may take to answer, seconds.

    Returns:
        A :class:`PythonCheck`; its ``problem`` names what is missing (on Debian/Ubuntu
        ``ensurepip`` comes with the ``python3-venv`` package).
    """
    exe = shutil.which(path) or path
    try:
        r = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True,
                           timeout=timeout_s, env=clean_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return PythonCheck(str(exe), None, f"{exe} does not run: {exc}")
    lines = r.stdout.split()
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)$", lines[0]) if lines else None
    version = tuple(int(x) for x in m.groups()) if m else None  # type: ignore[assignment]
    if version is None:
        return PythonCheck(str(exe), None, f"{exe} is not a Python interpreter that runs "
                                           f"({(r.stderr or r.stdout).strip()[-200:]})")
    if version[:2] < MIN_PYTHON:
        return PythonCheck(str(exe), version,  # type: ignore[arg-type]
                           f"{exe} is Python {version[0]}.{version[1]}; the engine needs "
                           f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")
    if "ok" not in lines:
        hint = (" (Debian/Ubuntu: sudo apt install python3-venv)"
                if sys.platform.startswith("linux") else "")
        return PythonCheck(str(exe), version,  # type: ignore[arg-type]
                           f"{exe} cannot create virtual environments: its venv or "
                           f"ensurepip module is missing{hint}")
    return PythonCheck(str(exe), version, None)  # type: ignore[arg-type]


def python_candidates() -> List[str]:
    """Interpreters to try, best first, without duplicates: the standalone interpreter
    of QGIS's own Python (``<sys.base_prefix>/bin/python3.X``; ``python.exe`` on
    Windows), then ``python3.13`` … ``python3.10``, ``python3`` and ``python`` on
    ``PATH``."""
    base = Path(sys.base_prefix)
    major, minor = sys.version_info[:2]
    found: List[str] = []
    if sys.platform == "win32":
        names = [base / "python.exe", base / "python3.exe"]
    else:
        names = [base / "bin" / f"python{major}.{minor}", base / "bin" / "python3"]
    found += [str(p) for p in names if p.is_file()]
    for name in [f"python3.{m}" for m in range(13, MIN_PYTHON[1] - 1, -1)] + ["python3",
                                                                            "python"]:
        exe = shutil.which(name)
        if exe:
            found.append(exe)
    out, seen = [], set()
    for exe in found:
        key = os.path.realpath(exe)
        if key not in seen:
            seen.add(key)
            out.append(exe)
    return out


def find_python(given: Optional[str] = None,
                candidates: Optional[Sequence[str]] = None) -> PythonCheck:
    """The Python to create the engine's environment from.

    Args:
        given: the interpreter the user chose; it is checked and returned as it is
            (with its problem, if any).
        candidates: interpreters to try in order (default :func:`python_candidates`).

    Returns:
        ``given``'s check, else the first candidate that can create the environment,
        else a :class:`PythonCheck` whose problem lists what was tried.
    """
    if given:
        return check_python(given)
    tried = []
    for exe in (python_candidates() if candidates is None else candidates):
        c = check_python(exe)
        if c.ok:
            return c
        tried.append(c.problem)
    why = "; ".join(p for p in tried if p) or "none was found on PATH"
    return PythonCheck("", None, f"no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer that "
                                 f"can create virtual environments was found ({why}). "
                                 f"Install one (python.org, or your system's packages) "
                                 f"and choose it in the setup dialog")


@dataclass(frozen=True)
class GpuInfo:
    """A GPU as ``nvidia-smi`` reports it: ``name``, ``memory_mib`` (total)."""

    name: str
    memory_mib: int

    def describe(self) -> str:
        """``NVIDIA H200 (141 GiB)``."""
        return f"{self.name} ({self.memory_mib / 1024:.0f} GiB)"


def detect_gpu(nvidia_smi: str = "nvidia-smi", timeout_s: float = 15.0) -> Optional[GpuInfo]:
    """The first GPU ``nvidia-smi --query-gpu=name,memory.total`` reports, or None (no
    ``nvidia-smi``, no GPU, or it fails: then the CPU path is taken)."""
    exe = shutil.which(nvidia_smi)
    if not exe:
        return None
    try:
        r = subprocess.run([exe, "--query-gpu=name,memory.total",
                            "--format=csv,noheader,nounits"], capture_output=True,
                           text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 1)]
        if len(parts) == 2 and parts[0] and parts[1].isdigit():
            return GpuInfo(parts[0], int(parts[1]))
    return None


__all__ = ["DIST", "MIN_PYTHON", "engine_home", "venv_dir", "venv_python",
           "installed_version", "installed_python", "bundled_wheel", "wheel_version",
           "PythonCheck", "clean_env", "check_python", "python_candidates", "find_python",
           "GpuInfo", "detect_gpu"]
