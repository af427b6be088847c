"""Experiment files: an experiment declared in YAML, as the grid of student runs it trains against one teacher and one
set of IG maps (the base config, from ``-c/--set``).

```yaml
description: What the experiment measures (shown by nothing; for the reader).
seeds: 10                       # runs per arm: seeds first_seed .. first_seed + seeds - 1
first_seed: 0                   # optional, 0
train_fraction: 0.8             # stratified fraction of the training split each run trains on, fresh per seed
mixes:                          # optional: mixes of loss terms named here (igkd methods lists the terms)
  KD_HALF: {terms: {ce: 0.5, kd: 0.5}, overlay: false}
methods: [Student, KD, KD_HALF] # the methods (presets or the mixes above), in this order
methods_option: replace         # optional: --methods replaces the list (replace) or picks from it, in its order (select)
controls: {KD_IG: [shuffled]}   # optional: a method also run on control maps, after every method on aligned maps
students: configured            # optional: the configured student.arch, or {blocks: [3, 5], widths: [0.5]}: the
                                #   teacher's family's smaller students (its last k blocks removed; relative widths)
```

The built-in experiments ``ablation`` and ``sweep`` are such files next to this module. Every key but ``description`` has
a command-line override of the same name in ``igkd experiment``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from igkd.errors import IgkdError
from igkd.methods import canonical_method
from igkd.overlay import MapSource

BUILTIN_DIR = Path(__file__).parent
CONTROLS: tuple[str, ...] = tuple(m for m in get_args(MapSource) if m != "aligned")  # the map controls: shuffled, noise
Control = Literal["shuffled", "noise"]


def _method(name: str, mixes: dict[str, Any] | None = None) -> str:
    """A preset's canonical name, or a mix the file declares."""
    if name in (mixes or {}):
        return name
    try:
        return canonical_method(name)
    except IgkdError as exc:
        raise ValueError(str(exc)) from None


class Mix(BaseModel):
    """A mix of registered loss terms, as ``student.terms`` and ``student.overlay`` declare one (named by its key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terms: dict[str, float] = Field(..., min_length=1, description="Registered loss terms and their weights.")
    overlay: bool = Field(False, description="Overlay the teacher's maps on the input.")


class SmallerStudents(BaseModel):
    """The teacher's family's smaller students (:attr:`igkd.models.registry.ModelFamily.smaller_students`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocks: tuple[int, ...] = Field((), description="Numbers of last blocks removed from the teacher (k), one student each.")
    widths: tuple[float, ...] = Field((), description="Width multipliers relative to the teacher's, one student each.")


class ExperimentGrid(BaseModel):
    """An experiment file's grid: seeds x students x (methods, then methods on control maps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What the experiment measures.")
    seeds: int = Field(..., ge=1, description="Runs per arm: seeds first_seed .. first_seed + seeds - 1.")
    mixes: dict[str, Mix] = Field(default_factory=dict, description="Mixes of loss terms, by the name methods give them.")
    first_seed: int = Field(0, ge=0, description="The first seed.")
    train_fraction: float = Field(..., gt=0.0, le=1.0, description="Stratified fraction of the training split each run trains on.")
    methods: tuple[str, ...] = Field(..., min_length=1, description="The methods each student trains with, in order.")
    methods_option: Literal["replace", "select"] = Field(
        "replace", description="What --methods does: replace this list (in the order given), or select from it (in this order)."
    )
    controls: dict[str, tuple[Control, ...]] = Field(
        default_factory=dict, description="Methods also run on control maps (shuffled, noise), after the aligned runs."
    )
    students: SmallerStudents | None = Field(
        None, description="configured (student.arch), or {blocks: [...], widths: [...]}: the teacher's smaller students."
    )

    @field_validator("methods")
    @classmethod
    def _canonical_methods(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_method(m, info.data.get("mixes")) for m in value))

    @field_validator("controls")
    @classmethod
    def _canonical_controls(cls, value: dict[str, tuple[str, ...]], info: ValidationInfo) -> dict[str, tuple[str, ...]]:
        controls = {_method(m, info.data.get("mixes")): tuple(dict.fromkeys(c)) for m, c in value.items()}
        methods = info.data.get("methods", ())
        missing = [m for m in controls if m not in methods]
        if missing:
            raise ValueError(f"controls name {', '.join(missing)}, which is not in methods {list(methods)}")
        return controls

    @field_validator("students", mode="before")
    @classmethod
    def _configured(cls, value: Any) -> Any:
        if value == "configured":
            return None
        if not isinstance(value, dict):
            raise ValueError("use configured (the configured student.arch) or {blocks: [K, ...], widths: [W, ...]}")
        return value


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment file: its name (the file's stem: its plan record is ``experiments/<name>.json``) and grid."""

    name: str
    path: Path
    grid: ExperimentGrid


def builtin_experiments() -> list[str]:
    """The names of the built-in experiment files."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_experiment(source: str | Path | Experiment) -> Experiment:
    """A built-in experiment by name (``ablation``, ``sweep``) or an experiment YAML file by path; every problem is a
    one-line :class:`IgkdError`."""
    if isinstance(source, Experiment):
        return source
    path = Path(source)
    if path.suffix.lower() not in (".yaml", ".yml"):
        if str(source) not in builtin_experiments():
            raise IgkdError(
                f"unknown experiment '{source}'; choose one of {', '.join(builtin_experiments())} or pass an experiment YAML file path"
            )
        path = BUILTIN_DIR / f"{source}.yaml"
    if not path.is_file():
        names = ", ".join(builtin_experiments())
        raise IgkdError(f"experiment file '{path}' not found; pass an existing YAML file or a built-in name ({names})")
    try:
        tree: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise IgkdError(f"experiment file '{path}' is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from None
    if not isinstance(tree, dict):
        raise IgkdError(f"experiment file '{path}' must hold a mapping (seeds, train_fraction, methods, ...)")
    try:
        grid = ExperimentGrid.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        given = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        message = err["msg"].removeprefix("Value error, ")
        raise IgkdError(f"invalid experiment value '{where}' in {path}{given}: {message}; fix it in the file") from None
    return Experiment(path.stem, path, grid)
