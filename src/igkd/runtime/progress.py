"""Progress of a long stage: a live bar on a terminal, plain lines at a bounded rate elsewhere, and a projection.

On a terminal the bar shows steps, images/s, the loss and the time left of the epoch and of the stage. When the
output is not a terminal (CI, log files, ``--jobs`` workers) a plain line is printed each time another tenth of
the stage is done or ``interval_s`` has passed, whichever comes first, so a stage prints about ten lines
however long it runs. After the first steps, one line projects the stage's time and the whole run's. Rates and ETAs
are measured in running time (:mod:`igkd.runtime.clock`: a job stopped with SIGSTOP and continued has not run in
between) over the last ``RATE_WINDOW_S`` seconds, so a change of speed (another job sharing the CPU) soon shows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from igkd.runtime.clock import running_seconds

LONG_RUN_SECONDS = 3600
PROJECT_AFTER_STEPS = 5
PROJECT_AFTER_SECONDS = 10.0
RATE_WINDOW_S = 300.0  # longer than an epoch's validation, so the rate includes it


def duration(seconds: float) -> str:
    """``42 s``, ``17 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def long_run_hint(seconds: float, device_type: str, settings_off: list[str] | tuple[str, ...] = ()) -> str | None:
    """One line with the ways out when a run is projected to take more than an hour on a CPU, naming the faster
    settings it leaves off (``--set`` values, :func:`igkd.runtime.speed.settings_off`)."""
    if seconds <= LONG_RUN_SECONDS or device_type != "cpu":
        return None
    faster = f"; faster settings left off: {', '.join(f'--set {s}' for s in settings_off)}" if settings_off else ""
    return (
        f"projected {duration(seconds)} on this CPU: use a GPU, fewer epochs (--set teacher.train.epochs=... "
        f"--set student.train.epochs=...), or a smaller architecture (e.g. --set student.arch=...:width=0.5){faster}"
    )


class StageProgress:
    """Step progress of one stage, each step ``images_per_step`` images (see :meth:`start`).

    ``later_s`` is the projected time of the run's stages after this one, for the whole-run projection.
    """

    def __init__(
        self,
        console: Console,
        label: str,
        images_per_step: int,
        device_type: str = "cpu",
        later_s: float = 0.0,
        interval_s: float = 30.0,
        clock: Callable[[], float] = running_seconds,
        unit: str = "step",
        project: bool = True,
        settings_off: tuple[str, ...] = (),
    ) -> None:
        self.console, self.label, self.images_per_step, self.unit = console, label, images_per_step, unit
        self.settings_off = settings_off  # named in the long-run note
        self.project = project  # print the stage / whole-run projection after the first steps
        self.device_type, self.later_s, self.interval_s, self.clock = device_type, later_s, interval_s, clock
        self.total: int = 1
        self.steps_per_epoch: int | None = None
        self.live = console.is_terminal and not console.quiet
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._start_done = self._last_done = 0
        self._started = self._last_line = 0.0
        self._samples: deque[tuple[float, int]] = deque()  # (time, steps done): from just before the rate window on
        self._next_fraction = 0.1
        self.projected = False

    def start(self, total: int, done: int = 0, steps_per_epoch: int | None = None) -> StageProgress:
        """Begin a stage of ``total`` steps (or resume it at ``done``), ``steps_per_epoch`` per epoch when it has epochs."""
        self.total, self.steps_per_epoch = max(1, total), steps_per_epoch
        self._start_done = self._last_done = done
        self._started = self._last_line = self.clock()
        self._samples = deque([(self._started, done)])
        self._next_fraction = (done // max(1, self.total // 10) + 1) / 10
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=done, info="")
        return self

    def seconds_per_step(self) -> float | None:
        """Seconds per step over the last ``RATE_WINDOW_S`` seconds (since the start, early in a stage)."""
        since, done = self._samples[0] if self._samples else (self._started, self._start_done)
        steps = self._last_done - done
        return (self.clock() - since) / steps if steps > 0 else None

    def _remember(self, done: int) -> None:
        """Record ``done`` steps now; keep one sample at or before the window's start and none older."""
        now = self.clock()
        self._samples.append((now, done))
        while len(self._samples) > 1 and self._samples[1][0] <= now - RATE_WINDOW_S:
            self._samples.popleft()

    def eta_s(self) -> float | None:
        """Seconds left in the stage at the measured rate."""
        per_step = self.seconds_per_step()
        return None if per_step is None else per_step * (self.total - self._last_done)

    def _epoch_eta_s(self) -> float | None:
        per_step = self.seconds_per_step()
        if per_step is None or not self.steps_per_epoch:
            return None
        return per_step * (self.steps_per_epoch - self._last_done % self.steps_per_epoch)

    def due(self, done: int) -> bool:
        """Whether a plain line is due at ``done`` steps (another tenth done, or ``interval_s`` passed)."""
        return done >= self.total or done / self.total >= self._next_fraction or self.clock() - self._last_line >= self.interval_s

    def advance(self, done: int, fields: Callable[[], dict[str, float]] | None = None) -> None:
        """``done`` steps are finished; ``fields`` (e.g. the running loss) is read only when something is shown."""
        self._last_done = done
        self._remember(done)
        if (
            self.project
            and not self.projected
            and (done - self._start_done >= PROJECT_AFTER_STEPS or self.clock() - self._started >= PROJECT_AFTER_SECONDS)
        ):
            self._project()
        if self._bar is not None:
            per_step = self.seconds_per_step()
            shown = fields() if fields and (self.clock() - self._last_line >= 1.0 or done >= self.total) else None
            if shown is not None:
                self._last_line = self.clock()
                rate = f"{self.images_per_step / per_step:,.0f} img/s" if per_step and self.images_per_step else ""
                self._bar.update(self._task, completed=done, info=" ".join([rate, *(f"{k} {v:.4f}" for k, v in shown.items())]))  # type: ignore[arg-type]
            else:
                self._bar.update(self._task, completed=done)  # type: ignore[arg-type]
            return
        if self.due(done):
            self._last_line = self.clock()
            while self._next_fraction <= done / self.total:
                self._next_fraction += 0.1
            self.console.print(self._line(done, fields() if fields else {}), highlight=False, soft_wrap=True)

    def _line(self, done: int, shown: dict[str, float]) -> str:
        per_step, eta, epoch_eta = self.seconds_per_step(), self.eta_s(), self._epoch_eta_s()
        parts = [f"{self.label}: {self.unit} {done}/{self.total} ({100 * done / self.total:.0f}%)"]
        if per_step and self.images_per_step:
            parts.append(f"{self.images_per_step / per_step:,.0f} img/s")
        parts += [f"{key} {value:.4f}" for key, value in shown.items()]
        if epoch_eta is not None and done < self.total:
            parts.append(f"epoch ETA {duration(epoch_eta)}")
        if eta is not None:
            parts.append(f"stage ETA {duration(eta)}")
        return ", ".join(parts)

    def _project(self) -> None:
        self.projected = True
        eta = self.eta_s()
        if eta is None:
            return
        stage = eta + (self.clock() - self._started)
        whole = eta + self.later_s
        text = f"{self.label}: projected {duration(stage)} for this stage, about {duration(whole)} left for the whole run"
        self.console.print(text, highlight=False, soft_wrap=True)
        hint = long_run_hint(whole, self.device_type, self.settings_off)
        if hint:
            self.note(hint)

    def note(self, text: str) -> None:
        """Print one ``note: ...`` line."""
        self.console.print(f"note: {text}", highlight=False, soft_wrap=True)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
