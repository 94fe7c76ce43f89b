"""The detect flow: input checks on the UI thread, the daemon call in a ``QgsTask``.

1. :func:`validate_inputs` (UI thread) turns every unusable input into a
   :class:`ValidationError` whose message a user can act on: no active layer, a layer
   that is not a raster, a raster without a valid CRS, an empty map view, a map view
   that does not overlap the layer.
2. :func:`prepare_detect` (UI thread) builds a :class:`DetectPlan`:

   * a file-backed GDAL layer in a metre CRS is sent by path, ``{"kind": "file",
     "path": <abs path>}``, with the map extent in the *canvas* CRS (``extent_crs`` =
     canvas CRS WKT); the daemon reads and resamples it;
   * any other raster (WMS, XYZ, WCS, ...) is rendered by the plugin: a
     :class:`RenderPlan` holds a *clone* of the layer's data provider (safe to read on a
     worker thread) and the map extent, clipped to the layer. The pixels are rendered in
     the layer CRS when it is a metre CRS with a scale within 1 % of true (UTM, national
     grids); otherwise (degrees, Web Mercator away from the equator, feet) they are
     reprojected on the fly to the WGS 84 / UTM zone of the extent's centre, because the
     daemon takes CRS units as ground metres. A file in such a CRS is rendered too.

3. :class:`DetectTask` (a ``QgsTask``) connects to the daemon (starting it when needed),
   picks the model card, renders pixels for a :class:`RenderPlan` at the card's
   ``gsd_m`` (:func:`render_pixels`, at most :data:`MAX_RENDER_SIDE` pixels a side), runs
   the detection with progress and cancellation, and writes the GeoPackage, all off the
   UI thread. ``finished()`` (UI thread) loads the result layer.

Nothing here imports torch, rasterio or anything from ``backend``; the daemon client is
imported lazily so that the plugin loads even where pyzmq is missing.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from qgis.PyQt.QtCore import pyqtSignal
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsDistanceArea,
    QgsMapLayer,
    QgsMessageLog,
    QgsPointXY,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterBlockFeedback,
    QgsRasterLayer,
    QgsRasterProjector,
    QgsRectangle,
    QgsTask,
    QgsUnitTypes,
)

from .layers import ResultLayerError, load_result_layer, safe_name, write_result_gpkg
from .settings import DaemonSettings

#: Largest rendered image side, pixels (3 x 8192 x 8192 uint8 = 192 MiB, under the
#: protocol's frame limit). Larger extents are rendered coarser, and the user is told.
MAX_RENDER_SIDE = 8192

LOG_TAG = "Ortholens"

_BYTE = Qgis.Byte
_ARGB = (Qgis.ARGB32, Qgis.ARGB32_Premultiplied)


class ValidationError(ValueError):
    """An input the detector cannot use; ``str(exc)`` is a message for the user."""


# ---------------------------------------------------------------------------- checks

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
        ValidationError: with a message that says what to do, for: no layer; a vector,
            mesh or other non-raster layer; an invalid (unreadable) raster; a raster
            without a valid CRS; an empty map extent or invalid canvas CRS; an extent
            that cannot be transformed to the layer CRS or does not overlap the layer.
    """
    if layer is None:
        raise ValidationError("No active layer: select the orthophoto (a raster layer) in "
                              "the Layers panel, then run Detect in extent.")
    if not isinstance(layer, QgsRasterLayer):
        kind = {QgsMapLayer.VectorLayer: "a vector layer",
                QgsMapLayer.MeshLayer: "a mesh layer"}.get(layer.type(), "not a raster layer")
        raise ValidationError(f"The active layer '{layer.name()}' is {kind}: select an "
                              "orthophoto raster layer in the Layers panel.")
    if not layer.isValid():
        raise ValidationError(f"The raster layer '{layer.name()}' cannot be read (its "
                              "source is missing or invalid).")
    if not layer.crs().isValid():
        raise ValidationError(f"The raster layer '{layer.name()}' has no valid coordinate "
                              "reference system, so its ground size is unknown: set its "
                              "CRS (Layer Properties > Source), then try again.")
    if extent is None or extent.isNull() or extent.isEmpty() or not extent.isFinite():
        raise ValidationError("The map view is empty: zoom to the area to search "
                              "(e.g. right-click the layer > Zoom to Layer).")
    if not extent_crs.isValid():
        raise ValidationError("The map canvas has no valid CRS: set the project CRS "
                              "(Project > Properties > CRS).")
    context = context or QgsProject.instance().transformContext()
    try:
        if extent_crs == layer.crs():
            in_layer = QgsRectangle(extent)
        else:
            ct = QgsCoordinateTransform(extent_crs, layer.crs(), context)
            in_layer = ct.transformBoundingBox(extent)
    except QgsCsException as exc:
        raise ValidationError(f"The map view cannot be transformed to the CRS of "
                              f"'{layer.name()}' ({layer.crs().authid() or 'custom'}): "
                              f"{exc}. Zoom closer to the layer.") from None
    if in_layer.isEmpty() or not in_layer.isFinite():
        raise ValidationError(f"The map view cannot be expressed in the CRS of "
                              f"'{layer.name()}': zoom closer to the layer.")
    inter = in_layer.intersect(layer.extent())
    if inter.isNull() or inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
        raise ValidationError(f"The map view does not overlap the layer '{layer.name()}': "
                              "pan or zoom to it (right-click the layer > Zoom to Layer).")
    return inter


