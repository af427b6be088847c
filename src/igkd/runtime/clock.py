"""Running time: wall time less the spans the process was stopped.

A campaign on a shared CPU is paused with SIGSTOP while the test suite runs, or a job with Ctrl-Z; wall time then
counts minutes in which nothing ran. :func:`running_seconds` leaves them out, so epoch times, training times and
the budget's prediction of the next epoch describe the work. A daemon thread wakes every ``TICK_S``: a gap of more
than ``STOP_GAP_S`` between two wake-ups, less the process's CPU time in it, is a stop. CPU time tells a stop from a
busy process (a long call that holds the GIL keeps the CPU busy; a stopped process uses none), so a process merely
starved of CPU by others is not credited with a stop unless its thread could not wake for ``STOP_GAP_S``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

TICK_S = 0.5
STOP_GAP_S = 2.0  # a sleeping thread that wakes this late was not scheduled at all: the process was stopped


class StopWatch:
    """Seconds of ``clock`` less the stops found between calls of :meth:`check` (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.process_time) -> None:
        self._clock, self._cpu_clock = clock, cpu_clock
        self._lock = threading.Lock()
        self._last, self._last_cpu = clock(), cpu_clock()
        self.stopped_seconds = 0.0

    def check(self) -> None:
        """Count the stop, if any, since the last check."""
        with self._lock:
            now, cpu = self._clock(), self._cpu_clock()
            gap = now - self._last
            if gap > STOP_GAP_S:
                self.stopped_seconds += max(0.0, gap - (cpu - self._last_cpu))
            self._last, self._last_cpu = now, cpu

    def seconds(self) -> float:
        """``clock()`` less every stop so far: differences of two readings are running time."""
        self.check()
        return self._clock() - self.stopped_seconds


_watch: StopWatch | None = None
_watch_lock = threading.Lock()


def _tick(watch: StopWatch) -> None:
    while True:
        time.sleep(TICK_S)
        watch.check()


def running_seconds() -> float:
    """A clock that stands still while the process is stopped (the first call starts the watcher thread)."""
    global _watch
    with _watch_lock:
        if _watch is None:
            _watch = StopWatch()
            threading.Thread(target=_tick, args=(_watch,), name="igkd-stop-watch", daemon=True).start()
    return _watch.seconds()


def _forget_in_child() -> None:  # a forked child has no watcher thread: its first call starts its own
    global _watch, _watch_lock
    _watch, _watch_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
