"""What the Processing tests share: the test model ids, the pv01 tiles of the mosaic,
running an algorithm, reading a result GeoPackage, a feedback that cancels."""

from __future__ import annotations

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
)

from helpers import BACKEND_PYTHON, DEFAULT_MODEL, REPO, data_dir

MODEL = DEFAULT_MODEL
#: A second model id for the test daemon (MODEL's weights), sorting before MODEL.
ALT_MODEL = "pv-alt-efl0"
PV01 = data_dir() / "pv01" / "heldout"
BLOCK = ["PV01_325190_1204243", "PV01_325190_1204246", "PV01_325192_1204246",
         "PV01_325192_1204249"]
#: A part of the mosaic crossing the seams between its tiles (EPSG:32651).
AREA = (258050.0, 3600880.0, 258115.0, 3600920.0)

_missing = [str(p) for p in [BACKEND_PYTHON, REPO / "models" / MODEL / "card.json"]
            + [PV01 / f"{n}.tif" for n in BLOCK] if not p.exists()]
needs_daemon = pytest.mark.skipif(bool(_missing), reason="needs: " + ", ".join(_missing))


def run_alg(alg_id, params, feedback=None):
    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    assert alg is not None, alg_id
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = feedback or QgsProcessingFeedback()
    res, ok = alg.run(params, context, feedback)
    return res, ok, context


def features_of(path, layer=None):
    """``[(class, score, area_m2, geometry WKB)]`` sorted, of a GeoPackage layer's
    detections: a layer with an ``origin`` field (a dock result) also holds the engine's
    candidate misses for review, which a batch job does not write; they are left out."""
    uri = f"{path}|layername={layer}" if layer else str(path)
    vl = QgsVectorLayer(uri, "x", "ogr")
    assert vl.isValid(), uri
    origin = vl.fields().indexOf("origin") >= 0
    out = sorted((f["class"], round(float(f["score"]), 4), round(float(f["area_m2"]), 3),
                  bytes(f.geometry().asWkb())) for f in vl.getFeatures()
                 if not origin or f["origin"] != "candidate")
    del vl
    return out


class CancelAt(QgsProcessingFeedback):
    """Cancels once progress passes ``at`` percent."""

    def __init__(self, at: float):
        super().__init__()
        self.at = at
        self.seen = []
        self.progressChanged.connect(self._on)

    def _on(self, value):
        self.seen.append(value)
        if value >= self.at and 0 < value < 99:
            self.cancel()
