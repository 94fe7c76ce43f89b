"""The dock's versions panel: the versions of the selected model's lineage with their
dates, parents, areas, figures and verdicts, the version in use in the map view and
why, and Retrain on corrections…, Make active, Roll back and Delete.

The buttons act on the version picked in the panel's list (which follows the model
selected in the model section, :mod:`.models`); the retrain controller
(:mod:`..retrain.controller`) reacts to their signals and fills the list.
:func:`version_buttons` says, without widgets, when Make active and Roll back can act;
:mod:`.version_table` gives the list's texts and when Delete can act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListView,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..cards import base_id, lineage_cards
from ..retrain.dialogs import scope_text
from .models import ModelSection
from .version_table import delete_why, here_line, in_use, version_lines

#: Retrain on corrections…'s tooltip.
RETRAIN_TIP = "Fine-tune the selected model on the corrected result layer (the active layer)"
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
    """The versions panel: the versions of the selected model's lineage (date, parent,
    area, figures, verdict, use), the version in use in the map view and why,
    Retrain on corrections…, Make active, Roll back and Delete, each disabled with
    its reason said under the buttons.

    Make active, Roll back and Delete act on the version picked in the list, which
    follows the model selected in the model section (picking one does not change what
    a detection runs).

    Args:
        models: the model section (its cards and selected model).
        parent: the parent widget.

    Signals:
        retrainRequested(): Retrain on corrections… was pressed (the active layer is the
            corrected one).
        activateRequested(str): Make active was pressed: the picked version's id.
        rollbackRequested(str): Roll back was pressed: the picked version's id (its
            lineage rolls back).
        deleteRequested(str): Delete was pressed: the picked version's id.
    """

    retrainRequested = pyqtSignal()
    activateRequested = pyqtSignal(str)
    rollbackRequested = pyqtSignal(str)
    deleteRequested = pyqtSignal(str)

    def __init__(self, models: ModelSection, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.models = models
        self._busy = False
        self._switching = False
        self._engine_why: Optional[str] = None
        #: the last ``versions`` reply shown ({model, active, versions, here?}).
        self.reply: Dict[str, Any] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self._add_table(outer)
        self.retrain_button = QPushButton("Retrain on corrections…", self)
        self.retrain_button.setObjectName("ortholensRetrainButton")
        self.retrain_button.setToolTip(RETRAIN_TIP)
        self.retrain_button.clicked.connect(self.retrainRequested)
        outer.addWidget(self.retrain_button)
        row = QHBoxLayout()
        self.activate_button = QPushButton("Make active", self)
        self.activate_button.setObjectName("ortholensActivateButton")
        self.activate_button.clicked.connect(
            lambda: self.activateRequested.emit(self.picked_id() or ""))
        self.rollback_button = QPushButton("Roll back", self)
        self.rollback_button.setObjectName("ortholensRollbackButton")
        self.rollback_button.clicked.connect(
            lambda: self.rollbackRequested.emit(self.picked_id() or ""))
        self.delete_button = QPushButton("Delete", self)
        self.delete_button.setObjectName("ortholensDeleteButton")
        self.delete_button.clicked.connect(
            lambda: self.deleteRequested.emit(self.picked_id() or ""))
        for b in (self.activate_button, self.rollback_button, self.delete_button):
            row.addWidget(b)
        outer.addLayout(row)
        self.why_label = QLabel("", self)
        self.why_label.setObjectName("ortholensVersionsWhy")
        self.why_label.setWordWrap(True)
        self.why_label.setStyleSheet("color: #555555;")
        outer.addWidget(self.why_label)
        models.modelChanged.connect(self._follow_model)
        self.update_version_buttons()

    def _add_table(self, outer: QVBoxLayout) -> None:
        """The list of versions (two lines each, to fit the dock) and the line saying
        which one is in use here."""
        self.list = QListWidget(self)
        self.list.setObjectName("ortholensVersionsList")
        self.list.setWordWrap(True)
        self.list.setResizeMode(QListView.Adjust)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.list.setMinimumHeight(90)
        self.list.setMaximumHeight(170)
        self.list.itemSelectionChanged.connect(self.update_version_buttons)
        outer.addWidget(self.list)
        self.here_label = QLabel("", self)
        self.here_label.setObjectName("ortholensInUseHere")
        self.here_label.setWordWrap(True)
        outer.addWidget(self.here_label)

    # the list --------------------------------------------------------------------------
    def show_versions(self, reply: Dict[str, Any]) -> None:
        """Show a ``versions`` reply (with ``here`` when it was asked for the map
        view): two lines per version (:func:`~.version_table.version_lines`), the
        version in use here in bold, the model selected in the dock picked."""
        self.reply = dict(reply or {})
        here = (self.reply.get("here") or {}).get("model")
        self.list.blockSignals(True)
        self.list.clear()
        for v in self.reply.get("versions") or []:
            item = QListWidgetItem(version_lines(v, here))
            item.setData(Qt.UserRole, v.get("id"))
            item.setToolTip(self._tip(v))
            if v.get("id") == here:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.here_label.setText(here_line(self.reply))
        self._follow_model()

    @staticmethod
    def _tip(v: Dict[str, Any]) -> str:
        scope = v.get("scope")
        where = (f"Taught on {scope_text(scope)}" if isinstance(scope, dict)
                 else "For everywhere")
        return f"{v.get('id')}: {where}. {v.get('corrections') or 0} corrected polygons."

    def _follow_model(self) -> None:
        """Pick the version of the model selected in the dock (when listed)."""
        mid = self.models.current_model_id()
        for r in range(self.list.count()):
            if self.list.item(r).data(Qt.UserRole) == mid:
                self.list.setCurrentRow(r)
                break
        self.update_version_buttons()

    def pick(self, model_id: str) -> bool:
        """Pick ``model_id`` in the list; False when it is not listed."""
        for r in range(self.list.count()):
            if self.list.item(r).data(Qt.UserRole) == model_id:
                self.list.setCurrentRow(r)
                return True
        return False

    def picked_id(self) -> Optional[str]:
        """The version picked in the list, else the model selected in the dock."""
        item = self.list.currentItem()
        return str(item.data(Qt.UserRole)) if item is not None else \
            self.models.current_model_id()

    def picked_version(self) -> Optional[Dict[str, Any]]:
        """The picked version's row of the ``versions`` reply, else its card."""
        vid = self.picked_id()
        return next((v for v in self.reply.get("versions") or [] if v.get("id") == vid),
                    next((c for c in self.models.cards if c.get("id") == vid), None))

    # the buttons -----------------------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        """Disable Retrain, Make active, Roll back and Delete while a detection or
        retrain runs (and the reverse)."""
        self._busy = bool(busy)
        self._update_retrain()
        self.update_version_buttons()

    def set_engine(self, why: Optional[str]) -> None:
        """Disable Retrain while no engine can run: ``why`` (its tooltip) says so;
        None enables it again."""
        self._engine_why = why
        self._update_retrain()

    def _update_retrain(self) -> None:
        self.retrain_button.setEnabled(not self._busy and self._engine_why is None)
        self.retrain_button.setToolTip(self._engine_why or RETRAIN_TIP)

    def set_versions_running(self, running: bool) -> None:
        """Disable Make active, Roll back and Delete while a version switch is on its
        way."""
        self._switching = bool(running)
        self.update_version_buttons()

    def update_version_buttons(self) -> None:
        """Enable Make active / Roll back / Delete only when they can act, each with
        its reason as its tooltip and under the buttons (see :func:`version_buttons`,
        :func:`~.version_table.delete_why`)."""
        vid = self.picked_id()
        card = next((c for c in self.models.cards if c.get("id") == vid),
                    self.models.current_card())
        can = version_buttons(self.models.cards, card, self._busy, self._switching)
        gone = delete_why(self.picked_version() or card, self._busy, self._switching)
        why: Dict[str, List[str]] = {}
        for button, reason, tip in (
                (self.activate_button, can.activate_why, can.activate_tip),
                (self.rollback_button, can.rollback_why, can.rollback_tip),
                (self.delete_button, gone, f"Delete {vid} for good (its files go; its "
                 f"number is not given again)" + (": it is in use, you will be asked "
                 "first" if in_use(self.picked_version()) else ""))):
            button.setEnabled(reason is None)
            button.setToolTip(reason or tip)
            if reason:
                why.setdefault(reason, []).append(button.text())
        self.why_label.setText(" ".join(f"{', '.join(names)}: {reason}."
                                        for reason, names in why.items()))


__all__ = ["ACTIVATE_TIP", "ROLLBACK_TIP", "VersionButtons", "version_buttons",
           "VersionsSection"]
