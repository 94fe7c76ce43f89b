"""backend.learning.quantize: the INT8 graph of the shipped model against its fp32 graph
on a real held-out tile, and when a card's INT8 graph is made again."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import rasterio

from backend.inference.predictors import OnnxPredictor
from backend.learning import quantize as Q
from backend.models.catalog import load_card
from protocol.errors import ModelNotFound
from tests.support import DEFAULT_MODEL, INSIDE, needs_tiles


@pytest.fixture(scope="module")
def int8_card(tmp_path_factory):
    """The shipped model's card in a temporary folder with ``model.onnx`` and its INT8
    graph calibrated on two train tiles, as the card's CPU graph."""
    folder = tmp_path_factory.mktemp("quant") / DEFAULT_MODEL
    folder.mkdir()
    src = load_card(DEFAULT_MODEL)
    shutil.copy(src.path / "model.onnx", folder / "model.onnx")
    card = src.updated({"graphs": {"cpu": Q.INT8_FILE}}, folder)
    chips = list(Q.calibration_chips(card, n_tiles=2))
    assert Q.quantize_onnx(card, chips=chips) == folder / Q.INT8_FILE
    return card


@needs_tiles
def test_int8_probabilities_stay_close_to_fp32_on_a_real_tile(int8_card, monkeypatch):
    """On a held-out tile with panels the INT8 graph's panel probability differs from
    the fp32 graph's by 0.05 on average and flips under 2 % of the pixels at 0.5."""
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    with rasterio.open(INSIDE) as ds:
        x = ds.read()[None, :3]
    q = OnnxPredictor(int8_card)
    f = OnnxPredictor(int8_card.updated({"graphs": {}}))
    assert (q.graph, f.graph) == (Q.INT8_FILE, "model.onnx")
    pq, pf = q.predict_raw(x)[0, 1], f.predict_raw(x)[0, 1]
    assert (pf >= 0.5).mean() > 0.01  # the tile has panels
    assert float(np.abs(pq - pf).mean()) < 0.05
    assert float(((pq >= 0.5) != (pf >= 0.5)).mean()) < 0.02
    assert os.path.getsize(q.card.graph_path("cpu")) < 0.4 * os.path.getsize(
        f.card.onnx_path)


def test_an_int8_graph_is_made_again_only_where_asked_and_stale(int8_card, tmp_path):
    assert not Q.stale(int8_card)  # just made
    assert not Q.stale(int8_card.updated({"graphs": {}}))  # not asked for
    onnx = int8_card.onnx_path
    later = os.path.getmtime(int8_card.graph_path("cpu")) + 10
    os.utime(onnx, (later, later))
    assert Q.stale(int8_card)  # older than its fp32 graph
    empty = int8_card.updated({}, tmp_path)
    assert not Q.stale(empty)  # no fp32 graph to quantize
    with pytest.raises(ModelNotFound):
        Q.quantize_onnx(empty, chips=[])
