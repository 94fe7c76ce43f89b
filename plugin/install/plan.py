"""What *Set up the engine…* installs, and why; the commands it runs; pip's errors as
sentences. No QGIS here.

The choice (:func:`make_plan`):

* **CPU** (``nvidia-smi`` reports no GPU): the engine wheel alone, i.e. detection with
  ONNX Runtime and no PyTorch (a few hundred MB instead of a few GB; the wheel carries
  the models as ONNX). Ticking *PyTorch* adds the ``train`` extra from PyTorch's CPU
  index, for retraining.
* **GPU** (``nvidia-smi`` reports one): the ``cuda`` extra, PyTorch with CUDA (for
  retraining; its wheels come from PyTorch's CUDA index), then ONNX Runtime's GPU build
  in place of the CPU one (:meth:`SetupPlan.gpu_runtime_commands`: the two wheels share
  the ``onnxruntime`` package and must not both be installed), which runs the models'
  ONNX graphs on the GPU.
* **Offline** (a folder of wheels given): ``pip install --no-index --find-links FOLDER``;
  the folder is made on a computer with internet with ``pip download`` (README,
  *Install in QGIS*).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from protocol.errors import EngineSetupError

from .locate import (
    GpuInfo,
    PythonCheck,
    bundled_wheel,
    engine_home,
    installed_version,
    venv_dir,
    venv_python,
    wheel_version,
)

#: ONNX Runtime's GPU build that the ``cuda`` extra runs the ONNX graphs with (its
#: newest release on PyPI: the CPU wheel's 1.32.0 has no GPU build).
ONNXRUNTIME_GPU = "onnxruntime-gpu==1.31.1"

#: PyTorch's wheel indexes for the two builds (pip takes the ``+cpu`` / ``+cu128``
#: build of the pinned version from there).
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu",
               "cuda": "https://download.pytorch.org/whl/cu128"}


@dataclass(frozen=True)
class SetupPlan:
    """One engine setup, decided before anything runs.

    Attributes:
        python: the interpreter the environment is created from (checked).
        home: the engine folder (``locate.engine_home``).
        wheel: the engine wheel to install.
        gpu: the GPU ``nvidia-smi`` reported, or None.
        extra: ``""`` (ONNX Runtime only), ``"train"`` (PyTorch, CPU build) or ``"cuda"``
            (PyTorch, CUDA build).
        wheels_dir: a folder of wheels to install from without an index, or None.
        repair: an engine is already installed there: it is reinstalled over itself.
    """

    python: PythonCheck
    home: Path
    wheel: Path
    gpu: Optional[GpuInfo]
    extra: str
    wheels_dir: Optional[Path] = None
    repair: bool = False

    @property
    def venv(self) -> Path:
        """The engine's virtual environment."""
        return venv_dir(self.home)

    @property
    def engine_python(self) -> Path:
        """The environment's interpreter, which runs pip and the engine."""
        return venv_python(self.venv)

    @property
    def log_path(self) -> Path:
        """The setup's log file."""
        return self.home / "setup.log"

    @property
    def version(self) -> str:
        """The engine version the wheel holds."""
        return wheel_version(self.wheel)

    def what(self) -> str:
        """One sentence: what is installed, and why that build."""
        if self.extra == "cuda":
            return (f"Ortholens engine {self.version} with PyTorch for CUDA: nvidia-smi "
                    f"reports {self.gpu.describe() if self.gpu else 'a GPU'}, so the models "
                    f"run on it (and can be retrained).")
        why = ("nvidia-smi reports no GPU" if self.gpu is None
               else f"a GPU ({self.gpu.describe()}) is present, but the CPU build was chosen")
        if self.extra == "train":
            return (f"Ortholens engine {self.version} with ONNX Runtime and PyTorch for the "
                    f"CPU: {why}; PyTorch is added for retraining.")
        return (f"Ortholens engine {self.version} for the CPU with ONNX Runtime, without "
                f"PyTorch: {why}, and detection needs no more (retraining needs PyTorch: "
                f"tick it to add it).")

    def describe(self) -> List[str]:
        """The plan as lines for the dialog and the log."""
        source = (f"wheels in {self.wheels_dir} (offline, no index)" if self.wheels_dir
                  else "the package index pip is configured for (PyPI by default)")
        return [f"{'Repair' if self.repair else 'Install'}: {self.what()}",
                f"Python: {self.python.describe()}",
                f"Into: {self.venv} (a virtual environment of its own, not QGIS's Python)",
                f"Packages from: {source}",
                f"Engine wheel: {self.wheel}"]

    def venv_command(self) -> List[str]:
        """Create the environment (``<python> -m venv <venv>``)."""
        return [self.python.path, "-m", "venv", str(self.venv)]

    def pip_command(self) -> List[str]:
        """Install the wheel and its pinned dependencies (with the chosen extra) into
        the environment."""
        cmd = [str(self.engine_python), "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input", "--progress-bar", "off"]
        if self.wheels_dir:
            cmd += ["--no-index", "--find-links", str(self.wheels_dir)]
        elif self.extra:
            cmd += ["--extra-index-url", TORCH_INDEX["cuda" if self.extra == "cuda" else "cpu"]]
        target = str(self.wheel) + (f"[{self.extra}]" if self.extra else "")
        return cmd + [target]

    def gpu_runtime_commands(self) -> List[List[str]]:
        """For the ``cuda`` extra: remove ONNX Runtime's CPU wheel and install its GPU
        build (:data:`ONNXRUNTIME_GPU`), which runs the ONNX graphs on the GPU; no
        commands for the other builds."""
        if self.extra != "cuda":
            return []
        pip = [str(self.engine_python), "-m", "pip"]
        index = (["--no-index", "--find-links", str(self.wheels_dir)] if self.wheels_dir
                 else [])
        return [pip + ["uninstall", "--yes", "onnxruntime"],
                pip + ["install", "--disable-pip-version-check", "--no-input", *index,
                       ONNXRUNTIME_GPU]]

    def reinstall_command(self) -> List[str]:
        """Reinstall the engine package itself over a damaged one (a repair); its
        dependencies were checked by :meth:`pip_command`."""
        return [str(self.engine_python), "-m", "pip", "install", "--disable-pip-version-check",
                "--no-input", "--force-reinstall", "--no-deps", str(self.wheel)]


