"""Headless runs of the plugin's main job (no desktop): the demo of ``build.py demo``.

    python -m tools.demo demo [--out out/demo] [--model MODEL]

What the demo does, with the same code the plugin runs (daemon client, request
building, GeoPackage writer, categorized style) and QGIS's own map renderer:

1. starts (or reuses) the inference daemon, and uses its default model unless
   ``--model`` names another;
2. detects on the real Vienna 2023 orthophoto (0.3 m, EPSG:31256, Stadt Wien CC BY 4.0;
   no panels, so every polygon is a false positive: reported per km²) and on each of
   the 12 pv01 held-out tiles (0.1 m, Jiang et al. 2021, CC BY 4.0: sites never seen in
   training);
3. prints the number of polygons per class for each, writes ``<out>/vienna.gpkg`` and
   ``<out>/pv01_heldout.gpkg``, and renders ``<out>/vienna.png`` and
   ``<out>/pv01_heldout.png`` (polygons over the image; for pv01 the reference panels are
   outlined in cyan beside the detections in orange).

Data are read from ``backend.config.data_dir()`` (``ORTHOLENS_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent


def _qgis_app():
    """A headless QGIS application (offscreen Qt unless a platform is set)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication
    app = QgsApplication([], False)
    app.initQgis()
    return app


def _render(layers: list, extent, crs, out_png: Path, width: int) -> None:
    """Render ``layers`` (top first) over ``extent`` to a PNG ``width`` px wide."""
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings

    ms = QgsMapSettings()
    ms.setLayers(layers)
    ms.setDestinationCrs(crs)
    ms.setExtent(extent)
    h = max(1, int(round(width * extent.height() / extent.width())))
    ms.setOutputSize(QSize(width, h))
    ms.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(ms)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(out_png))


def _reference_layer(mask_path: Path):
    """The reference panels of a pv01 mask as a cyan-outlined memory layer (GDAL)."""
    from osgeo import gdal, ogr, osr
    from qgis.core import QgsFillSymbol, QgsVectorLayer

    ds = gdal.Open(str(mask_path))
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    drv = ogr.GetDriverByName("Memory")
    tmp = Path(tempfile.mkdtemp(prefix="ortholens-ref-")) / "ref.gpkg"
    vds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
    lyr = vds.CreateLayer("ref", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    band = ds.GetRasterBand(1)
    gdal.Polygonize(band, band, lyr, 0)
    del lyr, vds, ds, drv
    layer = QgsVectorLayer(f"{tmp}|layername=ref", "reference", "ogr")
    layer.setRenderer(layer.renderer().clone())
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "0,220,255,255", "outline_width": "0.5"}))
    return layer


def _detect(client, path: Path, model: str) -> Tuple[dict, float]:
    """The daemon's result for the whole raster file, and the seconds it took."""
    from protocol.params import DetectParams, FileSource

    t0 = time.perf_counter()
    res = client.detect(DetectParams(FileSource(str(path)), model))
    return res, time.perf_counter() - t0


