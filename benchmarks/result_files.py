"""Where a benchmark's result goes: ``<output_dir>/<name>-<device>[-tiny].{json,md}``, written atomically, and printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text


def write_result(output_dir: Path, name: str, result: dict[str, Any], markdown: str, tiny: bool = False) -> Path:
    """Write ``result`` (with its provenance's ``environment``) as JSON and ``markdown`` beside it; returns the JSON's path.
    The device in the name is the GPU's name, or ``cpu``."""
    environment = result["environment"]
    where = (environment.get("gpu") or environment["device"].split(":")[0]).replace(" ", "_")
    stem = f"{name}-{where}" + ("-tiny" if tiny else "")
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / f"{stem}.json", result)
    atomic_write_text(output_dir / f"{stem}.md", markdown)
    print(markdown)
    return output_dir / f"{stem}.json"
