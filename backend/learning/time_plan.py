"""How a retrain job spends its time budget, and what its progress events say.

The budget covers the whole job: preparing the data, training, evaluating the gate and
saving (:class:`TimePlan`). The training gets what the other steps leave, estimated
from the speed of the current model while the reviewed areas were read
(:class:`TimedPredictor`) and the export time of the last candidate
(:func:`remember_export_s`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from backend.inference.predictors import Predictor

Progress = Callable[[float, str], None]

#: Seconds assumed to export and load a candidate until one was measured, per device:
#: about twice the 1.0-1.4 s ``pv-unet-efl0``'s candidates took on the 2-core CPU.
EXPORT_S = {"cpu": 3.0, "cuda": 2.0}
#: Seconds assumed to write an accepted version.
SAVE_S = 2.0
#: Factor on the gate's estimated model time (post-processing, metrics, a busy machine):
#: the gate of a retrain over 0.25 km² of Vienna (``build.py walkthrough``) took 1.16
#: and 1.24 times the model's time on its pixels on the idle 2-core CPU.
CHECK_MARGIN = 1.3
#: Least training time, seconds, when preparing and checking alone fill the budget.
MIN_TRAIN_S = 10.0
#: Fewest training steps a retrain is expected to take: below it (a busy machine, a
#: budget the other phases fill) the report says so. 20 steps of 8 chips is about 3
#: passes over a few dozen corrected objects, where the pv01 measurements of
#: ``build.py retrain-eval`` first see a change.
MIN_TRAIN_STEPS = 20
#: Measured in this process: ``export_s``, the last candidate's export and load time.
_MEASURED: Dict[str, float] = {}


def remember_export_s(seconds: float) -> None:
    """Keep the time a candidate took to export and load, seconds: the next
    :meth:`TimePlan.plan_training` of this process assumes it."""
    _MEASURED["export_s"] = seconds
#: The phases of a retrain job as its progress messages name them.
PHASES = ("preparing data", "training", "evaluating the gate", "saving")


def left_text(seconds: float) -> str:
    """``"about 7 s left"``, ``"about 40 s left"`` (5 s steps from 20 s), ``"about 3 min
    left"`` (from 2 minutes), ``"finishing"`` (under a second); ``seconds``: the time
    left, s."""
    if seconds < 1.0:
        return "finishing"
    if seconds < 20.0:
        return f"about {int(round(seconds))} s left"
    if seconds < 120.0:
        return f"about {int(round(seconds / 5.0)) * 5} s left"
    return f"about {int(round(seconds / 60.0))} min left"


class TimedPredictor:
    """A predictor that counts the seconds spent in ``predict_raw`` (``seconds``); every
    other attribute is the wrapped predictor's.

    Args:
        predictor: the predictor measured.
    """

    def __init__(self, predictor: Predictor):
        self._predictor = predictor
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def credit(self, seconds: float) -> None:
        """Count ``seconds`` the model would have taken on pixels whose predictions
        were reused (``backend.inference.recent``): the plan's speed stays the model's."""
        self.seconds += float(seconds)

    def predict_raw(self, tiles: np.ndarray) -> np.ndarray:
        """The wrapped predictor's ``predict_raw``, timed."""
        t = time.monotonic()
        try:
            return self._predictor.predict_raw(tiles)
        finally:
            self.seconds += time.monotonic() - t