def file_source_path(layer: QgsRasterLayer) -> Optional[str]:
    """The absolute path of a file-backed GDAL layer, or None.

    ``layer.source()`` may carry ``|option:...`` suffixes; they are dropped. Virtual
    paths (``/vsicurl/``, ``/vsizip/``) and subdatasets return None: those layers are
    rendered by the plugin instead.
    """
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source().split("|", 1)[0]
    if not path or not Path(path).is_file():
        return None
    return str(Path(path).resolve())


def crs_wkt(crs: QgsCoordinateReferenceSystem) -> str:
    """The CRS as WKT2 (``WKT_PREFERRED``), the form sent to the daemon."""
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


# ---------------------------------------------------------------------------- plans

@dataclass
class RenderPlan:
    """What a worker thread needs to render a non-file raster.

    Attributes:
        provider: a clone of the layer's data provider (owned by this plan).
        src_crs: the layer CRS.
        crs: the CRS of the rendered pixels: ``src_crs`` when it is a metre CRS with
            true scale (see :func:`is_metric`), else the UTM zone of the extent's centre.
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


@dataclass
class DetectPlan:
    """A validated request, minus the model: either a file source or a render plan.

    Attributes:
        layer_id, layer_name: the raster layer searched.
        source: ``{"kind": "file", "path": ...}`` for file layers, else None.
        extent: ``[xmin, ymin, xmax, ymax]`` in ``extent_crs`` (file layers), else None.
        extent_crs: the canvas CRS as WKT (file layers), else None.
        render: the :class:`RenderPlan` for other layers, else None.
    """

    layer_id: str
    layer_name: str
    source: Optional[Dict[str, Any]] = None
    extent: Optional[List[float]] = None
    extent_crs: Optional[str] = None
    render: Optional[RenderPlan] = None


def ground_scale(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle,
                 context: Optional[QgsCoordinateTransformContext] = None) -> tuple:
    """Ground metres per CRS unit along x and y at the centre of ``extent``.

    Metre CRSs whose ellipsoidal scale is within 1 % of 1 (UTM, Gauss-Krüger, national
    grids) return exactly ``(1.0, 1.0)``; degrees, feet and Web Mercator away from the
    equator get their measured scale.

    Raises:
        ValidationError: the scale cannot be measured (unknown ellipsoid in a non-metre CRS).
    """
    da = QgsDistanceArea()
    da.setSourceCrs(crs, context or QgsProject.instance().transformContext())
    da.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
    c = extent.center()
    dx = max(extent.width() * 0.01, 1e-9)
    dy = max(extent.height() * 0.01, 1e-9)
    sx = sy = float("nan")
    try:
        gx = da.convertLengthMeasurement(da.measureLine(QgsPointXY(c.x() - dx / 2, c.y()),
                                                        QgsPointXY(c.x() + dx / 2, c.y())),
                                         QgsUnitTypes.DistanceMeters)
        gy = da.convertLengthMeasurement(da.measureLine(QgsPointXY(c.x(), c.y() - dy / 2),
                                                        QgsPointXY(c.x(), c.y() + dy / 2)),
                                         QgsUnitTypes.DistanceMeters)
        sx, sy = gx / dx, gy / dy
    except Exception:  # noqa: BLE001 - QgsCsException and friends
        pass
    metric = crs.mapUnits() == QgsUnitTypes.DistanceMeters
    if metric and (not (math.isfinite(sx) and math.isfinite(sy))
                   or (abs(sx - 1.0) < 0.01 and abs(sy - 1.0) < 0.01)):
        return 1.0, 1.0
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise ValidationError(f"The ground size of a pixel cannot be computed in the CRS "
                              f"{crs.authid() or crs.description()}: reproject the layer "
                              "to a metre CRS.")
    return sx, sy


def is_metric(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle,
              context: Optional[QgsCoordinateTransformContext] = None) -> bool:
    """True when ``crs`` is projected, in metres and true to scale (within 1 %) at
    ``extent``: then CRS units can be taken as ground metres, as the daemon does."""
    if not crs.isValid() or crs.isGeographic() or crs.mapUnits() != QgsUnitTypes.DistanceMeters:
        return False
    try:
        return ground_scale(crs, extent, context) == (1.0, 1.0)
    except ValidationError:
        return False


def utm_crs(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle,
            context: Optional[QgsCoordinateTransformContext] = None) -> QgsCoordinateReferenceSystem:
    """The WGS 84 / UTM zone (EPSG:326zz north, 327zz south) of ``extent``'s centre.

    Raises:
        ValidationError: the centre cannot be transformed to WGS 84.
    """
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    try:
        ct = QgsCoordinateTransform(crs, wgs84, context or QgsProject.instance().transformContext())
        c = ct.transform(extent.center())
    except QgsCsException as exc:
        raise ValidationError(f"The map view cannot be located on the globe: {exc}") from None
    zone = min(60, max(1, int(math.floor((c.x() + 180.0) / 6.0)) + 1))
    return QgsCoordinateReferenceSystem(f"EPSG:{32600 + zone if c.y() >= 0 else 32700 + zone}")


def _render_mode(layer: QgsRasterLayer) -> tuple:
    """``(mode, bands)`` for :class:`RenderPlan`, or ValidationError."""
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
    raise ValidationError(f"The raster layer '{layer.name()}' has {n} band(s) of data "
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
        force_pixels: render pixels even for a file-backed GDAL layer in a metre CRS
            (tests, or files the daemon cannot open).

    Returns:
        A :class:`DetectPlan` with ``source`` set (file) or ``render`` set (pixels).

    Raises:
        ValidationError: see :func:`validate_inputs` and, for rendered layers, a raster
            that is neither 8-bit RGB/grey nor 32-bit colour.
    """
    in_layer = validate_inputs(layer, extent, extent_crs, context)
    plan = DetectPlan(layer_id=layer.id(), layer_name=layer.name())
    metric = is_metric(layer.crs(), in_layer, context)
    path = None if force_pixels or not metric else file_source_path(layer)
    if path:
        plan.source = {"kind": "file", "path": path}
        plan.extent = [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                       extent.yMaximum()]
        plan.extent_crs = crs_wkt(extent_crs)
        return plan
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
            raise ValidationError(f"The map view cannot be transformed to {crs.authid()}: "
                                  f"{exc}. Zoom closer to the layer.") from None
    prov = layer.dataProvider()
    nodata = None
    if mode != "argb" and prov.sourceHasNoDataValue(bands[0]) and prov.useSourceNoDataValue(bands[0]):
        nodata = float(prov.sourceNoDataValue(bands[0]))
    plan.render = RenderPlan(provider=prov.clone(), src_crs=layer.crs(), crs=crs,
                             crs_wkt=crs_wkt(crs), extent=render_ext, reproject=not metric,
                             mode=mode, bands=bands, nodata=nodata,
                             context=QgsCoordinateTransformContext(
                                 context or QgsProject.instance().transformContext()))
    return plan


