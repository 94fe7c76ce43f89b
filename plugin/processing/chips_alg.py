"""*Export training chips*: image chips and matching masks (GeoTIFF) from a raster and
polygons, with GDAL from QGIS's Python."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .common import raster_file, with_help
from .rasterize import burn, transformed


def starts(length: int, chip: int, stride: int) -> List[int]:
    """Chip offsets along one axis: every ``stride`` px, the last one flush with the end
    (no chip when the raster is shorter than a chip)."""
    if length < chip:
        return []
    out = list(range(0, length - chip + 1, stride))
    if out[-1] != length - chip:
        out.append(length - chip)
    return out


class ExportChipsAlgorithm(QgsProcessingAlgorithm):
    """Cut a raster into chips and burn polygons into matching masks."""

    INPUT, POLYGONS, AREA = "INPUT", "POLYGONS", "AREA"
    CHIP, STRIDE, ONLY_POSITIVE, OUTPUT = "CHIP_SIZE", "STRIDE", "ONLY_POSITIVE", "OUTPUT"

    def name(self) -> str:
        return "exportchips"

    def displayName(self) -> str:  # noqa: N802
        return "Export training chips"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Cuts the raster, in its own pixel grid, into square chips and writes for "
                "each NAME.tif (the pixels, georeferenced) and NAME_mask.tif (uint8, 1 where "
                "a polygon covers the pixel centre, 0 elsewhere), the layout of the pv01 "
                "training set, plus manifest.csv. Chips overlap when the stride (default: the "
                "chip size) is smaller "
                "than the chip; the last row and column are flush with the raster edge.")

    def createInstance(self):  # noqa: N802
        return ExportChipsAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(with_help(QgsProcessingParameterFeatureSource(
            self.POLYGONS, "Polygons", [QgsProcessing.TypeVectorPolygon]),
            "The objects to burn into the masks, e.g. corrected detections."))
        self.addParameter(with_help(QgsProcessingParameterExtent(
            self.AREA, "Area", optional=True), "Default: the whole raster."))
        self.addParameter(QgsProcessingParameterNumber(
            self.CHIP, "Chip size (pixels)", QgsProcessingParameterNumber.Integer,
            defaultValue=256, minValue=16, maxValue=8192))
        self.addParameter(with_help(QgsProcessingParameterNumber(
            self.STRIDE, "Stride (pixels)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=1, maxValue=8192), "Default: the chip size."))
        self.addParameter(with_help(QgsProcessingParameterBoolean(
            self.ONLY_POSITIVE, "Only chips with polygons", defaultValue=False),
            "Skip the chips no polygon covers."))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Chip folder"))
        self.addOutput(QgsProcessingOutputNumber("CHIPS", "Chips written"))

    def processAlgorithm(self, parameters, context, feedback) -> Dict[str, Any]:  # noqa: N802
        """Write the chips, their masks and ``manifest.csv`` to the OUTPUT folder.

        Raises:
            QgsProcessingException: an unreadable or rotated raster, no polygons, or an
                area smaller than one chip.
        """
        from osgeo import gdal

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        path = raster_file(layer)
        polys = self.parameterAsSource(parameters, self.POLYGONS, context)
        if polys is None:
            raise QgsProcessingException("No polygon layer.")
        chip = self.parameterAsInt(parameters, self.CHIP, context)
        stride = chip
        if parameters.get(self.STRIDE) not in (None, ""):
            stride = self.parameterAsInt(parameters, self.STRIDE, context)
        only_pos = self.parameterAsBool(parameters, self.ONLY_POSITIVE, context)
        folder = Path(self.parameterAsString(parameters, self.OUTPUT, context))
        folder.mkdir(parents=True, exist_ok=True)
        src = gdal.Open(path)
        if src is None:
            raise QgsProcessingException(f"GDAL cannot open {path}")
        gt = src.GetGeoTransform()
        if gt[2] != 0 or gt[4] != 0:
            raise QgsProcessingException("Rotated rasters are not supported.")
        wkt = src.GetProjection() or layer.crs().toWkt()
        c0, r0, c1, r1 = 0, 0, src.RasterXSize, src.RasterYSize
        if parameters.get(self.AREA) not in (None, ""):
            a = self.parameterAsExtent(parameters, self.AREA, context, layer.crs())
            c0 = max(0, int((a.xMinimum() - gt[0]) / gt[1]))
            c1 = min(src.RasterXSize, int(-(-(a.xMaximum() - gt[0]) // gt[1])))
            r0 = max(0, int((a.yMaximum() - gt[3]) / gt[5]))
            r1 = min(src.RasterYSize, int(-(-(a.yMinimum() - gt[3]) // gt[5])))
        geoms = transformed(polys, layer.crs(), context, feedback)
        stem = Path(path).stem
        rows, cols = starts(r1 - r0, chip, stride), starts(c1 - c0, chip, stride)
        if not rows or not cols:
            raise QgsProcessingException(f"The area ({c1 - c0} x {r1 - r0} px) is smaller "
                                         f"than one chip of {chip} px.")
        total, written = len(rows) * len(cols), 0
        gtiff = gdal.GetDriverByName("GTiff")
        manifest = []
        for n, (r, c) in enumerate((r0 + a, c0 + b) for a in rows for b in cols):
            if feedback.isCanceled():
                break
            cgt = (gt[0] + c * gt[1], gt[1], 0.0, gt[3] + r * gt[5], 0.0, gt[5])
            mask = burn(geoms, chip, chip, cgt, wkt)
            positive = float((mask > 0).mean())
            feedback.setProgress(100.0 * (n + 1) / total)
            if only_pos and positive == 0:
                continue
            name = f"{stem}_r{r:06d}_c{c:06d}"
            gdal.Translate(str(folder / f"{name}.tif"), src, srcWin=[c, r, chip, chip],
                           creationOptions=["COMPRESS=DEFLATE"])
            mem = gdal.GetDriverByName("MEM").Create("", chip, chip, 1, gdal.GDT_Byte)
            mem.SetGeoTransform(cgt)
            mem.SetProjection(wkt)
            mem.GetRasterBand(1).WriteArray((mask > 0).astype("uint8"))
            gtiff.CreateCopy(str(folder / f"{name}_mask.tif"), mem,
                             options=["COMPRESS=DEFLATE"])
            mem = None
            manifest.append({"name": name, "row": r, "col": c, "x_min": cgt[0],
                             "y_max": cgt[3], "panel_fraction": round(positive, 6)})
            written += 1
        src = None
        with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["name", "row", "col", "x_min", "y_max",
                                              "panel_fraction"])
            w.writeheader()
            w.writerows(manifest)
        feedback.pushInfo(f"{written} chip(s) of {chip} px in {folder}")
        return {self.OUTPUT: str(folder), "CHIPS": written}
