"""The Ortholens dock widget: daemon status, model choice, options, progress.

The dock holds no logic: it emits ``detectRequested``, ``cancelRequested``,
``refreshRequested`` (and ``retrainRequested``, ``activateRequested``,
``rollbackRequested`` for :mod:`.retrain`) and the plugin (:mod:`.main`) reacts.

Threshold and minimum area show the selected model card's values and are sent only
when the user changes them (:class:`CardValue`); otherwise the daemon applies the
card's own values, as for the Processing algorithms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from qgis.PyQt.QtCore import Qt, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from qgis.core import Qgis

from .cards import default_card
from .retrain.dialogs import scope_text

NOT_RUNNING = "Daemon not running — it will be started on first use."
#: The status line while the plugin starts the daemon to list its models.
STARTING = "Starting the daemon to list its models…"
#: The status line when no daemon answers and none can be started.
NOT_SET_UP = ("No detection engine is set up: press 'Set up the engine…' to install "
              "it (a few minutes, once), or Settings… to give the address of a running "
              "engine.")

_LEVEL_COLORS = {Qgis.Info: "#1f4e79", Qgis.Success: "#2e7d32",
                 Qgis.Warning: "#9a6700", Qgis.Critical: "#b71c1c"}


def card_label(card: Dict[str, Any]) -> str:
    """Combo box text of a model card: ``id vversion — class, class`` (``[active]``
    after the active version of a retrained lineage; a version taught on one area reads
    ``[area 0.27 km², in use]`` or ``[area 0.27 km², not in use]``)."""
    classes = ", ".join(str(c.get("name")) for c in card.get("classes") or [])
    lineage = card.get("lineage") or {}
    scope = lineage.get("scope")
    if isinstance(scope, dict):
        use = "in use" if lineage.get("in_use") else "not in use"
        active = f" [area {float(scope.get('area_km2') or 0.0):.2f} km², {use}]"
    else:
        active = " [active]" if lineage.get("active") else ""
    return f"{card.get('id')} v{card.get('version', '?')}{active} — {classes or 'no classes'}"


class CardValue:
    """A spin box that follows the model card's value until the user sets one.

    Next to the spin box a button reads "model default" (disabled) while the value is
    the card's, and "Reset" once the user has changed it; pressing it goes back to
    the card's value.

    Args:
        spin: the spin box (its initial value is shown while no card is known).
        key: the card field and the ``DetectParams`` field, e.g. ``"threshold"``.
        parent: parent of the button.
    """

    def __init__(self, spin: QDoubleSpinBox, key: str, parent: QWidget):
        self.spin, self.key = spin, key
        self.card_value: Optional[float] = None
        self.overridden = False
        #: the spin box's real minimum (one step below it means "not known yet").
        self.minimum = spin.minimum()
        self.button = QToolButton(parent)
        self.button.setObjectName(f"{spin.objectName()}Reset")
        self.button.clicked.connect(self.reset)
        self.spin.valueChanged.connect(self._edited)
        self.reset()

    def row(self, parent: QWidget) -> QWidget:
        """The spin box and its button side by side, for a form row."""
        box = QWidget(parent)
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.spin, 1)
        lay.addWidget(self.button)
        return box

    def follow(self, card: Optional[Dict[str, Any]], keep_user_value: bool = False) -> None:
        """Take ``card``'s value; show it unless the user set a value and
        ``keep_user_value`` (the same model listed again) holds. A newly selected model
        shows its own value."""
        v = (card or {}).get(self.key)
        self.card_value = float(v) if isinstance(v, (int, float)) else None
        if self.overridden and keep_user_value:
            self._show()
        else:
            self.reset()

    def reset(self) -> None:
        """Back to the card's value: nothing is sent, the daemon uses the card's.

        Before any card is known the spin box is disabled and reads "model's value"
        (its special value text, one step below the real minimum): a number that is
        not the model's is never shown.
        """
        self.overridden = False
        self.spin.blockSignals(True)
        if self.card_value is not None:
            self.spin.setMinimum(self.minimum)
            self.spin.setSpecialValueText("")
            self.spin.setValue(self.card_value)
            self.spin.setEnabled(True)
        else:
            self.spin.setMinimum(self.minimum - self.spin.singleStep())
            self.spin.setSpecialValueText("model's value")
            self.spin.setValue(self.spin.minimum())
            self.spin.setEnabled(False)
        self.spin.blockSignals(False)
        self._show()

    def value(self) -> Optional[float]:
        """The user's value (rounded to 4 decimals), or None to use the card's."""
        return round(self.spin.value(), 4) if self.overridden else None

    def _edited(self, *_: Any) -> None:
        self.overridden = True
        self._show()

    def _show(self) -> None:
        known = f" ({self.card_value:g})" if self.card_value is not None else ""
        self.button.setEnabled(self.overridden)
        self.button.setText("Reset" if self.overridden else "model default")
        self.button.setToolTip(f"Use the model's value{known} again" if self.overridden
                               else f"The model's value{known} is used")


def device_text(pong: Dict[str, Any]) -> str:
    """What the engine runs on, from a ``pong`` reply: ``"GPU NVIDIA H200, 139.8 GiB"``
    or ``"CPU, 16 cores"`` from its ``device_info``, else its ``device`` string
    (``""`` when neither is given)."""
    info = pong.get("device_info")
    if isinstance(info, dict) and info.get("kind") == "cuda" and info.get("name"):
        mem = info.get("memory_gib")
        return f"GPU {info['name']}" + (f", {mem:g} GiB" if isinstance(mem, (int, float))
                                        else "")
    if isinstance(info, dict) and info.get("kind") == "cpu":
        cores = info.get("cores")
        return "CPU" + (f", {cores} cores" if isinstance(cores, int) else "")
    return str(pong.get("device") or "")


def pong_text(pong: Dict[str, Any], settings: Any) -> str:
    """Status line for a ``pong`` reply: the engine's version, where it runs (this
    computer or another host), its address and its device, e.g. ``"Engine 0.1.0 on
    this computer (tcp://127.0.0.1:5591) — CPU, 16 cores"``.

    Args:
        pong: the ``pong`` reply.
        settings: the :class:`~.settings.DaemonSettings` the ping used (or just the
            endpoint string).
    """
    endpoint = getattr(settings, "endpoint", settings)
    where = settings.where() if hasattr(settings, "where") else "at"
    text = f"Engine {pong.get('version', '?')} {where} ({endpoint})"
    device = device_text(pong)
    return f"{text} — {device}" if device else text


class OrtholensDock(QDockWidget):
    """Dock widget with the detection controls.

    Signals:
        detectRequested(): the Detect button was pressed.
        cancelRequested(): the Cancel button was pressed.
        refreshRequested(): the Refresh button was pressed.
    """

    detectRequested = pyqtSignal()
    cancelRequested = pyqtSignal()
    refreshRequested = pyqtSignal()
    #: Retrain on corrections… was pressed (the active layer is the corrected one).
    retrainRequested = pyqtSignal()
    #: Make active was pressed: the selected model id.
    activateRequested = pyqtSignal(str)
    #: Roll back was pressed: the selected model id (its lineage rolls back).
    rollbackRequested = pyqtSignal(str)
    #: Settings… was pressed.
    settingsRequested = pyqtSignal()
    #: Set up the engine… was pressed.
    setupRequested = pyqtSignal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__("Ortholens", parent)
        self.setObjectName("OrtholensDock")
        self._cards: List[Dict[str, Any]] = []
        #: the id of the card whose values the fields show (None before the first).
        self._shown_id: Optional[str] = None
        body = QWidget(self)
        outer = QVBoxLayout(body)

        row = QHBoxLayout()
        self.status_label = QLabel(NOT_RUNNING, body)
        self.status_label.setObjectName("ortholensStatus")
        self.status_label.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh", body)
        self.refresh_button.setToolTip("Ask the daemon for its status and models (it is "
                                       "started when it is not running)")
        self.refresh_button.clicked.connect(self.refreshRequested)
        self.settings_button = QPushButton("Settings…", body)
        self.settings_button.setObjectName("ortholensSettingsButton")
        self.settings_button.setToolTip("Engine location or address, token, results "
                                        "folder (also in Settings > Options > Ortholens)")
        self.settings_button.clicked.connect(self.settingsRequested)
        self.setup_button = QPushButton("Set up the engine…", body)
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
        outer.addLayout(row)

        form = QFormLayout()
        self.model_combo = QComboBox(body)
        self.model_combo.setObjectName("ortholensModel")
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        form.addRow("Model", self.model_combo)
        self.model_info = QLabel("", body)
        self.model_info.setWordWrap(True)
        form.addRow("", self.model_info)

        self.threshold_spin = QDoubleSpinBox(body)
        self.threshold_spin.setObjectName("ortholensThreshold")
        self.threshold_spin.setRange(0.01, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("Probability a pixel needs to count as a panel")
        self.threshold = CardValue(self.threshold_spin, "threshold", body)
        form.addRow("Threshold", self.threshold.row(body))

        self.min_area_spin = QDoubleSpinBox(body)
        self.min_area_spin.setObjectName("ortholensMinArea")
        self.min_area_spin.setRange(0.0, 100000.0)
        self.min_area_spin.setDecimals(1)
        self.min_area_spin.setSingleStep(0.5)
        self.min_area_spin.setSuffix(" m²")
        self.min_area_spin.setValue(1.0)
        self.min_area_spin.setToolTip("Smaller objects are dropped")
        self.min_area = CardValue(self.min_area_spin, "min_area_m2", body)
        form.addRow("Minimum area", self.min_area.row(body))
        self.bands_label = QLabel("", body)
        self.bands_label.setObjectName("ortholensBands")
        self.bands_label.setWordWrap(True)
        self.bands_label.setToolTip("The raster bands sent as red, green, blue: those the "
                                    "file names so, else the bands chosen in Layer "
                                    "Properties > Symbology")
        form.addRow("Bands (R, G, B)", self.bands_label)
        outer.addLayout(form)

        self.detect_button = QPushButton("Detect in extent", body)
        self.detect_button.setObjectName("ortholensDetectButton")
        self.detect_button.setToolTip("Detect in the visible part of the active raster layer")
        self.detect_button.clicked.connect(self.detectRequested)
        outer.addWidget(self.detect_button)

        row = QHBoxLayout()
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancelRequested)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        outer.addLayout(row)

        self.message_label = QLabel("", body)
        self.message_label.setObjectName("ortholensMessage")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # Long, unbreakable text (file paths) must not widen the dock over the map.
        self.message_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Minimum)
        self.message_label.setMinimumWidth(120)
        outer.addWidget(self.message_label)
        self._add_result_row(body, outer)
        self._add_version_buttons(body, outer)
        outer.addStretch(1)
        self.setWidget(body)
        self._prefer: Optional[str] = None

    def _add_result_row(self, body: QWidget, outer: QVBoxLayout) -> None:
        """The last result's file: its name (full path as tooltip), Copy path, Open
        folder; hidden until a result exists."""
        self.result_box = QWidget(body)
        self.result_box.setObjectName("ortholensResultBox")
        lay = QHBoxLayout(self.result_box)
        lay.setContentsMargins(0, 0, 0, 0)
        self.result_label = QLabel("", self.result_box)
        self.result_label.setObjectName("ortholensResultPath")
        self.result_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.result_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Minimum)
        self.copy_path_button = QToolButton(self.result_box)
        self.copy_path_button.setObjectName("ortholensCopyPath")
        self.copy_path_button.setText("Copy path")
        self.copy_path_button.setToolTip("Copy the result GeoPackage's full path")
        self.copy_path_button.clicked.connect(self.copy_result_path)
        self.open_folder_button = QToolButton(self.result_box)
        self.open_folder_button.setObjectName("ortholensOpenFolder")
        self.open_folder_button.setText("Open folder")
        self.open_folder_button.setToolTip("Show the results folder in the file manager")
        self.open_folder_button.clicked.connect(self._open_folder)
        lay.addWidget(self.result_label, 1)
        lay.addWidget(self.copy_path_button)
        lay.addWidget(self.open_folder_button)
        self.result_box.setVisible(False)
        self.result_path: Optional[str] = None
        outer.addWidget(self.result_box)

    def show_result(self, path: str) -> None:
        """Show the result file ``path`` (absolute) in the result row."""
        self.result_path = path
        self.result_label.setText(f"Saved: {Path(path).name}")
        self.result_label.setToolTip(path)
        self.result_box.setVisible(True)

    def copy_result_path(self) -> None:
        """Put the last result's full path on the clipboard."""
        if self.result_path:
            QApplication.clipboard().setText(self.result_path)

    def _open_folder(self) -> None:
        if self.result_path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(self.result_path).parent)))

    def _add_version_buttons(self, body: QWidget, outer: QVBoxLayout) -> None:
        """Retrain / make active / roll back (the retrain controller reacts)."""
        self.retrain_button = QPushButton("Retrain on corrections…", body)
        self.retrain_button.setObjectName("ortholensRetrainButton")
        self.retrain_button.setToolTip("Fine-tune the selected model on the corrected "
                                       "result layer (the active layer)")
        self.retrain_button.clicked.connect(self.retrainRequested)
        outer.addWidget(self.retrain_button)
        row = QHBoxLayout()
        self.activate_button = QPushButton("Make active", body)
        self.activate_button.setObjectName("ortholensActivateButton")
        self.activate_button.setToolTip("Use the selected version by default from now on")
        self.activate_button.clicked.connect(
            lambda: self.activateRequested.emit(self.current_model_id() or ""))
        self.rollback_button = QPushButton("Roll back", body)
        self.rollback_button.setObjectName("ortholensRollbackButton")
        self.rollback_button.setToolTip("Make the version the active one was trained from "
                                        "active again")
        self.rollback_button.clicked.connect(
            lambda: self.rollbackRequested.emit(self.current_model_id() or ""))
        row.addWidget(self.activate_button)
        row.addWidget(self.rollback_button)
        outer.addLayout(row)
        self._busy = False
        self._versions_running = False
        self.update_version_buttons()

    def set_versions_running(self, running: bool) -> None:
        """Disable Make active and Roll back while a version switch is on its way."""
        self._versions_running = bool(running)
        self.update_version_buttons()

    def update_version_buttons(self) -> None:
        """Enable Make active / Roll back only when they can act, with a tooltip why
        not: no job running, a model selected; Make active for a version that is not
        the active one; Roll back when the active version of the selected model's
        lineage is a retrained one (a shipped model has no earlier version)."""
        if not hasattr(self, "rollback_button"):
            return
        card = self.current_card()
        lineage = _lineage_cards(self._cards, card)
        active = next((c for c in lineage if (c.get("lineage") or {}).get("active")),
                      lineage[0] if len(lineage) == 1 else None)
        if self._busy or self._versions_running:
            why = ("Wait until the running job has finished" if self._busy
                   else "A version switch is on its way")
            act = back = why
        elif card is None:
            act = back = "Models are listed once the daemon runs"
        elif (card.get("lineage") or {}).get("scope"):  # a version for one area
            cid = str(card.get("id"))
            in_use = bool((card.get("lineage") or {}).get("in_use"))
            act = f"{cid} is already used in its area" if in_use else None
            back = None if in_use else f"{cid} is not in use"
            self.activate_button.setEnabled(act is None)
            self.activate_button.setToolTip(act or f"Use {cid} again for detections in "
                                                   f"its area")
            self.rollback_button.setEnabled(back is None)
            self.rollback_button.setToolTip(back or f"Stop using {cid} in its area (its "
                                                    f"files are kept)")
            return
        else:
            cid = str(card.get("id"))
            act = (f"{cid} is already the active version"
                   if active is not None and active.get("id") == cid else None)
            number = ((active or {}).get("lineage") or {}).get("number")
            back = None if isinstance(number, int) and number > 0 else (
                f"{cid.split('@', 1)[0]} is the shipped model and has no earlier version "
                f"to roll back to")
        self.activate_button.setEnabled(act is None)
        self.activate_button.setToolTip(act or "Use the selected version by default "
                                               "from now on")
        self.rollback_button.setEnabled(back is None)
        self.rollback_button.setToolTip(back or "Make the version the active one was "
                                                "trained from active again")

    def prefer_model(self, model_id: Optional[str]) -> None:
        """Select ``model_id`` now if listed, else when :meth:`set_models` next lists it
        (e.g. a new version, after the next status refresh)."""
        idx = self.model_combo.findData(model_id) if model_id else -1
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
        self._prefer = model_id

    # models -------------------------------------------------------------------
    def set_models(self, cards: List[Dict[str, Any]]) -> None:
        """Fill the model combo box (keeps the current choice when still offered)."""
        current = self.current_model_id()
        prefer = getattr(self, "_prefer", None)
        self._cards = [c for c in cards if isinstance(c, dict) and c.get("id")]
        if prefer and any(c["id"] == prefer for c in self._cards):
            current, self._prefer = prefer, None
        elif current is None:  # first listing: the active version of a retrained
            # model, else the daemon's default for its device (fast on CPU, ensemble on GPU)
            current = next((c["id"] for c in self._cards
                            if (c.get("lineage") or {}).get("active")
                            and (c.get("lineage") or {}).get("number")), None) or (
                default_card(self._cards) or {}).get("id")
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for c in self._cards:
            self.model_combo.addItem(card_label(c), c["id"])
            scope = (c.get("lineage") or {}).get("scope")
            if isinstance(scope, dict):  # where it was taught, in the item's tooltip
                self.model_combo.setItemData(
                    self.model_combo.count() - 1,
                    f"Taught on {scope_text(scope)}: detections there with "
                    f"{str(c['id']).split('@', 1)[0]} use it", Qt.ToolTipRole)
        idx = self.model_combo.findData(current) if current else -1
        self.model_combo.setCurrentIndex(idx if idx >= 0 else (0 if self._cards else -1))
        self.model_combo.blockSignals(False)
        self._model_changed()

    def current_card(self) -> Optional[Dict[str, Any]]:
        """The selected model card, or None (no models known yet)."""
        i = self.model_combo.currentIndex()
        return self._cards[i] if 0 <= i < len(self._cards) else None

    def current_model_id(self) -> Optional[str]:
        """The selected model card's id, or None."""
        card = self.current_card()
        return str(card["id"]) if card else None

    def _model_changed(self, *_: Any) -> None:
        self.update_version_buttons()
        card = self.current_card()
        if card is None:
            self.model_info.setText("Models are listed once the daemon runs.")
            return
        same = card.get("id") == self._shown_id
        self._shown_id = card.get("id")
        for field in self._card_values():
            field.follow(card, keep_user_value=same)
        self.model_info.setText(describe_card(card))

    def _card_values(self) -> Tuple[CardValue, ...]:
        return (self.threshold, self.min_area)

    def show_bands(self, bands: Optional[Tuple[int, ...]], layer_name: str = "") -> None:
        """Show the band mapping a detection in the active layer sends: ``bands``
        (1-based R, G, B), or the engine's own choice when None; empty without a
        raster layer."""
        if not layer_name:
            self.bands_label.setText("")
        elif bands:
            self.bands_label.setText(", ".join(str(b) for b in bands))
        else:
            self.bands_label.setText("as the engine reads the file (colour "
                                     "interpretation, else 1, 2, 3)")

    def options(self) -> Dict[str, Any]:
        """The ``DetectParams`` fields the user set: ``threshold`` (0..1],
        ``min_area_m2`` (m²). A field left at the model's value is absent, so the daemon
        applies the card's value (empty before any change)."""
        return {f.key: f.value() for f in self._card_values() if f.value() is not None}

    # status and progress -------------------------------------------------------
    def set_status(self, text: str) -> None:
        """Show the daemon's status line."""
        self.status_label.setText(text)

    def set_busy(self, busy: bool) -> None:
        """Enable Cancel and disable Detect, Retrain, Make active and Roll back while a
        detection or retrain runs (and the reverse); the bar starts at 0."""
        self._busy = bool(busy)
        self.detect_button.setEnabled(not busy)
        if hasattr(self, "retrain_button"):
            self.retrain_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress.setValue(0)
        self.update_version_buttons()

    def set_progress(self, value: float) -> None:
        """Set the progress bar, percent."""
        self.progress.setValue(int(round(value)))

    def show_message(self, text: str, level: int = Qgis.Info) -> None:
        """Show ``text`` under the buttons, coloured by message level."""
        color = _LEVEL_COLORS.get(level, "#000000")
        self.message_label.setStyleSheet(f"color: {color};")
        self.message_label.setText(text)
        self.message_label.setToolTip(text)

    def message(self) -> str:
        """The message shown under the buttons."""
        return self.message_label.text()


def _lineage_cards(cards: List[Dict[str, Any]], card: Optional[Dict[str, Any]]
                   ) -> List[Dict[str, Any]]:
    """The cards of ``card``'s lineage (same id before ``@``), ``card`` included."""
    if card is None:
        return []
    base = str(card.get("id")).split("@", 1)[0]
    return [c for c in cards if str(c.get("id")).split("@", 1)[0] == base]


def describe_card(card: Dict[str, Any]) -> str:
    """One line about a model card for the dock: architecture or ensemble make-up, GSD.

    Args:
        card: a card as the daemon's ``models`` reply gives it.
    """
    gsd = card.get("gsd_m")
    at = f", {gsd:g} m/pixel" if isinstance(gsd, (int, float)) else ""
    if card.get("kind") == "ensemble":
        members = ", ".join(str(m.get("id")) for m in card.get("members") or [])
        extras = []
        if len(card.get("tta") or []) > 1:
            extras.append(f"{len(card['tta'])} test-time augmentations")
        if card.get("shifts"):
            extras.append("shifted tilings")
        more = f"; {', '.join(extras)}" if extras else ""
        return f"Ensemble of {members}{more}{at}"
    return f"{card.get('architecture', '')} {card.get('encoder', '')}{at}".strip()
