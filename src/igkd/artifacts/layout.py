"""Folder and file names of a run, defined once (the folders themselves: ``Pipeline.teacher_dir``/``student_dir``).

A finished stage writes its summary, whose ``identity`` is the reuse check (:func:`igkd.stages.plan.summary_status`); a
training stage saves its state every epoch, to resume from, and its metrics; every stage that makes a model publishes
it as ``model.pt`` (the teacher its final or imported weights, a student its best-on-validation checkpoint). Students
made before that published ``best.pt``, which :func:`published_model` still finds.
"""

from pathlib import Path

# inside a run directory
TEACHER_DIR = "teacher"
STUDENTS_DIR = "students"  # one folder per student run: igkd.artifacts.identity.student_run_id
CACHE_DIR = "cache"  # decoded data, IG maps, teacher logits (unless cache_dir puts them elsewhere)
EXPERIMENTS_DIR = "experiments"  # <experiment>.json: the plan record of every call
EXPERIMENT_REPORT_DIR = "report"  # igkd report: report.md/html, figures, runs, and a copy of the plans (EXPERIMENTS_DIR)
REPORT_RUNS = "runs"  # in a report: <run id>.json (and teacher.json), every record of a finished run
REPORT = "report.md"
RESULTS = "results.json"
FIGURES = "figures"
OVERLAY_FIGURE = "ig_overlays.png"  # in FIGURES: a few images, their IG maps and overlays

# inside a stage's folder
SUMMARY = "final.json"
STATE = "state.pt"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
ANALYSIS = "analysis.json"  # a student's analyses in an experiment (IG agreement with the teacher)
ROBUSTNESS = "robustness.json"  # accuracy under common corruptions (igkd.evaluation.robustness)
TRANSFER_PREFIX = "transfer-"  # transfer-<name>.json: accuracy on another data set (igkd experiment's transfer)
RUN_LOG = "log.txt"  # an experiment job's output, when it runs in a worker process
MODEL = "model.pt"
LANDED = "landed.json"  # a run restored from a report without its model: the model's SHA-256 as its records name it
LEGACY_MODELS = ("best.pt",)  # a student's model before the teacher's and the students' names were one


def published_model(folder: Path) -> Path:
    """The model a stage's folder publishes: ``model.pt``, or an older name when only that exists."""
    for name in (MODEL, *LEGACY_MODELS):
        if (folder / name).is_file():
            return folder / name
    return folder / MODEL


def transfer_record(name: str) -> str:
    """The file of the transfer evaluation ``name`` in a model's folder."""
    return f"{TRANSFER_PREFIX}{name}.json"
