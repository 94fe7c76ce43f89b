"""How a retrain job spends its time budget."""

from __future__ import annotations

import pytest

class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_time_plan_gives_training_what_preparing_and_checking_leave():
    from backend.learning import time_plan as T
    events = []
    clock = _Clock()
    plan = T.TimePlan(60.0, lambda f, m: events.append((f, m)), clock)
    plan.report("preparing data", "reading reviewed area 1/1")
    clock.t += 10.0  # reading took 10 s; the model ran at 1e-5 s per pixel
    T._MEASURED.pop("export_s", None)
    train = plan.plan_training(1e-5, 1_500_000, "cpu")
    # gate: export + 15 s of model time for 1.5 Mpx (with the margin) + saving; the
    # training gets the rest of the 60 s
    check = T.EXPORT_S["cpu"] + T.CHECK_MARGIN * 15 + T.SAVE_S
    assert plan.check_s == pytest.approx(check) and 10 < train < 60
    assert train == pytest.approx(60 - 10 - check)
    plan.report("training", "step 3/40, loss 0.500")
    assert events[-1][1] == "training: step 3/40, loss 0.500 — about 50 s left"
    assert events[-1][0] == pytest.approx(10 / 60)
    clock.t += train
    plan.training_done()
    plan.report("evaluating the gate", "the held-out corrections")
    clock.t += 20.0
    plan.report("saving", "the new version")
    clock.t += 5.0
    t = plan.summary()
    assert t["preparing_s"] == 10.0 and t["training_s"] == pytest.approx(train, abs=0.1)
    assert t["checking_s"] == 20.0 and t["saving_s"] == 5.0
    assert t["seconds"] == pytest.approx(10 + train + 25, abs=0.1) and t["within_budget"]
    assert t["train_budget_s"] == round(train, 1)
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0
    assert all(" left" in m or "finishing" in m for _, m in events)
    # preparing alone fills the budget: the least training time, and the job is late
    clock = _Clock()
    plan = T.TimePlan(30.0, None, clock)
    clock.t += 40.0
    assert plan.plan_training(1e-5, 1_000_000, "cpu") == T.MIN_TRAIN_S
    clock.t += T.MIN_TRAIN_S + 5
    assert not plan.summary()["within_budget"]
    assert T.left_text(0.4) == "finishing" and T.left_text(7.2) == "about 7 s left"
    assert T.left_text(43) == "about 45 s left" and T.left_text(400) == "about 7 min left"