def shell_command(cmd: Sequence[str]) -> str:
    """``cmd`` as the user would type it in a terminal (quoted for the platform)."""
    if sys.platform == "win32":
        return subprocess.list2cmdline(list(cmd))
    return shlex.join(list(cmd))


def make_plan(python: PythonCheck, gpu: Optional[GpuInfo], want_torch: Optional[bool] = None,
              wheels_dir: Optional[str] = None, home: Optional[Path] = None,
              wheel: Optional[Path] = None) -> SetupPlan:
    """Decide the setup (see the module docstring).

    Args:
        python: the interpreter to create the environment from (``locate.find_python``).
        gpu: ``locate.detect_gpu()``'s answer.
        want_torch: install PyTorch; None: when there is a GPU.
        wheels_dir: a folder of wheels for an offline install, or None/"".
        home: the engine folder (default ``locate.engine_home()``).
        wheel: the engine wheel (default ``locate.bundled_wheel()``).

    Raises:
        EngineSetupError: no wheel (a plugin not installed from its zip), a Python that
            cannot create the environment, or a wheels folder that does not exist.
    """
    wheel = wheel or bundled_wheel()
    if wheel is None or not Path(wheel).is_file():
        raise EngineSetupError(
            "This copy of the plugin carries no engine wheel (ortholens/engine/"
            "ortholens_engine-*.whl): install the plugin from its zip, or give the "
            "address of a running engine in Settings….")
    if not python.ok:
        raise EngineSetupError(f"No Python to create the engine's environment: "
                               f"{python.problem}.")
    folder = Path(wheels_dir).expanduser() if wheels_dir else None
    if folder is not None and not folder.is_dir():
        raise EngineSetupError(f"The wheels folder {folder} does not exist.")
    torch = (gpu is not None) if want_torch is None else bool(want_torch)
    extra = ("cuda" if gpu is not None else "train") if torch else ""
    home = Path(home or engine_home())
    repair = installed_version(str(venv_python(venv_dir(home)))) is not None
    return SetupPlan(python=python, home=home, wheel=Path(wheel), gpu=gpu, extra=extra,
                     wheels_dir=folder, repair=repair)


