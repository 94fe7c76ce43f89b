"""protocol.review: the uncertainty of an object, the review queue, the region request;
the review states a retrain's features carry."""

from __future__ import annotations

import pytest

import protocol as P
from protocol.params import CorrectedFeature, FileSource, RetrainParams
from protocol.results import REVIEW_FIELDS, REVIEW_STATES
from protocol.review import (RegionParams, disagreement, margin_uncertainty, ranks,
                             review_order, uncertainty)


def test_margin_is_one_at_the_threshold_and_zero_at_the_far_end():
    assert margin_uncertainty(0.5, 0.5) == 1.0
    assert margin_uncertainty(1.0, 0.5) == 0.0 and margin_uncertainty(0.0, 0.5) == 0.0
    assert margin_uncertainty(0.75, 0.5) == pytest.approx(0.5)
    # threshold 0.4: the span is 0.6, so a score of 1.0 is 0 and 0.0 is 1/3
    assert margin_uncertainty(1.0, 0.4) == pytest.approx(0.0)
    assert margin_uncertainty(0.0, 0.4) == pytest.approx(1 / 3)


def test_disagreement_peaks_at_a_split_ensemble():
    assert disagreement(0.5) == 1.0
    assert disagreement(1.0) == 0.0 and disagreement(0.0) == 0.0
    assert disagreement(2 / 3) == pytest.approx(2 / 3)


def test_uncertainty_takes_the_larger_of_margin_and_disagreement_for_an_ensemble():
    assert uncertainty(0.95, 0.5, agreement=0.5, members=1) == pytest.approx(0.1)
    assert uncertainty(0.95, 0.5, agreement=0.5, members=2) == 1.0
    assert uncertainty(0.55, 0.5, agreement=1.0, members=3) == pytest.approx(0.9)


def test_the_queue_puts_the_most_uncertain_first_and_user_polygons_last():
    u = [0.1, None, 0.9, 0.5, 0.9]
    areas = [1.0, 50.0, 2.0, 3.0, 8.0]
    assert review_order(u, areas) == [4, 2, 3, 0, 1]
    assert ranks(u, areas) == [4, 5, 2, 3, 1]
    assert review_order([]) == [] and ranks([0.2]) == [1]


def test_a_result_layer_carries_the_review_fields():
    assert [n for n, _ in REVIEW_FIELDS] == ["uncertainty", "rank", "review", "origin"]
    assert REVIEW_STATES == ("pending", "accepted", "deleted", "edited", "added")


def test_region_requests_are_checked_field_by_field():
    p = RegionParams(FileSource("/x.tif"), "pv-unet-efl0", 253420.0, 3600805.0, "EPSG:32651",
                     threshold=0.3, window_px=256)
    header = p.to_header()
    assert header["type"] == "region" and P.validate_request(header) is header
    assert RegionParams.from_header(header) == p
    for bad, msg in (({"x": "a"}, "'x' must be a number"),
                     ({"threshold": 1.0}, "'threshold'"),
                     ({"window_px": 8}, "'window_px'")):
        h = dict(header, **bad)
        with pytest.raises(P.ProtocolError, match=msg):
            P.validate_request(h)
    h = dict(header)
    del h["crs"]
    with pytest.raises(P.ProtocolError, match="crs"):
        P.validate_request(h)


def test_retrain_features_carry_their_review_state_and_the_mode():
    f = CorrectedFeature("POLYGON((0 0,1 0,1 1,0 0))", "photovoltaic", review="deleted")
    assert f.to_wire()["review"] == "deleted" and CorrectedFeature.from_wire(f.to_wire()) == f
    p = RetrainParams(FileSource("/x.tif"), "pv-unet-efl0", (f,), crs="EPSG:32651",
                      mode="review", margin_m=2.0)
    h = p.to_header()
    assert RetrainParams.from_header(P.validate_request(h)) == p
    with pytest.raises(P.ProtocolError, match="'review' must be one of"):
        P.validate_request(dict(h, features=[dict(f.to_wire(), review="maybe")]))
    with pytest.raises(P.ProtocolError, match="'mode'"):
        P.validate_request(dict(h, mode="some"))
