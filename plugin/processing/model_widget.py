"""The MODEL parameter's widget in the Processing dialogs: a combo box of the daemon's
models (id, version, classes) with the daemon's default selected.

QGIS's Processing framework builds it from the parameter's ``widget_wrapper`` metadata
(:func:`.common.model_parameter`) in the algorithm dialog, the batch dialog (one per
row) and the model designer; ``qgis_process`` and scripts never load this module and
pass a model id string. It imports QGIS's ``processing`` plugin, so only a dialog
imports it.

The list is asked for when the dialog opens (:func:`.common.engine_models`, at most a
second when the daemon is silent, at once when it is stopped) and once per dialog, so
the rows of a batch share it. When no daemon answers the combo box holds one entry, the
engine's default model, and a line under it says the engine will be started when the
algorithm runs; the refresh button, or a finished run, asks again.
"""

from __future__ import annotations

from typing import Any, Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from processing.gui.wrappers import DIALOG_BATCH, DIALOG_STANDARD, WidgetWrapper

from .common import EngineModels, card_text, engine_models

#: The entry that leaves the parameter empty: the daemon picks its default model.
DEFAULT_ENTRY = "Engine's default model"
#: The dialog attribute holding the model list of its opening, shared by batch rows.
_DIALOG_ATTR = "_ortholens_models"


class ModelWidgetWrapper(WidgetWrapper):
    """A combo box of the daemon's models for a string MODEL parameter.

    Its value is the chosen card id, or None for :data:`DEFAULT_ENTRY` (shown only
    when the daemon listed no models). An id set from outside (batch fill, model
    designer, history) that the daemon does not list is kept as an extra entry.
    """

    def createWidget(self, **kwargs) -> QWidget:  # noqa: N802 - QGIS API
        """The combo box, a refresh button and (single dialog) the note line."""
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(20)
        self.refresh_button = QToolButton()
        self.refresh_button.setIcon(QgsApplication.getThemeIcon("/mActionRefresh.svg"))
        self.refresh_button.setToolTip("Ask the engine for its models again")
        self.refresh_button.clicked.connect(lambda: self.refresh_models(fresh=True))
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.refresh_button)
        box = QWidget()
        if self.dialogType == DIALOG_BATCH:  # a table cell: one line, the note a tooltip
            box.setLayout(row)
        else:
            col = QVBoxLayout()
            col.setContentsMargins(0, 0, 0, 0)
            col.addLayout(row)
            col.addWidget(self.note)
            box.setLayout(col)
        finished = getattr(self.dialog, "algorithmFinished", None)
        if self.dialogType == DIALOG_STANDARD and finished is not None:
            finished.connect(self._after_run)  # the run may have started the engine
        self.refresh_models(fresh=False)
        return box

    def models(self, fresh: bool) -> EngineModels:
        """The dialog's model list: asked once per dialog, again when ``fresh``."""
        models = None if fresh else getattr(self.dialog, _DIALOG_ATTR, None)
        if not isinstance(models, EngineModels):
            models = engine_models(max_age_s=0.0) if fresh else engine_models()
            try:
                setattr(self.dialog, _DIALOG_ATTR, models)
            except (AttributeError, TypeError):  # a dialog that takes no attributes
                pass
        self._models = models
        return models

    def refresh_models(self, fresh: bool = True) -> None:
        """Fill the combo box from the daemon's models, keeping the chosen id when it is
        still listed, else selecting the daemon's default.

        Args:
            fresh: ask the daemon now rather than reuse this dialog's list.
        """
        models = self.models(fresh)
        keep = self.value() if self.combo.count() else None
        self.combo.blockSignals(True)
        self.combo.clear()
        default = models.default_id
        for card in models.cards:
            self.combo.addItem(card_text(card, default), str(card["id"]))
        if not models.cards:
            self.combo.addItem(DEFAULT_ENTRY, None)
        self.combo.blockSignals(False)
        self.note.setText(models.note)
        self.note.setVisible(bool(models.note) and self.dialogType != DIALOG_BATCH)
        self.combo.setToolTip(models.note or "The engine's models: id, version, classes")
        self.setValue(keep)

    def _after_run(self, *args: Any) -> None:
        if not self.combo.itemData(0):  # nothing was listed: the engine may run now
            self.refresh_models(fresh=True)

    def setValue(self, value: Optional[str]) -> None:  # noqa: N802 - QGIS API
        """Select the card ``value`` (a model id); None or ``""`` selects the daemon's
        default; an id not listed is added and selected."""
        if value not in (None, "") and not isinstance(value, str):
            value = str(value)
        if value in (None, ""):
            index = self.combo.findData(self._models.default_id)
            self.combo.setCurrentIndex(max(index, 0))
            return
        index = self.combo.findData(value)
        if index < 0:
            self.combo.addItem(value, value)
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(index)

    def value(self) -> Optional[str]:
        """The chosen model id, or None for the engine's default model."""
        data = self.combo.currentData()
        return str(data) if data else None
