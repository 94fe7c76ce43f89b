"""Fine-tuning: its configuration from a request, how many steps fit its budget, and
the training loop's use of its share of the budget and of cancellation, on a clock the
test moves (training steps that only take time)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from protocol.errors import JobCancelled
from tests.support import DEFAULT_MODEL, ManualClock

def test_a_default_retrain_allows_a_pixel_iou_drop_of_0_02_not_more():
    """The tolerance a retrain applies when the request names none: a guard drop of
    0.020 passes, 0.021 does not, and the rule stated in the card says 0.02."""
    from backend.learning.acceptance import ACCEPTANCE_RULE, decide
    from backend.learning.finetune import RetrainConfig
    from protocol.params import FileSource, RetrainParams

    params = RetrainParams(source=FileSource("/x.tif"), model=DEFAULT_MODEL, features=())
    cfg = RetrainConfig.from_params(params)
    assert cfg.max_iou_drop == RetrainConfig().max_iou_drop == 0.02
    before = {"user_holdout": {"object_errors": 2, "object_f1": 0.8, "pixel_iou": 0.8},
              "guard": {"pixel_iou": 0.88}}
    for guard_after, accepted in ((0.86, True), (0.859, False)):
        after = {"user_holdout": {"object_errors": 1, "object_f1": 0.8, "pixel_iou": 0.8},
                 "guard": {"pixel_iou": guard_after}}
        assert decide(before, after, cfg.max_iou_drop)[0] is accepted, guard_after
    rule = ACCEPTANCE_RULE.format(max_iou_drop=cfg.max_iou_drop)
    assert rule.count("drops by at most 0.02") == 2
    assert cfg.from_params(RetrainParams(source=FileSource("/x.tif"), model=DEFAULT_MODEL,
                                         features=(), max_iou_drop=0.05)).max_iou_drop == 0.05


def test_expected_steps_fit_the_budget():
    from backend.learning.finetune import expected_steps
    assert expected_steps(10, 20.0, 60.0, None, 2.0) == 30
    assert expected_steps(10, 20.0, 60.0, 15, 2.0) == 15
    assert expected_steps(10, 70.0, 60.0, None, 2.0) == 10


def _timed_steps(monkeypatch, clock: ManualClock, step_s: float):
    """Make every training step of ``backend.learning.finetune._fit`` take ``step_s``
    seconds of ``clock`` and nothing else (no data, no model); returns the list that
    receives the clock's time at the end of each step."""
    from backend.learning import finetune as F
    ends = []

    def step(model, opt, x, loss, device):
        clock.advance(step_s)
        ends.append(clock.now())
        return 0.5

    monkeypatch.setattr(F, "_batch", lambda *args: (None, None, None))
    monkeypatch.setattr(F, "optimizer_step", step)
    return ends


def _fit(cfg, clock, progress=None, cancelled=None):
    from backend.learning.finetune import _fit as fit
    return fit(None, SimpleNamespace(param_groups=[{"lr": 1e-3}, {"lr": 1e-4}]), None,
               SimpleNamespace(classes=["photovoltaic"]), cfg, np.random.default_rng(0),
               "cpu", progress or (lambda f, m: None), cancelled, clock)


def test_training_uses_the_share_of_the_budget_the_plan_gives_it(monkeypatch):
    """A 60 s retrain whose data took 10 s to read: the plan leaves the training what the
    gate's estimate does not need, and the training runs steps of 0.5 s until that
    share is used, never starting one that would end after it."""
    from backend.learning import time_plan as T
    from backend.learning.finetune import RetrainConfig
    clock = ManualClock()
    plan = T.TimePlan(60.0, None, clock)
    clock.advance(10.0)
    monkeypatch.setattr(T, "_MEASURED", {})  # no export measured yet: the default
    train_s = plan.plan_training(1e-5, 1_500_000, "cpu")
    # the gate: export, 1.5 Mpx at 1e-5 s with the margin, saving
    assert train_s == pytest.approx(60 - 10 - (10.0 + 1.5 * 15 + 2.0))  # 15.5 s
    ends = _timed_steps(monkeypatch, clock, 0.5)
    messages = []
    start = clock.now()
    fit = _fit(RetrainConfig(budget_s=train_s), clock, lambda f, m: messages.append(m))
    assert fit.steps == len(ends) == int(train_s // 0.5) == 31
    assert train_s - 0.5 < fit.seconds <= train_s and ends[-1] - start <= train_s
    # every progress message expects the 31 steps that fit the share
    assert len(messages) >= 5
    assert all(re.match(r"step \d+/31, loss ", m) for m in messages), messages


def test_training_stops_at_its_first_step_once_cancelled(monkeypatch):
    """Cancelled after 3 s of a 600 s training: no step starts after the flag turned
    true (the cancellation takes at most the step under way)."""
    from backend.learning.finetune import RetrainConfig
    clock = ManualClock()
    ends = _timed_steps(monkeypatch, clock, 0.5)
    start = clock.now()
    with pytest.raises(JobCancelled):
        _fit(RetrainConfig(budget_s=600.0), clock,
             cancelled=lambda: clock.now() - start >= 3.0)
    assert len(ends) == 6 and ends[-1] - start == 3.0
