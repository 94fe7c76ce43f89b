"""The retrain result window says each thing once."""

from __future__ import annotations

from plugin.retrain.dialogs import result_notes


def test_an_overrun_budget_is_stated_once_with_the_advice():
    report = {"time": {"seconds": 163.0, "budget_s": 120.0, "within_budget": False,
                       "training_s": 24.0},
              "train": {"steps": 1},
              "warnings": ["the retrain took 163 s, over its 120 s budget: preparing the "
                           "data and evaluating the gate alone took 139 s here; give a "
                           "larger budget or review a smaller area",
                           "2 corrected feature(s) lie outside every reviewed area"]}
    notes = result_notes(report)
    assert sum("budget" in n for n in notes) == 1
    assert notes[0] == ("Took 163 s — over the 120 s budget (24 s training, 1 steps); "
                        "give a larger budget or review a smaller area.")
    assert "2 corrected feature(s) lie outside every reviewed area." in notes


def test_a_budget_kept_has_no_advice_and_keeps_other_warnings():
    report = {"time": {"seconds": 80.0, "budget_s": 120.0, "training_s": 50.0},
              "train": {"steps": 9}, "warnings": ["budget note from the engine"]}
    notes = result_notes(report)
    assert notes == ["Took 80 s of the 120 s budget (50 s training, 9 steps)."]


def test_the_phases_are_listed():
    report = {"time": {"seconds": 110.0, "budget_s": 120.0, "preparing_s": 20.4,
                       "training_s": 68.0, "checking_s": 19.6, "saving_s": 2.0},
              "train": {"steps": 107}}
    notes = result_notes(report)
    assert notes == ["Took 110 s of the 120 s budget (68 s training, 107 steps).",
                     "Phases: preparing the data 20 s, training 68 s, checking 20 s, "
                     "saving 2 s."]
