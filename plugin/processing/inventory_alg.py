"""*Solar inventory* (``ortholens:solarinventory``): the engine's ``inventory`` job from
the Processing toolbox, the dock's **Solar inventory…** button, models and
``qgis_process``.

The engine reads the layers from files: a layer that is a GeoPackage table without a
filter, selection or unsaved edits is sent by its path; any other (Shapefile, GeoJSON,
memory, database, filtered or edited) is first written to a GeoPackage in Processing's
temporary folder. The engine writes ``solar_inventory.gpkg`` (installations, buildings,
zones, changes, totals), ``solar_inventory.csv`` and ``solar_inventory.html`` into the
output folder; run from the dialog, the GeoPackage's layers are added to the project.
What the figures mean: ``docs/inventory.md``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict, Optional

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingOutputFile,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from protocol.errors import JobCancelled
from protocol.inventory import (MIN_RECTANGULARITY, Assumptions, InventoryParams,
                                VectorLayer)

from .common import daemon_session, progress_to, with_help

#: The algorithm's id in the Processing registry.
ALG_ID = "ortholens:solarinventory"
#: The GeoPackage layers the engine writes, in the order they are added to the project.
OUTPUT_LAYERS = ("installations", "buildings", "zones", "changes")


def file_layer(layer: QgsVectorLayer, selected_only: bool = False) -> Optional[VectorLayer]:
    """The GeoPackage table behind ``layer`` when the engine can read it as it is (an
    ``ogr`` layer of a ``.gpkg`` file, no filter, no selection asked for, no unsaved
    edits), else None."""
    if (layer is None or layer.providerType() != "ogr" or selected_only
            or layer.subsetString() or layer.isModified()):
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path") or ""
    if not path.lower().endswith(".gpkg") or not os.path.isfile(path):
        return None
    return VectorLayer(path, parts.get("layerName") or None)


def as_geopackage(layer: QgsVectorLayer, selected_only: bool, context: QgsProcessingContext
                  ) -> VectorLayer:
    """``layer`` (its selected features only, with ``selected_only``; unsaved edits
    included) written to a new GeoPackage in Processing's temporary folder.

    Raises:
        QgsProcessingException: it cannot be written.
    """
    path = os.path.join(QgsProcessingUtils.tempFolder(),
                        f"ortholens_layer_{uuid.uuid4().hex[:12]}.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "layer"
    options.onlySelectedFeatures = selected_only
    err = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context.transformContext(),
                                                    options)
    if err[0] != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"'{layer.name()}' cannot be written for the engine: "
                                     f"{err[1]}")
    return VectorLayer(path, "layer")


class SolarInventoryAlgorithm(QgsProcessingAlgorithm):
    """Totals of a result layer: panel area, installations, azimuths, modules and kWp,
    per building, zone and class, and the change since an earlier result layer."""

    INPUT, BUILDINGS, BUILDING_ID, ZONES, ZONE_NAME = (
        "INPUT", "BUILDINGS", "BUILDING_ID", "ZONES", "ZONE_NAME")
    EARLIER, MODULE_AREA, POWER, PACKING, TILT = (
        "EARLIER", "MODULE_AREA", "POWER", "PACKING", "TILT")
    MIN_RECT, TITLE, OUTPUT = "MIN_RECTANGULARITY", "TITLE", "OUTPUT"

    def name(self) -> str:
        return "solarinventory"

    def displayName(self) -> str:  # noqa: N802
        return "Solar inventory"

    def shortHelpString(self) -> str:  # noqa: N802
        a = Assumptions()
        return (
            "The numbers a solar survey publishes, from a result layer of detected panels: "
            "for each installation its area, minimum rotated rectangle, long-axis azimuth "
            "from true north (none when the outline is not rectangular enough), module "
            "count and capacity; totals per building (each installation counts on the "
            "building it overlaps most), per zone and per class; and, given an earlier "
            "result layer of the same area, the installations new, removed, grown or "
            "shrunk since. Figures are in metres in the layer's CRS, or in its UTM zone "
            "when that CRS is not projected in metres.\n\n"
            f"Capacity: module area = outline area × packing factor / cos(tilt); kWp = "
            f"module area × power per m² / 1000. Defaults: modules of {a.module_area_m2:g} "
            f"m², {a.power_w_m2:g} W/m² (20 % efficiency at standard test conditions, the "
            f"sonnendach.ch assumption), packing {a.packing_factor:g}, tilt "
            f"{a.tilt_deg:g}°.\n\nOutputs in the folder: solar_inventory.gpkg, "
            "solar_inventory.csv and solar_inventory.html (a report with a map, sizes, "
            "azimuths, the assumptions and model versions).")

    def createInstance(self):  # noqa: N802
        return SolarInventoryAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        poly = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.INPUT, "Detections", poly), "A result layer of detected panels."))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.BUILDINGS, "Building footprints", poly, optional=True),
            "Roofs: each installation counts on the one it overlaps most."))
        self.addParameter(with_help(QgsProcessingParameterField(
            self.BUILDING_ID, "Building id field", parentLayerParameterName=self.BUILDINGS,
            optional=True), "Names the buildings; empty: their feature id."))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.ZONES, "Zones", poly, optional=True),
            "Districts, municipalities: totals per zone."))
        self.addParameter(with_help(QgsProcessingParameterField(
            self.ZONE_NAME, "Zone name field", parentLayerParameterName=self.ZONES,
            optional=True), "Names the zones; empty: their feature id."))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.EARLIER, "Earlier detections", poly, optional=True),
            "A result layer of the same area at an earlier date: what changed since."))
        self._assumption_parameters()
        self.addParameter(with_help(QgsProcessingParameterString(
            self.TITLE, "Report title", optional=True), "Default: Solar inventory."))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT, "Output folder"))
        self.addOutput(QgsProcessingOutputFile("GPKG", "Inventory GeoPackage"))
        self.addOutput(QgsProcessingOutputFile("CSV", "Installations (CSV)"))
        self.addOutput(QgsProcessingOutputHtml("HTML", "Report"))
        for key, label in (("INSTALLATIONS", "Installations"), ("AREA_M2", "Panel area (m²)"),
                           ("MODULES", "Modules (estimated)"), ("KWP", "Capacity (kWp)")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def _assumption_parameters(self) -> None:
        """The Assumptions and the rectangularity limit (advanced)."""
        a = Assumptions()
        double = QgsProcessingParameterNumber.Double
        for key, label, value, lo, hi, text in (
                (self.MODULE_AREA, "Module area (m²)", a.module_area_m2, 0.11, 10.0,
                 "Area of one module; 2.0: current 108-half-cell and 72-cell formats."),
                (self.POWER, "Power per m² (W/m²)", a.power_w_m2, 10.0, 500.0,
                 "Nominal (STC) power per m² of module area: efficiency × 1000 W/m²."),
                (self.PACKING, "Packing factor", a.packing_factor, 0.01, 1.0,
                 "Share of an outline covered by modules."),
                (self.TILT, "Module tilt (°)", a.tilt_deg, 0.0, 75.0,
                 "Tilt from the horizontal: module area = outline area / cos(tilt)."),
                (self.MIN_RECT, "Min. rectangularity", MIN_RECTANGULARITY, 0.0, 1.0,
                 "Outline area / its rectangle's area below which there is no azimuth.")):
            p = with_help(QgsProcessingParameterNumber(key, label, double, defaultValue=value,
                                                       minValue=lo, maxValue=hi), text)
            if key == self.MIN_RECT:
                p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)

    def _layer(self, parameters, name: str, context) -> Optional[VectorLayer]:
        """The layer of parameter ``name`` as the engine reads it, or None."""
        if parameters.get(name) in (None, ""):
            return None
        layer = self.parameterAsVectorLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(f"{name}: the layer cannot be read.")
        value = parameters[name]
        selected = (isinstance(value, QgsProcessingFeatureSourceDefinition)
                    and value.selectedFeaturesOnly)
        return file_layer(layer, selected) or as_geopackage(layer, selected, context)

    def _params(self, parameters, context) -> InventoryParams:
        def text(key: str) -> Optional[str]:
            return self.parameterAsString(parameters, key, context).strip() or None

        def number(key: str) -> float:
            return self.parameterAsDouble(parameters, key, context)

        def layer(key: str) -> Optional[VectorLayer]:
            return self._layer(parameters, key, context)

        return InventoryParams(
            detections=layer(self.INPUT),
            out_dir=self.parameterAsString(parameters, self.OUTPUT, context),
            buildings=layer(self.BUILDINGS), building_id=text(self.BUILDING_ID),
            zones=layer(self.ZONES), zone_name=text(self.ZONE_NAME),
            earlier=layer(self.EARLIER), title=text(self.TITLE),
            min_rectangularity=number(self.MIN_RECT),
            assumptions=Assumptions(number(self.MODULE_AREA), number(self.POWER),
                                    number(self.PACKING), number(self.TILT)))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Send the layers to the engine's ``inventory`` job; log the totals; queue the
        output GeoPackage's layers for the project.

        Raises:
            QgsProcessingException: a layer that cannot be read or written, no engine,
                a refusal of the engine (its message), a cancel.
        """
        params = self._params(parameters, context)
        try:
            with daemon_session(feedback, "make the solar inventory") as client:
                res = client.inventory(params, on_progress=progress_to(feedback),
                                       is_cancelled=feedback.isCanceled)
        except JobCancelled:
            raise QgsProcessingException("Cancelled; no inventory was written.") from None
        stats = res.get("stats") or {}
        if stats.get("crs_note"):
            feedback.pushWarning(stats["crs_note"])
        for w in stats.get("warnings") or []:
            feedback.pushWarning(w)
        t = stats.get("totals") or {}
        feedback.pushInfo(f"{t.get('installations')} installations, {t.get('area_m2', 0):.1f} "
                          f"m² of panels, {t.get('modules')} modules, "
                          f"{t.get('kwp', 0):.1f} kWp (estimated)")
        if stats.get("change"):
            feedback.pushInfo("Since the earlier date: " + ", ".join(
                f"{n} {s}" for s, n in stats["change"].items()))
        out = stats.get("outputs") or {}
        self._load_on_completion(out.get("gpkg"), stats, context)
        for kind in ("gpkg", "csv", "html"):
            feedback.pushInfo(f"{kind.upper()}: {out.get(kind)}")
        return {self.OUTPUT: params.out_dir, "GPKG": out.get("gpkg"), "CSV": out.get("csv"),
                "HTML": out.get("html"), "INSTALLATIONS": t.get("installations"),
                "AREA_M2": t.get("area_m2"), "MODULES": t.get("modules"),
                "KWP": t.get("kwp")}

    def _load_on_completion(self, gpkg: Optional[str], stats: Dict[str, Any],
                            context: QgsProcessingContext) -> None:
        """Ask Processing to add the GeoPackage's layers to the project when the
        algorithm ends (the dialog does; ``qgis_process`` has no project to add to)."""
        if not gpkg or context.project() is None:
            return
        have = {"installations", "buildings" if "buildings" in stats else "",
                "zones" if "zones" in stats else "", "changes" if "change" in stats else ""}
        for name in OUTPUT_LAYERS:
            if name in have:
                context.addLayerToLoadOnCompletion(
                    f"{gpkg}|layername={name}",
                    QgsProcessingContext.LayerDetails(f"Solar inventory — {name}",
                                                      context.project(), name))


