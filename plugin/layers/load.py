"""Opening a result GeoPackage as a styled, editable layer on top of the project's
layer tree (UI thread), and writing and opening a result in one call."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from qgis.core import QgsEditorWidgetSetup, QgsProject, QgsVectorLayer

from protocol.errors import ResultLayerError

from .editing import setup_result_fields
from .gpkg import write_result_gpkg
from .naming import RUN_PROPERTY, next_result_run, record_result_run, safe_name
from .style import class_renderer, run_outline


def load_result_layer(path: str, layer_name: str, classes: List[Dict[str, Any]],
                      display_name: Optional[str] = None, add_to_project: bool = True,
                      run: Optional[int] = None,
                      project: Optional[QgsProject] = None) -> QgsVectorLayer:
    """Open a result GeoPackage as a styled, editable layer (UI thread).

    The layer is categorized on ``class`` (:func:`~.style.class_renderer`); the
    project's ``run``-th result layer has :func:`~.style.run_outline`'s outline colour,
    so a new result does not look like the one below it. Its fields are set up for
    editing by :func:`~.editing.setup_result_fields`; the project keeps that set-up
    when it is saved.

    Args:
        path: the ``.gpkg`` written by :func:`~.gpkg.write_result_gpkg`.
        layer_name: the table inside it.
        classes: the model card's classes, for colours (see
            :func:`~.style.class_renderer`) and the default class.
        display_name: the name shown in the Layers panel (default ``layer_name``; see
            :func:`~.naming.result_layer_name`).
        add_to_project: add the layer to the project, on top of its layer tree (above
            every earlier result and the raster, checked visible: the newest result is
            the one seen) and record ``run`` there.
        run: the layer's run number (default :func:`~.naming.next_result_run`); stored
            as the layer's :data:`~.naming.RUN_PROPERTY`.
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
    style_result_layer(layer, classes, run)
    if add_to_project:
        add_layer_on_top(layer, project)
        record_result_run(run, project)
    return layer


def style_result_layer(layer: QgsVectorLayer, classes: List[Dict[str, Any]],
                       run: int) -> None:
    """Give a result layer its look and fields (UI thread): categorized on ``class``
    (:func:`~.style.class_renderer`) with the ``run``-th result's outline
    (:func:`~.style.run_outline`), its fields set up for editing
    (:func:`~.editing.setup_result_fields`), its run number stored
    (:data:`~.naming.RUN_PROPERTY`) and a batch job's bookkeeping column ``region``
    hidden. What the dock's results and the Processing outputs share.

    Args:
        layer: a layer of result polygons.
        classes: the model card's classes.
        run: the layer's run number (see :func:`~.naming.next_result_run`).
    """
    present = sorted({str(v) for v in layer.uniqueValues(layer.fields().indexOf("class"))})
    layer.setRenderer(class_renderer(classes, present, run_outline(run, classes)))
    setup_result_fields(layer, classes)
    layer.setCustomProperty(RUN_PROPERTY, run)
    hidden = layer.fields().indexOf("region")
    if hidden >= 0:
        layer.setEditorWidgetSetup(hidden, QgsEditorWidgetSetup("Hidden", {}))
        table = layer.attributeTableConfig()
        table.update(layer.fields())
        names = [c.name for c in table.columns()]
        if "region" in names:
            table.setColumnHidden(names.index("region"), True)
            layer.setAttributeTableConfig(table)


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
        path: the ``.gpkg`` to create (see :func:`~.naming.default_result_path`).
        layer_name: table and layer name (made file-safe for the table).
        classes: the model card's classes (colours, default class).
        add_to_project: add the layer on top of ``QgsProject.instance()``'s layer tree
            (default True).
        run: the run number (default :func:`~.naming.next_result_run`).

    Returns:
        The loaded ``QgsVectorLayer`` (``ogr`` provider, MultiPolygon, result CRS).

    Raises:
        ResultLayerError: as :func:`~.gpkg.write_result_gpkg` and
            :func:`load_result_layer`.
    """
    table = safe_name(layer_name, 60)
    write_result_gpkg(result, path, table)
    return load_result_layer(path, table, classes, display_name=layer_name,
                             add_to_project=add_to_project, run=run)


__all__ = ["load_result_layer", "style_result_layer", "add_layer_on_top",
           "write_result_layer"]
