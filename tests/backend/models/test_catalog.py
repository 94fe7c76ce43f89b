"""backend.models.catalog: loading and listing cards, the default model of a device,
and model ids that cannot leave the models folder (ids that are paths, climb out, hide
or name a version of such a base are refused as not found, before any file is read)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from backend.config import models_dir
from backend.models.catalog import cpu_default_model_id, default_model_id, list_cards, load_card
from protocol.errors import ModelCorrupt, ModelNotFound, VersionError
from tests.support import DEFAULT_MODEL


@pytest.fixture
def roots(tmp_path):
    """A models folder holding one real card, and a card outside it with the same id
    one level up (what a climbing id would reach)."""
    inside = tmp_path / "models"
    inside.mkdir()
    shutil.copytree(models_dir() / DEFAULT_MODEL, inside / DEFAULT_MODEL,
                    ignore=shutil.ignore_patterns("*.onnx", "*.safetensors"))
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "card.json").write_text(json.dumps({"id": "secret"}))
    return inside, outside


@pytest.mark.parametrize("bad", ["../secret", "..", ".", "", "a/../" + DEFAULT_MODEL,
                                 DEFAULT_MODEL + "/../../secret", "/etc", "..\\secret",
                                 ".hidden"])
def test_ids_that_are_paths_are_not_found(roots, bad):
    inside, _ = roots
    assert load_card(DEFAULT_MODEL, inside).id == DEFAULT_MODEL  # the folder itself works
    with pytest.raises(ModelNotFound):
        load_card(bad, inside)


def test_absolute_path_of_a_real_card_is_not_an_id(roots):
    inside, _ = roots
    with pytest.raises(ModelNotFound):
        load_card(str((inside / DEFAULT_MODEL).resolve()), inside)


@pytest.mark.parametrize("bad", ["..@1", "../secret@1", "a/b@1", ".x@2", "@1",
                                 DEFAULT_MODEL + "@x", DEFAULT_MODEL + "@-1"])
def test_version_ids_that_climb_out_are_refused(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("ORTHOLENS_USER_MODELS", str(tmp_path / "user"))
    with pytest.raises((ModelNotFound, VersionError)) as ei:
        load_card(bad)
    assert ei.value.code == "not_found"
    assert not (tmp_path / "user").exists()  # nothing was created while refusing


def test_the_default_model_of_each_device(monkeypatch):
    """The model a new user should get: the fast single model on a CPU daemon, the
    ensemble on a GPU one (models/defaults.json), or the one ORTHOLENS_DEFAULT_MODEL
    names."""
    monkeypatch.delenv("ORTHOLENS_DEFAULT_MODEL", raising=False)
    cards = list_cards()
    ids = [c.id for c in cards]
    assert default_model_id(cards, cuda=False) == DEFAULT_MODEL == cpu_default_model_id()
    assert default_model_id(cards, cuda=True) == ("pv-ensemble" if "pv-ensemble" in ids
                                                  else ids[0])
    other = dataclasses.replace(cards[0], id="pv-other")
    monkeypatch.setenv("ORTHOLENS_DEFAULT_MODEL", "pv-other")
    assert default_model_id(cards + [other], cuda=False) == "pv-other"
    monkeypatch.setenv("ORTHOLENS_DEFAULT_MODEL", "no-such-model")  # ignored
    assert default_model_id(cards + [other], cuda=False) == DEFAULT_MODEL
    monkeypatch.delenv("ORTHOLENS_DEFAULT_MODEL")
    assert default_model_id([], cuda=False) is None
    assert default_model_id(cards[::-1] + [other], cuda=False) == DEFAULT_MODEL


def test_a_folder_without_defaults_offers_its_first_card(roots):
    inside, _ = roots
    cards = list_cards(inside)
    other = dataclasses.replace(cards[0], id="a-first")
    assert default_model_id([other] + cards, cuda=False, root=inside) == "a-first"
    (inside / "defaults.json").write_text(json.dumps({"cpu": DEFAULT_MODEL}))
    assert default_model_id([other] + cards, cuda=False, root=inside) == DEFAULT_MODEL
    (inside / "defaults.json").write_text("[1, 2]")  # not a mapping: ignored
    assert default_model_id([other] + cards, cuda=True, root=inside) == "a-first"


def test_cards_are_listed_by_id_and_broken_ones_skipped(roots):
    inside, _ = roots
    (inside / "b-broken").mkdir()
    (inside / "b-broken" / "card.json").write_text("{not json")
    shutil.copytree(inside / DEFAULT_MODEL, inside / "a-copy")
    card = json.loads((inside / "a-copy" / "card.json").read_text())
    (inside / "a-copy" / "card.json").write_text(json.dumps(dict(card, id="a-copy")))
    assert [c.id for c in list_cards(inside)] == ["a-copy", DEFAULT_MODEL]
    with pytest.raises(ModelCorrupt):
        load_card("b-broken", inside)
    with pytest.raises(ModelNotFound) as e:
        load_card("missing", inside)
    assert str(e.value) == (f"no model 'missing' in {inside} "
                            f"(available: a-copy, {DEFAULT_MODEL})")
