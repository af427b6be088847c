"""The sentences of the report's provenance on how the runs were made: the precision of their test accuracy, and the IG
maps files they trained on."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from igkd.experiments.document import plural
from igkd.experiments.report.runs import device_name


def maps_used(runs: dict[str, dict[str, Any]]) -> str:
    """A sentence on the IG maps files the runs trained on (SHA-256, the devices that computed them, how many runs),
    for the runs that record them; empty when none does."""
    used: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs.values():
        if run["final"].get("maps"):
            used[run["final"]["maps"]["sha256"]].append(run["final"]["maps"])
    if not used:
        return ""
    files = []
    for sha256, records in used.items():
        builders = sorted({device_name(builder.get("environment", {})) for builder in records[0]["built_by"]})
        by = f"computed on {', '.join(builders)}" if builders else "its builders not recorded"
        files.append(f"`{sha256[:12]}` ({by}; {len(records)} {plural(len(records), 'run')})")
    return f" IG maps trained on (SHA-256 of the file, for the runs that record it): {'; '.join(files)}."


def evaluated_in(runs: dict[str, dict[str, Any]]) -> str:
    """A sentence on the precision the runs' test accuracy was computed in (``evaluation.amp``), with how many runs
    each; runs evaluated before igkd recorded it count as 'not recorded'."""
    counts = Counter(str(run["final"].get("test", {}).get("precision", "not recorded")) for run in runs.values())
    if not counts:
        return ""
    parts = (f"{name} ({n} {plural(n, 'run')})" for name, n in sorted(counts.items()))
    return f" Test accuracy computed in: {', '.join(parts)}."
