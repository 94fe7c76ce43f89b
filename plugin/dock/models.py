"""The dock's model section: the model list and *Add model…* (an ONNX file of another
tool, ``..importing``), a line about the selected model, its threshold and minimum
area, and the bands a detection sends.

When the engine offers models for several GSD bands (two or more cards with a
``gsd_candidate`` rank in its ``models`` reply), the list starts with *Automatic (by the layer's GSD)*: the model is then the one
``protocol.choice.choose_for_gsd`` gives for the active layer's GSD, the rule the engine
applies to a detection that names no model, and the line below says which and why.

Threshold and minimum area show the selected model card's values and are sent only
when the user changes them (:class:`CardValue`); otherwise the daemon applies the
card's own values, as for the Processing algorithms.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QWidget,
)

from protocol.choice import GsdChoice, candidates_from_cards, choose_for_gsd

from ..cards import base_id, default_card
from ..retrain.dialogs import scope_text

#: The combo box data of the *Automatic (by the layer's GSD)* entry.
AUTO = "__auto__"
AUTO_TEXT = "Automatic (by the layer's GSD)"


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


def describe_card(card: Dict[str, Any]) -> str:
    """One line about a model card for the dock: architecture or ensemble make-up, GSD.

    Args:
        card: a card as the daemon's ``models`` reply gives it.
    """
    gsd = card.get("gsd_m")
    at = f", {gsd:g} m/pixel" if isinstance(gsd, (int, float)) else ""
    if card.get("format"):
        source = (card.get("imported") or {}).get("file") or "an ONNX file"
        return f"Imported from {source} ({card['format']} format, ONNX only){at}"
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


def gsd_candidates(cards: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The engine's GSD candidates among ``cards`` (those with a ``gsd_candidate``
    rank), first rank first."""
    return sorted((c for c in cards if isinstance(c.get("gsd_candidate"), int)),
                  key=lambda c: c["gsd_candidate"])


def gsd_choice(cards: List[Dict[str, Any]], layer_gsd_m: Optional[float]
               ) -> Optional[GsdChoice]:
    """The model a layer of ``layer_gsd_m`` metres per pixel gets among the engine's GSD
    candidates (:func:`gsd_candidates`), or None without candidates or without a layer
    GSD."""
    ranked = gsd_candidates(cards)
    if not ranked or not layer_gsd_m or layer_gsd_m <= 0:
        return None
    return choose_for_gsd(candidates_from_cards(ranked, [c["id"] for c in ranked]),
                          float(layer_gsd_m))


def active_version(cards: List[Dict[str, Any]]) -> Optional[str]:
    """The id of the active version of a retrained model among ``cards``, or None."""
    return next((c["id"] for c in cards
                 if (c.get("lineage") or {}).get("active")
                 and (c.get("lineage") or {}).get("number")), None)


def first_choice(cards: List[Dict[str, Any]]) -> Optional[str]:
    """The model selected when the models are first listed: the active version of a
    retrained model, else the daemon's default for its device (fast on CPU, ensemble on
    GPU); None without cards."""
    return active_version(cards) or (default_card(cards) or {}).get("id")


def beside(parent: QWidget, main: QWidget, button: QWidget) -> QWidget:
    """``main`` (stretched) and ``button`` side by side in one widget, for a form row."""
    box = QWidget(parent)
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(main, 1)
    lay.addWidget(button)
    return box


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
        return beside(parent, self.spin, self.button)

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


