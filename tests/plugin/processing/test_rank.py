"""*Rank for review*: a layer of result polygons without the review fields (as a batch
job writes them) gets them, with the uncertainty of ``protocol.review`` and the ranks
of its queue."""

from __future__ import annotations

import pytest
from qgis.core import (QgsCoordinateReferenceSystem, QgsField, QgsFields, QgsProject,
                       QgsVectorLayer)

from helpers import fake_result
from proc_helpers import run_alg


def test_rank_adds_the_review_fields_in_place(provider, tmp_path, qgis_new_project):
    from plugin.layers.gpkg import result_features, write_features
    from plugin.layers.schema import _KINDS, result_fields, utc_datetime
    from protocol import results
    fields = QgsFields()
    for name, kind in results.RESULT_FIELDS[:-1]:  # a batch job's table, no review
        fields.append(QgsField(name, _KINDS[kind]))
    res = fake_result()
    full = result_features(res, result_fields(), utc_datetime("2024-05-06T07:08:09Z"))
    feats = []
    for f in full:
        g = type(f)(fields)
        g.setGeometry(f.geometry())
        for name in fields.names():
            g.setAttribute(name, f[name])
        feats.append(g)
    path = tmp_path / "batch.gpkg"
    write_features(feats, fields, QgsCoordinateReferenceSystem("EPSG:32651"), str(path), "d")
    layer = QgsVectorLayer(f"{path}|layername=d", "batch", "ogr")
    QgsProject.instance().addMapLayer(layer)
    assert "review" not in layer.fields().names()
    out, ok, _ = run_alg("ortholens:rank", {"INPUT": layer.id(), "THRESHOLD": 0.5,
                                            "MEMBERS": 1})
    assert ok and out["RANKED"] == 2 and out["OUTPUT"] == layer.id()
    rows = sorted((f["score"], f["uncertainty"], f["rank"], f["review"], f["origin"])
                  for f in QgsVectorLayer(f"{path}|layername=d", "again", "ogr").getFeatures())
    # score 0.66 is nearer the threshold than 0.91: it comes first
    assert rows == [(0.66, pytest.approx(0.68), 1, "pending", "detection"),
                    (0.91, pytest.approx(0.18), 2, "pending", "detection")]
    # with two members, the polygon half of them vote for is as uncertain as can be
    layer2 = QgsVectorLayer(f"{path}|layername=d", "batch2", "ogr")
    QgsProject.instance().addMapLayer(layer2)
    layer2.dataProvider().changeAttributeValues(
        {f.id(): {layer2.fields().indexOf("uncertainty"): None} for f in layer2.getFeatures()})
    out, ok, _ = run_alg("ortholens:rank", {"INPUT": layer2.id(), "THRESHOLD": 0.5,
                                            "MEMBERS": 2})
    u = {f["agreement"]: f["uncertainty"] for f in layer2.getFeatures()}
    assert ok and u == {1.0: pytest.approx(0.18), 0.5: 1.0}
