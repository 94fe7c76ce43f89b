"""Bring your own model: Deepness-format ONNX files read into cards, run by the
predictor, refused when they are no segmenters (the export of Ortholens's own models in
that format: ``test_export.py``).

The four graphs are Deepness's own test data (PUTvision/qgis-plugin-deepness,
``test/data``, Apache-2.0), read where they lie (``<data>/deepness``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.config import data_dir
from backend.models.deepness import write_metadata
from backend.models.imported import import_onnx, imported_dir, new_model_id
from protocol.errors import ModelCorrupt, ModelNotFound
from protocol.importing import DEEPNESS_DEFAULTS, ImportValues, missing_keys

DEEPNESS = data_dir() / "deepness"
SIGMOID = DEEPNESS / "one_output_sigmoid_bsx1x512x512.onnx"
SOFTMAX = DEEPNESS / "one_output_softmax_bsx2x512x512.onnx"
TWO = DEEPNESS / "two_outputs_softmax_bsx2x512x512.onnx"
DUMMY = DEEPNESS / "dummy_model.onnx"
needs_deepness = pytest.mark.skipif(not (DEEPNESS / "dummy_model.onnx").is_file(),
                                    reason="Deepness's test data missing (ORTHOLENS_DATA)")
pytestmark = needs_deepness

#: The values the plugin's dialog sends for everything a file lacks (Deepness's
#: defaults), at 3 cm/pixel.
DIALOG = ImportValues(**dict(DEEPNESS_DEFAULTS, resolution=3.0))


def with_metadata(src: Path, dst: Path, **meta: object) -> Path:
    """A copy of the graph ``src`` at ``dst`` with these metadata keys set (JSON)."""
    shutil.copyfile(src, dst)
    write_metadata(dst, {k: json.dumps(v) for k, v in meta.items()})
    return dst


def tiny_graph(path: Path, in_channels: int = 3, pool: bool = False) -> Path:
    """A hand-made graph: a 1x1 convolution of ``in_channels`` to one channel and a
    sigmoid, or (``pool``) a global average pool (no per-pixel output)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", in_channels, 64, 64])
    if pool:
        nodes = [helper.make_node("GlobalAveragePool", ["input"], ["output"])]
        out_shape, inits = ["n", in_channels, 1, 1], []
    else:
        w = helper.make_tensor("w", TensorProto.FLOAT, [1, in_channels, 1, 1],
                               [0.5] * in_channels)
        nodes = [helper.make_node("Conv", ["input", "w"], ["c"]),
                 helper.make_node("Sigmoid", ["c"], ["output"])]
        out_shape, inits = ["n", 1, 64, 64], [w]
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.metadata_props.add(key="model_type", value='"Segmentor"')
    onnx.save(model, str(path))
    return path


def test_missing_metadata_is_named_with_deepness_defaults(user_dir):
    with pytest.raises(ModelCorrupt) as err:
        import_onnx(str(DUMMY))
    assert err.value.code == "invalid_input" and err.value.field == "values"
    # the graph's fixed 512 x 512 input gives the tile size: it is not asked
    assert missing_keys(err.value.message) == ["model_type", "resolution", "tiles_overlap",
                                               "seg_thresh", "seg_small_segment"]
    assert "resolution 3.0" in err.value.message
    with pytest.raises(ModelCorrupt) as err:
        import_onnx(str(SIGMOID))  # its model_type is given
    assert missing_keys(err.value.message)[0] == "resolution"
    assert not imported_dir().exists() or not any(imported_dir().iterdir())


