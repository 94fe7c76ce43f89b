"""Bring your own model through the real engine (``python -m backend``): Deepness's four
test graphs imported with ``import_model`` and run by ``detect`` on Deepness's test
orthophoto at 3 cm/pixel, their polygons compared with the same graphs run directly.

The reference is computed without the engine's code (``tools.byom_agreement``, which
prints these figures): the RGBA orthophoto resampled with ``rasterio.warp.reproject``
(bilinear) onto the 3 cm grid over its bounds, the graph run by ONNX Runtime on
512-pixel tiles of it (the graphs act per pixel, so tiling changes nothing), the best
class channel thresholded, and 8-connected objects smaller than the card's minimum area
dropped. The engine's polygons are rasterised back onto that grid, class by class, and
must agree on at least 99.9 % of the pixels. Graphs and raster: Deepness's test data (PUTvision/qgis-plugin-deepness,
Apache-2.0), read where they lie (``<data>/deepness``).
"""

from __future__ import annotations

import json
import pytest

from backend.config import data_dir
from protocol.client import OrtholensClient
from protocol.errors import DaemonError
from protocol.importing import ImportParams, missing_keys
from protocol.params import BatchParams, DetectParams, FileSource, RetrainParams
from tests.support import running_engine
from tools.byom_agreement import (GSD, MODELS, graph_outputs, ortholens_masks, rasterised,
                                  reference_grid, values_for)

DEEPNESS = data_dir() / "deepness"
RASTER = DEEPNESS / "dummy_fotomap_small.tif"
pytestmark = pytest.mark.skipif(not RASTER.is_file(),
                                reason="Deepness's test data missing (ORTHOLENS_DATA)")

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

    rgba, transform = reference_grid(RASTER)
    min_px = int(round(card["min_area_m2"] / GSD ** 2))
    want = ortholens_masks(graph_outputs(graph, rgba), rgba[3] > 0, card["threshold"], min_px)
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
