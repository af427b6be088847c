"""``igkd report``: every finished run of a config's run directory summarised into one report.

Writes ``<run_dir>/report/``: ``report.md`` and ``report.html`` (same content), ``summary.json`` (every
statistic), ``runs.csv`` (one row per run), ``runs/<run_id>.json`` (each run's records, no checkpoints) and
``figures/``. The folder is self-contained, so it can be committed as the experiment's result.

:mod:`.build` puts the report together from its sections: :mod:`.ablation` (accuracy by arm, curves),
:mod:`.comparisons` (the tests), :mod:`.robustness` (corruptions, transfer), :mod:`.sweep` (compression),
:mod:`.latency`, :mod:`.ig_figure` and :mod:`.runs` (the finished runs, their table, training time and status), with
:mod:`.provenance`.
"""

from igkd.experiments.report.build import build_report

__all__ = ["build_report"]
