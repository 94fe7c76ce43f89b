"""The post-processing of coarser layers: a card's ``postprocess_by_gsd`` entry applies
to layers from its ``from_gsd_m`` up, the card's own to finer ones, and a request's
own threshold wins over both.

Detections run the shipped model on a real held-out tile averaged down to 0.3 m as
coarser orthophotos are made (and on the tile itself, 0.1 m), through a card that
carries an entry for 0.25 m and coarser.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from backend.inference.detect import run_detect
from backend.inference.pipeline import Options
from backend.models.card import ModelCard
from backend.models.gsd_postprocess import GsdPostprocess, entry_for
from protocol.params import DetectParams, FileSource
from tests.support import DEFAULT_MODEL, PV01_BLOCK, REPO, heldout, needs_real

ENTRY = {"from_gsd_m": 0.25, "threshold": 0.35, "min_area_m2": 0.5, "max_hole_m2": 0.0,
         "min_solidity": 0.0, "min_score": 0.0}


def _entries(*froms):
    return [GsdPostprocess.from_dict(dict(ENTRY, from_gsd_m=f)) for f in froms]


@pytest.mark.parametrize("gsd, want", [(None, None), (0.1, None), (0.2, None), (0.25, 0.25),
                                       (0.3, 0.25), (0.45, 0.4), (1.0, 0.4)])
def test_the_entry_for_a_layer_is_the_coarsest_one_not_above_its_gsd(gsd, want):
    e = entry_for(_entries(0.4, 0.25), gsd)
    assert (e.from_gsd_m if e else None) == want


def _card(tmp_path, entry=True) -> ModelCard:
    d = json.loads((REPO / "models" / DEFAULT_MODEL / "card.json").read_text())
    if entry:
        d["postprocess_by_gsd"] = [ENTRY]
    return ModelCard.from_dict(d, tmp_path)


def test_options_take_the_entry_for_coarse_layers_and_the_card_for_fine_ones(tmp_path):
    card = _card(tmp_path)
    assert card.threshold != ENTRY["threshold"]
    fine, coarse = Options.resolve(card, None, 0.1), Options.resolve(card, None, 0.3)
    assert (fine.threshold, fine.min_area_m2, fine.min_score) == (
        card.threshold, card.min_area_m2, card.min_score)
    assert (coarse.threshold, coarse.min_area_m2, coarse.min_score) == (0.35, 0.5, 0.0)
    asked = Options.resolve(card, DetectParams(FileSource("x.tif"), threshold=0.7), 0.3)
    assert asked.threshold == 0.7 and asked.min_area_m2 == 0.5
    assert ModelCard.from_dict(card.to_dict(), tmp_path).postprocess_by_gsd == \
        card.postprocess_by_gsd


@pytest.fixture
def model_folder(tmp_path, monkeypatch):
    """``<tmp>/models/<DEFAULT_MODEL>``: the shipped model with :data:`ENTRY`, and
    without it as ``plain``."""
    src = REPO / "models" / DEFAULT_MODEL
    root = tmp_path / "models"
    for mid, entry in ((DEFAULT_MODEL, True), ("plain", False)):
        d = root / mid
        d.mkdir(parents=True)
        card = json.loads((src / "card.json").read_text())
        card["id"] = mid
        card.pop("postprocess_by_gsd", None)
        if entry:
            card["postprocess_by_gsd"] = [ENTRY]
        for key in ("weights", "onnx"):
            os.symlink(src / card[key], d / card[key])
        (d / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("ORTHOLENS_MODELS", str(root))
    return root


def _coarse_layer(tmp_path, factor: int):
    """A held-out tile averaged down by ``factor`` (GDAL's average, as coarser
    orthophotos are made)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(heldout(PV01_BLOCK[0])) as ds:
        h, w = ds.height // factor, ds.width // factor
        data = ds.read(out_shape=(ds.count, h, w), resampling=Resampling.average)
        prof = dict(ds.profile, height=h, width=w,
                    transform=ds.transform @ ds.transform.scale(ds.width / w, ds.height / h))
    path = tmp_path / f"coarse_{factor}.tif"
    with rasterio.open(path, "w", **prof) as out:
        out.write(data)
    return path


@needs_real
def test_a_coarse_layer_is_post_processed_with_its_entry(model_folder, tmp_path):
    coarse = _coarse_layer(tmp_path, 3)
    fine = heldout(PV01_BLOCK[0])
    with_entry = run_detect(DetectParams(FileSource(str(coarse)), DEFAULT_MODEL), [])
    without = run_detect(DetectParams(FileSource(str(coarse)), "plain"), [])
    at_fine = run_detect(DetectParams(FileSource(str(fine)), DEFAULT_MODEL), [])
    assert with_entry["stats"]["threshold"] == 0.35
    assert without["stats"]["threshold"] == at_fine["stats"]["threshold"] != 0.35
    # same probabilities, a lower threshold and no score filter: at least the area
    area = [sum(f["area_m2"] for f in r["features"]) for r in (with_entry, without)]
    assert area[0] > area[1] > 0
    assert np.isclose(with_entry["stats"]["source_gsd_m"], 0.3, rtol=0.02)
