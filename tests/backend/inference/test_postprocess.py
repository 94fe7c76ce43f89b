"""Object filters and outline regularisation of the post-processing."""

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from backend.inference.postprocess import filter_objects, orthogonalize


def _probs(cmap: np.ndarray, p_fg: np.ndarray) -> np.ndarray:
    """(2, H, W) probabilities with foreground probability ``p_fg`` on ``cmap == 1``."""
    fg = np.where(cmap == 1, p_fg, 0.05).astype(np.float32)
    return np.stack([1 - fg, fg])


def test_filters_drop_ragged_and_unsure_objects_and_keep_compact_ones():
    cmap = np.zeros((60, 60), np.uint8)
    cmap[5:15, 5:25] = 1                      # compact rectangle, solidity 1
    for i in range(12):                       # a staircase sliver, solidity about 0.5
        cmap[30 + i, 5 + 2 * i:8 + 2 * i] = 1
    cmap[45:55, 40:50] = 1                    # compact but unsure
    p = np.full(cmap.shape, 0.95, np.float32)
    p[45:55, 40:50] = 0.7
    probs = _probs(cmap, p)

    assert filter_objects(cmap, probs, 1) is cmap
    solid = filter_objects(cmap, probs, 1, min_solidity=0.8)
    assert solid[5:15, 5:25].all() and solid[45:55, 40:50].all()
    assert not solid[30:42].any()
    sure = filter_objects(cmap, probs, 1, min_score=0.8)
    assert sure[5:15, 5:25].all() and sure[30:42].sum() == cmap[30:42].sum()
    assert not sure[45:55, 40:50].any()
    both = filter_objects(cmap, probs, 1, min_solidity=0.8, min_score=0.8)
    assert both.sum() == 200 and both[5:15, 5:25].all()


def test_filters_touch_only_the_class_they_judge():
    cmap = np.zeros((20, 20), np.uint8)
    cmap[2:8, 2:8] = 1
    cmap[10:18, 10:18] = 2
    probs = np.zeros((3, 20, 20), np.float32)
    probs[1][cmap == 1] = 0.6
    probs[2][cmap == 2] = 0.95
    probs[0] = 1 - probs[1] - probs[2]
    out = filter_objects(cmap, probs, 2, min_score=0.8)
    assert not (out == 1).any() and (out == 2).sum() == 64


@pytest.mark.parametrize("angle", [0, 17, 45])
def test_rectangles_keep_the_outline_area_and_centre(angle):
    stairs = Polygon([(0, 0), (10, 0), (10, 4), (9.5, 4), (9.5, 4.5), (0, 4.5)])
    stairs = shapely.affinity.rotate(stairs, angle, origin=(0, 0))
    rect = orthogonalize(stairs, 0.85)
    assert len(rect.exterior.coords) == 5
    assert rect.area == pytest.approx(stairs.area, rel=1e-9)
    assert rect.centroid.distance(stairs.centroid) < 0.1
    assert stairs.intersection(rect).area / stairs.union(rect).area > 0.95


def test_shapes_far_from_a_rectangle_stay_as_traced():
    ell = Polygon([(0, 0), (10, 0), (10, 2), (2, 2), (2, 10), (0, 10)])
    assert orthogonalize(ell, 0.85) is ell
