"""A wall-clock deadline for long work (``igkd experiment --budget/--stop-at``).

Work stops only at a safe point: before a student run starts, at an epoch boundary of training (after its state is
saved) and between IG batches (after their progress is recorded). At each one it asks :func:`stop_if_past` whether
the next unit (an epoch, a batch), taking as long as the last one did, would end after the deadline; if so it
raises :class:`BudgetReached`, and re-running the same command resumes from there.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from igkd.errors import IgkdError

_deadline: float | None = None  # seconds since the epoch (time.time()), so it can be handed to worker processes
_last_seconds: dict[str, float] = {}  # the last unit of each kind timed in this process (for a run's first epoch)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


class BudgetReached(Exception):
    """The next unit of work would end after the deadline; everything before it is saved."""


def deadline() -> float | None:
    """The deadline in force (``time.time()`` seconds), or None."""
    return _deadline


@contextmanager
def deadline_at(when: float | None) -> Iterator[None]:
    """Set the deadline (``time.time()`` seconds; None for none) for the work inside, then restore the previous one."""
    global _deadline
    previous, _deadline = _deadline, when
    try:
        yield
    finally:
        _deadline = previous


def remember(kind: str, seconds: float) -> None:
    """Record how long the last unit of ``kind`` (e.g. "student epoch") took, for :func:`last_seconds`."""
    _last_seconds[kind] = seconds


def last_seconds(kind: str) -> float:
    """How long the last unit of ``kind`` took in this process (0 if none ran): the estimate for a fresh run's first one."""
    return _last_seconds.get(kind, 0.0)


def stop_if_past(next_seconds: float, before: str, estimate: str | None = None) -> None:
    """Raise :class:`BudgetReached` if work of ``next_seconds`` started now would end after the deadline.

    ``before`` names the unit that would be skipped (e.g. "student epoch 7"), for the message; ``estimate`` says where
    ``next_seconds`` comes from (default: the last such unit).
    """
    if _deadline is not None and time.time() + next_seconds > _deadline:
        until = datetime.fromtimestamp(_deadline).strftime("%Y-%m-%d %H:%M:%S")
        basis = estimate or f"it took ~{next_seconds:.0f} s last time"
        raise BudgetReached(f"stopped before {before}: it would end after the deadline {until} ({basis})")


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``2h30m``, ``1.5h``, ``45s`` or a plain number of seconds."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise IgkdError(f"--budget '{text}' is not a duration; write e.g. 90m, 2h30m, 1.5h or 3600 (seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_stop_at(text: str, now: datetime | None = None) -> float:
    """``time.time()`` seconds of ``HH:MM`` (the next such local time) or an ISO 8601 date and time."""
    now = now or datetime.now()
    value = text.strip()
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}", value):
            hour, minute = (int(p) for p in value.split(":"))
            when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            return (when if when > now else when + timedelta(days=1)).timestamp()
        when = datetime.fromisoformat(value)
    except ValueError:
        raise IgkdError(f"--stop-at '{text}' is not a time; write HH:MM (local) or an ISO 8601 time such as 2026-12-06T18:30") from None
    return when.timestamp()  # a time without a zone is local time


def resolve_deadline(budget: str | None, stop_at: str | None) -> float | None:
    """The deadline ``--budget`` (from now) or ``--stop-at`` sets; both at once is an error."""
    if budget and stop_at:
        raise IgkdError("--budget and --stop-at both set a deadline; pass one of them")
    if budget:
        return time.time() + parse_duration(budget)
    return parse_stop_at(stop_at) if stop_at else None


def resume_command(argv: list[str]) -> str:
    """The command line ``argv`` (after the program name) without its deadline: what resumes the stopped work."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--budget", "--stop-at"):
            skip = True
        elif not arg.startswith(("--budget=", "--stop-at=")):
            args.append(arg)
    return shlex.join(["python3", "-m", "igkd", *args])
