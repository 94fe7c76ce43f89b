"""The version store: switching the active version and rolling back."""

from __future__ import annotations

import pytest

from backend.models import versions as V
from backend.models.version_writer import write_version
from tests.support import DEFAULT_MODEL, needs_real, shipped_digest, shipped_state


@needs_real
def test_activate_switches_and_rollback_goes_to_the_parent(user_dir):
    from backend.models.catalog import load_card
    before = shipped_digest()
    card, state = shipped_state()
    v1 = write_version(card, state, {"threshold": 0.55}, {"corrections": 3,
                                                         "metrics": {"x": 1}}, export=False)
    write_version(v1, state, {}, {"corrections": 5}, export=False)
    d = V.activate(f"{DEFAULT_MODEL}@2")
    assert d["active"] == f"{DEFAULT_MODEL}@2"
    assert [v["active"] for v in d["versions"]] == [False, False, True]
    assert load_card(f"{DEFAULT_MODEL}@2").lineage.active is True
    assert V.rollback(DEFAULT_MODEL)["active"] == f"{DEFAULT_MODEL}@1"   # one call: to the parent
    assert V.rollback(f"{DEFAULT_MODEL}@1")["active"] == DEFAULT_MODEL
    with pytest.raises(V.VersionError, match="nothing|no earlier"):
        V.rollback(DEFAULT_MODEL)
    with pytest.raises(V.VersionError):
        V.activate(f"{DEFAULT_MODEL}@9")
    assert shipped_digest() == before  # shipped models are never written
