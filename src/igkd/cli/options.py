"""Command-line options shared by the ``igkd`` commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import typer

from igkd.configs import DEFAULT_CONFIG, builtin_config_names

ConfigOpt = typer.Option(
    DEFAULT_CONFIG, "--config", "-c", help=f"YAML config file, or a built-in name: {', '.join(builtin_config_names())}."
)
SetOpt = typer.Option(None, "--set", "-s", help="Override a config value, e.g. --set student.train.epochs=5 (repeatable).")
DryRunOpt = typer.Option(
    False, "--dry-run", help="Check everything and print the plan (stages run or reused, sizes, projected time); write nothing."
)
JsonOpt = typer.Option(False, "--json", help="With --dry-run: print the plan as JSON.")
RenameOpt = typer.Option(
    None,
    "--rename",
    help="For a foreign state dict: rewrite key prefix OLD to NEW, e.g. --rename module.= "
    "--rename backbone.=features. (repeatable, applied in order).",
)
ArchOpt = typer.Option(
    None, "--arch", help="Architecture of a plain state dict: mobilenetv2_cifar[:width=W][:k=K], torchvision:NAME, timm:NAME."
)
DeterministicOpt = typer.Option(
    False, "--deterministic", help="Deterministic kernels: same seed, bit-identical results on the same machine."
)


def add_commands(app: typer.Typer, commands: Iterable[Callable[..., None]]) -> None:
    """Register functions as commands named after them (already registered names are left alone)."""
    present = {command.name for command in app.registered_commands}
    for command in commands:
        if command.__name__ not in present:
            app.command(name=command.__name__)(command)
