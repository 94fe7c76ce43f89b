"""backend.models.export: the shipped model's ONNX export carries Deepness metadata (so
Deepness runs it as it is), and the importer reads it back into an equal card with equal
detections."""

from __future__ import annotations

import json
import shutil

import pytest

from backend.models.deepness import deepness_metadata
from backend.models.imported import import_onnx
from tests.support import DEFAULT_MODEL, HAVE_MODEL, INSIDE, OUTSIDE

#: The card fields a Deepness export carries (the others describe the training).
CARRIED = ("version", "classes", "bands", "band_names", "dtype", "normalize", "gsd_m",
           "gsd_range_m", "tile_size", "overlap", "threshold", "min_area_m2", "max_hole_m2",
           "simplify_m", "orthogonalize", "min_solidity", "min_score", "shifts", "tta")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped model copied to a temporary folder and exported to ONNX there."""
    from backend.config import models_dir
    from backend.models.card import read_card
    from backend.models.export import export_onnx
    if not HAVE_MODEL:
        pytest.skip("the shipped model's weights are missing")
    folder = tmp_path_factory.mktemp("export") / DEFAULT_MODEL
    folder.mkdir()
    for name in ("card.json", "weights.safetensors"):
        shutil.copyfile(models_dir() / DEFAULT_MODEL / name, folder / name)
    card = read_card(folder / "card.json")
    export_onnx(card)
    return card


def test_the_shipped_export_carries_deepness_metadata(exported):
    import onnx
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(exported.onnx_path)).metadata_props}
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == [{"0": "background", "1": "photovoltaic"}]
    assert meta["resolution"] == pytest.approx(exported.gsd_m * 100)
    assert meta["tiles_size"] == exported.tile_size
    assert meta["tiles_overlap"] == pytest.approx(100 * exported.overlap / exported.tile_size)
    assert meta["standardization_mean"] == exported.normalize.mean  # scale 255 already
    assert meta["standardization_std"] == exported.normalize.std
    assert meta["seg_thresh"] == exported.threshold
    assert meta["seg_small_segment"] == round(exported.min_area_m2 ** 0.5 / exported.gsd_m)
    assert deepness_metadata(exported)["class_names"] == json.dumps(meta["class_names"])


def test_an_export_reads_back_into_an_equal_card_and_equal_detections(exported, user_dir):
    from backend.inference.detect import run_detect
    from backend.inference.predictors import OnnxPredictor
    from protocol.params import DetectParams, FileSource
    back = import_onnx(str(exported.onnx_path))
    assert back.id == "pv-unet-efl0-2" and back.onnx_only
    assert {k: back.to_dict().get(k) for k in CARRIED} == {
        k: exported.to_dict().get(k) for k in CARRIED}
    if not (INSIDE.is_file() and OUTSIDE.is_file()):
        pytest.skip("pv01 held-out tiles missing")
    native = OnnxPredictor(exported)
    for tile in (INSIDE, OUTSIDE):
        want = run_detect(DetectParams(FileSource(str(tile)), exported.id), [],
                          predictor=native)["features"]
        got = run_detect(DetectParams(FileSource(str(tile)), back.id), [])["features"]
        assert want, tile  # panels are found there
        strip = ("model", "model_version")
        assert [{k: v for k, v in f.items() if k not in strip} for f in got] == \
            [{k: v for k, v in f.items() if k not in strip} for f in want]
