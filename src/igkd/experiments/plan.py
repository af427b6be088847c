"""The paper's experiments as lists of student runs (jobs), and how a list is split into shards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from igkd.config import RunConfig, validate_config
from igkd.errors import IgkdError
from igkd.identity import stage_identities, student_run_id
from igkd.methods import METHODS, canonical_method
from igkd.models.mobilenetv2 import NUM_FEATURE_BLOCKS, ArchSpec
from igkd.models.registry import parse_arch

T = TypeVar("T")
EXPERIMENTS = ("ablation", "sweep")
ABLATION_CONTROLS = ("shuffled", "noise")
CONTROL_METHOD = "KD_IG"
SWEEP_METHODS = ("Student", "KD", "IG", "KD_IG")
SWEEP_BLOCKS = (3, 5, 7, 9, 11, 13, 15, 17)
SWEEP_WIDTHS = (0.75, 0.5, 0.35, 0.25, 0.1, 0.05)


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
    """What an experiment covers; the defaults are the paper's."""

    seeds: tuple[int, ...] = tuple(range(10))
    train_fraction: float = 0.8
    methods: tuple[str, ...] | None = None  # default: all eight + controls (ablation), SWEEP_METHODS (sweep)
    controls: tuple[str, ...] = ABLATION_CONTROLS  # ablation: KD_IG's map controls to run (when KD_IG is in methods)
    blocks: tuple[int, ...] = SWEEP_BLOCKS
    widths: tuple[float, ...] = SWEEP_WIDTHS


def ablation_jobs(base: RunConfig, options: PlanOptions, data_content: str | None) -> list[Job]:
    """The eight methods plus KD_IG with shuffled and with noise maps, at the configured student, per seed."""
    arch = base.student.arch
    variants = [(method, "aligned") for method in METHODS] + [(CONTROL_METHOD, control) for control in options.controls]
    if options.methods is not None:
        variants = [(m, c) for m, c in variants if m in options.methods]
    jobs = []
    for seed in options.seeds:
        for method, maps in variants:
            cfg = _variant(base, seed, options.train_fraction, method=method, ig__maps=maps)
            group = method if maps == "aligned" else f"{method}-{maps}"
            jobs.append(Job(group, method, maps, arch, "ablation", seed, cfg, data_content))
    return jobs


def sweep_archs(
    teacher_arch: str, blocks: tuple[int, ...] = SWEEP_BLOCKS, widths: tuple[float, ...] = SWEEP_WIDTHS
) -> list[tuple[str, str]]:
    """(family, arch): the teacher minus its last k blocks, and the teacher at smaller width multipliers."""
    teacher = parse_arch(teacher_arch)
    if not isinstance(teacher, ArchSpec):
        raise IgkdError(
            f"the compression sweep removes blocks and narrows widths of mobilenetv2_cifar; the teacher '{teacher_arch}' "
            "is another family: run its students one by one with --set student.arch=..."
        )
    most = NUM_FEATURE_BLOCKS - 2 - teacher.drop_last_blocks
    if any(not 1 <= k <= most for k in blocks):
        raise IgkdError(f"--blocks {list(blocks)}: the teacher '{teacher_arch}' allows removing 1..{most} more blocks")
    archs = [("blocks", str(teacher.model_copy(update={"drop_last_blocks": teacher.drop_last_blocks + k}))) for k in blocks]
    archs += [("width", str(teacher.model_copy(update={"width_mult": round(teacher.width_mult * w, 6)}))) for w in widths]
    return archs


def sweep_jobs(base: RunConfig, options: PlanOptions, data_content: str | None) -> list[Job]:
    """Student, KD, IG and KD_IG for every student of :func:`sweep_archs`, per seed."""
    jobs = []
    for seed in options.seeds:
        for family, arch in sweep_archs(base.teacher.arch, options.blocks, options.widths):
            for method in options.methods or SWEEP_METHODS:
                cfg = _variant(base, seed, options.train_fraction, method=method, arch=arch, ig__maps="aligned")
                jobs.append(Job(method, method, "aligned", arch, family, seed, cfg, data_content))
    return jobs


def plan_jobs(name: str, base: RunConfig, options: PlanOptions, data_content: str | None) -> list[Job]:
    """The jobs of an experiment, seed-major (all variants of seed 0 first), so fewer seeds finish first.

    ``data_content`` is the base config's ``PreparedData.content_digest``: with the config it fixes every
    job's identity, and so its folder, before anything is trained. None plans the configs alone (for the checks
    that run before the data is decoded).
    """
    if name not in EXPERIMENTS:
        raise IgkdError(f"unknown experiment '{name}'; choose one of {', '.join(EXPERIMENTS)}")
    if not options.seeds:
        raise IgkdError("an experiment needs at least one seed; pass --seeds N with N >= 1")
    if options.methods is not None:
        options = replace(options, methods=tuple(dict.fromkeys(canonical_method(m) for m in options.methods)))
    unknown = [c for c in options.controls if c not in ABLATION_CONTROLS]
    if unknown:
        raise IgkdError(f"--controls {','.join(unknown)}: unknown map control; choose from {', '.join(ABLATION_CONTROLS)} (or none)")
    options = replace(
        options,
        controls=tuple(dict.fromkeys(options.controls)),
        blocks=tuple(dict.fromkeys(options.blocks)),
        widths=tuple(dict.fromkeys(options.widths)),
    )
    jobs = (ablation_jobs if name == "ablation" else sweep_jobs)(base, options, data_content)
    if not jobs:
        raise IgkdError(f"the {name} plan is empty with methods {list(options.methods or [])}; choose methods it runs")
    return jobs


def parse_list(text: str, kind: Callable[[str], T], option: str) -> list[T]:
    """Parse a comma-separated option value (e.g. ``--blocks 3,5,7``)."""
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
