"""Bring your own model through the real engine (``python -m backend``): Deepness's four
test graphs imported with ``import_model`` and run by ``detect`` on Deepness's test
orthophoto at 3 cm/pixel, their polygons compared with the same graphs run directly.

The reference is computed here without the engine's code: the RGBA orthophoto
resampled with ``rasterio.warp.reproject`` (bilinear) onto the 3 cm grid over its
bounds, the graph run by ONNX Runtime on 512-pixel tiles of it (the graphs act per
pixel, so tiling changes nothing), the best class channel thresholded, and 8-connected
objects smaller than the card's minimum area dropped. The engine's polygons are
rasterised back onto that grid, class by class, and must agree on at least 99.9 % of
the pixels. Graphs and raster: Deepness's test data (PUTvision/qgis-plugin-deepness,
Apache-2.0), read where they lie (``<data>/deepness``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.config import data_dir
from protocol.client import OrtholensClient
from protocol.errors import DaemonError
from protocol.importing import DEEPNESS_DEFAULTS, ImportParams, ImportValues, missing_keys
from protocol.params import BatchParams, DetectParams, FileSource, RetrainParams
from tests.support import running_engine

DEEPNESS = data_dir() / "deepness"
RASTER = DEEPNESS / "dummy_fotomap_small.tif"
GSD = 0.03
pytestmark = pytest.mark.skipif(not RASTER.is_file(),
                                reason="Deepness's test data missing (ORTHOLENS_DATA)")

#: Per graph: the threshold it is run at (where its probabilities split the scene:
#: these tiny graphs are nearly constant over it), the other values as the plugin's
#: dialog fills them (Deepness's defaults, 3 cm/pixel).
MODELS = {
    "dummy_model": None,  # no metadata at all: everything from the dialog
    "one_output_sigmoid_bsx1x512x512": 0.36,
    "one_output_softmax_bsx2x512x512": 0.33,
    "two_outputs_softmax_bsx2x512x512": 0.54,
}
#: Smallest pixel agreement accepted between the engine and the reference.
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A real engine with an empty user model folder; yields a connected client."""
    tmp = tmp_path_factory.mktemp("byom")
    with running_engine(tmp / "daemon.log",
                        env={"ORTHOLENS_USER_MODELS": str(tmp / "user-models")}) as (ep, _):
        with OrtholensClient(ep, timeout_s=30.0) as client:
            yield client, tmp


def reference_grid():
    """The RGBA orthophoto resampled to :data:`GSD` over its bounds: uint8 (4, H, W)
    and the grid's affine transform."""
    import rasterio
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    with rasterio.open(RASTER) as ds:
        b = ds.bounds
        w = int(np.ceil((b.right - b.left) / GSD - 1e-6))
        h = int(np.ceil((b.top - b.bottom) / GSD - 1e-6))
        transform = Affine(GSD, 0.0, b.left, 0.0, -GSD, b.top)
        out = np.zeros((4, h, w), np.uint8)
        reproject(ds.read(), out, src_transform=ds.transform, src_crs=ds.crs,
                  dst_transform=transform, dst_crs=ds.crs, resampling=Resampling.bilinear)
    return out, transform


