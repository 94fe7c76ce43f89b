"""Writing a detection result to a GeoPackage, atomically: the file is written under a
temporary name in the same folder and renamed when complete, so the path never holds a
half-written GeoPackage. No project or GUI object is touched: any thread may write."""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsFields,
    QgsGeometry,
    QgsVectorFileWriter,
    QgsWkbTypes,
)

from protocol.errors import ResultLayerError

from ..detect.crs import crs_from_text
from .schema import feature_attributes, queue_features, result_fields, utc_datetime


def write_result_gpkg(result: Dict[str, Any], path: str, layer_name: str,
                      detected_at: Any = None) -> int:
    """Write a detection result to a new GeoPackage (thread-safe: no project access).

    Args:
        result: the daemon's result, ``{"crs": WKT, "features": [feature, ...], ...}``
            with features as in ``docs/protocol.md`` (``wkt`` and the fields of
            ``protocol.results``).
        path: the ``.gpkg`` file to create; an existing file is replaced. The file is
            written under a temporary name in the same folder and renamed atomically
            when complete, so ``path`` never holds a half-written GeoPackage (and an
            existing one stays intact when writing fails).
        layer_name: the table name inside the GeoPackage.
        detected_at: the time stored on every feature's ``detected_at``, a DateTime
            field (default: now): a ``datetime`` or ISO 8601 text (see
            :func:`~.schema.utc_datetime`). It is stored as UTC; the GeoPackage value
            carries no zone marker (QGIS 3.22 writes none), hence the field alias
            "(UTC)".

    Returns:
        The number of features written (the detections and the candidate misses).
        Polygons are stored as MultiPolygon.

    Raises:
        ResultLayerError: ``result["crs"]`` is not a valid CRS, a feature has invalid
            WKT, ``detected_at`` is no date and time, or the file cannot be created or
            written.
    """
    crs = crs_from_text(str(result.get("crs") or ""))
    if not crs.isValid():
        raise ResultLayerError("the daemon's result has no valid CRS; nothing was written")
    stamp = utc_datetime(detected_at if detected_at is not None
                         else _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0))
    fields = result_fields()
    feats = result_features(result, fields, stamp)
    write_features(feats, fields, crs, path, layer_name)
    return len(feats)


def result_features(result: Dict[str, Any], fields: QgsFields, detected_at: Any
                    ) -> List[QgsFeature]:
    """The features of a daemon's result, then its candidate misses, as MultiPolygon
    ``QgsFeature`` s of ``fields``, ranked for review (:func:`~.schema.queue_features`).

    Args:
        result: the daemon's result (``features`` with ``wkt``, ``candidates``).
        fields: the result table's fields (:func:`~.schema.result_fields`).
        detected_at: the ``QDateTime`` stored in ``detected_at``.

    Raises:
        ResultLayerError: a feature has no readable WKT, or is not a polygon.
    """
    feats: List[QgsFeature] = []
    for i, f in enumerate(queue_features(result)):
        geom = QgsGeometry.fromWkt(str(f.get("wkt", "")))
        if geom.isNull() or geom.isEmpty():
            raise ResultLayerError(f"feature {i} of the result has no readable WKT geometry")
        if QgsWkbTypes.geometryType(geom.wkbType()) != QgsWkbTypes.PolygonGeometry:
            raise ResultLayerError(f"feature {i} of the result is not a polygon")
        geom.convertToMultiType()
        feat = QgsFeature(fields)
        feat.setGeometry(geom)
        feat.setAttributes(feature_attributes(f, detected_at))
        feats.append(feat)
    return feats


def write_features(feats: List[QgsFeature], fields: QgsFields,
                   crs: QgsCoordinateReferenceSystem, path: str, layer_name: str) -> None:
    """Write ``feats`` as the MultiPolygon table ``layer_name`` of a new GeoPackage at
    ``path`` (its folder created), replacing the file only once it is complete.

    Raises:
        ResultLayerError: the GeoPackage cannot be created or written, or ``path``
            cannot be replaced; the temporary file and its journals are then removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.gpkg")
    complete = False
    try:
        _write_gpkg(tmp, feats, fields, crs, layer_name, path)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise ResultLayerError(f"cannot replace {path} (is it open in another "
                                   f"program?): {exc}") from None
        complete = True
    finally:
        if not complete:
            _remove_leftovers(tmp)


def _write_gpkg(tmp: Path, feats: List[QgsFeature], fields: QgsFields,
                crs: QgsCoordinateReferenceSystem, layer_name: str, path: str) -> None:
    """Write the GeoPackage ``tmp``; errors name ``path``, the file it becomes."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    options.fileEncoding = "UTF-8"
    options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteFile
    writer = QgsVectorFileWriter.create(str(tmp), fields, QgsWkbTypes.MultiPolygon, crs,
                                        QgsCoordinateTransformContext(), options)
    try:
        if writer.hasError() != QgsVectorFileWriter.NoError:
            raise ResultLayerError(f"cannot create {path}: {writer.errorMessage()}")
        if feats and not writer.addFeatures(feats):
            raise ResultLayerError(f"cannot write features to {path}: "
                                   f"{writer.errorMessage()}")
    finally:
        del writer  # flushes and closes the GeoPackage


def _remove_leftovers(tmp: Path) -> None:
    """Delete an unfinished GeoPackage and its SQLite journal files, if any."""
    for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        try:
            leftover.unlink()
        except OSError:
            pass


__all__ = ["write_result_gpkg", "result_features", "write_features"]