def test_sigmoid_softmax_and_two_output_cards(user_dir):
    sig = import_onnx(str(SIGMOID), DIALOG)
    assert [(c.id, c.name) for c in sig.classes] == [(1, "Coffee")]
    assert [o.to_dict() for o in sig.outputs] == [
        {"index": 0, "activation": "sigmoid", "classes": [1]}]
    assert sig.gsd_m == pytest.approx(0.03) and sig.tile_size == 512
    assert sig.overlap == round(512 * 0.15) and sig.threshold == 0.5
    assert sig.min_area_m2 == pytest.approx((7 * 0.03) ** 2)
    assert sig.normalize.mean == [0.0] * 3 and sig.normalize.std == [1.0] * 3
    assert sig.normalize.scale == 255.0
    assert sig.onnx_only and sig.format == "deepness" and sig.onnx_path.is_file()
    assert sig.imported.metadata["class_names"] == '[{"0": "Coffee"}]'
    assert sig.imported.values["resolution"] == 3.0

    # softmax: channel 0 is the background, its name is not a class
    two = import_onnx(str(TWO), DIALOG)
    assert [(c.id, c.name) for c in two.classes] == [(1, "Tea"), (2, "Beer")]
    assert [c.color for c in two.classes] == ["#1f77b4", "#ff7f0e"]  # Tableau 10
    assert [(o.index, o.activation, o.classes) for o in two.outputs] == [
        (0, "softmax", [1]), (1, "softmax", [2])]
    assert two.families() == [[1], [2]]

    soft = import_onnx(str(SOFTMAX), DIALOG)  # no class_names: named by id
    assert [c.name for c in soft.classes] == ["class 1"]
    dummy = import_onnx(str(DUMMY), DIALOG)  # three channels: background + 2 classes
    assert [c.name for c in dummy.classes] == ["class 1", "class 2"]
    assert dummy.families() == [[1, 2]]

    from backend.models.catalog import list_cards, load_card
    ids = [c.id for c in list_cards()]
    for card in (sig, two, soft, dummy):
        assert card.id in ids and load_card(card.id) == card


def test_values_replace_the_files_metadata_and_ids_stay_unique(user_dir, tmp_path):
    f = with_metadata(SIGMOID, tmp_path / "roofs.onnx", resolution=10, tiles_overlap=25,
                      seg_thresh=0.7, seg_small_segment=3,
                      standardization_mean=[0.485, 0.456, 0.406],
                      standardization_std=[0.229, 0.224, 0.225])
    a = import_onnx(str(f))
    assert a.id == "roofs" and a.gsd_m == pytest.approx(0.1) and a.threshold == 0.7
    assert a.overlap == 128 and a.min_area_m2 == pytest.approx(0.09)
    assert a.normalize.mean == [0.485, 0.456, 0.406]
    b = import_onnx(str(f), ImportValues(seg_thresh=0.4), model_id="roofs-low")
    assert b.id == "roofs-low" and b.threshold == 0.4 and b.gsd_m == pytest.approx(0.1)
    # the same file with the same values again: the model already imported
    assert import_onnx(str(f)).id == "roofs"
    assert new_model_id("roofs") == "roofs-2" and new_model_id("pv-unet-efl0") == "pv-unet-efl0-2"
    with pytest.raises(ModelCorrupt, match="exists already") as err:
        import_onnx(str(f), model_id="roofs")
    assert err.value.field == "model"


@pytest.mark.parametrize("kind", ["Detector", "Regressor", "Recognition", "Superresolution"])
def test_other_model_types_are_refused(user_dir, tmp_path, kind):
    f = with_metadata(SIGMOID, tmp_path / "m.onnx", model_type=kind, resolution=3)
    with pytest.raises(ModelCorrupt, match=f"Deepness {kind}.*Segmentor") as err:
        import_onnx(str(f), DIALOG)
    assert err.value.field == "path"
    # a file that does not say: the type given is refused the same way
    with pytest.raises(ModelCorrupt, match="Deepness Detector"):
        import_onnx(str(SOFTMAX), ImportValues(**dict(DIALOG.to_wire(),
                                                      model_type="Detector")))
    # a file that says Detector stays one whatever the values say
    with pytest.raises(ModelCorrupt, match=f"Deepness {kind}"):
        import_onnx(str(f), ImportValues(**dict(DIALOG.to_wire(), model_type="Segmentor")))


