"""Model cards: the card a detection uses and the versions of a lineage."""

from __future__ import annotations

import pytest

from plugin.cards import base_id, default_card, lineage_cards, pick_card
from protocol.errors import ModelNotFound

CARDS = [{"id": "pv-fpn-efl0"}, {"id": "pv-unet-efl0", "default": True},
         {"id": "pv-unet-efl0@1", "lineage": {"number": 1}}]


def test_the_default_card_is_the_flagged_one_else_the_first():
    assert default_card(CARDS)["id"] == "pv-unet-efl0"
    assert default_card(CARDS[:1])["id"] == "pv-fpn-efl0"
    assert default_card([]) is None


def test_pick_card_by_id_or_the_default():
    assert pick_card(CARDS, None)["id"] == "pv-unet-efl0"
    assert pick_card(CARDS, "pv-unet-efl0@1") is CARDS[2]
    with pytest.raises(ModelNotFound, match="available: pv-fpn-efl0, pv-unet-efl0, "):
        pick_card(CARDS, "pv-x")
    with pytest.raises(ModelNotFound, match="no models installed"):
        pick_card([], None)


def test_a_lineage_is_the_versions_of_one_shipped_model():
    assert base_id("pv-unet-efl0@3") == "pv-unet-efl0" == base_id("pv-unet-efl0")
    assert lineage_cards(CARDS, CARDS[2]) == CARDS[1:]
    assert lineage_cards(CARDS, None) == []