# ---------------------------------------------------------------------------- pixels

@dataclass
class RenderedPixels:
    """An RGB image of a :class:`RenderPlan`.

    Attributes:
        array: uint8 ``(3, H, W)``, C-contiguous.
        transform: ``[a, b, c, d, e, f]``: x = a*col + b*row + c, y = d*col + e*row + f
            (``c`` = left edge, ``a`` = pixel width, ``f`` = top edge, ``e`` = -pixel
            height, in the plan's ``crs``, metres).
        gsd_m: the ground size of a pixel actually used, metres (> the model's when
            capped).
        capped: True when the extent was too large for :data:`MAX_RENDER_SIDE` at the
            model's GSD and was rendered coarser.
    """

    array: np.ndarray
    transform: List[float]
    gsd_m: float
    capped: bool

    @property
    def height(self) -> int:
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        return int(self.array.shape[2])


def render_size(plan: RenderPlan, gsd_m: float, max_side: int = MAX_RENDER_SIDE) -> tuple:
    """``(width, height, pixel_size, gsd_used_m, capped)`` for rendering ``plan``.

    ``pixel_size`` is in the plan's CRS units (metres, = ``gsd_used_m``). The image covers
    ``plan.extent`` from its top-left corner and may overhang its right/bottom edge by
    less than one pixel. When a side would exceed ``max_side``, the pixel is enlarged
    so that it does not (``capped`` True).
    """
    if not gsd_m > 0:
        raise ValueError(f"gsd_m must be > 0, got {gsd_m}")
    px = gsd_m
    w = max(1, math.ceil(plan.extent.width() / px - 1e-6))
    h = max(1, math.ceil(plan.extent.height() / px - 1e-6))
    capped = False
    if max(w, h) > max_side:
        px = gsd_m * max(w, h) / max_side
        capped = True
        w = min(max_side, max(1, math.ceil(plan.extent.width() / px - 1e-6)))
        h = min(max_side, max(1, math.ceil(plan.extent.height() / px - 1e-6)))
    return w, h, px, px, capped


