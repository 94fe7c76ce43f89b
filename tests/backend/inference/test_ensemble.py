"""The shipped ensemble on real imagery: its probabilities are the mean of its members'
(each run alone through the same pipeline), its polygons are those of that mean
post-processed by hand, and each polygon's ``agreement`` is the share of members whose
own mean probability over the polygon's pixels reaches the threshold."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pytest
import shapely
from rasterio.features import geometry_mask
from scipy import ndimage

from backend.inference.detect import run_detect
from backend.inference.objects import features
from backend.inference.pipeline import Options, detections_from_probs
from backend.models.catalog import list_cards, load_card
from tests.support import VIENNA, heldout, needs_real

ENSEMBLE = "pv-ensemble"
HAVE_ENSEMBLE = any(c.id == ENSEMBLE for c in list_cards())
pytestmark = pytest.mark.skipif(not HAVE_ENSEMBLE, reason="the ensemble does not ship")

#: Seven panel arrays on several roofs, every one found by every member.
BLOCK_TILE = heldout("PV01_325190_1204243")
#: 40 m x 40 m of the Vienna scene (EPSG:31256, metres) around roof structures that
#: one member takes for panels at a threshold of 0.35.
VIENNA_EXTENT = [-1455.0, 338538.0, -1415.0, 338578.0]
#: Post-processing that keeps weak objects (no score filter) at a low threshold.
LOOSE = {"threshold": 0.35, "min_score": 0.0, "min_area_m2": 1.0}


def _run(model: str, path, extent=None, overrides=None) -> Tuple[Dict, np.ndarray, object]:
    """``(result, stitched probabilities float32 (channels, H, W), (valid mask, grid))``
    of one detection of ``model`` on the raster at ``path``."""
    got: List = []
    req = {"type": "detect", "model": model, "source": {"kind": "file", "path": str(path)}}
    if extent is not None:
        req["extent"] = extent
    res = run_detect(req, [], overrides=overrides,
                     on_probs=lambda p, v, g: got.append((p.copy(), v.copy(), g)))
    probs, valid, grid = got[0]
    return res, probs, (valid, grid)


def _member_fg(model: str, path, extent=None, overrides=None) -> np.ndarray:
    """A member's panel probability float32 (H, W), run alone."""
    _, probs, _ = _run(model, path, extent, overrides)
    return probs[1]


def _component(wkt: str, fused: np.ndarray, threshold: float, grid) -> np.ndarray:
    """bool (H, W): the 8-connected component of ``fused >= threshold`` that holds most
    of the polygon's pixels (the object the polygon was traced from; the grid's CRS is
    the raster's here)."""
    inside = geometry_mask([shapely.from_wkt(wkt)], out_shape=(grid.height, grid.width),
                           transform=grid.transform, invert=True)
    lab, _ = ndimage.label(fused >= threshold, structure=np.ones((3, 3), bool))
    ids, counts = np.unique(lab[inside & (lab > 0)], return_counts=True)
    return lab == ids[np.argmax(counts)]


@pytest.fixture(scope="module")
def block():
    """The ensemble's detection of :data:`BLOCK_TILE` and each member's own panel
    probability there: ``(result, probs, (valid, grid), [member fg])``."""
    res, probs, vg = _run(ENSEMBLE, BLOCK_TILE)
    return res, probs, vg, [_member_fg(m.id, BLOCK_TILE) for m in load_card(ENSEMBLE).members]


@needs_real
def test_the_ensembles_polygons_are_the_members_mean_post_processed_by_hand(block):
    card = load_card(ENSEMBLE)
    res, probs, (valid, grid), fg = block
    mean = np.mean(fg, axis=0)
    # channels: background, panel, then each member's panel probability
    assert probs.shape[0] == 2 + len(card.members)
    np.testing.assert_allclose(probs[1], mean, atol=1e-5)
    np.testing.assert_allclose(probs[0], 1.0 - mean, atol=1e-5)
    for k, member in enumerate(fg):
        np.testing.assert_allclose(probs[2 + k], member, atol=1e-6)

    by_hand = np.concatenate([np.stack([1.0 - mean, mean]), np.stack(fg)]).astype(np.float32)
    _, dets = detections_from_probs(by_hand, valid, grid, card, Options.resolve(card))
    want = features(dets, card, grid, threshold=card.threshold)
    key = lambda f: (f["wkt"], f["score"], f["agreement"])  # noqa: E731
    assert len(res["features"]) == 7
    assert sorted(map(key, res["features"])) == sorted(map(key, want))


@needs_real
def test_agreement_is_the_share_of_members_that_find_the_object(block):
    card = load_card(ENSEMBLE)
    n = len(card.members)
    # held-out panels: every member's own mean probability over each is above threshold
    res, probs, (_, grid), fg = block
    for f in res["features"]:
        px = _component(f["wkt"], probs[1], card.threshold, grid)
        assert all(m[px].mean() >= card.threshold for m in fg)
        assert f["agreement"] == 1.0

    # Vienna roofs at a low threshold: objects found by one member, and by two
    res, probs, (_, grid) = _run(ENSEMBLE, VIENNA, VIENNA_EXTENT, LOOSE)
    fg = [_member_fg(m.id, VIENNA, VIENNA_EXTENT, LOOSE) for m in card.members]
    shares = set()
    for f in res["features"]:
        px = _component(f["wkt"], probs[1], LOOSE["threshold"], grid)
        votes = sum(m[px].mean() >= LOOSE["threshold"] for m in fg)
        assert f["agreement"] == pytest.approx(votes / n, abs=1e-4), f["wkt"]
        shares.add(round(f["agreement"], 4))
    assert round(1 / n, 4) in shares and round(2 / n, 4) in shares