def test_what_is_no_segmenter_or_bad_metadata_is_refused(user_dir, tmp_path):
    with pytest.raises(ModelCorrupt, match="4 input channels"):
        import_onnx(str(tiny_graph(tmp_path / "rgba.onnx", in_channels=4)), DIALOG)
    with pytest.raises(ModelCorrupt, match="not a map of the"):
        import_onnx(str(tiny_graph(tmp_path / "pool.onnx", pool=True)),
                    ImportValues(**dict(DIALOG.to_wire(), tiles_size=64)))
    bad = with_metadata(SIGMOID, tmp_path / "bad.onnx", resolution="ten")
    with pytest.raises(ModelCorrupt, match="'resolution' must be a number"):
        import_onnx(str(bad), ImportValues(tiles_overlap=15, seg_thresh=0.5,
                                           seg_small_segment=7))
    names = with_metadata(TWO, tmp_path / "names.onnx", class_names={"0": "a", "1": "b"})
    with pytest.raises(ModelCorrupt, match="one .channel: name. object per output"):
        import_onnx(str(names), DIALOG)
    tile = with_metadata(SIGMOID, tmp_path / "tile.onnx", tiles_size=256)
    rest = ImportValues(resolution=3.0, tiles_overlap=15, seg_thresh=0.5, seg_small_segment=7)
    with pytest.raises(ModelCorrupt, match="tiles_size' is 256 but the graph takes 512"):
        import_onnx(str(tile), rest)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelCorrupt, match="ONNX Runtime can load"):
        import_onnx(str(tmp_path / "junk.onnx"), DIALOG)
    with pytest.raises(ModelNotFound) as err:
        import_onnx(str(tmp_path / "none.onnx"))
    assert err.value.field == "path"


def test_predictor_lays_out_the_outputs_and_pads_fixed_inputs(user_dir):
    from backend.inference.predictors import ImportedPredictor, get_predictor
    dummy = import_onnx(str(DUMMY), DIALOG)  # fixed input [1, 3, 512, 512]: x ** 8
    p = get_predictor(dummy)
    assert isinstance(p, ImportedPredictor) and p.kind == "onnxruntime"
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)  # 3 tiles, 1 a call
    out = p.predict_raw(tiles)
    x8 = (tiles.astype(np.float32) / 255) ** 8
    assert out.shape == (3, 3, 96, 96)
    np.testing.assert_allclose(out[:, 1:], x8[:, 1:], atol=1e-6)  # green, blue: classes
    np.testing.assert_allclose(out[:, 0], x8[:, 0], atol=1e-6)   # red: the background

    two = get_predictor(import_onnx(str(TWO), DIALOG))
    out = two.predict_raw(tiles[:1])
    assert out.shape == (1, 3, 96, 96)
    np.testing.assert_allclose(out[0, 1], out[0, 2])  # its two outputs are the same graph
    np.testing.assert_allclose(out[0, 0], 1 - out[0, 1], atol=1e-6)


def test_imported_models_can_be_ensemble_members_but_not_retrained(user_dir):
    from backend.inference.predictors import EnsemblePredictor, get_predictor
    from backend.learning.retrain import _retrainable
    from backend.models.card import write_card, ModelCard
    from protocol.errors import JobError

    a = import_onnx(str(SIGMOID), DIALOG, model_id="coffee-a")
    import_onnx(str(SIGMOID), ImportValues(**dict(DIALOG.to_wire(), seg_thresh=0.4)),
                model_id="coffee-b")
    folder = imported_dir() / "coffee-ensemble"
    folder.mkdir()
    ens = dict({k: v for k, v in a.to_dict().items() if k not in (
        "format", "outputs", "imported", "normalize", "onnx")},
        id="coffee-ensemble", kind="ensemble",
        members=[{"id": "coffee-a", "weight": 1.0}, {"id": "coffee-b", "weight": 1.0}])
    write_card(ModelCard.from_dict(ens, folder), folder / "card.json")
    from backend.models.catalog import load_card
    p = get_predictor(load_card("coffee-ensemble"))
    assert isinstance(p, EnsemblePredictor) and p.n_members == 2
    tiles = np.random.default_rng(1).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8)
    single = get_predictor(a).predict_raw(tiles)
    np.testing.assert_allclose(p.predict_raw(tiles)[:, :2], single, atol=1e-6)
    with pytest.raises(JobError, match="needs PyTorch weights") as err:
        _retrainable("coffee-a")
    assert err.value.code == "invalid_input"
