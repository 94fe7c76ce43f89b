"""Elapsed time and time left of long runs (``plugin.timeleft``)."""

from __future__ import annotations

from plugin.timeleft import TimeLeft, duration_text, rounded_left


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_time_left_from_the_pace_since_the_first_report():
    clock = Clock()
    tl = TimeLeft(clock)
    clock.t += 20  # the engine starts: not part of the pace
    tl.update(0.10)
    assert tl.left_s() is None
    assert tl.decorate("12/169 regions") == ("12/169 regions — 20 s elapsed, estimating "
                                             "the time left")
    clock.t += 30
    tl.update(0.40)  # 30 % in 30 s: 60 s for the 60 % left
    assert abs(tl.left_s() - 60.0) < 1e-9
    assert tl.decorate("51/169 regions, 40 polygons") == (
        "51/169 regions, 40 polygons — 50 s elapsed, about 60 s left")
    clock.t += 10  # no news for 10 s: 10 s less to go
    assert tl.text() == "1 min 00 s elapsed, about 50 s left"


def test_a_message_with_its_own_time_left_gets_the_elapsed_time_only():
    clock = Clock()
    tl = TimeLeft(clock)
    clock.t += 75
    assert tl.decorate("training: step 12/40, loss 0.31 — about 35 s left") == (
        "training: step 12/40, loss 0.31 — 1 min 15 s elapsed, about 35 s left")


def test_durations_read_as_people_say_them():
    assert [duration_text(s) for s in (0, 8.4, 65, 3725)] == ["0 s", "8 s", "1 min 05 s",
                                                              "1 h 02 min"]
    assert [rounded_left(s) for s in (1, 41, 170, 4800)] == [
        "about 5 s", "about 40 s", "about 3 min", "about 1 h 20 min"]