def argb_to_rgb(raw: bytes, width: int, height: int) -> np.ndarray:
    """Native-endian 32-bit ``0xAARRGGBB`` pixels (a QGIS ARGB32 block, or a
    ``QImage.Format_ARGB32`` buffer) to uint8 ``(3, height, width)`` RGB."""
    px = np.frombuffer(raw, dtype=np.uint32, count=width * height).reshape(height, width)
    return np.stack([((px >> s) & 0xFF).astype(np.uint8) for s in (16, 8, 0)])


def render_pixels(plan: RenderPlan, gsd_m: float, max_side: int = MAX_RENDER_SIDE,
                  is_cancelled: Optional[Callable[[], bool]] = None) -> RenderedPixels:
    """Read ``plan``'s extent from its provider as an 8-bit RGB image (any thread).

    Args:
        plan: from :func:`prepare_detect`.
        gsd_m: wanted ground size of a pixel, metres (the model card's ``gsd_m``).
        max_side: largest width or height; larger images are rendered coarser.
        is_cancelled: polled between bands; a True answer raises ``InterruptedError``.

    Returns:
        :class:`RenderedPixels` in the layer CRS.

    Raises:
        RuntimeError: the provider returned no data (e.g. a web service that failed).
        InterruptedError: cancelled.
    """
    w, h, px, used, capped = render_size(plan, gsd_m, max_side)
    x0, y1 = plan.extent.xMinimum(), plan.extent.yMaximum()
    render_ext = QgsRectangle(x0, y1 - h * px, x0 + w * px, y1)
    feedback = QgsRasterBlockFeedback()
    source = plan.provider
    if plan.reproject:
        source = QgsRasterProjector()
        source.setCrs(plan.src_crs, plan.crs, plan.context or QgsCoordinateTransformContext())
        source.setInput(plan.provider)
    channels = []
    for band in plan.bands:
        if is_cancelled and is_cancelled():
            raise InterruptedError("cancelled")
        block = source.block(band, render_ext, w, h, feedback)
        if block is None or not block.isValid() or block.width() != w or block.height() != h:
            err = plan.provider.error().summary() if plan.provider.error() else ""
            raise RuntimeError(f"the layer returned no pixels for band {band}"
                               + (f": {err}" if err else ""))
        raw = bytes(block.data())
        if plan.mode == "argb":
            channels = list(argb_to_rgb(raw, w, h))
        else:
            channels.append(np.frombuffer(raw, dtype=np.uint8, count=w * h).reshape(h, w))
    if plan.mode == "gray":
        channels = channels * 3
    arr = np.ascontiguousarray(np.stack(channels, axis=0))
    return RenderedPixels(array=arr, transform=[px, 0.0, x0, 0.0, -px, y1],
                          gsd_m=used, capped=capped)


def pixel_source(plan: RenderPlan, rendered: RenderedPixels) -> Dict[str, Any]:
    """The protocol ``source`` object for rendered pixels."""
    src: Dict[str, Any] = {"kind": "pixels", "crs": plan.crs_wkt,
                           "transform": [float(v) for v in rendered.transform]}
    if plan.nodata is not None and 0 <= plan.nodata <= 255:
        src["nodata"] = plan.nodata
    return src


