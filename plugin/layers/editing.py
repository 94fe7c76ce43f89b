"""What editing a result layer shows and fills in: each field's alias with its unit,
and for a polygon drawn or reshaped by hand its area in m², its class and class id.

A polygon drawn by hand in a result layer gets ``area_m2`` (measured whenever its
geometry or attributes change, see :func:`area_expression`), ``class`` (the model's
first class unless chosen) and ``class_id`` (from ``class``); ``score``,
``agreement``, ``model``, ``model_version`` and ``detected_at`` stay NULL, which is
what tells a drawn polygon from a detected one.
"""

from __future__ import annotations

from typing import Any, Dict, List

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsDefaultValue,
    QgsEditFormConfig,
    QgsEditorWidgetSetup,
    QgsExpression,
    QgsUnitTypes,
    QgsVectorLayer,
)

#: The alias of each result field, as the attribute table and forms show it: short, so
#: that a column title is read whole (that a NULL score marks a polygon drawn by hand is
#: in the layer's metadata, :data:`DRAWN_NOTE`).
FIELD_ALIASES = {
    "class": "Class",
    "class_id": "Class ID",
    "score": "Score (0–1)",
    "agreement": "Agreement (0–1)",
    "area_m2": "Area (m²)",
    "model": "Model",
    "model_version": "Model version",
    "detected_at": "Detected at (UTC)",
    "uncertainty": "Uncertainty (0–1)",
    "rank": "Review rank",
    "review": "Review",
    "origin": "Origin",
}

#: What tells a drawn polygon from a detected one, said in a result layer's metadata.
DRAWN_NOTE = ("A polygon drawn by hand has no score, agreement, model or detection time "
              "(NULL).")

#: The equal-area CRS in which the area of a drawn or reshaped polygon is measured:
#: EASE-Grid 2.0 Global, a Lambert cylindrical equal-area projection of the WGS 84
#: ellipsoid, so its planar area is the ellipsoidal area (latitudes up to 86°).
AREA_CRS = "EPSG:6933"


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
      default: NULL marks a polygon drawn by hand;
    * ``review`` (picked from ``protocol.results.REVIEW_STATES``) defaults to
      ``added`` and ``origin`` to ``drawn``: a polygon drawn by hand is the user's.

    Args:
        layer: the result layer (fields of :data:`~.schema.RESULT_FIELDS`; missing ones
            are skipped).
        classes: the model card's classes (``{"id", "name", ...}``), first = default.
    """
    fields = layer.fields()
    for name, alias in FIELD_ALIASES.items():
        if fields.indexOf(name) >= 0:
            layer.setFieldAlias(fields.indexOf(name), alias)
    _fit_column_titles(layer)
    form = layer.editFormConfig()
    ai = fields.indexOf("area_m2")
    if ai >= 0:
        layer.setDefaultValueDefinition(ai, QgsDefaultValue(area_expression(layer.crs()), True))
        form.setReadOnly(ai, True)
    _setup_class_fields(layer, form, [c for c in classes if c.get("name") not in (None, "")])
    _setup_review_fields(layer)
    layer.setEditFormConfig(form)


def _setup_review_fields(layer: QgsVectorLayer) -> None:
    """``review``: a list of the review states, ``added`` for a new polygon; ``origin``:
    ``drawn`` for a new polygon (a click of the add tool sets ``click``)."""
    from protocol.results import REVIEW_STATES
    fields = layer.fields()
    ri, oi = fields.indexOf("review"), fields.indexOf("origin")
    if ri >= 0:
        layer.setDefaultValueDefinition(ri, QgsDefaultValue("'added'", False))
        layer.setEditorWidgetSetup(ri, QgsEditorWidgetSetup(
            "ValueMap", {"map": [{s: s} for s in REVIEW_STATES]}))
    if oi >= 0:
        layer.setDefaultValueDefinition(oi, QgsDefaultValue("'drawn'", False))


def _fit_column_titles(layer: QgsVectorLayer) -> None:
    """Make each aliased column of the attribute table wide enough for its title (the
    header's font, room for the sort arrow), so titles are read whole."""
    from qgis.PyQt.QtGui import QFontMetrics
    from qgis.PyQt.QtWidgets import QApplication
    metrics = QFontMetrics(QApplication.font())
    table = layer.attributeTableConfig()
    table.update(layer.fields())
    for i, column in enumerate(table.columns()):
        alias = FIELD_ALIASES.get(column.name)
        if alias:
            table.setColumnWidth(i, max(column.width, metrics.horizontalAdvance(alias) + 40))
    layer.setAttributeTableConfig(table)


def _setup_class_fields(layer: QgsVectorLayer, form: QgsEditFormConfig,
                        named: List[Dict[str, Any]]) -> None:
    """``class``: the first of the ``named`` classes by default, picked from their list
    (and any other class in the layer); ``class_id``: read-only, following ``class``."""
    fields = layer.fields()
    ci, ii = fields.indexOf("class"), fields.indexOf("class_id")
    if ci < 0 or not named:
        return
    first = QgsExpression.quotedValue(str(named[0]["name"]))
    layer.setDefaultValueDefinition(ci, QgsDefaultValue(first, False))
    names = [str(c["name"]) for c in named]
    names += sorted({str(v) for v in layer.uniqueValues(ci)
                     if v is not None and str(v) not in ("", "NULL")} - set(names))
    layer.setEditorWidgetSetup(ci, QgsEditorWidgetSetup(
        "ValueMap", {"map": [{n: n} for n in names]}))
    if ii < 0:
        return
    whens = " ".join(f'WHEN coalesce("class", {first}) = '
                     f"{QgsExpression.quotedValue(str(c['name']))} THEN {int(c['id'])}"
                     for c in named if c.get("id") is not None)
    if whens:
        expr = f'CASE {whens} ELSE "class_id" END'
        layer.setDefaultValueDefinition(ii, QgsDefaultValue(expr, True))
        form.setReadOnly(ii, True)


__all__ = ["FIELD_ALIASES", "DRAWN_NOTE", "AREA_CRS", "area_expression", "setup_result_fields"]
