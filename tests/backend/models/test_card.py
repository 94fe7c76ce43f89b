"""backend.models.card: parsing a card and refusing broken ones, what it derives
(outputs, class names, file paths, the public view) and its file round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.models.card import ModelCard, card_path, read_card, write_card
from protocol.errors import InputError, ModelCorrupt, ModelNotFound
from tests.support import DEFAULT_MODEL, REPO, ensemble_card

#: The smallest single-model card.
MINIMAL = {"id": "m", "version": "1.0", "classes": [
    {"id": 1, "name": "photovoltaic", "color": "#ff7f0e"},
    {"id": 2, "name": "solar thermal", "color": "#1f77b4"}],
    "bands": 3, "gsd_m": 0.1, "tile_size": 512, "overlap": 64, "threshold": 0.5,
    "min_area_m2": 2.0, "simplify_m": 0.05, "architecture": "Unet", "encoder": "resnet18",
    "normalize": {"scale": 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def test_a_minimal_card_and_what_it_derives():
    card = ModelCard.from_dict(dict(MINIMAL, note="kept as it is"), Path("/models/m"))
    assert card.num_outputs == 3 and not card.is_ensemble and card.kind == "model"
    assert [card.class_name(1), card.class_name(2)] == ["photovoltaic", "solar thermal"]
    with pytest.raises(KeyError):
        card.class_name(3)
    assert card.weights_path == Path("/models/m/weights.safetensors")
    assert card.onnx_path == Path("/models/m/model.onnx")
    assert card.tta == ["identity"] and card.val_names == [] and card.left_out_names == []
    assert (card.max_hole_m2, card.orthogonalize, card.dtype) == (0.0, False, "uint8")
    public = card.public()
    assert "weights" not in public and "onnx" not in public
    assert public["id"] == "m" and public["note"] == "kept as it is"
    assert public["classes"][1] == {"id": 2, "name": "solar thermal", "color": "#1f77b4"}
    json.dumps(public)  # JSON-safe


@pytest.mark.parametrize("change, words", [
    ({"bands": "three"}, "bands"),
    ({"kind": "stack"}, "kind must be 'model' or 'ensemble', not 'stack'"),
    ({"normalize": None}, "missing field 'normalize'"),
    ({"tta": ["identity", "mirror"]}, "unknown TTA transform(s) ['mirror']"),
])
def test_broken_cards_are_corrupt(change, words):
    with pytest.raises(ModelCorrupt) as e:
        ModelCard.from_dict(dict(MINIMAL, **change), Path("/models/m"))
    assert "model card /models/m is invalid: " in str(e.value) and words in str(e.value)
    missing = {k: v for k, v in MINIMAL.items() if k != "gsd_m"}
    with pytest.raises(ModelCorrupt, match="gsd_m"):
        ModelCard.from_dict(missing)
    with pytest.raises(ModelCorrupt, match="a card must be a JSON object"):
        ModelCard.from_dict([MINIMAL])


def test_ensemble_card_validation():
    with pytest.raises(ModelCorrupt):
        ensemble_card(members=[])
    with pytest.raises(ModelCorrupt):
        ensemble_card(tta=["identity", "mirror"])
    card = ensemble_card(tta=["identity", "hflip"], shifts=True)
    assert card.is_ensemble and [m.id for m in card.members] == [DEFAULT_MODEL]
    assert card.normalize is None  # an ensemble has no weights of its own


def test_updated_cards_are_checked_again():
    card = ModelCard.from_dict(MINIMAL, Path("/models/m"))
    newer = card.updated({"version": "1.1", "threshold": 0.4})
    assert (newer.version, newer.threshold, newer.path) == ("1.1", 0.4, Path("/models/m"))
    assert card.version == "1.0"  # the card itself is unchanged
    assert card.updated({}, Path("/elsewhere")).path == Path("/elsewhere")
    with pytest.raises(ModelCorrupt):
        card.updated({"threshold": "high"})


def test_a_card_file_round_trip_keeps_every_field(tmp_path):
    shipped = REPO / "models" / DEFAULT_MODEL / "card.json"
    card = read_card(shipped)
    assert card.path == shipped.parent and card.id == DEFAULT_MODEL
    written = write_card(card, tmp_path / "card.json")
    assert json.loads(written.read_text()) == json.loads(shipped.read_text())
    assert read_card(written) == card and not (tmp_path / "card.json.tmp").exists()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ModelCorrupt, match="cannot be read"):
        read_card(tmp_path / "bad.json")
    with pytest.raises(ModelCorrupt, match="cannot be read"):
        read_card(tmp_path / "missing.json")


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "a\\b", None, 7])
def test_card_paths_stay_inside_the_root(bad):
    assert card_path(Path("/m"), "pv-1") == Path("/m/pv-1/card.json")
    with pytest.raises(ModelNotFound, match="invalid model id"):
        card_path(Path("/m"), bad)


def test_each_device_runs_its_graph_unless_fp32_is_forced(monkeypatch, tmp_path):
    card = ModelCard.from_dict(dict(MINIMAL, graphs={"cpu": "model.int8.onnx"}), tmp_path)
    int8, fp32 = tmp_path / "model.int8.onnx", tmp_path / "model.onnx"
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    assert card.graph_path("cpu") == fp32  # no INT8 file (setup made none): fp32
    int8.touch()
    assert card.graph_path("cpu") == int8
    assert card.graph_path("cuda") == fp32  # no entry: fp32
    monkeypatch.setenv("ORTHOLENS_PRECISION", "FP32")
    assert card.graph_path("cpu") == fp32
    monkeypatch.setenv("ORTHOLENS_PRECISION", "auto")
    assert card.graph_path("cpu") == int8
    monkeypatch.setenv("ORTHOLENS_PRECISION", "int4")
    with pytest.raises(InputError, match="ORTHOLENS_PRECISION"):
        card.graph_path("cpu")


def test_the_int8_graph_serves_only_layers_as_fine_as_its_quantization_says(monkeypatch,
                                                                            tmp_path):
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    card = ModelCard.from_dict(dict(MINIMAL, graphs={"cpu": "model.int8.onnx"},
                                    quantization={"keep_fp32": ["conv_stem"],
                                                  "max_layer_gsd_m": 0.15}), tmp_path)
    assert card.quantization.keep_fp32 == ["conv_stem"]
    assert card.quantization.method == "minmax"  # the default calibration
    int8, fp32 = tmp_path / "model.int8.onnx", tmp_path / "model.onnx"
    int8.touch()
    assert [card.graph_path("cpu", g) for g in (None, 0.05, 0.1, 0.15)] == [int8] * 4
    assert [card.graph_path("cpu", g) for g in (0.151, 0.2, 0.3, 1.0)] == [fp32] * 4
    assert card.graph_path("cuda", 0.1) == fp32  # no GPU entry
    everywhere = card.updated({"quantization": {"keep_fp32": []}})
    assert everywhere.graph_path("cpu", 1.0) == int8
    with pytest.raises(ModelCorrupt):
        card.updated({"quantization": {"max_layer_gsd_m": "fine"}})


def test_each_device_runs_its_tile_geometry():
    card = ModelCard.from_dict(dict(MINIMAL, tiling={"cpu": {"tile_size": 1024,
                                                             "overlap": 32}}))
    assert card.tile_geometry("cpu") == (1024, 32)
    assert card.tile_geometry("cuda") == (512, 64)  # the card's own
    half = ModelCard.from_dict(dict(MINIMAL, tiling={"cpu": {"overlap": 96}}))
    assert half.tile_geometry("cpu") == (512, 96)
