"""Detection results as a styled, editable GeoPackage layer.

Two halves, so the slow part can run in a :class:`~qgis.core.QgsTask`:

* :func:`write_result_gpkg` writes the GeoPackage; it touches no project or GUI object
  and may run on a worker thread;
* :func:`load_result_layer` opens it with the ``ogr`` provider (edits are saved back to
  the file), styles it, sets up its fields for editing and adds it on top of the
  project's layer tree; UI thread only.

:func:`write_result_layer` does both. The attribute table is ``protocol.results``'
result schema (:data:`RESULT_FIELDS`): ``class``, ``class_id``, ``score``,
``agreement``, ``area_m2``, ``model``, ``model_version`` and ``detected_at``, the
last a GeoPackage DateTime (UTC) here where a batch job's GeoPackage stores ISO 8601
text. Each field has an alias with its unit (:data:`FIELD_ALIASES`).

A polygon drawn by hand in a result layer gets ``area_m2`` (measured whenever its
geometry or attributes change, see :func:`area_expression`), ``class`` (the model's
first class unless chosen) and ``class_id`` (from ``class``); ``score``,
``agreement``, ``model``, ``model_version`` and ``detected_at`` stay NULL, which is
what tells a drawn polygon from a detected one.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime, QVariant
from qgis.PyQt.QtGui import QColor
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsDefaultValue,
    QgsEditorWidgetSetup,
    QgsExpression,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsProject,
    QgsRendererCategory,
    QgsUnitTypes,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from protocol import results
from protocol.errors import ResultLayerError

from .detect.crs import crs_from_text

#: QVariant type and Python conversion of each kind of ``protocol.results``.
_KINDS = {"str": (QVariant.String, str), "int": (QVariant.Int, int),
          "float": (QVariant.Double, float)}

#: Fields stored as a GeoPackage DateTime (UTC) although the protocol carries text.
DATETIME_FIELDS = ("detected_at",)

#: (name, QVariant type) of the result table's fields, in order: the protocol's result
#: schema, with :data:`DATETIME_FIELDS` as ``QVariant.DateTime``.
RESULT_FIELDS = tuple((name, QVariant.DateTime if name in DATETIME_FIELDS else _KINDS[kind][0])
                      for name, kind in results.RESULT_FIELDS)

#: The alias of each result field, as the attribute table and forms show it.
FIELD_ALIASES = {
    "class": "Class",
    "class_id": "Class ID",
    "score": "Score (0–1, NULL: drawn by hand)",
    "agreement": "Agreement (0–1)",
    "area_m2": "Area (m²)",
    "model": "Model",
    "model_version": "Model version",
    "detected_at": "Detected at (UTC)",
}

#: The equal-area CRS in which the area of a drawn or reshaped polygon is measured:
#: EASE-Grid 2.0 Global, a Lambert cylindrical equal-area projection of the WGS 84
#: ellipsoid, so its planar area is the ellipsoidal area (latitudes up to 86°).
AREA_CRS = "EPSG:6933"

#: Fill opacity of the class colour (0..255); outlines are opaque.
FILL_ALPHA = 90
FALLBACK_COLOR = "#e31a1c"

#: Outline colours of a project's 2nd, 3rd... result layers, in turn (a qualitative
#: palette); the 1st keeps its classes' own colours. Entries close to a class colour
#: are skipped, so the class fill stays recognisable.
RUN_OUTLINES = ("#1f78b4", "#e7298a", "#33a02c", "#6a3d9a", "#17becf", "#b15928")

#: Custom layer property holding a result layer's run number; the project entry
#: ``ortholens/result_runs`` holds the highest one given.
RUN_PROPERTY = "ortholens/run"


def result_fields() -> QgsFields:
    """The attribute fields of a result layer (see :data:`RESULT_FIELDS`)."""
    fields = QgsFields()
    for name, vtype in RESULT_FIELDS:
        fields.append(QgsField(name, vtype))
    return fields


def safe_name(text: str, maxlen: int = 48) -> str:
    """``text`` reduced to ``[A-Za-z0-9_-]`` (for file and GeoPackage table names)."""
    out = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    return (out or "layer")[:maxlen]


def default_result_path(stem: str, project: Optional[QgsProject] = None,
                        now: Optional[_dt.datetime] = None,
                        folder: Optional[str] = None) -> str:
    """A new, unique ``.gpkg`` path for a result.

    Args:
        stem: words for the file name (made file-safe), e.g. ``"ortho_pv-unet-efl0"``.
        project: the project (default ``QgsProject.instance()``). When it is saved to
            a file, the result goes into its home folder; otherwise into
            ``<QGIS profile>/ortholens/results/`` (created if needed).
        now: the time stamp to use (default: now, local time).
        folder: the results folder the user chose (created if needed); it wins over
            the project's folder and the profile's.

    Returns:
        An absolute path that does not exist yet: ``ortholens_<stem>_<YYYYmmdd-HHMMSS>.gpkg``,
        with ``_2``, ``_3``... appended on collision.
    """
    project = project or QgsProject.instance()
    if folder:
        folder = Path(folder).expanduser()
    elif project.fileName():
        folder = Path(project.homePath() or Path(project.fileName()).parent)
    else:
        folder = Path(QgsApplication.qgisSettingsDirPath()) / "ortholens" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"ortholens_{safe_name(stem)}_{stamp}"
    path = folder / f"{base}.gpkg"
    n = 2
    while path.exists():
        path = folder / f"{base}_{n}.gpkg"
        n += 1
    return str(path.resolve())


def utc_datetime(value: Any) -> QDateTime:
    """``value`` as a UTC ``QDateTime`` (millisecond precision).

    Args:
        value: a ``datetime.datetime`` or ISO 8601 text (``2024-05-06T07:08:09Z``,
            ``...+02:00``); a time without an offset is taken as UTC.

    Raises:
        ResultLayerError: ``value`` is not a date and time.
    """
    if isinstance(value, _dt.datetime):
        when = value
    else:
        try:
            when = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ResultLayerError(f"{value!r} is not an ISO 8601 date and time") from None
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc)
    return QDateTime(QDate(when.year, when.month, when.day),
                     QTime(when.hour, when.minute, when.second, when.microsecond // 1000),
                     Qt.UTC)


def _attributes(feature: Dict[str, Any], detected_at: QDateTime) -> List[Any]:
    """The attribute values of a result feature in :data:`RESULT_FIELDS` order: each
    converted to its kind; a field the feature lacks is NULL."""
    values = []
    for name, kind in results.RESULT_FIELDS:
        if name == "detected_at":
            values.append(detected_at)
            continue
        value = feature.get(name)
        values.append(None if value is None else _KINDS[kind][1](value))
    return values


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
            :func:`utc_datetime`). It is stored as UTC; the GeoPackage value carries no
            zone marker (QGIS 3.22 writes none), hence the field alias "(UTC)".

    Returns:
        The number of features written. Polygons are stored as MultiPolygon.

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

    feats: List[QgsFeature] = []
    for i, f in enumerate(result.get("features") or []):
        geom = QgsGeometry.fromWkt(str(f.get("wkt", "")))
        if geom.isNull() or geom.isEmpty():
            raise ResultLayerError(f"feature {i} of the result has no readable WKT geometry")
        if QgsWkbTypes.geometryType(geom.wkbType()) != QgsWkbTypes.PolygonGeometry:
            raise ResultLayerError(f"feature {i} of the result is not a polygon")
        geom.convertToMultiType()
        feat = QgsFeature(fields)
        feat.setGeometry(geom)
        feat.setAttributes(_attributes(f, stamp))
        feats.append(feat)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer_name
    options.fileEncoding = "UTF-8"
    options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteFile
    complete = False
    try:
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
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise ResultLayerError(f"cannot replace {path} (is it open in another "
                                   f"program?): {exc}") from None
        complete = True
    finally:
        if not complete:
            for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"),
                             Path(f"{tmp}-shm")):
                try:
                    leftover.unlink()
                except OSError:
                    pass
    return len(feats)


def class_renderer(classes: List[Dict[str, Any]],
                   present: Optional[List[str]] = None,
                   outline: Optional[str] = None) -> QgsCategorizedSymbolRenderer:
    """A renderer categorized on ``class`` with each class's card colour.

    Args:
        classes: the model card's ``classes`` (``{"id", "name", "color": "#rrggbb"}``).
        present: class names found in the data that the card does not list; they get a
            red fallback colour so nothing is invisible.
        outline: ``#rrggbb`` outline colour of every class (a run's colour, see
            :func:`run_outline`); default: each class's own colour.

    Returns:
        The renderer: class colour fill, semi-transparent (alpha :data:`FILL_ALPHA`);
        opaque 0.6 mm outline.
    """
    cats = []
    names = []
    for c in classes:
        names.append(str(c["name"]))
        cats.append(_category(str(c["name"]), str(c.get("color") or FALLBACK_COLOR), outline))
    for name in present or []:
        if name not in names:
            names.append(name)
            cats.append(_category(name, FALLBACK_COLOR, outline))
    return QgsCategorizedSymbolRenderer("class", cats)


def _color(text: Optional[str], default: str = FALLBACK_COLOR) -> QColor:
    qc = QColor(text or default)
    return qc if qc.isValid() else QColor(default)


def _category(name: str, color: str, outline: Optional[str] = None) -> QgsRendererCategory:
    qc = _color(color)
    oc = _color(outline, qc.name())
    symbol = QgsFillSymbol.createSimple({
        "color": f"{qc.red()},{qc.green()},{qc.blue()},{FILL_ALPHA}",
        "outline_color": f"{oc.red()},{oc.green()},{oc.blue()},255",
        "outline_width": "0.6",
        "outline_width_unit": "MM",
    })
    return QgsRendererCategory(name, symbol, name)


def run_outline(run: int, classes: List[Dict[str, Any]]) -> Optional[str]:
    """The outline colour of a project's ``run``-th result layer.

    Args:
        run: the run number, 1.. (see :func:`next_result_run`).
        classes: the model card's classes.

    Returns:
        None for run 1 (each class keeps its own colour); otherwise ``#rrggbb`` from
        :data:`RUN_OUTLINES` in turn (run 2 the first), leaving out colours close to a
        class colour (RGB distance below 120 of 441), so runs look different while
        the class fill stays recognisable.
    """
    if run <= 1:
        return None
    own = [_color(str(c.get("color") or FALLBACK_COLOR)) for c in classes]

    def far(hex_color: str) -> bool:
        q = QColor(hex_color)
        return all(((q.red() - c.red()) ** 2 + (q.green() - c.green()) ** 2
                    + (q.blue() - c.blue()) ** 2) ** 0.5 >= 120 for c in own)

    palette = [c for c in RUN_OUTLINES if far(c)] or list(RUN_OUTLINES)
    return palette[(run - 2) % len(palette)]


def next_result_run(project: Optional[QgsProject] = None) -> int:
    """The run number the next result layer of ``project`` gets: one more than the
    highest given so far (the project entry ``ortholens/result_runs``, saved with the
    project, or a result layer's :data:`RUN_PROPERTY`), so numbers are not reused when
    a layer is removed. 1 in a project without results."""
    project = project or QgsProject.instance()
    last, _ = project.readNumEntry("ortholens", "result_runs", 0)
    for layer in project.mapLayers().values():
        try:
            last = max(last, int(layer.customProperty(RUN_PROPERTY, 0) or 0))
        except (TypeError, ValueError):
            pass
    return int(last) + 1


def result_layer_name(model_id: str, model_version: Optional[str], source_name: str,
                      run: int, when: Optional[_dt.datetime] = None) -> str:
    """The Layers panel name of a result: ``"pv-unet-efl0 v2.0.0 on vienna (run 2, 14:05)"``.

    Args:
        model_id: the model that ran.
        model_version: its card's version (left out when empty).
        source_name: the name of the layer detected in.
        run: the run number (see :func:`next_result_run`).
        when: the local time shown (default: now).
    """
    version = f" v{model_version}" if model_version else ""
    stamp = (when or _dt.datetime.now()).strftime("%H:%M")
    return f"{model_id}{version} on {source_name} (run {run}, {stamp})"


def area_expression(crs: QgsCoordinateReferenceSystem) -> str:
    """The expression giving a polygon's area in square metres in a layer of ``crs``.

    For a CRS with an authority id (all the daemon returns): the ellipsoidal area,
    measured after ``transform()`` into the equal-area :data:`AREA_CRS` from
    ``@layer_crs``, whatever the layer's CRS and units and whatever the project's
    ellipsoid and area units (which ``$area`` would follow). It agrees with the
    daemon's planar ``area_m2`` of a detection within the CRS's scale error (0.2 % at
    the edge of a UTM zone, less in national grids). Where that transform fails, and
    for a custom CRS without an id, the planar area in CRS units times the squared
    unit-to-metre factor (approximate for degrees).
    """
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters)
    planar = "area($geometry)" if factor == 1.0 else f"area($geometry) * {factor * factor!r}"
    authid = crs.authid() if crs.isValid() else ""
    if not authid or authid.upper().startswith("USER:"):
        return planar
    return f"coalesce(area(transform($geometry, @layer_crs, '{AREA_CRS}')), {planar})"


def setup_result_fields(layer: QgsVectorLayer, classes: List[Dict[str, Any]]) -> None:
    """Aliases, default values and widgets of a result layer's fields (UI thread).

    * every field of :data:`FIELD_ALIASES` gets its alias (units in brackets);
    * ``area_m2`` (read-only in forms) is :func:`area_expression`, applied when a
      feature is added and again whenever it changes (``applyOnUpdate``), so drawn and
      reshaped polygons carry their area in m²;
    * ``class`` defaults to the model's first class, picked from a list of the card's
      classes (and any other class found in the layer);
    * ``class_id`` (read-only in forms) follows ``class``, by the card's ids; a class
      the card does not know keeps its ``class_id``;
    * ``score``, ``agreement``, ``model``, ``model_version`` and ``detected_at`` get no
      default: NULL marks a polygon drawn by hand.

    Args:
        layer: the result layer (fields of :data:`RESULT_FIELDS`; missing ones are
            skipped).
        classes: the model card's classes (``{"id", "name", ...}``), first = default.
    """
    fields = layer.fields()
    for name, alias in FIELD_ALIASES.items():
        if fields.indexOf(name) >= 0:
            layer.setFieldAlias(fields.indexOf(name), alias)
    form = layer.editFormConfig()
    ai = fields.indexOf("area_m2")
    if ai >= 0:
        layer.setDefaultValueDefinition(ai, QgsDefaultValue(area_expression(layer.crs()), True))
        form.setReadOnly(ai, True)
    named = [c for c in classes if c.get("name") not in (None, "")]
    ci, ii = fields.indexOf("class"), fields.indexOf("class_id")
    if ci >= 0 and named:
        first = QgsExpression.quotedValue(str(named[0]["name"]))
        layer.setDefaultValueDefinition(ci, QgsDefaultValue(first, False))
        names = [str(c["name"]) for c in named]
        names += sorted({str(v) for v in layer.uniqueValues(ci)
                         if v is not None and str(v) not in ("", "NULL")} - set(names))
        layer.setEditorWidgetSetup(ci, QgsEditorWidgetSetup(
            "ValueMap", {"map": [{n: n} for n in names]}))
        if ii >= 0:
            whens = " ".join(f'WHEN coalesce("class", {first}) = '
                             f"{QgsExpression.quotedValue(str(c['name']))} THEN {int(c['id'])}"
                             for c in named if c.get("id") is not None)
            if whens:
                expr = f'CASE {whens} ELSE "class_id" END'
                layer.setDefaultValueDefinition(ii, QgsDefaultValue(expr, True))
                form.setReadOnly(ii, True)
    layer.setEditFormConfig(form)


def load_result_layer(path: str, layer_name: str, classes: List[Dict[str, Any]],
                      display_name: Optional[str] = None, add_to_project: bool = True,
                      run: Optional[int] = None,
                      project: Optional[QgsProject] = None) -> QgsVectorLayer:
    """Open a result GeoPackage as a styled, editable layer (UI thread).

    The layer is categorized on ``class`` (:func:`class_renderer`); the project's
    ``run``-th result layer has :func:`run_outline`'s outline colour, so a new result
    does not look like the one below it. Its fields are set up for editing by
    :func:`setup_result_fields`; the project keeps that set-up when it is saved.

    Args:
        path: the ``.gpkg`` written by :func:`write_result_gpkg`.
        layer_name: the table inside it.
        classes: the model card's classes, for colours (see :func:`class_renderer`) and
            the default class.
        display_name: the name shown in the Layers panel (default ``layer_name``; see
            :func:`result_layer_name`).
        add_to_project: add the layer to the project, on top of its layer tree (above
            every earlier result and the raster, checked visible: the newest result is
            the one seen) and record ``run`` there.
        run: the layer's run number (default :func:`next_result_run`); stored as the
            layer's :data:`RUN_PROPERTY`.
        project: the project (default ``QgsProject.instance()``).

    Returns:
        The valid ``ogr`` layer; edits made in QGIS are saved to the GeoPackage.

    Raises:
        ResultLayerError: the layer cannot be opened.
    """
    project = project or QgsProject.instance()
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", display_name or layer_name, "ogr")
    if not layer.isValid():
        raise ResultLayerError(f"cannot open the result layer {layer_name!r} in {path}")
    run = int(run) if run else next_result_run(project)
    present = sorted({str(v) for v in layer.uniqueValues(layer.fields().indexOf("class"))})
    layer.setRenderer(class_renderer(classes, present, run_outline(run, classes)))
    setup_result_fields(layer, classes)
    layer.setCustomProperty(RUN_PROPERTY, run)
    if add_to_project:
        add_layer_on_top(layer, project)
        last, _ = project.readNumEntry("ortholens", "result_runs", 0)
        project.writeEntry("ortholens", "result_runs", max(int(last), run))
    return layer


def add_layer_on_top(layer, project: Optional[QgsProject] = None) -> None:
    """Add ``layer`` to the project as the first (topmost) item of its layer tree,
    checked visible.

    Args:
        layer: a map layer not yet in the project.
        project: default ``QgsProject.instance()``.
    """
    project = project or QgsProject.instance()
    project.addMapLayer(layer, False)
    node = project.layerTreeRoot().insertLayer(0, layer)
    node.setItemVisibilityChecked(True)


def write_result_layer(result: Dict[str, Any], path: str, layer_name: str,
                       classes: List[Dict[str, Any]], add_to_project: bool = True,
                       run: Optional[int] = None) -> QgsVectorLayer:
    """Write ``result`` to a GeoPackage and add it as a styled, editable layer.

    Args:
        result: the daemon's result dict (``crs``, ``features``).
        path: the ``.gpkg`` to create (see :func:`default_result_path`).
        layer_name: table and layer name (made file-safe for the table).
        classes: the model card's classes (colours, default class).
        add_to_project: add the layer on top of ``QgsProject.instance()``'s layer tree
            (default True).
        run: the run number (default :func:`next_result_run`).

    Returns:
        The loaded ``QgsVectorLayer`` (``ogr`` provider, MultiPolygon, result CRS).

    Raises:
        ResultLayerError: as :func:`write_result_gpkg` and :func:`load_result_layer`.
    """
    table = safe_name(layer_name, 60)
    write_result_gpkg(result, path, table)
    return load_result_layer(path, table, classes, display_name=layer_name,
                             add_to_project=add_to_project, run=run)


__all__ = ["RESULT_FIELDS", "FIELD_ALIASES", "AREA_CRS", "RUN_OUTLINES", "RUN_PROPERTY",
           "ResultLayerError", "result_fields", "default_result_path", "utc_datetime",
           "write_result_gpkg", "load_result_layer", "write_result_layer", "class_renderer",
           "run_outline", "next_result_run", "result_layer_name", "area_expression",
           "setup_result_fields", "add_layer_on_top", "safe_name"]
