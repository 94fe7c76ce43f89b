"""Messages in QGIS's message bar and the Ortholens log."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from qgis.PyQt.QtWidgets import QPushButton
from qgis.core import Qgis, QgsMessageLog

from .tasks import LOG_TAG


def push_message(bar: Any, text: str, level: int, duration: int,
                 buttons: Optional[Tuple[Callable[[], Any], Callable[[], Any]]] = None
                 ) -> None:
    """Push ``text`` to the message bar ``bar`` (a ``QgsMessageBar``) at ``level``
    (``Qgis.Info`` ...) for ``duration`` seconds (a critical one stays until closed) and
    log it under the Ortholens tag. ``buttons``: ``(open_settings, open_setup)``, the
    actions of a *Settings…* and a *Set up the engine…* button in the item."""
    keep = 0 if level == Qgis.Critical else duration
    if buttons is not None:
        item = bar.createMessage("Ortholens", text)
        for name, label, action in (("ortholensMessageSettings", "Settings…", buttons[0]),
                                    ("ortholensMessageSetup", "Set up the engine…",
                                     buttons[1])):
            button = QPushButton(label, item)
            button.setObjectName(name)
            button.clicked.connect(action)
            item.layout().addWidget(button)
        bar.pushWidget(item, level, keep)
    else:
        bar.pushMessage("Ortholens", text, level=level, duration=keep)
    QgsMessageLog.logMessage(text, LOG_TAG, level)


__all__ = ["push_message"]
