"""The dock's engine section: the status line (which engine answers, where, on what
device) and the Refresh, Settings… and Set up the engine… buttons."""

from __future__ import annotations

from typing import Any, Dict, Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

#: The status line while no engine answers and the plugin may start one.
NOT_RUNNING = "Daemon not running — it will be started on first use."
#: The status line while the plugin starts the daemon to list its models.
STARTING = "Starting the daemon to list its models…"
#: The status line when no daemon answers and none can be started.
NOT_SET_UP = ("No detection engine is set up: press 'Set up the engine…' to install "
              "it (a few minutes, once), or Settings… to give the address of a running "
              "engine.")


#: The tooltip of Detect and Retrain while they are disabled for want of an engine.
NO_ENGINE = "No detection engine is set up yet: press 'Set up the engine…' first."


def device_text(pong: Dict[str, Any]) -> str:
    """What the engine runs on, from a ``pong`` reply: ``"GPU NVIDIA H200, 139.8 GiB"``
    or ``"CPU, 16 cores"`` from its ``device_info`` (with ``", fp32 graphs only"`` when
    its ``precision`` is ``fp32``), else its ``device`` string (``""`` when neither is
    given)."""
    info = pong.get("device_info")
    if isinstance(info, dict) and info.get("kind") == "cuda" and info.get("name"):
        mem = info.get("memory_gib")
        text = f"GPU {info['name']}" + (f", {mem:g} GiB" if isinstance(mem, (int, float))
                                        else "")
    elif isinstance(info, dict) and info.get("kind") == "cpu":
        cores = info.get("cores")
        text = "CPU" + (f", {cores} cores" if isinstance(cores, int) else "")
    else:
        return str(pong.get("device") or "")
    provider = info.get("provider")
    if isinstance(provider, str) and provider:  # which ONNX Runtime provider runs models
        text += f", ONNX Runtime {provider.replace('ExecutionProvider', '')}"
    if pong.get("precision") == "fp32":  # the user turned the INT8 graphs off
        text += ", fp32 graphs only"
    return text


def pong_text(pong: Dict[str, Any], settings: Any) -> str:
    """Status line for a ``pong`` reply: the engine's version, where it runs (this
    computer or another host), its address and its device, e.g. ``"Engine 0.1.0 on
    this computer (tcp://127.0.0.1:5591) — CPU, 16 cores"``.

    Args:
        pong: the ``pong`` reply.
        settings: the :class:`~..settings.DaemonSettings` the ping used (or just the
            endpoint string).
    """
    endpoint = getattr(settings, "endpoint", settings)
    where = settings.where() if hasattr(settings, "where") else "at"
    text = f"Engine {pong.get('version', '?')} {where} ({endpoint})"
    device = device_text(pong)
    text = f"{text} — {device}" if device else text
    idle = pong.get("idle_exit_s")
    if isinstance(idle, (int, float)) and idle > 0:
        text += f"; it stops after {idle / 60:g} min without work"
    return text


class StatusSection(QWidget):
    """The engine's status line beside the Refresh, Settings… and Set up the engine…
    buttons.

    Signals:
        refreshRequested(): Refresh was pressed.
        settingsRequested(): Settings… was pressed.
        setupRequested(): Set up the engine… was pressed.
    """

    refreshRequested = pyqtSignal()
    settingsRequested = pyqtSignal()
    setupRequested = pyqtSignal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.status_label = QLabel(NOT_RUNNING, self)
        self.status_label.setObjectName("ortholensStatus")
        self.status_label.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh", self)
        self.refresh_button.setToolTip("Ask the daemon for its status and models (it is "
                                       "started when it is not running)")
        self.refresh_button.clicked.connect(self.refreshRequested)
        self.settings_button = QPushButton("Settings…", self)
        self.settings_button.setObjectName("ortholensSettingsButton")
        self.settings_button.setToolTip("Engine location or address, token, results "
                                        "folder (also in Settings > Options > Ortholens)")
        self.settings_button.clicked.connect(self.settingsRequested)
        self.setup_button = QPushButton("Set up the engine…", self)
        self.setup_button.setObjectName("ortholensSetupButton")
        self.setup_button.setToolTip("Install the detection engine the plugin carries into "
                                     "a virtual environment of its own, or repair or "
                                     "remove it")
        self.setup_button.clicked.connect(self.setupRequested)
        row.addWidget(self.status_label, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.settings_button)
        buttons.addWidget(self.setup_button)
        row.addLayout(buttons)

    def set_status(self, text: str) -> None:
        """Show the daemon's status line."""
        self.status_label.setText(text)


__all__ = ["NOT_RUNNING", "STARTING", "NOT_SET_UP", "NO_ENGINE", "device_text", "pong_text",
           "StatusSection"]
