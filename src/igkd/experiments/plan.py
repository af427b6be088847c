"""An experiment's grid (:mod:`igkd.experiments.grid`) as a list of student runs (jobs), and how a list is split into shards."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from igkd.artifacts.identity import stage_identities, student_run_id
from igkd.config import RunConfig, validate_config
from igkd.errors import IgkdError
from igkd.experiments.grid import CONTROLS, Experiment, SmallerStudents, load_experiment
from igkd.methods import METHODS, canonical_method
from igkd.models.registry import families, family_of, parse_arch

T = TypeVar("T")
CONFIGURED = "ablation"  # the family label of a job at the configured student.arch (the report groups by it)


@dataclass(frozen=True)
class Job:
    """One student run of an experiment: a group label (what the report aggregates over seeds), a config and the
    content digest of the experiment's data, which with the config fixes the run's identity."""

    group: str
    method: str
    maps: str
    arch: str
    family: str
    seed: int
    cfg: RunConfig
    data_content: str | None

    @property
    def identity(self) -> str:
        """The student's stage identity (what its ``final.json`` is matched against)."""
        if self.data_content is None:
            raise ValueError("a job planned without its data's content digest has no identity; plan it with the data's digest")
        return stage_identities(self.cfg, self.data_content).student

    @property
    def run_id(self) -> str:
        """Folder name under ``students/``: readable, and unique per identity."""
        return student_run_id(self.cfg, self.identity)

    def describe(self) -> dict[str, Any]:
        """The job as a JSON-ready record (without the full config)."""
        record = {k: v for k, v in asdict(self).items() if k not in ("cfg", "data_content")}
        return {**record, "run_id": self.run_id, "identity": self.identity}


def _variant(base: RunConfig, seed: int, train_fraction: float, **student: Any) -> RunConfig:
    tree = base.model_dump(mode="json")
    tree["seed"] = seed
    tree["student"]["train_fraction"] = train_fraction
    for key, value in student.items():
        node = tree["student"]
        *parents, leaf = key.split("__")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return validate_config(tree, "experiment plan")


@dataclass(frozen=True)
class PlanOptions:
    """The command line's overrides of an experiment file's values (None: the file's). :func:`resolve_options` fills
    them in, as the plan record keeps them."""

    seeds: tuple[int, ...] | None = None
    train_fraction: float | None = None
    methods: tuple[str, ...] | None = None  # as given: --methods replaces or selects from the file's (its methods_option)
    controls: tuple[str, ...] | None = None  # the map controls of each method the file runs on controls
    blocks: tuple[int, ...] | None = None  # smaller students: numbers of last blocks removed
    widths: tuple[float, ...] | None = None  # smaller students: relative width multipliers


def cli_options(
    experiment: Experiment,
    seeds: int | None = None,
    first_seed: int | None = None,
    train_fraction: float | None = None,
    methods: str | None = None,
    controls: str | None = None,
    blocks: str | None = None,
    widths: str | None = None,
) -> PlanOptions:
    """The options of ``igkd experiment`` (None: not given) as :class:`PlanOptions` (None: the file's)."""
    grid = experiment.grid
    given_seeds = None
    if seeds is not None or first_seed is not None:
        first = grid.first_seed if first_seed is None else first_seed
        given_seeds = tuple(range(first, first + (grid.seeds if seeds is None else seeds)))
    return PlanOptions(
        given_seeds,
        train_fraction,
        tuple(parse_list(methods, str, "--methods")) if methods else None,
        None if controls is None else tuple(parse_list(controls, str, "--controls")),
        None if blocks is None else tuple(parse_list(blocks, int, "--blocks")),
        None if widths is None else tuple(parse_list(widths, float, "--widths")),
    )


def resolve_options(experiment: Experiment, options: PlanOptions) -> PlanOptions:
    """``options`` with the experiment file's values where they are None (``methods`` stays as given: None is the
    file's); the record of a call in ``experiments/<name>.json``."""
    grid = experiment.grid
    smaller = grid.students
    file_controls = tuple(dict.fromkeys(c for cs in grid.controls.values() for c in cs))
    return PlanOptions(
        tuple(range(grid.first_seed, grid.first_seed + grid.seeds)) if options.seeds is None else options.seeds,
        grid.train_fraction if options.train_fraction is None else options.train_fraction,
        options.methods,
        file_controls if options.controls is None else options.controls,
        (smaller.blocks if smaller else None) if options.blocks is None else options.blocks,
        (smaller.widths if smaller else None) if options.widths is None else options.widths,
    )


def sweep_archs(teacher_arch: str, blocks: Sequence[int] | None = None, widths: Sequence[float] | None = None) -> list[tuple[str, str]]:
    """(family, arch): the teacher's family's smaller students (for mobilenetv2_cifar, the teacher minus its last k
    blocks, then the teacher at smaller width multipliers); None: the built-in sweep's."""
    if blocks is None or widths is None:
        default = load_experiment("sweep").grid.students
        assert isinstance(default, SmallerStudents)
        blocks, widths = default.blocks if blocks is None else blocks, default.widths if widths is None else widths
    teacher = parse_arch(teacher_arch)
    family = family_of(teacher)
    if family.smaller_students is None:
        able = ", ".join(name for name, f in families().items() if f.smaller_students) or "no family"
        raise IgkdError(
            f"the compression sweep removes blocks and narrows widths of {able}; the teacher '{teacher_arch}' "
            "is another family: run its students one by one with --set student.arch=..."
        )
    return family.smaller_students(teacher, tuple(blocks), tuple(widths))


