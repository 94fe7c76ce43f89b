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
    graph made with the card's recipe but calibrated on two train tiles, as the card's
    CPU graph."""
    folder = tmp_path_factory.mktemp("quant") / DEFAULT_MODEL
    folder.mkdir()
    src = load_card(DEFAULT_MODEL)
    shutil.copy(src.path / "model.onnx", folder / "model.onnx")
    recipe = dict(src.to_dict()["quantization"], calibration_tiles=2)
    card = src.updated({"graphs": {"cpu": Q.INT8_FILE}, "quantization": recipe}, folder)
    assert Q.quantize_onnx(card) == folder / Q.INT8_FILE
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
    os.utime(int8_card.graph_path("cpu"), (later + 1, later + 1))
    assert not Q.stale(int8_card)
    other = int8_card.updated({"quantization": {"keep_fp32": ["conv_stem"]}})
    assert Q.stale(other)  # made with another recipe than the card's
    empty = int8_card.updated({}, tmp_path)
    assert not Q.stale(empty)  # no fp32 graph to quantize
    with pytest.raises(ModelNotFound):
        Q.quantize_onnx(empty, chips=[])


def test_the_nodes_a_card_keeps_in_fp32_stay_float(tmp_path):
    """``keep_fp32`` leaves the first convolution's weights float32 (no INT8 copy with
    its DequantizeLinear), while the next convolutions' weights are INT8."""
    import onnx
    card = load_card(DEFAULT_MODEL)
    out = Q.quantize_onnx(card, tmp_path / "q.onnx",
                          chips=list(Q.calibration_chips(card, n_tiles=1)),
                          keep_fp32=["conv_stem"])
    g = onnx.load(str(out)).graph
    producers = {o: n for n in g.node for o in n.output}
    int8 = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.INT8}

    def weight_is_int8(conv):
        w = producers.get(conv.input[1])
        return w is not None and w.op_type == "DequantizeLinear" and w.input[0] in int8

    convs = [n for n in g.node if n.op_type == "Conv"]
    assert "conv_stem" in convs[0].name and not weight_is_int8(convs[0])
    assert sum(weight_is_int8(c) for c in convs[1:]) == len(convs) - 1


@needs_tiles
def test_the_shipped_card_runs_int8_on_fine_layers_and_fp32_on_coarse(tmp_path, monkeypatch):
    """A detection of a real 0.1 m held-out tile runs the shipped INT8 graph; the same
    tile averaged down to 0.3 m, outside the graph's ``max_layer_gsd_m``, runs fp32;
    ``ORTHOLENS_PRECISION=fp32`` runs fp32 on both."""
    from backend.inference.detect import run_detect
    from backend.inference.predictors import forget_predictors
    from protocol.params import DetectParams, FileSource
    from tools.evaluate import coarser_copy
    monkeypatch.delenv("ORTHOLENS_PRECISION", raising=False)
    card = load_card(DEFAULT_MODEL)
    assert card.graphs == {"cpu": Q.INT8_FILE} and card.quantization.max_layer_gsd_m < 0.2
    coarse, _, _ = coarser_copy(INSIDE, INSIDE.with_name(f"{INSIDE.stem}_mask.tif"), 0.3,
                                tmp_path)

    def ran(path):
        st = run_detect(DetectParams(FileSource(str(path)), DEFAULT_MODEL), [])["stats"]
        return st["graph"], st["precision"], round(st["source_gsd_m"], 2)

    assert ran(INSIDE) == (Q.INT8_FILE, "int8", 0.1)
    assert ran(coarse) == ("model.onnx", "fp32", 0.3)
    monkeypatch.setenv("ORTHOLENS_PRECISION", "fp32")
    forget_predictors()
    try:
        assert ran(INSIDE)[:2] == ("model.onnx", "fp32")
    finally:
        forget_predictors()
