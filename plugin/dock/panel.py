"""The Ortholens dock: its sections, top to bottom, in one column.

The dock holds no logic: each section emits signals for its buttons and the plugin
(:mod:`..main`, :mod:`..retrain.controller`) reacts. The dock only ties the sections
together: what runs disables what must wait (:meth:`OrtholensDock.set_busy`).
"""

from __future__ import annotations

from typing import Optional, TypeVar

from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtWidgets import QDockWidget, QFrame, QScrollArea, QVBoxLayout, QWidget

from .detection import DetectionSection
from .models import ModelSection
from .status import StatusSection
from .versions import VersionsSection

SectionT = TypeVar("SectionT", bound=QWidget)


class _ColumnScroll(QScrollArea):
    """A vertical scroll area as wide as its column needs (so nothing is cut at the
    right), as short as the screen allows (the column scrolls)."""

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        column = self.widget()
        width = column.minimumSizeHint().width() if column is not None else 0
        return QSize(width + self.verticalScrollBar().sizeHint().width()
                     + 2 * self.frameWidth(), 120)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        column = self.widget()
        height = column.sizeHint().height() if column is not None else 400
        return QSize(self.minimumSizeHint().width(), height)


class OrtholensDock(QDockWidget):
    """The dock widget: a column of sections, each a widget with its own controls.

    Attributes:
        status: the engine's status line and the Refresh, Settings… and Set up the
            engine… buttons (:class:`~.status.StatusSection`).
        models: the model list and Add model…, threshold, minimum area and bands
            (:class:`~.models.ModelSection`).
        detection: Detect in extent, progress and Cancel, the message line, the result
            file (:class:`~.detection.DetectionSection`).
        versions: Retrain on corrections…, Make active, Roll back
            (:class:`~.versions.VersionsSection`).
    """

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__("Ortholens", parent)
        self.setObjectName("OrtholensDock")
        # a screen too short for every section scrolls instead of cutting the last off
        self.scroll = _ColumnScroll(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        body = QWidget(self.scroll)
        self._column = QVBoxLayout(body)
        self._column.addStretch(1)
        self.status = self.add_section(StatusSection(body))
        self.models = self.add_section(ModelSection(body))
        self.detection = self.add_section(DetectionSection(body))
        self.versions = self.add_section(VersionsSection(self.models, body))
        self.scroll.setWidget(body)
        self.setWidget(self.scroll)

    def body(self) -> QWidget:
        """The widget holding the column of sections (inside the dock's scroll area)."""
        return self.scroll.widget()

    def add_section(self, section: SectionT) -> SectionT:
        """Put ``section`` below the others (above the free space); returns it."""
        self._column.insertWidget(self._column.count() - 1, section)
        return section

    def set_engine(self, why: Optional[str]) -> None:
        """Disable Detect in extent and Retrain while no engine can run (``why``, their
        tooltip, says so); None enables them again."""
        self.detection.set_engine(why)
        self.versions.set_engine(why)

    def set_busy(self, busy: bool) -> None:
        """While a detection or retrain runs: Cancel enabled; Detect, Retrain, Make
        active and Roll back disabled (and the reverse when it ends); the bar starts
        at 0."""
        self.detection.set_busy(busy)
        self.versions.set_busy(busy)


__all__ = ["OrtholensDock"]
