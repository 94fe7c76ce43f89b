"""Bring your own model, measured: Deepness's four test graphs imported and run by
Ortholens on Deepness's test orthophoto at 3 cm/pixel, their polygons compared pixel by
pixel with the same graphs run directly with ONNX Runtime.

``.venv/backend/bin/python -m tools.byom_agreement [--data DIR] [--threshold T]
[--json OUT]``

Each graph (``<data>/deepness``, Deepness's own test data, Apache-2.0) is imported into
an empty temporary user model folder with the values the plugin's dialog sends
(:func:`values_for`: Deepness's defaults, 3 cm/pixel, a threshold where these nearly
constant graphs split the scene; ``--threshold`` runs every graph at one threshold
instead) and detected on ``dummy_fotomap_small.tif`` by the
engine's detection job (``backend.inference.detect.run_detect``, the function the
daemon's ``detect`` job runs). The polygons are rasterised back onto the 3 cm grid, class
by class, and compared with two references computed without Ortholens's code:

* ``ortholens``: the RGBA orthophoto resampled with ``rasterio.warp.reproject``
  (bilinear) onto the 3 cm grid over its bounds, the graph run by ONNX Runtime on
  512-pixel tiles of its RGB bands scaled to 0-1 and standardised by the card, per
  output the best class channel where it reaches the threshold (a softmax's channel 0
  is the background, a one-channel output is its class), 8-connected objects smaller
  than the card's minimum area dropped, pixels outside the alpha mask background. This
  is what ``docs/byom.md`` says Ortholens does, and what
  ``tests/backend/daemon/test_byom.py`` requires (>= 99.9 % per class);
* ``deepness``: the same graph outputs processed as Deepness's segmentation map
  processor does (``map_processor_segmentation.py`` of PUTvision/qgis-plugin-deepness):
  probabilities below the threshold set to 0, then per output the arg-max over all its
  channels (a softmax's background competes; a one-channel output is its class where
  non-zero), then a median filter of side ``seg_small_segment // 2 * 2 + 1`` pixels
  (Deepness's small-segment removal), alpha mask as above.

Prints one line per class: the share of grid pixels on which Ortholens's polygons agree
with each reference, and the share each marks as the class.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: The graph's name, and the threshold it runs at (None: the dialog's default, 0.5).
MODELS: Dict[str, Optional[float]] = {
    "dummy_model": None,  # no metadata at all: everything from the dialog
    "one_output_sigmoid_bsx1x512x512": 0.36,
    "one_output_softmax_bsx2x512x512": 0.33,
    "two_outputs_softmax_bsx2x512x512": 0.54,
}
#: The grid the graphs run at, metres a pixel (Deepness's tests: 3 cm/pixel).
GSD = 0.03
#: The test orthophoto of Deepness (RGBA, 2 cm/pixel, EPSG:32633).
RASTER_NAME = "dummy_fotomap_small.tif"
#: Tile side the references run the graphs on, pixels (the graphs' fixed input size).
TILE = 512


def values_for(name: str, threshold: Optional[float] = None):
    """What the plugin's dialog sends for graph ``name``'s missing metadata
    (:class:`protocol.importing.ImportValues`: Deepness's defaults, the threshold of
    :data:`MODELS` or ``threshold``)."""
    from protocol.importing import DEEPNESS_DEFAULTS, ImportValues
    thr = threshold or MODELS[name]
    return ImportValues(**dict(DEEPNESS_DEFAULTS, **({"seg_thresh": thr} if thr else {})))


def reference_grid(raster: Path) -> Tuple[np.ndarray, Any]:
    """The RGBA orthophoto resampled (bilinear) to :data:`GSD` over its bounds: uint8
    (4, H, W) and the grid's affine transform (metres, the raster's CRS)."""
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    with rasterio.open(raster) as ds:
        b = ds.bounds
        w = int(np.ceil((b.right - b.left) / GSD - 1e-6))
        h = int(np.ceil((b.top - b.bottom) / GSD - 1e-6))
        transform = Affine(GSD, 0.0, b.left, 0.0, -GSD, b.top)
        out = np.zeros((4, h, w), np.uint8)
        reproject(ds.read(), out, src_transform=ds.transform, src_crs=ds.crs,
                  dst_transform=transform, dst_crs=ds.crs, resampling=Resampling.bilinear)
    return out, transform


def graph_outputs(graph: Path, rgba: np.ndarray, mean: Sequence[float] = (0, 0, 0),
                  std: Sequence[float] = (1, 1, 1)) -> List[np.ndarray]:
    """Every output of ``graph`` over the RGB bands of ``rgba`` (uint8 (4, H, W)) scaled
    to 0-1 and standardised (``(x / 255 - mean) / std``), run on :data:`TILE`-pixel
    tiles of the zero-padded grid (the graphs act per pixel): float32 (channels, H, W)
    per output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    _, h, w = rgba.shape
    hp, wp = -(-h // TILE) * TILE, -(-w // TILE) * TILE
    x = np.zeros((1, 3, hp, wp), np.float32)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    x[0, :, :h, :w] = (rgba[:3] / np.float32(255.0) - m) / s  # the alpha band: no input
    outs: List[np.ndarray] = []
    name = session.get_inputs()[0].name
    for r in range(0, hp, TILE):
        for c in range(0, wp, TILE):
            ys = session.run(None, {name: x[:, :, r:r + TILE, c:c + TILE]})
            outs = outs or [np.zeros((y.shape[1], hp, wp), np.float32) for y in ys]
            for o, y in zip(outs, ys):
                o[:, r:r + TILE, c:c + TILE] = y[0]
    return [o[:, :h, :w] for o in outs]


def ortholens_masks(outs: List[np.ndarray], valid: np.ndarray, threshold: float,
                    min_px: int) -> List[np.ndarray]:
    """Per class (outputs in order, channels in order), the bool (H, W) mask of the
    ``ortholens`` reference (module docstring) of the graph outputs ``outs``."""
    from scipy import ndimage

    masks = []
    for y in outs:
        fg = y if y.shape[0] == 1 else y[1:]  # softmax: channel 0 is the background
        best = np.where(fg.max(0) >= threshold, fg.argmax(0) + 1, 0)
        for k in range(1, fg.shape[0] + 1):
            lab, _ = ndimage.label(best == k, np.ones((3, 3), bool))
            keep = np.bincount(lab.ravel()) >= max(1, min_px)
            keep[0] = False
            masks.append(keep[lab] & valid)
    return masks


def deepness_masks(outs: List[np.ndarray], valid: np.ndarray, threshold: float,
                   small_segment_px: int) -> List[np.ndarray]:
    """Per class, the bool (H, W) mask of the ``deepness`` reference (module
    docstring): Deepness's thresholding, arg-max and median filter."""
    from scipy import ndimage

    size = int(small_segment_px // 2) * 2 + 1
    masks = []
    for y in outs:
        p = np.where(y < threshold, 0.0, y)
        cls = (p[0] != 0).astype(np.uint8) if y.shape[0] == 1 else p.argmax(0).astype(np.uint8)
        cls = ndimage.median_filter(cls + 1, size=size, mode="nearest") - 1
        n = 1 if y.shape[0] == 1 else y.shape[0] - 1
        masks += [(cls == k) & valid for k in range(1, n + 1)]
    return masks


def rasterised(features: List[Dict[str, Any]], class_id: int, shape: Tuple[int, int],
               transform) -> np.ndarray:
    """The polygons (``wkt``) of ``class_id`` burnt into a bool grid of ``shape`` on
    ``transform`` (a pixel is in when its centre is)."""
    import shapely.wkt
    from rasterio import features as rf

    geoms = [shapely.wkt.loads(f["wkt"]) for f in features if f["class_id"] == class_id]
    if not geoms:
        return np.zeros(shape, bool)
    return rf.rasterize(geoms, out_shape=shape, transform=transform, fill=0,
                        default_value=1, dtype="uint8").astype(bool)


def measure(name: str, folder: Path, rgba: np.ndarray, transform,
            threshold: Optional[float] = None) -> List[Dict[str, Any]]:
    """Import graph ``name`` of ``folder``, detect with it and compare (module
    docstring); one row per class: ``model``, ``class``, ``agreement_ortholens``,
    ``agreement_deepness`` (shares of grid pixels, 0-1), ``share_engine``,
    ``share_ortholens``, ``share_deepness`` (shares marked as the class)."""
    from backend.inference.detect import run_detect
    from backend.models.imported import import_onnx
    from protocol.params import DetectParams, FileSource

    graph = folder / f"{name}.onnx"
    card = import_onnx(str(graph), values_for(name, threshold))
    feats = run_detect(DetectParams(FileSource(str(folder / RASTER_NAME)), card.id),
                       [])["features"]
    gsd = card.gsd_m
    outs = graph_outputs(graph, rgba, card.normalize.mean, card.normalize.std)
    valid = rgba[3] > 0
    small = int(round(card.min_area_m2 ** 0.5 / gsd))
    refs = {"ortholens": ortholens_masks(outs, valid, card.threshold,
                                         int(round(card.min_area_m2 / gsd ** 2))),
            "deepness": deepness_masks(outs, valid, card.threshold, small)}
    rows = []
    for i, c in enumerate(card.classes):
        got = rasterised(feats, c.id, valid.shape, transform)
        row: Dict[str, Any] = {"model": name, "class": c.name, "threshold": card.threshold,
                               "share_engine": float(got.mean())}
        for ref, masks in refs.items():
            row[f"agreement_{ref}"] = float((got == masks[i]).mean())
            row[f"share_{ref}"] = float(masks[i].mean())
        rows.append(row)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    from backend.config import data_dir
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(data_dir() / "deepness"),
                    help="the folder of Deepness's test graphs and orthophoto")
    ap.add_argument("--threshold", type=float,
                    help="run every graph at this threshold (default: per graph, MODELS)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    folder = Path(args.data)
    rgba, transform = reference_grid(folder / RASTER_NAME)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ORTHOLENS_USER_MODELS"] = tmp  # an empty user model folder
        for name in MODELS:
            rows += measure(name, folder, rgba, transform, args.threshold)
    print(f"grid {rgba.shape[2]} x {rgba.shape[1]} px at {GSD} m; agreement = share of "
          f"pixels where the engine's polygons and the reference agree")
    print(f"{'graph':34s} {'class':8s} {'thr':>4s} {'vs ortholens ref':>17s} {'vs deepness ref':>16s}"
          f" {'engine %':>9s} {'ref %':>7s} {'deepness %':>10s}")
    for r in rows:
        print(f"{r['model']:34s} {r['class']:8s} {r['threshold']:4.2f} {100 * r['agreement_ortholens']:16.3f}%"
              f" {100 * r['agreement_deepness']:15.3f}% {100 * r['share_engine']:8.2f}%"
              f" {100 * r['share_ortholens']:6.2f}% {100 * r['share_deepness']:9.2f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
