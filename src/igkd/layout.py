"""File names inside a stage's folder, defined once (the folders themselves: ``Pipeline.teacher_dir``/``student_dir``).

A finished stage writes its summary, whose ``identity`` is the reuse check (:func:`igkd.identity.stage_finished`); a
training stage saves its state every epoch, to resume from, and its metrics; the teacher publishes ``model.pt`` and a
student its best-on-validation checkpoint ``best.pt``.
"""

SUMMARY = "final.json"
STATE = "state.pt"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
ANALYSIS = "analysis.json"  # a student's analyses in an experiment (IG agreement with the teacher)
TEACHER_MODEL = "model.pt"
STUDENT_MODEL = "best.pt"
