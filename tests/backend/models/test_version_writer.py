"""Writing user versions: atomically, numbered, with their lineage."""

from __future__ import annotations

import json

import pytest

from backend.models import versions as V
from backend.models.version_writer import write_version
from tests.support import DEFAULT_MODEL, needs_real, shipped_digest, shipped_state


@needs_real
def test_a_version_is_written_atomically_with_its_lineage(user_dir):
    from backend.models.catalog import list_cards, load_card
    from protocol.errors import ModelNotFound
    before = shipped_digest()
    card, state = shipped_state()
    # a trainer killed just before the rename leaves no version
    with pytest.raises(KeyboardInterrupt):
        write_version(card, state, {}, {"corrections": 1}, export=False,
                      before_rename=lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
    # ... and one killed harder (SIGKILL) leaves only a .tmp-* folder that nobody lists
    (V.lineage_dir(DEFAULT_MODEL) / ".tmp-deadbeef").mkdir(parents=True)
    (V.lineage_dir(DEFAULT_MODEL) / ".tmp-deadbeef" / "weights.safetensors").write_bytes(b"half")
    assert [c.id for c in list_cards() if "@" in c.id] == []
    with pytest.raises(ModelNotFound):
        load_card(f"{DEFAULT_MODEL}@1")

    v1 = write_version(card, state, {"threshold": 0.55}, {"corrections": 3,
                                                         "metrics": {"x": 1}}, export=False)
    assert v1.id == f"{DEFAULT_MODEL}@1" and v1.version == f"{card.version}+u1" and v1.threshold == 0.55
    v2 = write_version(v1, state, {}, {"corrections": 5}, export=False)
    assert v2.id == f"{DEFAULT_MODEL}@2"
    lin = json.loads((V.lineage_dir(DEFAULT_MODEL) / "2" / "lineage.json").read_text())
    assert lin["parent"] == f"{DEFAULT_MODEL}@1" and lin["corrections"] == 5 and lin["created"]
    ids = [c.id for c in list_cards()]
    assert DEFAULT_MODEL in ids and f"{DEFAULT_MODEL}@1" in ids and f"{DEFAULT_MODEL}@2" in ids
    assert load_card(f"{DEFAULT_MODEL}@2").path == V.lineage_dir(DEFAULT_MODEL) / "2"
    assert V.active_id(DEFAULT_MODEL) == DEFAULT_MODEL  # written, not yet active
    assert shipped_digest() == before  # shipped models are never written
