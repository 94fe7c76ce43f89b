"""protocol.results: the one attribute schema of result polygons, as the protocol
documents it (docs/protocol.md) and as a batch job's GeoPackage stores it (the
engine's features: tests/backend/inference/test_objects.py; the plugin's layers:
tests/plugin/layers/test_schema.py)."""

from __future__ import annotations

import re

from protocol.results import RESULT_FIELD_NAMES, RESULT_FIELDS, REVIEW_FIELDS
from tests.support import REPO


def test_the_fields_in_column_order_with_their_kinds():
    assert RESULT_FIELDS == (("class", "str"), ("class_id", "int"), ("score", "float"),
                             ("agreement", "float"), ("area_m2", "float"), ("model", "str"),
                             ("model_version", "str"), ("detected_at", "str"))
    assert RESULT_FIELD_NAMES == tuple(name for name, _ in RESULT_FIELDS)
    assert len(set(RESULT_FIELD_NAMES)) == len(RESULT_FIELD_NAMES)


def test_the_protocol_documents_the_fields_a_feature_carries():
    """Every field but ``detected_at`` (stamped by the side that writes the layer) is in
    the documented ``result`` feature, beside its ``wkt``, and the engine's
    ``uncertainty``, the first review field (the others are the layer's own)."""
    text = (REPO / "docs" / "protocol.md").read_text("utf-8")
    m = re.search(r"A `result` feature is `\{([^}]*)\}`", text.replace("\n", " "))
    assert m, "docs/protocol.md no longer describes a result feature"
    documented = [f.strip().strip('"') for f in m.group(1).split(",")]
    assert documented == (["wkt"] + [n for n in RESULT_FIELD_NAMES if n != "detected_at"]
                          + [REVIEW_FIELDS[0][0]])
    assert REVIEW_FIELDS[0][0] == "uncertainty"
    assert "stamps `detected_at`" in text


def test_a_batch_geopackage_has_one_column_per_field_and_its_region(tmp_path):
    import numpy as np
    from pyogrio.raw import read

    from backend.inference.batch.gpkg import GpkgWriter
    from backend.inference.batch.regions import RegionResult

    feat = {"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))", "class": "photovoltaic",
            "class_id": 1, "score": 0.9, "agreement": 1.0, "area_m2": 1.0, "model": "m",
            "model_version": "1"}
    w = GpkgWriter(str(tmp_path / "o.gpkg"), "detections", "EPSG:32651",
                   detected_at="2024-05-01T12:00:00+00:00")
    w.append(RegionResult(3, [feat]))
    meta, _, _, fields = read(str(tmp_path / "o.gpkg"), layer="detections")[:4]
    assert list(meta["fields"]) == list(RESULT_FIELD_NAMES) + ["region"]
    row = {n: col[0] for n, col in zip(meta["fields"], fields)}
    assert (row["class"], int(row["class_id"]), float(row["score"]), int(row["region"])) == (
        "photovoltaic", 1, 0.9, 3)
    assert np.issubdtype(np.asarray(fields[1]).dtype, np.integer)
    assert str(row["detected_at"]).startswith("2024-05-01")


def test_attribute_values_put_each_field_in_its_own_column():
    """Every field lands in its own column, converted to its kind: a model id and a
    card version that differ can never be swapped or copied into each other."""
    from protocol.results import LAYER_FIELDS, attribute_values

    feat = {"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))", "class": "photovoltaic",
            "class_id": "1", "score": "0.75", "agreement": 0.5, "area_m2": 12,
            "model": "pv-unet-efl0@2", "model_version": "2.0.0+u1", "uncertainty": 0.25,
            "rank": 3.0}
    when = object()
    values = dict(zip([n for n, _ in LAYER_FIELDS], attribute_values(feat, when)))
    assert values == {"class": "photovoltaic", "class_id": 1, "score": 0.75,
                      "agreement": 0.5, "area_m2": 12.0, "model": "pv-unet-efl0@2",
                      "model_version": "2.0.0+u1", "detected_at": when,
                      "uncertainty": 0.25, "rank": 3, "review": "pending",
                      "origin": "detection"}
    assert [type(values[k]) for k in ("class_id", "score", "area_m2", "rank")] == \
        [int, float, float, int]


def test_attribute_values_keep_a_given_review_state_and_leave_the_rest_null():
    from protocol.results import LAYER_FIELDS, attribute_values

    names = [n for n, _ in LAYER_FIELDS]
    values = dict(zip(names, attribute_values(
        {"class": "photovoltaic", "review": "deleted", "origin": "click", "model": None},
        "2024-05-01T12:00:00Z")))
    assert values["review"] == "deleted" and values["origin"] == "click"
    assert values["detected_at"] == "2024-05-01T12:00:00Z"
    assert [k for k, v in values.items() if v is None] == [
        "class_id", "score", "agreement", "area_m2", "model", "model_version",
        "uncertainty", "rank"]
    assert len(values) == len(names)
