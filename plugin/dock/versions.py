"""The dock's versions section: Retrain on corrections…, Make active and Roll back.

The buttons act on the model selected in the model section (:mod:`.models`); the
retrain controller (:mod:`..retrain.controller`) reacts to their signals.
:func:`version_buttons` says, without widgets, when Make active and Roll back can act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ..cards import base_id, lineage_cards
from .models import ModelSection

#: Make active's tooltip for a version of a lineage.
ACTIVATE_TIP = "Use the selected version by default from now on"
#: Roll back's tooltip for a version of a lineage.
ROLLBACK_TIP = "Make the version the active one was trained from active again"


@dataclass(frozen=True)
class VersionButtons:
    """What Make active and Roll back can do for the selected model.

    Attributes:
        activate_why, rollback_why: why the button cannot act (its tooltip, the button
            disabled), or None when it can.
        activate_tip, rollback_tip: the tooltip of a button that can act.
    """

    activate_why: Optional[str]
    rollback_why: Optional[str]
    activate_tip: str = ACTIVATE_TIP
    rollback_tip: str = ROLLBACK_TIP


def version_buttons(cards: List[Dict[str, Any]], card: Optional[Dict[str, Any]],
                    busy: bool = False, switching: bool = False) -> VersionButtons:
    """When Make active and Roll back can act: no job running (``busy``), no version
    switch on its way (``switching``), a model selected (``card`` of ``cards``); Make
    active for a version that is not the active one; Roll back when the active version
    of the selected model's lineage is a retrained one (a shipped model has no earlier
    version). A version taught on one area (``lineage.scope``) is put in use or out of
    use in its area instead.
    """
    if busy or switching:
        why = ("Wait until the running job has finished" if busy
               else "A version switch is on its way")
        return VersionButtons(why, why)
    if card is None:
        why = "Models are listed once the daemon runs"
        return VersionButtons(why, why)
    if (card.get("lineage") or {}).get("scope"):
        return _area_version_buttons(card)
    cid = str(card.get("id"))
    lineage = lineage_cards(cards, card)
    active = next((c for c in lineage if (c.get("lineage") or {}).get("active")),
                  lineage[0] if len(lineage) == 1 else None)
    act = (f"{cid} is already the active version"
           if active is not None and active.get("id") == cid else None)
    number = ((active or {}).get("lineage") or {}).get("number")
    back = None if isinstance(number, int) and number > 0 else (
        f"{base_id(cid)} is the shipped model and has no earlier version to roll back to")
    return VersionButtons(act, back)


def _area_version_buttons(card: Dict[str, Any]) -> VersionButtons:
    """Make active puts a version taught on one area back in use there; Roll back
    stops using it there."""
    cid = str(card.get("id"))
    in_use = bool((card.get("lineage") or {}).get("in_use"))
    return VersionButtons(
        f"{cid} is already used in its area" if in_use else None,
        None if in_use else f"{cid} is not in use",
        f"Use {cid} again for detections in its area",
        f"Stop using {cid} in its area (its files are kept)")


class VersionsSection(QWidget):
    """Retrain on corrections…, Make active and Roll back.

    Args:
        models: the model section whose selected model the buttons act on.
        parent: the parent widget.

    Signals:
        retrainRequested(): Retrain on corrections… was pressed (the active layer is the
            corrected one).
        activateRequested(str): Make active was pressed: the selected model id.
        rollbackRequested(str): Roll back was pressed: the selected model id (its
            lineage rolls back).
    """

    retrainRequested = pyqtSignal()
    activateRequested = pyqtSignal(str)
    rollbackRequested = pyqtSignal(str)

    def __init__(self, models: ModelSection, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.models = models
        self._busy = False
        self._switching = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.retrain_button = QPushButton("Retrain on corrections…", self)
        self.retrain_button.setObjectName("ortholensRetrainButton")
        self.retrain_button.setToolTip("Fine-tune the selected model on the corrected "
                                       "result layer (the active layer)")
        self.retrain_button.clicked.connect(self.retrainRequested)
        outer.addWidget(self.retrain_button)
        row = QHBoxLayout()
        self.activate_button = QPushButton("Make active", self)
        self.activate_button.setObjectName("ortholensActivateButton")
        self.activate_button.setToolTip(ACTIVATE_TIP)
        self.activate_button.clicked.connect(
            lambda: self.activateRequested.emit(self.models.current_model_id() or ""))
        self.rollback_button = QPushButton("Roll back", self)
        self.rollback_button.setObjectName("ortholensRollbackButton")
        self.rollback_button.setToolTip(ROLLBACK_TIP)
        self.rollback_button.clicked.connect(
            lambda: self.rollbackRequested.emit(self.models.current_model_id() or ""))
        row.addWidget(self.activate_button)
        row.addWidget(self.rollback_button)
        outer.addLayout(row)
        models.modelChanged.connect(self.update_version_buttons)
        self.update_version_buttons()

    def set_busy(self, busy: bool) -> None:
        """Disable Retrain, Make active and Roll back while a detection or retrain runs
        (and the reverse)."""
        self._busy = bool(busy)
        self.retrain_button.setEnabled(not busy)
        self.update_version_buttons()

    def set_versions_running(self, running: bool) -> None:
        """Disable Make active and Roll back while a version switch is on its way."""
        self._switching = bool(running)
        self.update_version_buttons()

    def update_version_buttons(self) -> None:
        """Enable Make active / Roll back only when they can act, with a tooltip why
        not (see :func:`version_buttons`)."""
        can = version_buttons(self.models.cards, self.models.current_card(), self._busy,
                              self._switching)
        self.activate_button.setEnabled(can.activate_why is None)
        self.activate_button.setToolTip(can.activate_why or can.activate_tip)
        self.rollback_button.setEnabled(can.rollback_why is None)
        self.rollback_button.setToolTip(can.rollback_why or can.rollback_tip)


__all__ = ["ACTIVATE_TIP", "ROLLBACK_TIP", "VersionButtons", "version_buttons",
           "VersionsSection"]