class TimePlan:
    """How a retrain job spends its time budget, and what its progress events say.

    The budget covers the whole job: preparing the data (reading the reviewed areas and
    running the current model on them), training, evaluating the gate and saving. Once
    the data is read, :meth:`plan_training` estimates what the gate will need from the
    speed of the current model on the reviewed areas (seconds per pixel; the candidate
    has the same architecture) and gives the training the rest, at least :data:`MIN_TRAIN_S` (then the job ends
    after its budget, and the report says so).

    Every event reads ``"<phase>: <detail> — about N s left"`` (phases
    :data:`PHASES`); its fraction is elapsed / (elapsed + time left), never decreasing,
    so the progress bar and the time left agree.

    Args:
        budget_s: the whole job's budget, seconds.
        progress: the job's progress callback, or None.
        clock: monotonic time source, seconds (tests pass a fake one).

    Attributes:
        t0: start (``clock()``); end: the planned end; fraction: the last fraction sent;
        marks: phase -> seconds since ``t0`` when it began; train_s, check_s: the
        training time given and the gate's estimated time (set by
        :meth:`plan_training`).
    """

    def __init__(self, budget_s: float, progress: Optional[Progress] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.budget_s = float(budget_s)
        self.progress = progress or (lambda f, m: None)
        self.clock = clock
        self.t0 = clock()
        self.end = self.t0 + self.budget_s
        self.fraction = 0.0
        self.marks: Dict[str, float] = {}
        self.train_s: Optional[float] = None
        self.check_s: Optional[float] = None

    def elapsed_s(self) -> float:
        """Seconds since the job started."""
        return self.clock() - self.t0

    def left_s(self) -> float:
        """Seconds to the planned end (0 once it has passed)."""
        return max(0.0, self.end - self.clock())

    def report(self, phase: str, detail: str = "") -> None:
        """Send one progress event of ``phase`` (one of :data:`PHASES`); the first
        event of a phase marks its start."""
        self.marks.setdefault(phase, self.elapsed_s())
        el, left = self.elapsed_s(), self.left_s()
        f = el / (el + left) if el + left > 0 else 1.0
        self.fraction = max(self.fraction, min(f, 0.99))
        self.progress(self.fraction, f"{phase}{': ' + detail if detail else ''} — "
                                     f"{left_text(left)}")

    def plan_training(self, px_s: float, check_px: int, device: str) -> float:
        """The training budget, seconds, once the data is read.

        Args:
            px_s: seconds the current model took per pixel of the reviewed areas while
                they were read (:class:`TimedPredictor`); the candidate is assumed as fast.
            check_px: pixels the gate will run the models on (held-out and trained-on
                areas, the guard tiles twice, or once when the current model's guard
                numbers are known), at the model GSD.
            device: ``"cpu"`` or ``"cuda"`` (the export time assumed before one was
                measured).
        """
        read_s = self.elapsed_s()
        export = _MEASURED.get("export_s", EXPORT_S.get(device, EXPORT_S["cpu"]))
        self.check_s = export + CHECK_MARGIN * px_s * int(check_px) + SAVE_S
        self.train_s = max(MIN_TRAIN_S, self.budget_s - read_s - self.check_s)
        self.end = max(self.t0 + self.budget_s, self.clock() + self.train_s + self.check_s)
        return self.train_s

    def training_done(self) -> None:
        """Training ended (perhaps early): the end is now the gate's estimate away."""
        self.end = self.clock() + (self.check_s or 0.0)

    def summary(self) -> Dict[str, Any]:
        """``{budget_s, seconds, preparing_s, training_s, checking_s, saving_s,
        train_budget_s, within_budget}`` (seconds, rounded to 0.1; a phase not reached
        is absent, and ``train_budget_s``, the training's planned share, before
        :meth:`plan_training`)."""
        total = self.elapsed_s()
        out: Dict[str, Any] = {"budget_s": self.budget_s, "seconds": round(total, 1)}
        if self.train_s is not None:
            out["train_budget_s"] = round(self.train_s, 1)
        names = [p for p in PHASES if p in self.marks]
        for i, p in enumerate(names):
            stop = self.marks[names[i + 1]] if i + 1 < len(names) else total
            key = {"preparing data": "preparing_s", "training": "training_s",
                   "evaluating the gate": "checking_s", "saving": "saving_s"}[p]
            out[key] = round(stop - self.marks[p], 1)
        # a second of slack: the last event and the reply are not the job's doing
        out["within_budget"] = total <= self.budget_s + 1.0
        return out