class ModelSection(QWidget):
    """The model list and what a detection with the selected model uses.

    Attributes:
        cards: the cards listed (the daemon's ``models`` reply, without entries that
            have no id).

    Signals:
        modelChanged(): another model was selected, or the list was filled again.
        addModelRequested(): *Add model…* was pressed.
    """

    modelChanged = pyqtSignal()
    addModelRequested = pyqtSignal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.cards: List[Dict[str, Any]] = []
        #: the id of the card whose values the fields show (None before the first).
        self._shown_id: Optional[str] = None
        #: the model to select when it is listed (see :meth:`prefer_model`).
        self._prefer: Optional[str] = None
        #: the active raster layer's GSD, metres per pixel (None: no raster layer).
        self.layer_gsd_m: Optional[float] = None
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self._add_model_rows(form)
        self._add_value_rows(form)
        self.bands_label = QLabel("", self)
        self.bands_label.setObjectName("ortholensBands")
        self.bands_label.setWordWrap(True)
        self.bands_label.setToolTip("The raster bands sent as red, green, blue: those the "
                                    "file names so, else the bands chosen in Layer "
                                    "Properties > Symbology")
        form.addRow("Bands (R, G, B)", self.bands_label)

    def _add_model_rows(self, form: QFormLayout) -> None:
        """The model combo box with *Add model…*, and the line about the selected
        model."""
        self.model_combo = QComboBox(self)
        self.model_combo.setObjectName("ortholensModel")
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.add_model_button = QPushButton("Add model…", self)
        self.add_model_button.setObjectName("ortholensAddModel")
        self.add_model_button.setToolTip("Add a segmentation model saved as ONNX in "
                                         "Deepness's format (metadata in the file)")
        self.add_model_button.clicked.connect(self.addModelRequested)
        form.addRow("Model", beside(self, self.model_combo, self.add_model_button))
        self.model_info = QLabel("", self)
        self.model_info.setWordWrap(True)
        form.addRow("", self.model_info)

    def _add_value_rows(self, form: QFormLayout) -> None:
        """Threshold and minimum area, each following the card (:class:`CardValue`)."""
        self.threshold_spin = QDoubleSpinBox(self)
        self.threshold_spin.setObjectName("ortholensThreshold")
        self.threshold_spin.setRange(0.01, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip("Probability a pixel needs to count as a panel")
        self.threshold = CardValue(self.threshold_spin, "threshold", self)
        form.addRow("Threshold", self.threshold.row(self))

        self.min_area_spin = QDoubleSpinBox(self)
        self.min_area_spin.setObjectName("ortholensMinArea")
        self.min_area_spin.setRange(0.0, 100000.0)
        self.min_area_spin.setDecimals(1)
        self.min_area_spin.setSingleStep(0.5)
        self.min_area_spin.setSuffix(" m²")
        self.min_area_spin.setValue(1.0)
        self.min_area_spin.setToolTip("Smaller objects are dropped")
        self.min_area = CardValue(self.min_area_spin, "min_area_m2", self)
        form.addRow("Minimum area", self.min_area.row(self))

    def prefer_model(self, model_id: Optional[str]) -> None:
        """Select ``model_id`` now if listed, else when :meth:`set_models` next lists it
        (e.g. a new version, after the next status refresh)."""
        idx = self.model_combo.findData(model_id) if model_id else -1
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
        self._prefer = model_id

    def set_models(self, cards: List[Dict[str, Any]]) -> None:
        """Fill the model combo box (keeps the current choice when still offered). With
        GSD candidates the list starts with the automatic entry, selected unless a
        retrained version is active or the user chose a model."""
        current = self.model_combo.currentData() if self.model_combo.count() else None
        self.cards = [c for c in cards if isinstance(c, dict) and c.get("id")]
        # one candidate is the default model: the automatic entry would name it twice
        auto = len(gsd_candidates(self.cards)) >= 2
        if self._prefer and any(c["id"] == self._prefer for c in self.cards):
            current, self._prefer = self._prefer, None
        elif current is None:
            current = active_version(self.cards) or (
                AUTO if auto else first_choice(self.cards))
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        if auto:
            self.model_combo.addItem(AUTO_TEXT, AUTO)
            self.model_combo.setItemData(
                0, "The model whose GSD range holds the active layer's GSD (the engine's "
                   "rule for a detection that names no model)", Qt.ToolTipRole)
        for c in self.cards:
            self.model_combo.addItem(card_label(c), c["id"])
            scope = (c.get("lineage") or {}).get("scope")
            if isinstance(scope, dict):  # where it was taught, in the item's tooltip
                self.model_combo.setItemData(
                    self.model_combo.count() - 1,
                    f"Taught on {scope_text(scope)}: detections there with "
                    f"{base_id(c['id'])} use it", Qt.ToolTipRole)
        idx = self.model_combo.findData(current) if current else -1
        self.model_combo.setCurrentIndex(idx if idx >= 0 else (0 if self.cards else -1))
        self.model_combo.blockSignals(False)
        self._model_changed()

    def current_card(self) -> Optional[Dict[str, Any]]:
        """The selected model card (for the automatic entry, the one chosen for the
        active layer's GSD, else the first candidate), or None (no models known yet)."""
        data = self.model_combo.currentData()
        if data == AUTO:
            choice = gsd_choice(self.cards, self.layer_gsd_m)
            want = (choice.model if choice is not None
                    else gsd_candidates(self.cards)[0]["id"])
            return next((c for c in self.cards if c["id"] == want), None)
        return next((c for c in self.cards if c["id"] == data), None)

    def is_automatic(self) -> bool:
        """Whether the automatic entry (the model by the layer's GSD) is selected."""
        return self.model_combo.currentData() == AUTO

    def set_layer_gsd(self, gsd_m: Optional[float]) -> None:
        """The active raster layer's GSD, metres per pixel (None: no raster layer or
        unknown); with the automatic entry selected, the model follows it."""
        if gsd_m == self.layer_gsd_m:
            return
        self.layer_gsd_m = gsd_m
        if self.is_automatic():
            self._model_changed()

    def current_model_id(self) -> Optional[str]:
        """The selected model card's id, or None."""
        card = self.current_card()
        return str(card["id"]) if card else None

    def _model_changed(self, *_: Any) -> None:
        self.modelChanged.emit()
        card = self.current_card()
        if card is None:
            self.model_info.setText("Models are listed once the daemon runs.")
            return
        same = card.get("id") == self._shown_id
        self._shown_id = card.get("id")
        for field in self._card_values():
            field.follow(card, keep_user_value=same)
        self.model_info.setText(self._info_text(card))

    def _info_text(self, card: Dict[str, Any]) -> str:
        """The line under the list: the card, and for the automatic entry the layer's
        GSD and why this model (a warning when the GSD is outside every range)."""
        if not self.is_automatic():
            return describe_card(card)
        choice = gsd_choice(self.cards, self.layer_gsd_m)
        if choice is None:
            return (f"{card['id']} until a raster layer is active: {describe_card(card)}")
        text = f"{card['id']}: {choice.why}."
        return text if choice.inside else f"Warning: {text}"

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


__all__ = ["AUTO", "AUTO_TEXT", "card_label", "describe_card", "gsd_candidates",
           "gsd_choice", "active_version", "first_choice", "beside", "CardValue",
           "ModelSection"]
