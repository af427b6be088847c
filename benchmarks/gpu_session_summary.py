"""The summary of one GPU session (``benchmarks/gpu_session.sh``): stages, smoke lines, speed figures, the teacher's progress.

    python3 benchmarks/gpu_session_summary.py OUT/gpu-session --runs gpu-runs --command "bash benchmarks/gpu_session.sh"

Reads the session folder (``stages.tsv``, ``info.json``, ``results/*.json``) and the run folder, writes ``summary.md``
and ``summary.json`` into the session folder (with the command, commit and device) and prints the Markdown. It
imports neither torch nor igkd, so it summarises a session whatever failed in it, and it runs again whenever the
session packs its results: a benchmark stopped mid-way gives the parts it wrote, and the summary names the rest.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

IG_TARGET_IMAGES = 50_000  # the IG figure: seconds for this many images at the measured rate (as suite.py)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a temporary file renamed), so the session never packs half a summary."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def first_result(folder: Path, pattern: str) -> Any:
    """The first readable JSON file of ``folder`` matching ``pattern``, or None."""
    return next((data for data in map(read_json, sorted(folder.glob(pattern))) if data is not None), None)


def speed_rows(results: Path) -> list[dict[str, str]]:
    """The figures of throughput.py and latency.py, one row each (none for a part or stage that wrote nothing)."""
    rows: list[dict[str, str]] = []
    throughput = first_result(results, "throughput-*.json") or {}
    if "train" in throughput:
        train = throughput["train"]
        for name, variant in train["variants"].items():
            rows.append(
                {
                    "figure": f"student training vs the paper-style loop, `{name}` (amp {variant['amp']}, channels_last "
                    f"{variant['channels_last']}, teacher logits {variant['teacher_logits']})",
                    "value": f"{variant['speedup_median']:.1f}x ({variant['images_per_s']['median']:,.0f} vs "
                    f"{train['paper_baseline_images_per_s']['median']:,.0f} images/s, batch {train['igkd_batch_size']} vs 64)",
                }
            )
    if "ig" in throughput:
        ig = throughput["ig"]
        rate = ig["igkd_maps_per_s"]["median"]
        rows.append(
            {
                "figure": f"IG maps/s ({ig['steps']} steps, {ig['precision']}, measured on {ig['igkd_images']:,} images)",
                "value": f"{rate:,.1f}: {IG_TARGET_IMAGES:,} images in {IG_TARGET_IMAGES / rate:,.1f} s",
            }
        )
        for which, key in (("the paper's call", "captum_paper"), ("its fastest swept setting", "captum_fastest")):
            captum = ig[key]
            rows.append(
                {
                    "figure": f"IG vs Captum, {which} (batch {captum['batch_size']}, internal_batch_size "
                    f"{captum['internal_batch_size'] or 'default'})",
                    "value": f"{captum['speedup_median']:.1f}x (max map difference {captum['max_abs_map_difference']:.1e})",
                }
            )
    if "parallel" in throughput:
        for jobs, total in throughput["parallel"]["total_images_per_s"].items():
            rows.append(
                {
                    "figure": f"{jobs} concurrent student trainings, total images/s",
                    "value": f"{total:,.0f} ({throughput['parallel']['gain_vs_one'][jobs]:.2f}x one)",
                }
            )
    latency = first_result(results, "latency-*.json")
    for model in latency["models"] if latency else []:
        backends: dict[str, list[str]] = {}
        for row in model["latency"]:
            backends.setdefault(row["backend"], []).append(f"{row['median_ms']:.3f} ms at batch {row['batch']}")
        rows.append(
            {
                "figure": f"latency of {model['label']} ({model['arch']}), median",
                "value": "; ".join(f"{backend}: {', '.join(cells)}" for backend, cells in backends.items()),
            }
        )
    return rows


def unfinished(results: Path) -> list[dict[str, Any]]:
    """The result files a stopped benchmark left unfinished, with what it had not measured yet (their ``pending``)."""
    return [
        {"file": path.name, "pending": data["pending"]}
        for path in sorted(results.glob("*.json"))
        if isinstance(data := read_json(path), dict) and data.get("pending")
    ]


def teacher_progress(runs: Path) -> dict[str, Any] | None:
    """Epochs, validation accuracy and (when finished) test accuracy of the teacher in the run folder."""
    metrics = next(iter(sorted(runs.glob("*/teacher/metrics.jsonl"))), None)
    if metrics is None:
        return None
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    best = max(history, key=lambda row: row["val_accuracy"])
    final = read_json(metrics.parent / "final.json")
    return {
        "folder": str(metrics.parent),
        "epochs": history[-1]["epoch"],
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "last_val_accuracy": history[-1]["val_accuracy"],
        "finished": final is not None,
        "test_accuracy": final["test"]["accuracy"] if final else None,
    }


def device_line(info: dict[str, Any] | None, stages: list[dict[str, str]]) -> str:
    """The device from ``igkd info``, else the gate's line (torch, CUDA, the GPU's name)."""
    if not info:
        gate = next((stage["detail"] for stage in stages if stage["stage"] == "gate"), "unknown")
        return f"{gate} (igkd info gave no report)"
    gpus = ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in info["cuda"]["devices"])
    return (
        f"{info['device']}{': ' + gpus if gpus else ''}; torch {info['torch']}, igkd "
        f"{info['igkd']}; CPU {info['cpu']['model']}, {info['cpu']['cores']} cores"
    )


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# GPU session, {summary['created']}",
        "",
        f"- command: `{summary['command']}`",
        f"- commit: `{summary['git_commit']}`",
        f"- device: {summary['device']}",
        "",
        "| stage | status | seconds | detail |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} | {s['detail']} |" for s in summary["stages"]]
    if summary["smoke"]:
        lines += ["", "Smoke checks:", "", "```text", *(f"{c['status']} {c['name']}: {c['detail']}" for c in summary["smoke"]), "```"]
    if summary["unfinished"]:
        lines += [
            "",
            "Stopped before the end (their parts above are kept):",
            "",
            *(f"- `{item['file']}`: not measured: {', '.join(item['pending'])}" for item in summary["unfinished"]),
        ]
    if summary["speed"]:
        lines += ["", "| speed figure | value |", "|---|---|", *(f"| {row['figure']} | {row['value']} |" for row in summary["speed"])]
    teacher = summary["teacher"]
    if teacher:
        state = (
            f"finished, test accuracy {100 * teacher['test_accuracy']:.2f}%"
            if teacher["finished"]
            else "not finished: the next session resumes it from state.pt"
        )
        lines += [
            "",
            f"Teacher in `{teacher['folder']}`: {teacher['epochs']} epochs, best validation accuracy "
            f"{100 * teacher['best_val_accuracy']:.2f}% (epoch {teacher['best_epoch']}), "
            f"last {100 * teacher['last_val_accuracy']:.2f}%; {state}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", type=Path, help="the session folder ($OUT/gpu-session)")
    parser.add_argument("--runs", type=Path, required=True, help="the run folder of the teacher stage")
    parser.add_argument("--command", required=True, help="the session's command line, as recorded")
    args = parser.parse_args(argv)
    with (args.session / "stages.tsv").open() as handle:
        stages = list(csv.DictReader(handle, delimiter="\t"))
    smoke = first_result(args.session / "results", "gpu-smoke-*.json")
    info = read_json(args.session / "info.json")
    summary = {
        "command": args.command,
        "git_commit": os.environ.get("IGKD_GIT_COMMIT", "unknown"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_line(info, stages),
        "environment": info,
        "stages": stages,
        "smoke": smoke["checks"] if smoke else [],
        "speed": speed_rows(args.session / "results"),
        "unfinished": unfinished(args.session / "results"),
        "teacher": teacher_progress(args.runs),
    }
    write_text(args.session / "summary.json", json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    write_text(args.session / "summary.md", text)
    print(text, end="")
    return summary


if __name__ == "__main__":
    main()