# ---------------------------------------------------------------------------- daemon

def connect_daemon(settings: DaemonSettings, start: bool = True, timeout_s: float = 5.0):
    """An ``OrtholensClient`` that answered a ping (worker thread: may take seconds).

    Args:
        settings: endpoint, interpreter and folder of the daemon.
        start: start the daemon when it does not answer and ``settings.can_start()``.
        timeout_s: the client's per-request timeout, seconds.

    Raises:
        DaemonUnavailable: no answer (after the start attempt); the message says how to
            fix it.
    """
    from .client import DaemonUnavailable, OrtholensClient, ensure_daemon

    try:
        if start and settings.can_start():
            return ensure_daemon(settings.endpoint, settings.python, settings.repo,
                                 token=settings.token, timeout_s=timeout_s)
        client = OrtholensClient(settings.endpoint, token=settings.token, timeout_s=timeout_s)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
        return client
    except DaemonUnavailable as exc:
        why = settings.start_hint() if start else "it is not running"
        raise DaemonUnavailable(f"The Ortholens daemon at {settings.endpoint} is not "
                                f"reachable ({exc}); {why}. You can start it by hand with "
                                "'python -m backend' in the Ortholens folder.") from None


def pick_card(cards: List[Dict[str, Any]], model_id: Optional[str]) -> Dict[str, Any]:
    """The card of ``model_id`` (or the first card when None).

    Raises:
        LookupError: no models, or no card with that id (message lists the ids).
    """
    if not cards:
        raise LookupError("The daemon has no models installed: run 'build.py setup' (or "
                          "train/export a model) and restart the daemon.")
    if model_id is None:
        return cards[0]
    for c in cards:
        if c.get("id") == model_id:
            return c
    raise LookupError(f"The daemon has no model '{model_id}' (available: "
                      f"{', '.join(str(c.get('id')) for c in cards)}).")


def job_fraction(value: Any) -> Optional[float]:
    """A daemon ``progress`` fraction clamped to 0..1; None when it is not a number
    (the message is then ignored rather than failing the task)."""
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return None


def run_reporting(task: Any, work: Callable[[], bool],
                  describe: Callable[[BaseException], str] = None) -> bool:
    """Run a QgsTask's ``work`` in its worker thread without ever raising (QGIS would
    crash): a cancel (``InterruptedError`` or the client's ``JobCancelled``) sets
    ``task.cancelled``; any other error sets ``task.error`` to ``describe(exc)``
    (default :func:`describe_error`) and is logged with its traceback. Returns
    ``work()``'s result, or False."""
    try:
        return work()
    except InterruptedError:
        task.cancelled = True
        return False
    except Exception as exc:  # noqa: BLE001 - reported to the user
        if type(exc).__name__ == "JobCancelled":
            task.cancelled = True
            return False
        task.error = (describe or describe_error)(exc)
        QgsMessageLog.logMessage(f"{task.error}\n{traceback.format_exc()}", LOG_TAG,
                                 Qgis.Warning)
        return False


def daemon_notes(result: Optional[Dict[str, Any]]) -> List[str]:
    """The daemon's ``stats["warnings"]`` of a result (e.g. a raster resampled from a
    GSD far from the model's, an out-of-memory back-off) as sentences for the user."""
    notes = []
    for w in ((result or {}).get("stats") or {}).get("warnings") or []:
        text = str(w).strip()
        if text:
            text = text[0].upper() + text[1:]
            notes.append(text if text.endswith((".", "!", "?")) else text + ".")
    return notes


def describe_error(exc: BaseException) -> str:
    """A one-paragraph user message for an exception raised during detection."""
    name = type(exc).__name__
    if name == "DaemonError":
        code = getattr(exc, "code", "error")
        msg = getattr(exc, "message", str(exc))
        return f"The daemon could not run the detection ({code}): {msg}"
    if name == "DaemonUnavailable":
        return str(exc)
    if isinstance(exc, (ValidationError, LookupError, ResultLayerError)):
        return str(exc)
    if isinstance(exc, ImportError) and "zmq" in str(exc):
        return ("pyzmq is not installed in QGIS's Python: install python3-zmq (Debian/"
                "Ubuntu) or 'pip install pyzmq' in the QGIS Python, then restart QGIS.")
    return f"Unexpected error during detection: {exc!r} (details in the Ortholens log)."