def plan_jobs(experiment: str | Path | Experiment, base: RunConfig, options: PlanOptions, data_content: str | None) -> list[Job]:
    """The jobs of an experiment (a built-in name, a YAML file or a loaded :class:`Experiment`), with ``options``
    overriding its file's values: seed-major (all arms of seed 0 first), so fewer seeds finish first; within a seed,
    student by student, each with the methods on aligned maps, then the methods on control maps.

    ``data_content`` is the base config's ``PreparedData.content_digest``: with the config it fixes every
    job's identity, and so its folder, before anything is trained. None plans the configs alone (for the checks
    that run before the data is decoded).
    """
    experiment = load_experiment(experiment)
    grid, name = experiment.grid, experiment.name
    given_controls = options.controls
    options = resolve_options(experiment, options)
    assert options.seeds is not None and options.train_fraction is not None and options.controls is not None
    if not options.seeds:
        raise IgkdError("an experiment needs at least one seed; pass --seeds N with N >= 1")
    methods = grid.methods
    alone: list[tuple[str, str]] = []  # controls asked for by their arm's name (KD_IG-noise): that variant alone
    if options.methods is not None:
        arms = [_arm(m, experiment) for m in options.methods]
        alone = list(dict.fromkeys((m, c) for m, c in arms if c is not None))
        given = tuple(dict.fromkeys(m for m, c in arms if c is None))
        methods = tuple(m for m in grid.methods if m in given) if grid.methods_option == "select" else given
    unknown = [c for c in options.controls if c not in CONTROLS]
    if unknown:
        raise IgkdError(f"--controls {','.join(unknown)}: unknown map control; choose from {', '.join(CONTROLS)} (or none)")
    controls = {m: tuple(dict.fromkeys(cs if given_controls is None else given_controls)) for m, cs in grid.controls.items()}
    variants = [(m, "aligned") for m in methods] + [(m, c) for m in methods for c in controls.get(m, ())]
    variants += [variant for variant in alone if variant not in variants]
    students: list[tuple[str, str | None]] = [(CONFIGURED, None)]
    if grid.students is not None:
        assert options.blocks is not None and options.widths is not None
        students = list(sweep_archs(base.teacher.arch, tuple(dict.fromkeys(options.blocks)), tuple(dict.fromkeys(options.widths))))
    jobs = []
    for seed in options.seeds:
        for family, arch in students:
            for method, maps in variants:
                student: dict[str, Any] = {"method": method} | ({"arch": arch} if arch else {}) | {"ig__maps": maps}
                mix = grid.mixes.get(method)  # a mix the file declares: its terms and overlay, named by the method
                student |= {"terms": dict(mix.terms), "overlay": mix.overlay} if mix else {"terms": None, "overlay": None}
                cfg = _variant(base, seed, options.train_fraction, **student)
                group = method if maps == "aligned" else f"{method}-{maps}"
                jobs.append(Job(group, method, maps, arch or base.student.arch, family, seed, cfg, data_content))
    if not jobs:
        raise IgkdError(f"the {name} plan is empty with methods {list(options.methods or [])}; choose methods it runs")
    return jobs


def _arm(name: str, experiment: Experiment) -> tuple[str, str | None]:
    """A ``--methods`` entry as (method, control): ``KD_IG-noise`` asks for KD_IG on noise maps alone (without KD_IG on
    the teacher's maps), ``KD_IG`` for the method (with the controls of ``--controls``)."""
    mixes = experiment.grid.mixes
    method, dash, control = name.rpartition("-")
    if not (dash and control in CONTROLS):
        return (name if name in mixes else canonical_method(name)), None
    method = method if method in mixes else canonical_method(method)
    overlays = mixes[method].overlay if method in mixes else METHODS[method].overlay
    if not overlays:
        raise IgkdError(
            f"--methods {name}: {method} overlays no maps, so it has no {control} control; name a method that overlays "
            f"them (e.g. KD_IG-{control})"
        )
    return method, control


def parse_list(text: str, kind: Callable[[str], T], option: str) -> list[T]:
    """Parse a comma-separated option value (e.g. ``--blocks 3,5,7``); ``none`` is the empty list (``--widths none``: no
    width students)."""
    if text.strip().lower() == "none":
        return []
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise IgkdError(f"{option} '{text}' is not a comma-separated list of {kind.__name__} values (e.g. 3,5,7)") from None


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise IgkdError(f"--shard '{text}' is not of the form i/n (e.g. 0/4 for the first of four machines)") from None
    if not (count >= 1 and 0 <= index < count):
        raise IgkdError(f"--shard '{text}' needs 0 <= i < n (e.g. 0/4 ... 3/4)")
    return index, count


def shard(jobs: list[Job], index: int, count: int) -> list[Job]:
    """Every ``count``-th job starting at ``index``: shards are disjoint, cover all jobs and mix seeds evenly."""
    return jobs[index::count]


def merge_plans(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One experiment's plan record holding both records' calls and jobs, ``earlier``'s first (``later`` wins a clash)."""
    if not later:
        return earlier
    calls = earlier.get("calls", []) + [call for call in later.get("calls", []) if call not in earlier.get("calls", [])]
    jobs = {job["run_id"]: job for job in earlier.get("jobs", [])} | {job["run_id"]: job for job in later.get("jobs", [])}
    return {**earlier, **later, "calls": calls, "jobs": list(jobs.values())}
