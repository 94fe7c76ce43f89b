"""Input checks and the plan of a detection, on the UI thread.

1. :func:`validate_inputs` turns every unusable input into an ``InputError`` whose
   message a user can act on: no active layer, a layer that is not a raster, a raster
   without a valid CRS, an empty map view, a map view that does not overlap the layer.
2. :func:`prepare_detect` builds a :class:`DetectPlan`:

   * a file-backed GDAL layer is sent by path (a ``protocol.params.FileSource``) with
     the map extent in the *canvas* CRS; the daemon reads and resamples it (through a
     UTM view at the model's ground GSD when the file's CRS is in degrees or its units
     are not ground metres). Such a plan also holds a render plan as its ``fallback``:
     when the engine cannot read the file (it runs on another computer, or the file is
     outside its ``ORTHOLENS_ROOTS``) the pixels are sent instead;
   * any other raster (WMS, XYZ, WCS, ...) is rendered by the plugin: a
     :class:`RenderPlan` holds a *clone* of the layer's data provider (safe to read on a
     worker thread) and the map extent, clipped to the layer. The pixels are rendered
     in the layer CRS when it is a metre CRS with a scale within 1 % of true (UTM,
     national grids); otherwise (degrees, Web Mercator away from the equator, feet)
     they are reprojected to the WGS 84 / UTM zone of the extent's centre, because the
     pixels sent must have the model's ground GSD.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsMapLayer,
    QgsProject,
    QgsProviderRegistry,
    QgsRaster,
    QgsRasterLayer,
    QgsRectangle,
)

from protocol.errors import InputError
from protocol.params import FileSource

from .crs import Extent, crs_wkt, extent_tuple, is_metric, utm_crs

_BYTE = Qgis.Byte
_ARGB = (Qgis.ARGB32, Qgis.ARGB32_Premultiplied)


def validate_inputs(layer: Optional[QgsMapLayer], extent: QgsRectangle,
                    extent_crs: QgsCoordinateReferenceSystem,
                    context: Optional[QgsCoordinateTransformContext] = None) -> QgsRectangle:
    """Check that ``layer`` can be searched inside ``extent``.

    Args:
        layer: the active layer (may be None or any layer type).
        extent: the map view, in ``extent_crs`` units.
        extent_crs: the canvas CRS.
        context: transform context (default: the project's).

    Returns:
        The part of the layer's extent inside the map view, in the *layer* CRS
        (non-empty).

    Raises:
        InputError: with a message that says what to do, for: no layer; a vector,
            mesh or other non-raster layer; an invalid (unreadable) raster; a raster
            without a valid CRS; an empty map extent or invalid canvas CRS; an extent
            that cannot be transformed to the layer CRS or does not overlap the layer.
    """
    if layer is None:
        raise InputError("No active layer: select the orthophoto (a raster layer) in "
                         "the Layers panel, then run Detect in extent.")
    if not isinstance(layer, QgsRasterLayer):
        kind = {QgsMapLayer.VectorLayer: "a vector layer",
                QgsMapLayer.MeshLayer: "a mesh layer"}.get(layer.type(), "not a raster layer")
        raise InputError(f"The active layer '{layer.name()}' is {kind}: select an "
                         "orthophoto raster layer in the Layers panel.")
    if not layer.isValid():
        raise InputError(f"The raster layer '{layer.name()}' cannot be read (its "
                         "source is missing or invalid).")
    if not layer.crs().isValid():
        raise InputError(f"The raster layer '{layer.name()}' has no valid coordinate "
                         "reference system, so its ground size is unknown: set its "
                         "CRS (Layer Properties > Source), then try again.")
    if extent is None or extent.isNull() or extent.isEmpty() or not extent.isFinite():
        raise InputError("The map view is empty: zoom to the area to search "
                         "(e.g. right-click the layer > Zoom to Layer).")
    if not extent_crs.isValid():
        raise InputError("The map canvas has no valid CRS: set the project CRS "
                         "(Project > Properties > CRS).")
    context = context or QgsProject.instance().transformContext()
    try:
        if extent_crs == layer.crs():
            in_layer = QgsRectangle(extent)
        else:
            ct = QgsCoordinateTransform(extent_crs, layer.crs(), context)
            in_layer = ct.transformBoundingBox(extent)
    except QgsCsException as exc:
        raise InputError(f"The map view cannot be transformed to the CRS of "
                         f"'{layer.name()}' ({layer.crs().authid() or 'custom'}): "
                         f"{exc}. Zoom closer to the layer.") from None
    if in_layer.isEmpty() or not in_layer.isFinite():
        raise InputError(f"The map view cannot be expressed in the CRS of "
                         f"'{layer.name()}': zoom closer to the layer.")
    inter = in_layer.intersect(layer.extent())
    if inter.isNull() or inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
        raise InputError(f"The map view does not overlap the layer '{layer.name()}': "
                         "pan or zoom to it (right-click the layer > Zoom to Layer).")
    return inter


def file_source_path(layer: QgsRasterLayer) -> Optional[str]:
    """The absolute path of a file-backed GDAL layer, its URL, or None.

    ``layer.source()`` may carry ``|option:...`` suffixes; they are dropped. A raster
    read over HTTP (``/vsicurl/https://...`` or an ``https://`` source) is returned as
    its ``https://`` URL: the daemon reads it with range requests itself. Other
    virtual paths (``/vsizip/``...) and subdatasets return None: those layers are
    rendered by the plugin instead.
    """
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source().split("|", 1)[0]
    url = path[len("/vsicurl/"):] if path and path.startswith("/vsicurl/") else path
    if url and url.startswith(("http://", "https://")):
        return url
    if not path or not Path(path).is_file():
        return None
    return str(Path(path).resolve())


@dataclass
class RenderPlan:
    """What a worker thread needs to render a non-file raster (see :mod:`.render`).

    Attributes:
        provider: a clone of the layer's data provider (owned by this plan).
        src_crs: the layer CRS.
        crs: the CRS of the rendered pixels: ``src_crs`` when it is a metre CRS with
            true scale (see :func:`~.crs.is_metric`), else the UTM zone of the extent's
            centre.
        crs_wkt: ``crs`` as WKT, sent to the daemon.
        extent: the area to render, in ``crs`` units (metres).
        reproject: True when ``crs`` differs from ``src_crs`` (pixels go through a
            ``QgsRasterProjector``, nearest neighbour).
        mode: ``"rgb"`` (three 8-bit bands), ``"argb"`` (one 32-bit colour band, e.g.
            WMS/XYZ) or ``"gray"`` (one 8-bit band, repeated three times).
        bands: the 1-based bands read (three for ``rgb``, one otherwise).
        nodata: the first band's no-data value, when the source has one.
        context: the project's transform context (copied on the UI thread).
    """

    provider: Any
    src_crs: QgsCoordinateReferenceSystem
    crs: QgsCoordinateReferenceSystem
    crs_wkt: str
    extent: QgsRectangle
    reproject: bool
    mode: str
    bands: List[int]
    nodata: Optional[float] = None
    context: Optional[QgsCoordinateTransformContext] = None


def layer_bands(layer: QgsRasterLayer) -> Optional[tuple]:
    """The band mapping (1-based R, G, B bands) a detection on ``layer`` sends.

    The bands whose colour interpretation is red, green and blue when the raster names
    all three (QGIS 3.22's default renderer ignores it, so a BGR file is shown with
    swapped colours, but the model must get R, G, B); else the red, green and blue
    bands of a multiband colour renderer the user set to something other than 1, 2,
    3 (Layer Properties > Symbology); else a single-band grey renderer's band three
    times; else None: the daemon then follows the colour interpretation itself.
    """
    prov = layer.dataProvider()
    n = layer.bandCount()
    ci = {prov.colorInterpretation(b): b for b in range(n, 0, -1)}
    rgb = tuple(ci.get(c) for c in (QgsRaster.RedBand, QgsRaster.GreenBand,
                                    QgsRaster.BlueBand))
    if all(rgb):
        return rgb
    renderer = layer.renderer()
    if renderer is None:
        return None
    if renderer.type() == "multibandcolor":
        shown = (renderer.redBand(), renderer.greenBand(), renderer.blueBand())
        if all(1 <= b <= n for b in shown) and shown != (1, 2, 3):
            return shown
        return None
    if renderer.type() == "singlebandgray" and 1 <= renderer.grayBand() <= n:
        return (renderer.grayBand(),) * 3
    return None


@dataclass
class DetectPlan:
    """A validated request, minus the model and options: a file source or a render plan.

    Attributes:
        layer_id, layer_name: the raster layer searched.
        source: the file the daemon reads (file layers), else None.
        extent: ``(xmin, ymin, xmax, ymax)`` in ``extent_crs`` (file layers), else None.
        extent_crs: the canvas CRS as WKT (file layers), else None.
        render: the :class:`RenderPlan` for other layers, else None.
        fallback: for file layers, the :class:`RenderPlan` of the same area, used when
            the engine cannot read ``source``; None when the layer cannot be rendered
            (then ``fallback_error`` says why).
        fallback_error: why the file layer cannot be sent as pixels, or None.
        bands: the 1-based bands the layer shows as R, G, B (file layers; see
            :func:`layer_bands`), sent as the band mapping, else None.
    """

    layer_id: str
    layer_name: str
    source: Optional[FileSource] = None
    extent: Optional[Extent] = None
    extent_crs: Optional[str] = None
    render: Optional[RenderPlan] = None
    fallback: Optional[RenderPlan] = None
    fallback_error: Optional[str] = None
    bands: Optional[tuple] = None

    def pixels_plan(self) -> RenderPlan:
        """The render plan to send pixels with: ``render``, else ``fallback``.

        Raises:
            InputError: a file layer that cannot be rendered (``fallback_error``).
        """
        plan = self.render or self.fallback
        if plan is None:
            raise InputError(self.fallback_error or f"The layer '{self.layer_name}' "
                             "cannot be sent as pixels.")
        return plan


def _render_mode(layer: QgsRasterLayer) -> tuple:
    """``(mode, bands)`` for :class:`RenderPlan`.

    Raises:
        InputError: the bands are neither 8-bit RGB/grey nor 32-bit colour.
    """
    prov = layer.dataProvider()
    n = prov.bandCount()
    if n >= 1 and prov.dataType(1) in _ARGB:
        return "argb", [1]
    if n >= 3:
        bands = [1, 2, 3]
        renderer = layer.renderer()
        if renderer is not None and renderer.type() == "multibandcolor":
            rgb = [renderer.redBand(), renderer.greenBand(), renderer.blueBand()]
            if all(1 <= b <= n for b in rgb):
                bands = rgb
        if all(prov.dataType(b) == _BYTE for b in bands):
            return "rgb", bands
    elif n >= 1 and prov.dataType(1) == _BYTE:
        return "gray", [1]
    names = {Qgis.Byte: "Byte", Qgis.UInt16: "UInt16", Qgis.Int16: "Int16",
             Qgis.UInt32: "UInt32", Qgis.Int32: "Int32", Qgis.Float32: "Float32",
             Qgis.Float64: "Float64"}
    types = ", ".join(names.get(prov.dataType(b), str(prov.dataType(b)))
                      for b in range(1, min(n, 3) + 1))
    raise InputError(f"The raster layer '{layer.name()}' has {n} band(s) of data "
                     f"type(s) {types}; the detector needs 8-bit RGB pixels (or a "
                     "rendered web layer). Convert it to an 8-bit RGB GeoTIFF "
                     "(Raster > Conversion > Translate, output type Byte).")


def prepare_detect(layer: Optional[QgsMapLayer], extent: QgsRectangle,
                   extent_crs: QgsCoordinateReferenceSystem,
                   context: Optional[QgsCoordinateTransformContext] = None,
                   force_pixels: bool = False) -> DetectPlan:
    """Validate the inputs and decide how the raster reaches the daemon (UI thread).

    Args:
        layer: the raster layer to search (usually ``iface.activeLayer()``).
        extent: the area to search in ``extent_crs`` (usually the canvas extent).
        extent_crs: the canvas CRS.
        context: transform context (default: the project's).
        force_pixels: render pixels even for a file-backed GDAL layer
            (tests, or files the daemon cannot open).

    Returns:
        A :class:`DetectPlan` with ``source`` (and ``fallback``) set (file) or
        ``render`` set (pixels).

    Raises:
        InputError: see :func:`validate_inputs` and, for rendered layers, a raster
            that is neither 8-bit RGB/grey nor 32-bit colour.
    """
    in_layer = validate_inputs(layer, extent, extent_crs, context)
    plan = DetectPlan(layer_id=layer.id(), layer_name=layer.name())
    metric = is_metric(layer.crs(), in_layer, context)
    path = None if force_pixels else file_source_path(layer)
    if path:
        plan.source = FileSource(path)
        plan.extent = extent_tuple(extent)
        plan.extent_crs = crs_wkt(extent_crs)
        plan.bands = layer_bands(layer)
        try:
            plan.fallback = _render_plan(layer, in_layer, metric, context)
        except InputError as exc:  # e.g. 16-bit: only the daemon can stretch it
            plan.fallback_error = str(exc)
        return plan
    plan.render = _render_plan(layer, in_layer, metric, context)
    return plan


def _render_plan(layer: QgsRasterLayer, in_layer: QgsRectangle, metric: bool,
                 context: Optional[QgsCoordinateTransformContext]) -> RenderPlan:
    """The :class:`RenderPlan` of ``in_layer`` (layer CRS units) of ``layer`` (UI
    thread: clones the data provider).

    Raises:
        InputError: bands that cannot be rendered (see :func:`_render_mode`), or an
            extent that cannot be transformed to the extent's UTM zone.
    """
    mode, bands = _render_mode(layer)
    if metric:
        crs, render_ext = layer.crs(), QgsRectangle(in_layer)
    else:
        crs = utm_crs(layer.crs(), in_layer, context)
        try:
            ct = QgsCoordinateTransform(layer.crs(), crs,
                                        context or QgsProject.instance().transformContext())
            render_ext = ct.transformBoundingBox(in_layer)
        except QgsCsException as exc:
            raise InputError(f"The map view cannot be transformed to {crs.authid()}: "
                             f"{exc}. Zoom closer to the layer.") from None
    prov = layer.dataProvider()
    nodata = None
    if mode != "argb" and prov.sourceHasNoDataValue(bands[0]) and prov.useSourceNoDataValue(bands[0]):
        nodata = float(prov.sourceNoDataValue(bands[0]))
    return RenderPlan(provider=prov.clone(), src_crs=layer.crs(), crs=crs,
                      crs_wkt=crs_wkt(crs), extent=render_ext, reproject=not metric,
                      mode=mode, bands=bands, nodata=nodata,
                      context=QgsCoordinateTransformContext(
                          context or QgsProject.instance().transformContext()))


__all__ = ["validate_inputs", "file_source_path", "RenderPlan", "DetectPlan",
           "prepare_detect"]
