"""protocol.choice: the model for a layer's GSD, the rule both the engine and the dock
apply."""

from __future__ import annotations

import pytest

from protocol.choice import ModelRange, candidates_from_cards, choose_for_gsd

FINE = ModelRange("fine", 0.05, 0.15, 0.1)
COARSE = ModelRange("coarse", 0.15, 0.45, 0.3)


@pytest.mark.parametrize("gsd, model, inside", [
    (0.05, "fine", True), (0.1, "fine", True), (0.149, "fine", True),
    (0.15, "coarse", True), (0.3, "coarse", True), (0.449, "coarse", True),
    (0.45, "coarse", False), (1.0, "coarse", False), (0.02, "fine", False)])
def test_the_first_range_holding_the_gsd_else_the_nearest(gsd, model, inside):
    c = choose_for_gsd([FINE, COARSE], gsd)
    assert (c.model, c.inside, c.layer_gsd_m) == (model, inside, gsd)
    if inside:
        assert f"{model} serves" in c.why
    else:
        assert "outside every model's range (fine 0.05-0.15 m, coarse 0.15-0.45 m)" in c.why


def test_order_is_preference_where_ranges_overlap():
    wide = ModelRange("wide", 0.05, 0.5, 0.1)
    assert choose_for_gsd([wide, COARSE], 0.3).model == "wide"
    assert choose_for_gsd([COARSE, wide], 0.3).model == "coarse"


def test_a_layer_far_coarser_than_every_model_is_told_what_to_expect():
    c = choose_for_gsd([FINE, COARSE], 1.0)
    assert c.model == "coarse" and not c.inside
    assert "missed" in c.why and "1.00 m" in c.why
    assert c.to_wire() == {"by": "gsd", "model": "coarse", "layer_gsd_m": 1.0,
                           "inside": False, "why": c.why}


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), None, "0.1"])
def test_a_gsd_must_be_a_positive_number(bad):
    with pytest.raises(ValueError):
        choose_for_gsd([FINE], bad)
    with pytest.raises(ValueError):
        choose_for_gsd([], 0.1)


def test_candidates_from_card_dicts_in_the_order_given():
    cards = [{"id": "a", "gsd_m": 0.1}, {"id": "b", "gsd_m": 0.3, "gsd_range_m": [0.2, 0.5]}]
    got = candidates_from_cards(cards, ["b", "missing", "a"])
    assert [c.id for c in got] == ["b", "a"]
    assert (got[0].low, got[0].high, got[0].gsd_m) == (0.2, 0.5, 0.3)
    # a card without a range serves a factor of 1.5 either side of its own GSD
    assert got[1].low == pytest.approx(0.1 / 1.5) and got[1].high == pytest.approx(0.15)
