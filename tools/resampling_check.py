"""How coarser imagery is best resampled to the model's GSD, measured out of fold.

Usage::

    python -m tools.resampling_check models/configs/pv-unet-efl0.json \
        [--modes bilinear,cubic,lanczos] [--factors 2,3] [--tta]

The detection pipeline reads a 0.2 or 0.3 m orthophoto at the model's 0.1 m through
GDAL's warper. This check runs the cross-validation's fold models (``tools.cv``; each
validation tile predicted by the model that never saw its site) on the train tiles
averaged down by each factor (GDAL's ``average`` on whole blocks, as ``tools.cv``
makes them) and resampled back to 0.1 m by GDAL (``rasterio.warp.reproject``) with each
resampling mode, and scores them on the coarse grid under the config's
post-processing; ``--tta`` also scores the mean over the four test-time augmentations of
``tools.cv_ensemble`` (mode ``<mode>+tta``). Held-out tiles are never read.

Output: ``<out>/<id>-resampling.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from backend.config import REPO
from backend.learning import data as pvdata
from backend.inference.predictors import apply_tta, invert_tta
from tools.cv import coarsen, fold_predictor, pad32, predict
from tools.cv_ensemble import TTA
from tools.cv_gsd import KEYS, per_fold


def warped(image: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """The uint8 (B, H, W) tile averaged down by ``factor`` and resampled back to the
    0.1 m grid by GDAL's warper with resampling ``mode`` (a ``rasterio.enums.Resampling``
    name), as the pipeline reads a coarser raster."""
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    small, _ = coarsen(image, np.zeros(image.shape[1:], np.uint8), factor, run=factor)
    b, h, w = small.shape
    out = np.zeros((b, h * factor, w * factor), np.uint8)
    crs = "EPSG:3857"
    reproject(small, out, src_transform=Affine(0.1 * factor, 0, 0, 0, -0.1 * factor, 0),
              src_crs=crs, dst_transform=Affine(0.1, 0, 0, 0, -0.1, 0), dst_crs=crs,
              resampling=Resampling[mode])
    return out


def with_tta(predictor, image: np.ndarray) -> np.ndarray:
    """Probabilities float32 (C, H, W) of a padded uint8 (B, H, W) tile: the mean over
    the test-time augmentations :data:`tools.cv_ensemble.TTA`."""
    x = image[None]
    return np.mean([invert_tta(predictor.predict_raw(np.ascontiguousarray(apply_tta(x, t))),
                               t)[0] for t in TTA], axis=0)


def check(config: Dict[str, Any], work: Path, modes: List[str], factors: List[int],
          folds: int = 3, tta: bool = False) -> Dict[str, Any]:
    """Per mode and factor: per-fold object F1 and pixel IoU (:func:`tools.cv.spread`)
    under the config's post-processing (with ``tta`` also for ``<mode>+tta``)."""
    pp = {k: config[k] for k in KEYS if k in config}
    names = modes + ([f"{m}+tta" for m in modes] if tta else [])
    items: Dict[tuple, List] = {(m, f): [] for m in names for f in factors}
    splits = pvdata.cv_folds(pvdata.list_tiles("train"), folds)
    for k, (_, val) in enumerate(splits):
        predictor = fold_predictor(config, work, k, folds, False, REPO / "models" / "configs")
        for t in val:
            img, mask = t.read()
            for f in factors:
                _, ref = coarsen(img, mask, f)
                for m in modes:
                    im = warped(img, f, m)
                    h, w = im.shape[1:]
                    items[(m, f)].append((k, predict(predictor, [pad32(im)])[0][:, :h, :w],
                                          ref))
                    if tta:
                        p = with_tta(predictor, pad32(im))[:predictor.card.num_outputs]
                        items[(f"{m}+tta", f)].append((k, p[:, :h, :w], ref))
        print(f"fold {k}: {len(val)} tiles", flush=True)
    out: Dict[str, Any] = {"id": config["id"], "postprocess": pp, "modes": {}}
    for (m, f), its in items.items():
        out["modes"].setdefault(m, {})[f"{0.1 * f:.1f}"] = per_fold(
            its, {k: pp for k in range(folds)}, config["gsd_m"])
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "cv" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "cv")
    ap.add_argument("--modes", default="bilinear,cubic,lanczos")
    ap.add_argument("--factors", default="2,3")
    ap.add_argument("--tta", action="store_true", help="also the mean of 4 augmentations")
    args = ap.parse_args(argv)
    config = json.loads(args.config.read_text("utf-8"))
    r = check(config, args.work, args.modes.split(","),
              [int(x) for x in args.factors.split(",")], tta=args.tta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{config['id']}-resampling.json").write_text(json.dumps(r, indent=2) + "\n")
    print("| resampling | imagery | object F1 (fold mean ± std) | pixel IoU |")
    print("|---|---|---|---|")
    for m, by in r["modes"].items():
        for g, v in by.items():
            print(f"| {m} | {g} m | {v['object_f1']['mean']:.3f} ± {v['object_f1']['std']:.3f}"
                  f" | {v['pixel_iou']['mean']:.3f} ± {v['pixel_iou']['std']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
