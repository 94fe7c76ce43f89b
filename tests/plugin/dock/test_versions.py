"""The dock's versions section: when Make active and Roll back can act, and why not."""

from __future__ import annotations

from plugin.dock.versions import ACTIVATE_TIP, ROLLBACK_TIP, version_buttons

SHIPPED = {"id": "m", "lineage": {"active": True, "number": 0}}
RETRAINED = {"id": "m@1", "lineage": {"number": 1}}


def test_a_shipped_model_has_nothing_to_roll_back_to():
    can = version_buttons([SHIPPED, RETRAINED], SHIPPED)
    assert can.activate_why == "m is already the active version"
    assert can.rollback_why == ("m is the shipped model and has no earlier version to "
                                "roll back to")
    can = version_buttons([SHIPPED, RETRAINED], RETRAINED)
    assert can.activate_why is None and can.activate_tip == ACTIVATE_TIP
    assert can.rollback_why is not None


def test_a_retrained_active_version_can_be_rolled_back():
    active = dict(RETRAINED, lineage={"number": 1, "active": True})
    can = version_buttons([dict(SHIPPED, lineage={}), active], dict(SHIPPED, lineage={}))
    assert can.activate_why is None and can.rollback_why is None
    assert can.rollback_tip == ROLLBACK_TIP


def test_an_area_version_is_put_in_and_out_of_use():
    area = {"id": "m@2", "lineage": {"number": 2, "scope": {"area_km2": 0.27},
                                     "in_use": True}}
    can = version_buttons([SHIPPED, area], area)
    assert can.activate_why == "m@2 is already used in its area"
    assert can.rollback_why is None
    assert can.rollback_tip == "Stop using m@2 in its area (its files are kept)"
    unused = dict(area, lineage=dict(area["lineage"], in_use=False))
    can = version_buttons([SHIPPED, unused], unused)
    assert can.activate_why is None and can.rollback_why == "m@2 is not in use"
    assert can.activate_tip == "Use m@2 again for detections in its area"


def test_nothing_acts_while_a_job_runs_or_before_models_are_listed():
    busy = version_buttons([SHIPPED], SHIPPED, busy=True)
    assert busy.activate_why == busy.rollback_why == "Wait until the running job has finished"
    switching = version_buttons([SHIPPED], SHIPPED, switching=True)
    assert switching.rollback_why == "A version switch is on its way"
    assert version_buttons([], None).activate_why == "Models are listed once the daemon runs"
