"""The configs shipped with igkd, each named by its file (``-c cifar10_jpeg_cpu``); light to import (the CLI's help
lists them)."""

from __future__ import annotations

from pathlib import Path

from igkd.errors import IgkdError

FOLDER = Path(__file__).resolve().parent
DEFAULT_CONFIG = "digits"  # what a command runs without -c


def builtin_config_names() -> list[str]:
    """The names of the configs shipped with igkd, sorted."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def builtin_config_path(name: str) -> Path:
    """The path of a config shipped with igkd."""
    path = FOLDER / f"{name}.yaml"
    if not path.is_file():
        raise IgkdError(f"no built-in config '{name}'; choose one of {builtin_config_names()} or pass a YAML file path")
    return path
