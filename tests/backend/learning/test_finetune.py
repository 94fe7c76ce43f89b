"""Fine-tuning: its configuration from a request, and how many steps fit its budget."""

from __future__ import annotations

from tests.support import DEFAULT_MODEL

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