_REQ = r"([A-Za-z0-9][A-Za-z0-9._\-]*(?:\[[^\]]*\])?(?:[<>=!~]=?[^\s,;()]+)?)"
#: (pattern of a pip output line, reason); the first group is the package.
_FAILURES: Tuple[Tuple["re.Pattern[str]", str], ...] = tuple(
    (re.compile(p, re.I), why) for p, why in (
        (r"No matching distribution found for " + _REQ,
         "no version of it for this computer's Python and platform is on the package "
         "index (or in the wheels folder)"),
        (r"Could not find a version that satisfies the requirement " + _REQ,
         "no version of it for this computer's Python and platform is on the package "
         "index (or in the wheels folder)"),
        (r"Failed building wheel for " + _REQ,
         "it has no ready-made wheel for this platform and could not be compiled"),
        (r"Building wheel for " + _REQ + r".*did not run successfully",
         "it has no ready-made wheel for this platform and could not be compiled"),
        (r"Failed to build " + _REQ,
         "it has no ready-made wheel for this platform and could not be compiled"),
        (r"Cannot install " + _REQ + r".*conflicting dependencies",
         "its dependencies conflict with another pinned package"),
        (r"THESE PACKAGES DO NOT MATCH THE HASHES.*?" + _REQ,
         "the downloaded file is damaged (its hash does not match)"),
    ))
_NETWORK = re.compile(r"(NewConnectionError|Max retries exceeded|Temporary failure in name "
                      r"resolution|Could not fetch URL|ConnectTimeout|ReadTimeout|"
                      r"SSLError|ProxyError|Network is unreachable)", re.I)
_DISK = re.compile(r"No space left on device", re.I)
_PERMISSION = re.compile(r"(Permission denied|Access is denied)", re.I)
_COLLECTING = re.compile(r"^\s*(?:Collecting|Processing|Downloading|Obtaining)\s+" + _REQ)


def pip_failure(lines: Sequence[str]) -> Tuple[Optional[str], str]:
    """The package pip failed on, and why, from its output.

    Args:
        lines: pip's output lines (stdout and stderr together).

    Returns:
        ``(package, reason)``: the requirement as pip wrote it (e.g.
        ``onnxruntime==1.32.0``), or the last package it was working on, or None; the
        reason as a clause.
    """
    text = [str(line).rstrip() for line in lines]
    for pattern, why in _FAILURES:
        for line in text:
            m = pattern.search(line)
            if m:
                return m.group(1), why
    last = None
    for line in text:
        m = _COLLECTING.match(line)
        if m:
            last = m.group(1)
    last = Path(last).name if last and ("/" in last or "\\" in last) else last
    joined = "\n".join(text)
    if _NETWORK.search(joined):
        return last, ("the package index cannot be reached (no connection, a proxy or a "
                      "firewall); on a computer without internet use a folder of wheels")
    if _DISK.search(joined):
        return last, "the disk is full"
    if _PERMISSION.search(joined):
        return last, "a file could not be written (permission denied)"
    errors = [line for line in text if line.lstrip().startswith("ERROR:")]
    return last, (errors[-1].split("ERROR:", 1)[1].strip() if errors
                  else "pip stopped with an error")


def pip_error(plan: SetupPlan, cmd: Sequence[str], lines: Sequence[str],
              returncode: int) -> EngineSetupError:
    """The :class:`~protocol.errors.EngineSetupError` for a failed pip run: it names
    the failing package, why, the command to retry in a terminal, and the log."""
    package, why = pip_failure(lines)
    retry = shell_command(cmd)
    what = f"pip could not install {package}" if package else "pip failed"
    return EngineSetupError(
        f"{what} (exit code {returncode}): {why}. Retry with 'Set up the engine…', or in "
        f"a terminal:\n{retry}\nThe full log is {plan.log_path}.",
        package=package, command=retry, log_path=str(plan.log_path))


__all__ = ["TORCH_INDEX", "SetupPlan", "make_plan", "shell_command", "pip_failure",
           "pip_error"]
