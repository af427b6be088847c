"""Running time leaves out the spans a process was stopped, and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import sets, tiny_overrides
from igkd.runtime.clock import STOP_GAP_S, TICK_S, StopWatch

STOP_S = 3.0  # longer than STOP_GAP_S, so a stop of this length is found whatever the phase of the watcher's ticks


class ManualClocks:
    """A wall clock and a CPU clock that move only when told."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def run(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def test_only_a_gap_without_cpu_time_counts_as_stopped():
    clocks = ManualClocks()
    watch = StopWatch(lambda: clocks.wall, lambda: clocks.cpu)
    clocks.run(wall=TICK_S, cpu=0.0)  # idle between ticks (waiting on a GPU, on a pipe): running time
    watch.check()
    clocks.run(wall=STOP_GAP_S - 0.1, cpu=0.0)  # a late tick, but not late enough to be a stop
    watch.check()
    assert watch.stopped_seconds == 0.0
    clocks.run(wall=60.0, cpu=1.0)  # stopped for most of a minute: the second of CPU time before the stop ran
    watch.check()
    assert watch.stopped_seconds == pytest.approx(59.0)
    clocks.run(wall=5.0, cpu=5.5)  # the tick waited on a busy process holding the GIL: no stop
    watch.check()
    assert watch.stopped_seconds == pytest.approx(59.0)
    clocks.run(wall=30.0, cpu=0.0)  # a stop since the last tick counts when the clock is read, before the next tick
    assert watch.seconds() == pytest.approx(clocks.wall - 89.0)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_epoch_times_of_a_training_stopped_mid_run_leave_the_stop_out(tmp_path):
    """A teacher's training stopped with SIGSTOP after its first epoch, then continued: no epoch's ``seconds`` holds the stop,
    and ``train_seconds`` falls short of the wall time by about the stop."""
    epochs = 6
    overrides = [*tiny_overrides(tmp_path), f"teacher.train.epochs={epochs}"]
    metrics = tmp_path / "runs" / "tiny" / "teacher" / "metrics.jsonl"
    started = time.monotonic()
    call = subprocess.Popen(
        [sys.executable, "-m", "igkd", "teacher", "-c", "digits", *sets(overrides)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while not metrics.is_file() and call.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.02)
        call.send_signal(signal.SIGSTOP)
        time.sleep(STOP_S)
        call.send_signal(signal.SIGCONT)
        assert call.wait(timeout=120) == 0, call.stderr.read().decode()[-2000:] if call.stderr else ""
    finally:
        call.kill()
    wall = time.monotonic() - started
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    final = json.loads((metrics.parent / "final.json").read_text())
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    assert max(row["seconds"] for row in rows) < STOP_S - 1.0, rows  # before: the epoch running at the stop held all of it
    assert final["train_seconds"] < wall - (STOP_S - 1.0)


def test_a_forked_child_starts_its_own_watcher():
    script = (
        "import os, threading; from igkd.runtime.clock import running_seconds; running_seconds(); pid = os.fork()\n"
        "if pid == 0:\n"
        "    running_seconds(); os._exit(0 if any(t.name == 'igkd-stop-watch' for t in threading.enumerate()) else 1)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=60)
    assert done.stdout.strip() == "0", done.stderr[-2000:]
