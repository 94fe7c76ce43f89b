"""Keeping a retrained candidate the acceptance rule did not accept."""

from __future__ import annotations

import shutil

import pytest

from backend.models import versions as V
from tests.support import DEFAULT_MODEL, INSIDE, needs_tiles, tile_bounds


@needs_tiles
def test_a_pending_candidate_kept_by_the_user_records_it(user_dir):
    """A candidate the rule did not accept waits as a pending folder; ``keep`` makes it
    a version whose lineage records the rule's verdict and the user's choice; the
    token cannot be used twice; a general candidate kept is made active."""
    from backend.daemon.server import Server
    from backend.models.area import build_area
    from backend.models.catalog import load_card
    from backend.models.pending import keep_pending, save_pending
    from backend.models.version_writer import candidate_dir
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError
    import protocol as P
    card = load_card(DEFAULT_MODEL)

    def pending(area):
        prep = candidate_dir(DEFAULT_MODEL)
        for name in ("weights.safetensors", "model.onnx"):  # as a candidate's export
            shutil.copy(card.path / name, prep / name)
        lineage = {"decision": "undecided", "verdict": "undecided",
                   "reason": "not enough held-out corrections to decide", "scope": area}
        tok = save_pending(card, prep, {"acceptance_rule": "the rule"}, lineage)
        shutil.rmtree(prep)
        return tok

    area = build_area([tile_bounds(INSIDE)[0]], tile_bounds(INSIDE)[1]).to_dict()
    tok = pending(area)
    assert (V.lineage_dir(DEFAULT_MODEL) / f".pending-{tok}" / "weights.safetensors").is_file()
    assert V.describe(DEFAULT_MODEL)["versions"][-1]["id"] == DEFAULT_MODEL  # not a version yet
    with Server(port=0, device="cpu") as srv, OrtholensClient(srv.endpoint) as c:
        d = c.keep(DEFAULT_MODEL, tok, "I checked the strip by eye")
        with pytest.raises(DaemonError) as ei:
            c.keep(DEFAULT_MODEL, tok)
        assert ei.value.code == P.E_NOT_FOUND and "kept already" in str(ei.value)
        with pytest.raises(DaemonError) as ei:
            c.keep(DEFAULT_MODEL, "../../etc")
        assert ei.value.code == P.E_INVALID_INPUT
    vid = d["kept"]
    lin = load_card(vid).lineage
    assert lin.decision == "kept by the user" and lin.verdict == "undecided"
    assert lin.to_dict()["kept"]["note"] == "I checked the strip by eye"
    assert lin.in_use is True and V.area_ids(DEFAULT_MODEL) == [vid]
    assert load_card(vid).acceptance_rule == "the rule"
    assert not (V.lineage_dir(DEFAULT_MODEL) / f".pending-{tok}").exists()
    general = keep_pending(DEFAULT_MODEL, pending(None))
    assert V.active_id(DEFAULT_MODEL) == general["kept"] == general["active"]
