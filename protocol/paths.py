"""Where Ortholens keeps a user's files, the same for the plugin and the engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["user_data_dir"]


def user_data_dir(name: str, env_var: str) -> Path:
    """The folder ``name`` of Ortholens in the user's data folder; not created here.

    Args:
        name: the sub-folder (``"engine"``, ``"models"``).
        env_var: an environment variable that, when set, is the folder itself.

    Returns:
        An absolute path: ``$env_var`` (``~`` expanded), else on Windows
        ``%APPDATA%\\ortholens\\<name>``, elsewhere ``$XDG_DATA_HOME/ortholens/<name>``
        (``~/.local/share/ortholens/<name>`` when ``XDG_DATA_HOME`` is unset; the XDG
        Base Directory Specification).
    """
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser().resolve()
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (base / "ortholens" / name).resolve()