class DetectTask(QgsTask):
    """Runs one detection off the UI thread and loads its result on the UI thread.

    Args:
        plan: from :func:`prepare_detect`.
        settings: how to reach/start the daemon.
        out_path: the GeoPackage to write (see ``layers.default_result_path``).
        model_id: the model card id, or None for the daemon's first model.
        options: extra detect fields (``threshold``, ``min_area_m2``, ``simplify_m``...);
            None values are dropped.
        job_timeout_s: give up on a job after this many seconds.
        on_done: called on the UI thread with this task after ``finished``.
        add_to_project: add the result layer to the project in ``finished``.
        timeout_s: per-request timeout of the daemon client (ping, models, accept), s.

    After ``finished``: ``layer`` (the result layer or None), ``error`` (a message or
    None), ``cancelled`` (bool), ``result`` (the daemon's dict), ``card`` (model card),
    ``notes`` (warnings for the user: a capped render size, the daemon's
    ``stats["warnings"]`` such as a resampled GSD), ``n_features``,
    ``daemon_process`` (the ``Popen`` of a daemon this task started, else None).
    """

    message = pyqtSignal(str)

    def __init__(self, plan: DetectPlan, settings: DaemonSettings, out_path: str,
                 model_id: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                 job_timeout_s: float = 600.0,
                 on_done: Optional[Callable[["DetectTask"], None]] = None,
                 add_to_project: bool = True, timeout_s: float = 5.0):
        super().__init__(f"Ortholens: detect in {plan.layer_name}", QgsTask.CanCancel)
        self.plan = plan
        self.settings = settings
        self.out_path = out_path
        self.model_id = model_id
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.job_timeout_s = job_timeout_s
        self.on_done = on_done
        self.add_to_project = add_to_project
        self.timeout_s = timeout_s
        self.layer = None
        self.error: Optional[str] = None
        self.cancelled = False
        self.result: Optional[Dict[str, Any]] = None
        self.card: Optional[Dict[str, Any]] = None
        self.cards: List[Dict[str, Any]] = []
        self.notes: List[str] = []
        self.n_features = 0
        self.table = "detections"
        #: the daemon's ``subprocess.Popen`` when this task had to start it, else None.
        self.daemon_process = None

    # worker thread -------------------------------------------------------------
    def run(self) -> bool:  # noqa: D401 - QgsTask API
        """Do the work; never raises (QGIS would crash), errors go to ``self.error``."""
        return run_reporting(self, self._run)

    def _run(self) -> bool:
        self.setProgress(1)
        self.message.emit("Connecting to the daemon…")
        client = connect_daemon(self.settings, start=True, timeout_s=self.timeout_s)
        self.daemon_process = getattr(client, "process", None)
        try:
            return self._detect(client)
        finally:
            client.close()

    def _detect(self, client) -> bool:
        self.cards = list(client.models())
        self.card = pick_card(self.cards, self.model_id)
        model_id = str(self.card["id"])
        if self.isCanceled():
            raise InterruptedError
        self.setProgress(5)
        pixels = None
        if self.plan.render is not None:
            self.message.emit("Rendering the layer…")
            rendered = render_pixels(self.plan.render, float(self.card["gsd_m"]),
                                     is_cancelled=self.isCanceled)
            if rendered.capped:
                self.notes.append(
                    f"The map view is too large to send at the model's "
                    f"{self.card['gsd_m']:g} m/pixel; it was rendered at "
                    f"{rendered.gsd_m:.2f} m/pixel ({rendered.width} x {rendered.height} "
                    "pixels), which lowers detection quality. Zoom in for best results.")
            source = pixel_source(self.plan.render, rendered)
            pixels, extent, extent_crs = rendered.array, None, None
        else:
            source, extent, extent_crs = self.plan.source, self.plan.extent, self.plan.extent_crs
        self.setProgress(10)
        self.message.emit(f"Detecting with {model_id}…")
        from .client import DaemonUnavailable
        try:
            self.result = client.detect(source, model_id, extent=extent,
                                        extent_crs=extent_crs, pixels=pixels,
                                        on_progress=self._on_progress,
                                        is_cancelled=self.isCanceled,
                                        job_timeout_s=self.job_timeout_s, **self.options)
        except DaemonUnavailable as exc:
            # the daemon died (or hangs) mid-job: say so, and what happens next
            again = ("run Detect in extent again: the daemon is restarted automatically"
                     if self.settings.can_start() else
                     "start the daemon again ('python -m backend' in the Ortholens "
                     "folder), then run Detect in extent again")
            raise DaemonUnavailable(f"The Ortholens daemon stopped during the detection "
                                    f"({exc}). Nothing was saved; {again}.") from None
        if self.isCanceled():
            raise InterruptedError
        self.notes.extend(daemon_notes(self.result))
        self.setProgress(96)
        self.message.emit("Writing the GeoPackage…")
        self.table = safe_name(f"{model_id}_{self.plan.layer_name}", 60)
        self.n_features = write_result_gpkg(self.result, self.out_path, self.table)
        self.setProgress(100)
        return True

    def _on_progress(self, fraction: Any = None, message: Any = None, *_: Any) -> None:
        f = job_fraction(fraction)
        if f is None:
            return
        self.setProgress(10 + 85 * f)
        if message:
            self.message.emit(str(message))

    # UI thread -----------------------------------------------------------------
    def finished(self, ok: bool) -> None:  # noqa: D401 - QgsTask API
        """Load the result layer (UI thread), then call ``on_done``."""
        if self.isCanceled():
            self.cancelled = True
        if ok and not self.cancelled:
            try:
                classes = list((self.card or {}).get("classes") or [])
                name = f"{self.card.get('id', 'ortholens')} - {self.plan.layer_name}"
                self.layer = load_result_layer(self.out_path, self.table, classes,
                                               display_name=name,
                                               add_to_project=self.add_to_project,
                                               above_layer_id=self.plan.layer_id)
            except Exception as exc:  # noqa: BLE001 - reported to the user
                self.error = describe_error(exc)
        elif not self.cancelled and not self.error:
            self.error = "The detection stopped without a result (see the Ortholens log)."
        if self.on_done is not None:
            self.on_done(self)

    def summary(self, full_path: bool = True) -> str:
        """A one-line success message: count, total area and file (full path, or the
        file name only when ``full_path`` is False)."""
        stats = (self.result or {}).get("stats") or {}
        area = sum(float(f.get("area_m2", 0.0)) for f in (self.result or {}).get("features", []))
        secs = stats.get("seconds") or stats.get("elapsed_s")
        t = f" in {float(secs):.1f} s" if isinstance(secs, (int, float)) else ""
        noun = "object" if self.n_features == 1 else "objects"
        where = self.out_path if full_path else Path(self.out_path).name
        return f"{self.n_features} {noun} detected ({area:.1f} m²){t}; saved to {where}"


