"""A clock the test moves, for code that takes a ``clock`` (a callable returning
monotonic seconds): time passes when the test says so, or by a fixed step at each
reading, never with the machine's load; and the code under test run in a thread while
the test moves it (:func:`in_thread`)."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional


class ManualClock:
    """A monotonic clock, seconds, that moves only by :meth:`advance` or, with a
    ``step``, by ``step`` at each reading (a *step clock*). Thread-safe: the code under
    test may read it in one thread while the test moves it in another.

    Args:
        start: the first reading, seconds.
        step: seconds added at each reading (0: the clock stands still until advanced).
        max_reads: a hang guard: the reading after this many raises AssertionError (the
            code under test never gave up).

    Attributes:
        reads: how many times the clock was read.
    """

    def __init__(self, start: float = 1000.0, step: float = 0.0, max_reads: int = 1_000_000):
        self.t = float(start)
        self.step = float(step)
        self.max_reads = int(max_reads)
        self.reads = 0
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            self.reads += 1
            if self.reads > self.max_reads:
                raise AssertionError(f"the clock was read {self.max_reads} times: the code "
                                     f"under test never stopped waiting")
            self.t += self.step
            self._cond.notify_all()
            return self.t

    def now(self) -> float:
        """The time, without counting as a reading or moving a step clock."""
        with self._cond:
            return self.t

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        with self._cond:
            self.t += float(seconds)

    def tick(self, step: float) -> None:
        """From now on, move ``step`` seconds at each reading (0: stand still)."""
        with self._cond:
            self.step = float(step)

    def wait_reads(self, n: int = 3, timeout_s: float = 60.0,
                   unless: Optional[Callable[[], bool]] = None) -> None:
        """Block until the clock has been read ``n`` more times: the code under test has
        looked at the time since (and acted on what it saw).

        Args:
            n: the readings to wait for.
            timeout_s: a hang guard, real seconds.
            unless: return as soon as this is true too (e.g. the code under test ended
                and reads the clock no more).

        Raises:
            AssertionError: neither within ``timeout_s`` real seconds.
        """
        end = time.monotonic() + timeout_s
        with self._cond:
            target = self.reads + n
            while self.reads < target:
                if unless is not None and unless():
                    return
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the clock was not read {n} times in {timeout_s:g} s")
                self._cond.wait(min(left, 0.05))


@contextlib.contextmanager
def in_thread(clock: ManualClock, fn: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Iterator[Future]:
    """``fn(*args, **kwargs)`` run in a thread of its own, as a ``Future``, while the
    test moves ``clock``. When the block ends and ``fn`` still runs (the test failed),
    the clock jumps a day ahead at each reading, so that every wait of ``fn`` on it
    ends; then the thread is joined."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="in-thread")
    future = pool.submit(fn, *args, **kwargs)
    try:
        yield future
    finally:
        if not future.done():
            clock.tick(86400.0)
        pool.shutdown(wait=True)
