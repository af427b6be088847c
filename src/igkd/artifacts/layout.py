"""Folder and file names of a run, defined once (the folders themselves: ``Pipeline.teacher_dir``/``student_dir``).

A finished stage writes its summary, whose ``identity`` is the reuse check (:func:`igkd.stages.plan.summary_status`); a
training stage saves its state every epoch, to resume from, and its metrics; the teacher publishes ``model.pt`` and a
student its best-on-validation checkpoint ``best.pt``.

Deferred (issue 26): the teacher and the students should publish their model under one file name. Renaming would
change files a running campaign reads, so both names stay as they are; whatever name comes later, these old ones
must stay readable.
"""

# inside a run directory
TEACHER_DIR = "teacher"
STUDENTS_DIR = "students"  # one folder per student run: igkd.artifacts.identity.student_run_id
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
TEACHER_MODEL = "model.pt"
STUDENT_MODEL = "best.pt"


def transfer_record(name: str) -> str:
    """The file of the transfer evaluation ``name`` in a model's folder."""
    return f"{TRANSFER_PREFIX}{name}.json"