def is_result_like(layer: Any) -> bool:
    """True for a valid polygon layer that is a detection's result layer or carries the
    result attributes (``class``, ``score``, ``area_m2``: a result GeoPackage opened
    from disk, a batch job's output). A layer deleted meanwhile is not."""
    from qgis.core import QgsWkbTypes

    from ..retrain.memory import is_result_layer
    try:
        if is_result_layer(layer):
            return True
        return (isinstance(layer, QgsVectorLayer) and layer.isValid()
                and layer.geometryType() == QgsWkbTypes.PolygonGeometry
                and {"class", "score", "area_m2"} <= set(layer.fields().names()))
    except RuntimeError:  # the layer's C++ object is gone (removed from the project)
        return False


def current_result_layer(active: Any, last: Any) -> Optional[QgsVectorLayer]:
    """The layer the dock's *Solar inventory…* starts from: the active layer when it is
    a result layer (:func:`is_result_like`), else the last detection's layer when it
    still is one, else None (the dialog then asks)."""
    for layer in (active, last):
        if is_result_like(layer):
            return layer
    return None


def open_dialog(layer: Optional[QgsVectorLayer] = None, parent: Any = None):
    """Open the algorithm's Processing dialog (not modal) with ``layer`` as its
    detections; returns the dialog (QGIS's Processing plugin must be loaded, as it is
    in the desktop)."""
    from qgis.core import QgsApplication
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG_ID)
    if alg is None:
        raise RuntimeError(f"{ALG_ID} is not registered: is the Ortholens provider loaded?")
    dlg = AlgorithmDialog(alg, parent=parent)
    if layer is not None:
        dlg.setParameters({SolarInventoryAlgorithm.INPUT: layer})
    dlg.show()
    return dlg


__all__ = ["ALG_ID", "OUTPUT_LAYERS", "file_layer", "as_geopackage",
           "SolarInventoryAlgorithm", "is_result_like", "current_result_layer",
           "open_dialog"]