def _per_class(features: List[dict]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for f in features:
        out[f["class"]] = out.get(f["class"], 0) + 1
    return out


def demo(out: Path, model: Optional[str] = None) -> int:
    """Run the demo (see the module docstring); returns a process exit code.

    Args:
        out: the folder for the GeoPackages, PNGs and ``summary.json``.
        model: a model id; None for the daemon's default model.
    """
    from qgis.core import QgsProject, QgsRasterLayer

    from backend.config import data_dir
    from plugin.cards import pick_card
    from plugin.layers.gpkg import write_result_gpkg
    from plugin.layers.load import load_result_layer
    from plugin.settings import daemon_settings
    from protocol.launcher import ensure_daemon
    from protocol.errors import DaemonError, DaemonUnavailable, ModelNotFound

    app = _qgis_app()
    out.mkdir(parents=True, exist_ok=True)
    data = data_dir()
    vienna = data / "vienna" / "vienna_44_2_ortho_2023_30cm.tif"
    heldout = sorted(p for p in (data / "pv01" / "heldout").glob("PV01_*.tif")
                     if not p.stem.endswith("_mask"))
    if not vienna.is_file() or not heldout:
        print(f"real sample data not found under {data}; set ORTHOLENS_DATA", file=sys.stderr)
        return 2
    s = daemon_settings()
    try:
        client = ensure_daemon(s.endpoint, s.python, s.repo, token=s.token, wait_s=120)
        info = client.ping()
        cards = client.models()
    except (DaemonUnavailable, DaemonError) as exc:
        print(f"the inference daemon is not available: {exc}", file=sys.stderr)
        return 1
    summary: Dict[str, dict] = {}
    try:
        card = pick_card(cards, model)
        model = str(card["id"])
        print(f"daemon {info.get('version')} on {info.get('device')}; model {model} "
              f"v{card['version']} ({', '.join(c['name'] for c in card['classes'])})")
        # --- Vienna: a real city orthophoto without panels
        res, dt = _detect(client, vienna, model)
        st = res["stats"]
        write_result_gpkg(res, str(out / "vienna.gpkg"), "detections")
        counts = _per_class(res["features"])
        summary["vienna"] = {"polygons_per_class": counts, "seconds": round(dt, 1),
                             "area_km2": st["area_km2"], "grid_px": [st["width"], st["height"]],
                             "warnings": st["warnings"]}
        print(f"vienna_44_2_ortho_2023_30cm.tif: {st['width']}x{st['height']} px at "
              f"{st['gsd_m']} m ({st['area_km2']:.3f} km2) in {dt:.1f} s: polygons per class "
              f"{counts or {c['name']: 0 for c in card['classes']}} (no panels in this scene: "
              f"{len(res['features']) / st['area_km2']:.0f} false polygons/km2)")
        ras = QgsRasterLayer(str(vienna), "vienna")
        det = load_result_layer(str(out / "vienna.gpkg"), "detections", card["classes"],
                                add_to_project=False)
        QgsProject.instance().addMapLayers([ras, det], False)
        _render([det, ras], ras.extent(), ras.crs(), out / "vienna.png", 1600)

        # --- pv01 held-out tiles: panels on houses, never seen in training
        merged: dict = {"crs": None, "features": []}
        tiles_png = []
        t_all = 0.0
        for p in heldout:
            res, dt = _detect(client, p, model)
            t_all += dt
            merged["crs"] = merged["crs"] or res["crs"]
            merged["features"] += res["features"]
            gpkg = Path(tempfile.mkdtemp(prefix="ortholens-demo-")) / "t.gpkg"
            write_result_gpkg(res, str(gpkg), "detections")
            ras = QgsRasterLayer(str(p), p.stem)
            det = load_result_layer(str(gpkg), "detections", card["classes"],
                                    add_to_project=False)
            ref = _reference_layer(p.with_name(p.stem + "_mask.tif"))
            QgsProject.instance().addMapLayers([ras, det, ref], False)
            png = gpkg.with_suffix(".png")
            _render([ref, det, ras], ras.extent(), ras.crs(), png, 384)
            tiles_png.append((p.stem, png, len(res["features"])))
        write_result_gpkg(merged, str(out / "pv01_heldout.gpkg"), "detections")
        counts = _per_class(merged["features"])
        summary["pv01_heldout"] = {"tiles": len(heldout), "polygons_per_class": counts,
                                   "seconds": round(t_all, 1)}
        print(f"pv01 held-out ({len(heldout)} tiles of 256x256 px at 0.1 m) in {t_all:.1f} s: "
              f"polygons per class {counts}")
        _contact_sheet(tiles_png, out / "pv01_heldout.png")
    except ModelNotFound as exc:
        print(exc, file=sys.stderr)
        return 2
    except (DaemonUnavailable, DaemonError) as exc:
        print(f"detection failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
        started = getattr(client, "process", None)
        if started is not None:  # a daemon this demo started: stop it again
            started.terminate()
            started.wait(timeout=30)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(f"wrote {out / 'vienna.gpkg'}, {out / 'vienna.png'}, {out / 'pv01_heldout.gpkg'}, "
          f"{out / 'pv01_heldout.png'}, {out / 'summary.json'}")
    QgsProject.instance().clear()
    app.exitQgis()
    return 0


def _contact_sheet(tiles: List[Tuple[str, Path, int]], out_png: Path, cols: int = 4) -> None:
    """Lay rendered tiles in a grid with their names and polygon counts."""
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    imgs = [(name, QImage(str(p)), n) for name, p, n in tiles]
    w = max(i.width() for _, i, _ in imgs)
    h = max(i.height() for _, i, _ in imgs)
    pad, label = 6, 18
    rows = (len(imgs) + cols - 1) // cols
    sheet = QImage(cols * (w + pad) + pad, rows * (h + label + pad) + pad + 24,
                   QImage.Format_RGB32)
    sheet.fill(QColor(255, 255, 255))
    painter = QPainter(sheet)
    painter.setFont(QFont("DejaVu Sans", 9))
    painter.drawText(pad, 16, "Ortholens on pv01 held-out tiles: detections (orange), "
                              "reference panels (cyan)")
    for k, (name, img, n) in enumerate(imgs):
        x = pad + (k % cols) * (w + pad)
        y = 24 + pad + (k // cols) * (h + label + pad)
        painter.drawText(x, y + 13, f"{name}: {n} polygon{'s' if n != 1 else ''}")
        painter.drawImage(x, y + label, img)
    painter.end()
    sheet.save(str(out_png))


def main(argv: Optional[List[str]] = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(description="Ortholens headless runs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="detect on the real sample data, write GPKG + PNG")
    d.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    d.add_argument("--model", default=None,
                   help="model id (default: the daemon's default model)")
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        return demo(args.out, args.model)
    return 2


if __name__ == "__main__":
    sys.exit(main())
