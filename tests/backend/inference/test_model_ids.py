"""Model ids cannot leave the models folder: ids that are paths, climb out, hide or
name a version of such a base are refused as not found, before any file is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.config import models_dir
from backend.models.catalog import load_card
from protocol.errors import ModelNotFound, VersionError

MODEL = "pv-unet-efl0"


@pytest.fixture
def roots(tmp_path):
    """A models folder holding one real card, and a card outside it with the same id
    one level up (what a climbing id would reach)."""
    inside = tmp_path / "models"
    inside.mkdir()
    shutil.copytree(models_dir() / MODEL, inside / MODEL,
                    ignore=shutil.ignore_patterns("*.onnx", "*.safetensors"))
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "card.json").write_text(json.dumps({"id": "secret"}))
    return inside, outside


@pytest.mark.parametrize("bad", ["../secret", "..", ".", "", "a/../" + MODEL,
                                 MODEL + "/../../secret", "/etc", "..\\secret",
                                 ".hidden"])
def test_ids_that_are_paths_are_not_found(roots, bad):
    inside, _ = roots
    assert load_card(MODEL, inside).id == MODEL  # the folder itself works
    with pytest.raises(ModelNotFound):
        load_card(bad, inside)


def test_absolute_path_of_a_real_card_is_not_an_id(roots):
    inside, _ = roots
    with pytest.raises(ModelNotFound):
        load_card(str((inside / MODEL).resolve()), inside)


@pytest.mark.parametrize("bad", ["..@1", "../secret@1", "a/b@1", ".x@2", "@1",
                                 MODEL + "@x", MODEL + "@-1"])
def test_version_ids_that_climb_out_are_refused(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("ORTHOLENS_USER_MODELS", str(tmp_path / "user"))
    with pytest.raises((ModelNotFound, VersionError)) as ei:
        load_card(bad)
    assert ei.value.code == "not_found"
    assert not (tmp_path / "user").exists()  # nothing was created while refusing
