"""The consoles every ``igkd`` command prints to: ``console`` for output, ``errors`` for problems (standard error).

Both soft-wrap: a long line (a path, a resume command, an error) stays one line at any terminal width and in a piped
log, so it can be copied and grepped; tables still fit the width.
"""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
