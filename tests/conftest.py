"""Shared fixtures: tiny configs and tiny image folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

# What igkd prints is read at one fixed, wide terminal width, in this process and in every command a test starts.
os.environ["COLUMNS"] = "200"
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: a core per worker; threads of two workers on one core ruin both
    os.environ["OMP_NUM_THREADS"] = "1"

TINY_TEACHER = "mobilenetv2_cifar:width=0.25:k=10"
TINY_STUDENT = "mobilenetv2_cifar:width=0.25:k=14"


def tiny_config_tree(tmp_path: Path, **student: Any) -> dict[str, Any]:
    """A config on digits at 8x8 with tiny models: one epoch each, seconds on a CPU."""
    return {
        "name": "tiny",
        "out_dir": str(tmp_path / "runs"),
        "seed": 0,
        "device": "cpu",
        "data": {"source": "digits", "image_size": 8, "crop_padding": 1, "flip": False, "val_fraction": 0.2},
        "teacher": {"arch": TINY_TEACHER, "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}},
        "attribution": {"steps": 4, "batch_size": 256},
        "student": {
            "arch": TINY_STUDENT,
            "method": "KD_IG",
            "ig": {"prob": 0.5},
            "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 2e-3},
            **student,
        },
        "report": {"examples": 3, "latency_repeats": 3},
    }


def tiny_overrides(tmp_path: Path) -> list[str]:
    """The tiny config as CLI ``--set`` overrides of the built-in digits config."""
    return [
        f"out_dir={tmp_path / 'runs'}",
        "name=tiny",
        "device=cpu",
        "data.image_size=8",
        "data.crop_padding=1",
        f"teacher.arch={TINY_TEACHER}",
        "teacher.train.epochs=1",
        f"student.arch={TINY_STUDENT}",
        "student.train.epochs=1",
        "attribution.steps=4",
        "report.examples=3",
        "report.latency_repeats=3",
        "robustness.corruptions=[contrast,gaussian_noise]",
        "robustness.severities=[1,5]",
    ]


def hub_teacher_overrides(tmp_path: Path, teacher: str) -> list[str]:
    """The tiny config at 16x16 with an ImageNet hub teacher (``torchvision:resnet18``...), at a learning rate it trains at.

    A ResNet-18 on 16x16 digits reaches 1x1 features: at the digits config's SGD lr 0.05 its one epoch ends with a
    validation loss of 31 to 782 over teacher seeds 1-6 (an AMD EPYC), and on one CI machine in a NaN; at 0.01 it
    learns (3.7 to 9.2).
    """
    return [*tiny_overrides(tmp_path), "data.image_size=16", "data.crop_padding=2", f"teacher.arch={teacher}", "teacher.train.lr=0.01"]


def write_image_folder(root: Path, counts: dict[str, int], size: int = 8, seed: int = 0, mode: str = "RGB") -> Path:
    """Write ``root/<class>/<i>.png`` images of random pixels; returns ``root``."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / f"{i:04d}.png")
    return root


def sets(items: list[str]) -> list[str]:
    """``--set`` arguments for every override."""
    return [arg for item in items for arg in ("--set", item)]


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Run the igkd command line in this process: exit code, stdout, stderr."""
    import sys

    from igkd.cli.main import main

    monkeypatch.setattr(sys, "argv", ["igkd", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and oversubscribed cores make timings erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