def reference_masks(graph: Path, rgba: np.ndarray, threshold: float, min_px: int):
    """Per class, in the engine's numbering (outputs in order, channels in order), the
    bool (H, W) mask of the graph's thresholded output over ``rgba``."""
    import onnxruntime as ort
    from scipy import ndimage

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    _, h, w = rgba.shape
    hp, wp = -(-h // 512) * 512, -(-w // 512) * 512
    x = np.zeros((1, 3, hp, wp), np.float32)
    x[0, :, :h, :w] = rgba[:3] / np.float32(255.0)  # the alpha band is no input
    outs = None
    for r in range(0, hp, 512):
        for c in range(0, wp, 512):
            ys = session.run(None, {session.get_inputs()[0].name: x[:, :, r:r + 512, c:c + 512]})
            outs = outs or [np.zeros((y.shape[1], hp, wp), np.float32) for y in ys]
            for o, y in zip(outs, ys):
                o[:, r:r + 512, c:c + 512] = y[0]
    masks = []
    for y in outs:
        fg = y[:, :h, :w] if y.shape[0] == 1 else y[1:, :h, :w]  # softmax: 0 = background
        best = np.where(fg.max(0) >= threshold, fg.argmax(0) + 1, 0)
        for k in range(1, fg.shape[0] + 1):
            lab, _ = ndimage.label(best == k, np.ones((3, 3), bool))
            sizes = np.bincount(lab.ravel())
            keep = sizes >= max(1, min_px)
            keep[0] = False
            masks.append(keep[lab] & (rgba[3] > 0))
    return masks


def rasterised(features, class_id: int, shape, transform) -> np.ndarray:
    """The engine's polygons of ``class_id`` burnt into a bool grid (pixel centres)."""
    import shapely.wkt
    from rasterio import features as rf

    geoms = [shapely.wkt.loads(f["wkt"]) for f in features if f["class_id"] == class_id]
    if not geoms:
        return np.zeros(shape, bool)
    return rf.rasterize(geoms, out_shape=shape, transform=transform, fill=0,
                        default_value=1, dtype="uint8").astype(bool)


def values_for(name: str) -> ImportValues:
    """What the plugin's dialog sends for ``name``'s missing metadata."""
    thr = MODELS[name]
    return ImportValues(**dict(DEEPNESS_DEFAULTS, **({"seg_thresh": thr} if thr else {})))


@pytest.mark.parametrize("name", list(MODELS))
def test_deepness_models_detect_as_their_graphs_compute(engine, name):
    client, tmp = engine
    graph = DEEPNESS / f"{name}.onnx"
    with pytest.raises(DaemonError) as err:  # none of them says its resolution
        client.import_model(ImportParams(str(graph)))
    assert err.value.code == "invalid_input" and err.value.field == "values"
    assert "resolution" in missing_keys(err.value.message)
    card = client.import_model(ImportParams(str(graph), values_for(name)))
    assert card["id"] == name and card["format"] == "deepness"
    assert card["gsd_m"] == pytest.approx(GSD)
    assert name in [m["id"] for m in client.models()]

    result = client.detect(DetectParams(FileSource(str(RASTER)), name), job_timeout_s=300)
    stats, feats = result["stats"], result["features"]
    assert (stats["width"], stats["height"]) == (829, 561)  # Deepness's own result size
    assert stats["runtime"] == "onnxruntime" and stats["bands"] == [1, 2, 3]
    assert feats and {f["model"] for f in feats} == {name}
    assert {f["model_version"] for f in feats} == {card["version"]}
    assert all(f["area_m2"] > 0 and 0 < f["score"] <= 1 for f in feats)

    rgba, transform = reference_grid()
    min_px = int(round(card["min_area_m2"] / GSD ** 2))
    want = reference_masks(graph, rgba, card["threshold"], min_px)
    assert len(want) == len(card["classes"])
    agreement = {}
    for c, mask in zip(card["classes"], want):
        got = rasterised(feats, c["id"], mask.shape, transform)
        agreement[c["name"]] = float((got == mask).mean())
        assert {f["class"] for f in feats if f["class_id"] == c["id"]} <= {c["name"]}
        assert 0.0 < mask.mean() < 1.0, (name, c)  # the comparison is not vacuous
    (tmp / f"agreement-{name}.json").write_text(json.dumps(agreement))
    print(f"\n{name}: pixel agreement {agreement}")
    assert min(agreement.values()) >= MIN_AGREEMENT, agreement


def test_other_types_are_refused_and_imported_models_not_retrained(engine, tmp_path):
    from backend.models.deepness import write_metadata
    client, _ = engine
    detector = tmp_path / "detector.onnx"
    detector.write_bytes((DEEPNESS / "one_output_sigmoid_bsx1x512x512.onnx").read_bytes())
    write_metadata(detector, {"model_type": '"Detector"'})
    with pytest.raises(DaemonError, match="Deepness Detector: Ortholens runs segmentation") \
            as err:
        client.import_model(ImportParams(str(detector), values_for("dummy_model")))
    assert (err.value.code, err.value.field) == ("invalid_input", "path")
    with pytest.raises(DaemonError) as err:
        client.import_model(ImportParams(str(tmp_path / "nothing.onnx")))
    assert (err.value.code, err.value.field) == ("not_found", "path")

    card = client.import_model(ImportParams(
        str(DEEPNESS / "one_output_sigmoid_bsx1x512x512.onnx"),
        values_for("dummy_model"), model="coffee"))
    params = RetrainParams(FileSource(str(RASTER)), card["id"],
                           [{"wkt": "POINT (638850 5802600)", "class": "Coffee"}])
    with pytest.raises(DaemonError, match="needs PyTorch weights"):
        client.retrain(params, job_timeout_s=120)


def test_a_batch_job_in_regions_gives_the_detections_polygons(engine):
    """The batch pipeline runs an imported model too: region by region (small regions,
    so objects cross their borders), each family's objects kept exactly once."""
    import shapely
    from pyogrio.raw import read
    client, tmp = engine
    name = "two_outputs_softmax_bsx2x512x512"
    client.import_model(ImportParams(str(DEEPNESS / f"{name}.onnx"), values_for(name)))
    detected = client.detect(DetectParams(FileSource(str(RASTER)), name),
                             job_timeout_s=300)["features"]
    out = tmp / "batch.gpkg"
    stats = client.batch(BatchParams(DetectParams(FileSource(str(RASTER)), name),
                                     out_path=str(out), region_px=256),
                         job_timeout_s=600)["stats"]
    assert stats["count"] == len(detected) and stats["regions"] > 1
    meta, _, geoms, fields = read(str(out), layer=stats["layer"])[:4]
    classes = fields[list(meta["fields"]).index("class")]

    def shapes(rows):
        return sorted((str(c), round(g.area, 4), round(g.centroid.x, 3),
                       round(g.centroid.y, 3)) for c, g in rows)
    assert shapes(zip(classes, shapely.from_wkb(geoms))) == shapes(
        (f["class"], shapely.from_wkt(f["wkt"])) for f in detected)
