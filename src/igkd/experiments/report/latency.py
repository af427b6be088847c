"""The size and latency section: the models of an ``igkd bench -o`` result side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from igkd.artifacts.atomic import read_json_object
from igkd.errors import IgkdError
from igkd.experiments.document import Document
from igkd.experiments.report.runs import device_name


def read_latency(path: Path) -> dict[str, Any]:
    """An ``igkd bench -o`` result, checked to be one."""
    record = read_json_object(path)
    if not {"settings", "models", "provenance"} <= set(record) or not record["models"]:
        raise IgkdError(
            f"--latency {path}: not a result of 'igkd bench -o FILE' (missing or empty); time the models with "
            "'igkd bench TEACHER STUDENT... -o FILE' and pass that file"
        )
    return record


def latency_section(doc: Document, latency: dict[str, Any], path: Path) -> dict[str, Any]:
    """The models of an ``igkd bench`` result side by side: size, MACs and latency (truncation against width)."""
    from igkd.deploy.bench import bench_caption, bench_rows

    prov = latency["provenance"]
    doc.heading("Size and latency", 2)
    doc.table(*bench_rows(latency))
    doc.paragraph(
        f"{bench_caption(latency)}. Measured by `{prov['command']}` at commit `{str(prov['git_commit'])[:7]}` on "
        f"{device_name(prov.get('environment', {}))} (`{path.name}`); {latency['settings']['order']}."
    )
    return {"file": str(path), "provenance": prov}
