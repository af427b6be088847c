"""The consoles every ``igkd`` command prints to: ``console`` for output, ``errors`` for problems (standard error).
A command that prints JSON (``--dry-run --json``) sends its progress lines to standard error (:func:`lines_for`), so
that its standard output parses as it is.

Both soft-wrap: a long line (a path, a resume command, an error) stays one line at any terminal width and in a piped
log, so it can be copied and grepped; tables still fit the width.
"""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def lines_for(as_json: bool) -> Console:
    """Where a command's progress and notes go: ``console``, or standard error when standard output carries JSON."""
    return errors if as_json else console
