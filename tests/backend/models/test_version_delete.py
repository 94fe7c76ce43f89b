"""Deleting versions, and the version in use in an extent (``versions`` with an
extent): what may go, what needs a confirmed roll back, and numbers never reused."""

from __future__ import annotations

import pytest

from backend.models import versions as V
from backend.models.version_delete import delete_version
from backend.models.version_writer import write_version
from protocol.errors import E_INVALID_INPUT, E_NOT_FOUND, VersionError
from protocol.version_params import DeleteParams
from tests.support import (INSIDE, INSIDE_2, DEFAULT_MODEL as MODEL, OUTSIDE,
                           make_area_version, needs_real, needs_tiles,
                           shipped_digest, shipped_state, tile_bounds)


@needs_real
def test_delete_refuses_the_shipped_model_and_a_version_in_use_unless_confirmed(user_dir):
    before = shipped_digest()
    card, state = shipped_state()
    v1 = write_version(card, state, {}, {"corrections": 1}, export=False)
    v2 = write_version(v1, state, {}, {"corrections": 2}, export=False)
    V.activate(v2.id)
    with pytest.raises(VersionError, match="shipped model") as exc:
        delete_version(DeleteParams(MODEL))
    assert exc.value.code == E_INVALID_INPUT
    with pytest.raises(VersionError, match="active version.*roll it back first") as exc:
        delete_version(DeleteParams(v2.id))
    assert exc.value.code == E_INVALID_INPUT and V.active_id(MODEL) == v2.id
    with pytest.raises(VersionError) as exc:
        delete_version(DeleteParams(f"{MODEL}@9"))
    assert exc.value.code == E_NOT_FOUND
    # confirmed: rolled back to its parent, then deleted; its files go, its record stays
    d = delete_version(DeleteParams(v2.id, roll_back=True))
    assert d["deleted"] == v2.id and d["rolled_back"] is True
    assert d["active"] == v1.id and [v["id"] for v in d["versions"]] == [MODEL, v1.id]
    gone = V.lineage_dir(MODEL) / ".deleted-2"
    assert sorted(p.name for p in gone.iterdir()) == ["card.json", "deleted.json",
                                                      "lineage.json"]
    # a version not in use goes at once; the next version never takes a deleted number
    V.activate(MODEL)
    d = delete_version(DeleteParams(v1.id))
    assert d["rolled_back"] is False and V.version_numbers(MODEL) == []
    v3 = write_version(card, state, {}, {"corrections": 3}, export=False)
    assert v3.id == f"{MODEL}@3" and V.used_numbers(MODEL) == [1, 2, 3]
    assert shipped_digest() == before


@needs_tiles
def test_area_version_in_use_is_taken_out_of_use_then_deleted_and_here_follows(user_dir):
    vid = make_area_version([INSIDE])
    inside, crs = tile_bounds(INSIDE_2)
    here = V.describe_here(MODEL, inside, crs)["here"]
    assert here["model"] == vid and "taught on this area" in here["why"]
    outside = V.describe_here(MODEL, *tile_bounds(OUTSIDE))["here"]
    assert outside["model"] == MODEL and outside["why"].startswith("no version of")
    assert "was used" not in outside["why"]
    chosen = V.describe_here(vid, *tile_bounds(OUTSIDE))["here"]
    assert chosen["model"] == vid and "chosen" in chosen["why"]
    assert "here" not in V.describe_here(MODEL, None, None)
    with pytest.raises(VersionError, match="in use in its area"):
        delete_version(DeleteParams(vid))
    d = delete_version(DeleteParams(vid, roll_back=True))
    assert d["rolled_back"] is True and V.area_ids(MODEL) == []
    assert V.describe_here(MODEL, inside, crs)["here"]["model"] == MODEL


@needs_real
def test_delete_and_versions_here_through_the_daemon(user_dir):
    """The ``delete`` and ``versions`` requests of :class:`protocol.client.
    OrtholensClient` reach the version store; refusals keep their code."""
    from backend.daemon.server import Server
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError

    card, state = shipped_state()
    v1 = write_version(card, state, {}, {"corrections": 1}, export=False)
    V.activate(v1.id)
    server = Server(port=0, device="test")
    server.start_in_thread()
    try:
        with OrtholensClient(server.endpoint) as c:
            d = c.versions(MODEL, extent=tile_bounds(OUTSIDE)[0],
                           extent_crs=tile_bounds(OUTSIDE)[1])
            assert d["here"]["model"] == MODEL and d["active"] == v1.id
            with pytest.raises(DaemonError) as exc:
                c.delete(v1.id)
            assert exc.value.code == E_INVALID_INPUT and "active version" in str(exc.value)
            d = c.delete(v1.id, roll_back=True)
            assert d["deleted"] == v1.id and d["active"] == MODEL
    finally:
        server.stop()
