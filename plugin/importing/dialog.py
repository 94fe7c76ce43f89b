"""The dialog that asks for the Deepness metadata a model file lacks.

One row per missing key, prefilled with Deepness's defaults
(:data:`protocol.importing.DEEPNESS_DEFAULTS`); :meth:`MetadataDialog.values` gives
them as the ``values`` of an ``import_model`` request.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from protocol.importing import DEEPNESS_DEFAULTS, MODEL_TYPES

#: Per key: the row's label, and its help (the tooltip).
FIELDS = {
    "model_type": ("Model type", "Ortholens runs segmentation models (Segmentor)."),
    "resolution": ("Resolution (cm/pixel)",
                   "The ground resolution the model was trained at; rasters are "
                   "resampled to it."),
    "tiles_size": ("Tile size (pixels)", "The side of the tiles the model runs on."),
    "tiles_overlap": ("Tile overlap (%)", "How much neighbouring tiles overlap, percent "
                      "of the tile side."),
    "seg_thresh": ("Probability threshold", "A pixel belongs to a class when its "
                   "probability reaches this."),
    "seg_small_segment": ("Smallest object (pixels)", "Objects smaller than a square of "
                          "this side are dropped (0 keeps all)."),
}


def _editor(key: str, parent: QWidget) -> QWidget:
    """The editor of one key, holding its default."""
    default = DEEPNESS_DEFAULTS.get(key)
    if key == "model_type":
        box = QComboBox(parent)
        box.addItems(list(MODEL_TYPES))
        box.setCurrentText(str(default))
        return box
    if key in ("tiles_size", "seg_small_segment"):
        spin = QSpinBox(parent)
        spin.setRange(32 if key == "tiles_size" else 0, 8192 if key == "tiles_size" else 10000)
    else:
        spin = QDoubleSpinBox(parent)
        lo, hi, dec = {"resolution": (0.01, 100000.0, 2), "tiles_overlap": (0.0, 90.0, 1),
                       "seg_thresh": (0.01, 1.0, 2)}[key]
        spin.setRange(lo, hi)
        spin.setDecimals(dec)
    spin.setValue(default)
    return spin


class MetadataDialog(QDialog):
    """Values for the Deepness metadata ``keys`` a model file lacks.

    Args:
        keys: the missing keys (those of :data:`FIELDS` are shown; others are ignored).
        file_name: the model file, for the text at the top.
        parent: the parent widget.

    After ``exec_()`` / ``accept()``: :meth:`values`.
    """

    def __init__(self, keys: Sequence[str], file_name: str = "",
                 parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setObjectName("ortholensMetadataDialog")
        self.setWindowTitle("Add model: missing metadata")
        lay = QVBoxLayout(self)
        intro = QLabel(f"{file_name or 'The model file'} does not say everything Ortholens "
                       f"needs to run it. Check these values (Deepness's defaults are "
                       f"filled in):", self)
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.editors: Dict[str, QWidget] = {}
        for key in (k for k in keys if k in FIELDS):
            label, help_text = FIELDS[key]
            editor = _editor(key, self)
            editor.setObjectName(f"ortholensMeta_{key}")
            editor.setToolTip(f"{help_text} (Deepness metadata key '{key}')")
            form.addRow(label, editor)
            self.editors[key] = editor
        lay.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.button(QDialogButtonBox.Ok).setText("Add model")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def values(self) -> Dict[str, Any]:
        """The shown keys' values, as ``protocol.importing.ImportValues`` fields."""
        out: Dict[str, Any] = {}
        for key, editor in self.editors.items():
            if isinstance(editor, QComboBox):
                out[key] = editor.currentText()
            elif isinstance(editor, QSpinBox):
                out[key] = int(editor.value())
            else:
                out[key] = round(float(editor.value()), 4)
        return out


__all__ = ["FIELDS", "MetadataDialog"]
