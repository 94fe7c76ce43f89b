"""Elapsed time and time left of a long run, from its measured throughput.

One :class:`TimeLeft` per run (a dock detection, a retrain, a batch job followed by a
Processing algorithm or the job table) is fed the run's progress (fraction 0..1) and
adds to each progress message how long the run has taken and, once enough progress was
measured, how long it will still take at the pace measured since its first progress
report (waiting for the engine to start or load its model is left out of the pace)::

    "12/169 regions, 40 polygons — 2 min 05 s elapsed, about 7 min left"

A message that already says what is left (the engine's retrain phases do) only gets
the elapsed time, before it.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

#: Least progress (fraction) and seconds measured before a time left is given.
MIN_FRACTION, MIN_SECONDS = 0.02, 3.0


def duration_text(seconds: float) -> str:
    """``"8 s"``, ``"1 min 05 s"``, ``"1 h 02 min"`` of a number of seconds (>= 0)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def rounded_left(seconds: float) -> str:
    """A time left as people say it: ``"about 40 s"`` (5 s steps under a minute),
    ``"about 3 min"`` (whole minutes under an hour), ``"about 1 h 20 min"``."""
    s = max(0.0, seconds)
    if s < 60:
        return f"about {max(5, int(round(s / 5.0)) * 5)} s"
    if s < 3600:
        return f"about {int(round(s / 60.0))} min"
    return f"about {int(s // 3600)} h {int(round((s % 3600) / 60.0)):02d} min"


class TimeLeft:
    """The elapsed time and time left of one run.

    Args:
        clock: seconds of a monotonic clock (tests pass their own).

    Attributes:
        started: the clock when the run started (the object was made).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self._first: Optional[tuple] = None  # (clock, fraction) of the first report
        self._last: Optional[tuple] = None

    def update(self, fraction: float) -> None:
        """Record the run's progress, a fraction 0..1 (values outside are clipped)."""
        f = min(1.0, max(0.0, float(fraction)))
        now = self.clock()
        if self._first is None:
            self._first = (now, f)
        self._last = (now, f)

    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    def left_s(self) -> Optional[float]:
        """Seconds still needed at the pace measured since the first report, or None
        before :data:`MIN_FRACTION` and :data:`MIN_SECONDS` were measured."""
        if self._first is None or self._last is None:
            return None
        (t0, f0), (t1, f1) = self._first, self._last
        if f1 - f0 < MIN_FRACTION or t1 - t0 < MIN_SECONDS:
            return None
        rate = (f1 - f0) / (t1 - t0)
        return max(0.0, (1.0 - f1) / rate - (self.clock() - t1))

    def text(self) -> str:
        """``"2 min 05 s elapsed, about 7 min left"``, or ``"… elapsed, estimating the
        time left"`` before enough was measured."""
        left = self.left_s()
        tail = f"{rounded_left(left)} left" if left is not None else "estimating the time left"
        return f"{duration_text(self.elapsed_s())} elapsed, {tail}"

    def decorate(self, message: str) -> str:
        """``message`` with :meth:`text` after a dash. A message that already says what
        is left (``"… — about 35 s left"``, the engine's retrain phases) gets only the
        elapsed time, in the same place: ``"… — 1 min 10 s elapsed, about 35 s
        left"``."""
        message = str(message or "").strip()
        elapsed = duration_text(self.elapsed_s())
        if " — about " in message and message.endswith(" left"):
            return message.replace(" — about ", f" — {elapsed} elapsed, about ", 1)
        return f"{message} — {self.text()}" if message else self.text()


__all__ = ["MIN_FRACTION", "MIN_SECONDS", "duration_text", "rounded_left", "TimeLeft"]
