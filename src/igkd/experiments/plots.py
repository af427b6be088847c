"""Figures of the experiment report: accuracy box plots, compression sweeps, training curves, IG maps of teacher and students."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from igkd.artifacts.atomic import atomic_write_with
from igkd.overlay import overlay_maps


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)


def box_plot(path: Path, groups: dict[str, list[float]], title: str, teacher_accuracy: float | None) -> None:
    """Test accuracy (%) per method over seeds: boxes plus every run as a dot."""
    plt = _pyplot()
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 4.2))
    data = [[100 * v for v in groups[n]] for n in names]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=25, ha="right")
    for i, values in enumerate(data, start=1):
        ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=10, alpha=0.6, color="tab:blue")
    if teacher_accuracy is not None:
        ax.axhline(100 * teacher_accuracy, color="gray", linestyle="--", linewidth=1, label="teacher")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    _save(fig, path)


def sweep_plot(
    path: Path,
    series: dict[tuple[str, str], list[tuple[float, float, float, float]]],
    x_label: str,
    teacher: tuple[float, float] | None,
    title: str,
) -> None:
    """Accuracy vs size on a log axis: one line per (method, family); points are (x, mean, ci_low, ci_high)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    styles = {"blocks": "-", "width": "--"}
    colors = {method: f"C{i}" for i, method in enumerate(dict.fromkeys(method for method, _ in series))}
    for (method, family), points in sorted(series.items()):
        points = sorted(points)
        x = [p[0] for p in points]
        mean = np.array([100 * p[1] for p in points])
        low = np.array([100 * p[2] if np.isfinite(p[2]) else 100 * p[1] for p in points])
        high = np.array([100 * p[3] if np.isfinite(p[3]) else 100 * p[1] for p in points])
        ax.errorbar(
            x,
            mean,
            yerr=[mean - low, high - mean],
            linestyle=styles.get(family, ":"),
            marker="o",
            markersize=3,
            color=colors[method],
            capsize=2,
            label=f"{method} ({'last k blocks removed' if family == 'blocks' else 'width multiplier'})",
        )
    if teacher is not None:
        ax.scatter([teacher[0]], [100 * teacher[1]], marker="*", s=120, color="black", zorder=5, label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy (%), mean and 95% CI")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def severity_plot(path: Path, series: dict[str, list[tuple[int, float, float, float]]], title: str) -> None:
    """Accuracy (mean over corruptions) against severity, 0 = clean: one line per method; points are
    (severity, mean over seeds, ci_low, ci_high)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for i, (method, points) in enumerate(series.items()):
        x = [p[0] for p in points]
        mean = np.array([100 * p[1] for p in points])
        low = np.array([100 * p[2] if np.isfinite(p[2]) else 100 * p[1] for p in points])
        high = np.array([100 * p[3] if np.isfinite(p[3]) else 100 * p[1] for p in points])
        ax.errorbar(
            np.asarray(x) + 0.04 * (i - len(series) / 2),
            mean,
            yerr=[mean - low, high - mean],
            marker="o",
            markersize=3,
            capsize=2,
            color="black" if method == "teacher" else f"C{i}",
            linestyle="--" if method == "teacher" else "-",
            label=method,
        )
    ax.set_xticks(range(0, 6), ["clean", "1", "2", "3", "4", "5"])
    ax.set_xlabel("corruption severity")
    ax.set_ylabel("test accuracy (%), mean over corruptions; 95% CI over seeds")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def curve_plot(path: Path, series: dict[str, list[tuple[float, float, float, float]]], title: str, y_label: str) -> None:
    """A quantity against the epoch, one line per arm with a band: points are (epoch, mean, low, high) as fractions."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for i, (arm, points) in enumerate(series.items()):
        epoch = [p[0] for p in points]
        mean, low, high = (np.array([100 * p[k] for p in points]) for k in (1, 2, 3))
        ax.plot(epoch, mean, marker="o", markersize=2, color=f"C{i}", label=arm)
        ax.fill_between(epoch, low, high, color=f"C{i}", alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def ig_grid(path: Path, images: torch.Tensor, titles: list[str], rows: dict[str, np.ndarray], power: float = 1.5) -> None:
    """Columns: test images. Rows: the image, the teacher's map overlaid as in training, then each model's IG map."""
    plt = _pyplot()
    x = images.float() / 255
    teacher_maps = torch.from_numpy(np.asarray(next(iter(rows.values())), dtype=np.float32))
    overlaid = overlay_maps(x, teacher_maps, prob=1.0, power_range=(power, power))
    panels: list[tuple[str, np.ndarray, str | None]] = [
        ("image", x.permute(0, 2, 3, 1).numpy(), None),
        (f"overlay (s={power:g})", overlaid.permute(0, 2, 3, 1).numpy(), None),
    ]
    panels += [(f"IG: {name}", np.asarray(maps, dtype=np.float32), "inferno") for name, maps in rows.items()]
    fig, axes = plt.subplots(len(panels), len(x), figsize=(1.5 * len(x), 1.55 * len(panels)), squeeze=False)
    for r, (label, stack, cmap) in enumerate(panels):
        for c in range(len(x)):
            ax = axes[r][c]
            ax.imshow(np.clip(stack[c], 0, 1), cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    _save(fig, path)
