"""The dock's Review section: the review queue of the active result layer.

Previous / Next zoom to the previous / next polygon of the queue (most uncertain
first, ``protocol.review``) with some ground around it; Accept, Delete, Edit set the
shown polygon's state (Edit also starts the vertex tool on it); Add arms the click
tool that adds a missed object. A counter says how many polygons of the layer are
reviewed. The section holds no logic: the review controller
(:mod:`..review.controller`) reacts to its signals and fills it.

Keyboard shortcuts (the QGIS window): :data:`SHORTCUTS`.
"""

from __future__ import annotations

from typing import Dict, Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (QGridLayout, QGroupBox, QLabel, QPushButton, QVBoxLayout,
                                 QWidget)

#: The shortcut of each button (QGIS keeps the single letters for itself).
SHORTCUTS: Dict[str, str] = {"previous": "Shift+PgUp", "next": "Shift+PgDown",
                             "accept": "Shift+A", "delete": "Shift+D",
                             "edit": "Shift+E", "add": "Shift+C"}
#: The text of each button.
LABELS: Dict[str, str] = {"previous": "◀ Previous", "next": "Next ▶", "accept": "Accept",
                          "delete": "Delete", "edit": "Edit", "add": "Add by click"}
#: The tooltip of each button.
TIPS: Dict[str, str] = {
    "previous": "Zoom to the previous polygon of the review queue",
    "next": "Zoom to the next polygon of the review queue (most uncertain first)",
    "accept": "The polygon is right: mark it accepted",
    "delete": "The polygon is wrong: mark it deleted (hidden, kept to teach the model)",
    "edit": "Reshape the polygon with the vertex tool: mark it edited",
    "add": "Click a missed object on the map: the engine outlines it and adds it",
}
#: What the section says while no result layer is active.
NO_LAYER = "Select a result layer to review it."


class ReviewSection(QGroupBox):
    """The Review section.

    Signals:
        stepRequested(int): -1 Previous, +1 Next.
        stateRequested(str): ``accepted``, ``deleted`` or ``edited`` for the shown
            polygon.
        addRequested(): Add by click.

    Attributes:
        buttons: name (a key of :data:`LABELS`) -> its ``QPushButton``.
        counter: "12 / 40 reviewed"; current: what the shown polygon is.
    """

    stepRequested = pyqtSignal(int)
    stateRequested = pyqtSignal(str)
    addRequested = pyqtSignal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__("Review", parent)
        self.setObjectName("OrtholensReview")
        box = QVBoxLayout(self)
        self.counter = QLabel(NO_LAYER, self)
        self.counter.setObjectName("OrtholensReviewCounter")
        self.counter.setWordWrap(True)  # a long layer name must not widen the dock
        self.current = QLabel("", self)
        self.current.setObjectName("OrtholensReviewCurrent")
        self.current.setWordWrap(True)
        grid = QGridLayout()
        self.buttons: Dict[str, QPushButton] = {}
        for i, name in enumerate(("previous", "next", "accept", "delete", "edit", "add")):
            b = QPushButton(LABELS[name], self)
            b.setObjectName(f"OrtholensReview_{name}")
            b.setShortcut(QKeySequence(SHORTCUTS[name]))
            b.setToolTip(f"{TIPS[name]} ({SHORTCUTS[name]})")
            self.buttons[name] = b
            grid.addWidget(b, i // 2, i % 2)
        self.buttons["previous"].clicked.connect(lambda: self.stepRequested.emit(-1))
        self.buttons["next"].clicked.connect(lambda: self.stepRequested.emit(1))
        for name, state in (("accept", "accepted"), ("delete", "deleted"), ("edit", "edited")):
            self.buttons[name].clicked.connect(
                lambda _=False, s=state: self.stateRequested.emit(s))
        self.buttons["add"].setCheckable(True)
        self.buttons["add"].clicked.connect(lambda _=False: self.addRequested.emit())
        box.addWidget(self.counter)
        box.addLayout(grid)
        box.addWidget(self.current)
        self.show_layer(None)

    def show_layer(self, counts: Optional[tuple], name: str = "") -> None:
        """Show the review count ``(reviewed, total)`` of the result layer ``name``, or,
        with None, that no result layer is active (every button disabled)."""
        if counts is None:
            self.counter.setText(NO_LAYER)
            self.current.setText("")
        else:
            self.counter.setText(f"{counts[0]} / {counts[1]} reviewed in {name}")
        for b in self.buttons.values():
            b.setEnabled(counts is not None)
        if counts is not None:
            self.show_current(None)

    def show_current(self, text: Optional[str]) -> None:
        """Describe the shown polygon (None: none shown; Accept, Delete and Edit wait
        for one)."""
        self.current.setText(text or "Press Next to start with the most uncertain "
                                     "polygon.")
        for name in ("accept", "delete", "edit"):
            self.buttons[name].setEnabled(text is not None)


__all__ = ["ReviewSection", "SHORTCUTS", "LABELS", "TIPS", "NO_LAYER"]