class DaemonStatusTask(QgsTask):
    """Pings the daemon and lists its models without starting it (worker thread).

    After ``finished``: ``pong`` (dict or None), ``cards`` (list), ``error`` (message or
    None); ``on_done(self)`` is then called on the UI thread.
    """

    def __init__(self, settings: DaemonSettings,
                 on_done: Optional[Callable[["DaemonStatusTask"], None]] = None,
                 timeout_s: float = 2.0):
        super().__init__("Ortholens: daemon status", QgsTask.CanCancel)
        self.settings = settings
        self.on_done = on_done
        self.timeout_s = timeout_s
        self.pong: Optional[Dict[str, Any]] = None
        self.cards: List[Dict[str, Any]] = []
        self.error: Optional[str] = None

    def run(self) -> bool:
        try:
            from .client import OrtholensClient
            with OrtholensClient(self.settings.endpoint, token=self.settings.token,
                                 timeout_s=self.timeout_s) as client:
                self.pong = client.ping()
                self.cards = list(client.models())
            return True
        except Exception as exc:  # noqa: BLE001 - shown in the status line
            self.error = describe_error(exc) if type(exc).__name__ != "DaemonUnavailable" else None
            return False

    def finished(self, ok: bool) -> None:
        if self.on_done is not None:
            self.on_done(self)


__all__ = ["ValidationError", "validate_inputs", "file_source_path", "prepare_detect",
           "DetectPlan", "RenderPlan", "RenderedPixels", "render_size", "render_pixels",
           "pixel_source", "argb_to_rgb", "ground_scale", "is_metric", "utm_crs", "connect_daemon", "pick_card", "describe_error", "daemon_notes",
           "DetectTask", "DaemonStatusTask", "MAX_RENDER_SIDE", "crs_wkt"]
