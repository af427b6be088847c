"""The run report: a Markdown file with the results table and a figure of images, IG maps and overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from igkd.artifacts.atomic import atomic_write_text, atomic_write_with
from igkd.attribution.cache import MappedMaps
from igkd.data.imageset import ImageSet
from igkd.experiments.document import percent
from igkd.overlay import overlay_maps


def save_overlay_figure(path: Path, pool: ImageSet, maps: torch.Tensor | MappedMaps, indices: list[int], power: float = 1.5) -> None:
    """A grid: each column one training image, rows = image, its IG map, the paper's overlay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = pool.images[indices].float() / 255
    chosen = maps[indices].float()
    overlaid = overlay_maps(images, chosen, prob=1.0, power_range=(power, power))
    fig, axes = plt.subplots(3, len(indices), figsize=(1.6 * len(indices), 5.0), squeeze=False)
    for col, i in enumerate(indices):
        panels = [images[col].permute(1, 2, 0), chosen[col], overlaid[col].permute(1, 2, 0)]
        for row, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel.clamp(0, 1).numpy(), cmap="inferno" if row == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][col].set_title(f"#{i} {pool.classes[int(pool.labels[i])]}", fontsize=8)
    for row, label in enumerate(["image", "IG map", f"overlay (s={power:g})"]):
        axes[row][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def comparison_rows(teacher: dict[str, Any], student: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, teacher, student, ratio) rows for the console table and the report."""
    t, s = teacher, student
    return [
        (
            "test accuracy (%)",
            percent(t["test"]["accuracy"]),
            percent(s["test"]["accuracy"]),
            f"{100 * (s['test']['accuracy'] - t['test']['accuracy']):+.2f} pts",
        ),
        ("balanced accuracy (%)", percent(t["test"]["balanced_accuracy"]), percent(s["test"]["balanced_accuracy"]), ""),
        ("agreement with teacher (%)", "100.00", percent(s["test"].get("teacher_agreement")), ""),
        ("params", f"{t['params']:,}", f"{s['params']:,}", f"{t['params'] / s['params']:.2f}x fewer"),
        ("MACs / image", f"{t['macs']:,}", f"{s['macs']:,}", f"{t['macs'] / s['macs']:.2f}x fewer"),
        (
            "checkpoint size (bytes)",
            f"{t['checkpoint_bytes']:,}",
            f"{s['checkpoint_bytes']:,}",
            f"{t['checkpoint_bytes'] / s['checkpoint_bytes']:.2f}x smaller",
        ),
        (
            "latency, batch 1, median (ms)",
            f"{t['latency']['median_ms']:.2f}",
            f"{s['latency']['median_ms']:.2f}",
            f"{t['latency']['median_ms'] / s['latency']['median_ms']:.2f}x faster",
        ),
    ] + _robustness_rows(t, s)


def _robustness_rows(teacher: dict[str, Any], student: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if "robustness" not in teacher or "robustness" not in student:
        return []
    t, s = teacher["robustness"], student["robustness"]
    mce = f"mCE {s['mce']:.2f} vs teacher" if s.get("mce") is not None else ""
    return [
        (
            "mean corruption accuracy (%)",
            percent(t["mean_corruption_accuracy"]),
            percent(s["mean_corruption_accuracy"]),
            f"{100 * (s['mean_corruption_accuracy'] - t['mean_corruption_accuracy']):+.2f} pts, {mce}".rstrip(", "),
        )
    ]


def write_report(
    path: Path, title: str, teacher: dict[str, Any], student: dict[str, Any], figure: str | None, notes: dict[str, Any]
) -> None:
    """Write the Markdown report of one pipeline run."""
    rows = comparison_rows(teacher, student)
    lines = [
        f"# {title}",
        "",
        f"Data: **{notes['data']}**. Student method: **{student['method']}**, "
        f"architecture `{student['arch']}`; teacher `{teacher['arch']}`.",
        "",
        *([notes["note"], ""] if notes.get("note") else []),
        "| metric | teacher | student | student vs teacher |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", f"Latency: {student['latency_note']}.", ""]
    if "robustness" in student:
        lines += [
            "Mean corruption accuracy: over the common corruptions and severities of the config's `robustness` section, "
            "generated from the test split with a fixed seed (`teacher/robustness.json` and the student's `robustness.json` "
            "hold every cell); mCE 1.00 = as robust as the teacher.",
            "",
        ]
    lines += [
        "Accuracy is on the test split, with the checkpoint chosen on the validation split "
        f"(teacher epoch {teacher.get('best_epoch', 'n/a')}, student epoch {student['best_epoch']}).",
        "",
    ]
    if figure:
        lines += ["## Images, their teacher IG maps and overlays", "", f"![IG overlays]({figure})", ""]
    if "ig" in notes:
        ig = notes["ig"]
        lines += [
            f"IG: {ig['steps']} steps ({ig['method']}), baseline `{ig['baseline']}`, target `{ig['target']}`; {ig['completeness']}.",
            "",
        ]
    lines += ["## Per-class test accuracy (%)", "", "| class | teacher | student |", "|---|---|---|"]
    for name in teacher["test"]["per_class_accuracy"]:
        lines.append(
            f"| {name} | {percent(teacher['test']['per_class_accuracy'][name])} | {percent(student['test']['per_class_accuracy'][name])} |"
        )
    prov = notes["provenance"]
    lines += [
        "",
        "## Provenance",
        "",
        f"- command: `{prov['command']}`",
        f"- git commit: `{prov['git_commit']}`",
        f"- device: {prov['environment']['device']} ({prov['environment'].get('gpu', prov['environment']['platform'])}), "
        f"torch {prov['environment']['torch']}, {prov['environment']['cpu_threads']} CPU threads",
        f"- seed: {prov['seed']}",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
