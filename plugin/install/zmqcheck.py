"""pyzmq in QGIS's own Python: whether it is there, the one command that installs it on
this platform, and an install into the user's site-packages (with the user's consent).

The plugin talks to its engine over ZeroMQ, so QGIS's Python needs pyzmq. QGIS's
Debian/Ubuntu packages leave it out (``python3-zmq``); the Windows and macOS installers
usually have it. No QGIS here.
"""

from __future__ import annotations

import importlib
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .locate import clean_env


def zmq_available() -> bool:
    """True when ``import zmq`` works in this Python."""
    try:
        import zmq  # noqa: F401
        return True
    except Exception:  # ImportError, or a broken build
        return False


def os_release(path: str = "/etc/os-release") -> Dict[str, str]:
    """The ``KEY=value`` pairs of ``/etc/os-release`` (empty when there is none)."""
    out = {}
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip().strip('"')
    except OSError:
        pass
    return out


def qgis_python() -> Optional[str]:
    """The interpreter of QGIS's own Python (inside QGIS ``sys.executable`` is QGIS
    itself): ``sys.executable`` when it is a Python, else
    ``<sys.base_prefix>/bin/python3.X`` (``python.exe`` on Windows); None when there is
    none."""
    exe = Path(sys.executable or "")
    if exe.name.lower().startswith("python") and exe.is_file():
        return str(exe)
    base = Path(sys.base_prefix)
    major, minor = sys.version_info[:2]
    names = ([base / "python.exe", base / "python3.exe"] if sys.platform == "win32"
             else [base / "bin" / f"python{major}.{minor}", base / "bin" / "python3"])
    return next((str(p) for p in names if p.is_file()), None)


def user_site() -> str:
    """The user's site-packages of this Python (``site.getusersitepackages()``)."""
    return site.getusersitepackages()


def install_command(python: Optional[str] = None, target: Optional[str] = None) -> List[str]:
    """The pip command that installs pyzmq into the user's site-packages of QGIS's
    Python (``--target``: pip's ``--user`` is refused by an externally managed system
    Python such as Debian's; the user's site-packages is on ``sys.path`` all the same)."""
    return [python or qgis_python() or "python3", "-m", "pip", "install",
            "--disable-pip-version-check", "--no-input", "--target", target or user_site(),
            "pyzmq"]


def fix_command(release: Optional[Dict[str, str]] = None,
                platform: Optional[str] = None) -> str:
    """The one command that installs pyzmq for QGIS on this platform.

    Debian/Ubuntu and derivatives: ``sudo apt install python3-zmq``; Fedora/RHEL:
    ``sudo dnf install python3-zmq``; openSUSE: ``sudo zypper install python3-pyzmq``;
    Arch: ``sudo pacman -S python-pyzmq``; Windows: ``python -m pip install pyzmq`` in the
    OSGeo4W Shell; elsewhere (macOS, other Linux): QGIS's Python's pip into the user's
    site-packages.
    """
    platform = platform or sys.platform
    if platform == "win32":
        return "python -m pip install pyzmq   (in the OSGeo4W Shell, as administrator)"
    if platform.startswith("linux"):
        rel = os_release() if release is None else release
        ids = {rel.get("ID", "")} | set(rel.get("ID_LIKE", "").split())
        if ids & {"debian", "ubuntu"}:
            return "sudo apt install python3-zmq"
        if ids & {"fedora", "rhel", "centos"}:
            return "sudo dnf install python3-zmq"
        if ids & {"suse", "opensuse", "opensuse-leap", "opensuse-tumbleweed"}:
            return "sudo zypper install python3-pyzmq"
        if ids & {"arch"}:
            return "sudo pacman -S python-pyzmq"
    from .plan import shell_command
    return shell_command(install_command())


def missing_message() -> str:
    """What the plugin says at load when pyzmq is missing."""
    return (f"Ortholens needs pyzmq in QGIS's Python to talk to its engine, and it is "
            f"missing. Install it with:  {fix_command()}  then restart QGIS; or press "
            f"'Install pyzmq…' to install it into your user site-packages with pip.")


def install_pyzmq(python: Optional[str] = None, target: Optional[str] = None,
                  timeout_s: float = 600.0) -> Tuple[bool, str]:
    """Install pyzmq with pip into ``target`` (default: the user's site-packages) and
    make it importable in this session (the folder is added to ``sys.path``).

    Args:
        python: the interpreter whose pip runs (default :func:`qgis_python`).
        target: the folder (default :func:`user_site`).
        timeout_s: longest time pip may take, seconds.

    Returns:
        ``(ok, text)``: whether ``import zmq`` works now, and pip's output (or why it
        could not run).
    """
    cmd = install_command(python, target)
    if not cmd[0] or not shutil.which(cmd[0]) and not Path(cmd[0]).is_file():
        return False, f"QGIS's Python interpreter was not found ({cmd[0]})."
    folder = target or user_site()
    os.makedirs(folder, exist_ok=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                           env=clean_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"pip could not run: {exc}"
    text = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        return False, text
    if folder not in sys.path:
        site.addsitedir(folder)
    importlib.invalidate_caches()
    sys.modules.pop("zmq", None)
    return zmq_available(), text


__all__ = ["zmq_available", "os_release", "qgis_python", "user_site", "install_command",
           "fix_command", "missing_message", "install_pyzmq"]
