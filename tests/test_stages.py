"""The one plan of stages (igkd.stages.plan): which stages a command runs, which of them a walk needs, and whether an
output is current (summary, resumable state, analyses)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_config_tree
from igkd.artifacts.identity import StageIdentities
from igkd.artifacts.layout import ANALYSIS, STATE, SUMMARY
from igkd.config import validate_config
from igkd.stages.plan import (
    PLAN,
    STAGES,
    analysis_status,
    job_statuses,
    names,
    needed,
    stages_for,
    summary_status,
    training_status,
)


@pytest.fixture
def cfg(tmp_path):
    return validate_config(tiny_config_tree(tmp_path))


def _with_method(cfg, method: str):
    return cfg.model_copy(update={"student": cfg.student.model_copy(update={"method": method})})


def test_the_plan_is_data_to_teacher_to_maps_to_student_and_each_command_takes_what_it_needs(cfg):
    assert STAGES == names(PLAN) == ("teacher", "maps", "student")
    assert names(stages_for("teacher", cfg)) == ("teacher",)
    assert names(stages_for("attribute", cfg)) == ("teacher", "maps")
    for command in ("distill", "run", "experiment"):
        assert names(stages_for(command, _with_method(cfg, "KD_IG"))) == ("teacher", "maps", "student")
        assert names(stages_for(command, _with_method(cfg, "KD"))) == ("teacher", "student")  # no maps to overlay


def test_a_summary_is_current_only_when_it_records_the_identity_and_a_state_resumes_only_under_it(tmp_path):
    folder = tmp_path / "stage"
    assert summary_status(folder, "a" * 64).action == "run" and "no finished run" in summary_status(folder, "a" * 64).why
    folder.mkdir()
    torch.save({"resume_key": "a" * 64, "epoch": 1}, folder / STATE)
    resumed = training_status(folder, "a" * 64, epochs=5)
    assert (resumed.action, resumed.epochs_left) == ("resume", 3) and "epoch 2 of 5" in resumed.why
    assert training_status(folder, "b" * 64, epochs=5).epochs_left == 5  # another identity's state is not resumed
    (folder / SUMMARY).write_text(json.dumps({"identity": "a" * 64}))
    done = training_status(folder, "a" * 64, epochs=5)
    assert done.done and done.epochs_left == 0 and "records this identity" in done.why
    changed = summary_status(folder, "b" * 64)
    assert not changed.done and "records another identity" in changed.why


def test_a_walk_needs_the_upstream_stages_only_while_the_last_is_not_finished(tmp_path, cfg):
    ids = StageIdentities("d" * 64, "t" * 64, "m" * 64, "s" * 64)
    pipeline = SimpleNamespace(identities=ids, teacher_dir=tmp_path / "teacher", student_dir=tmp_path / "student", cfg=cfg)
    plan = stages_for("run", _with_method(cfg, "KD_IG"))
    assert names(needed(plan, pipeline)) == ("teacher", "maps", "student")
    pipeline.student_dir.mkdir()
    (pipeline.student_dir / SUMMARY).write_text(json.dumps({"identity": ids.student}))
    assert names(needed(plan, pipeline)) == ("student",)  # a finished student is reused without its teacher or maps
    assert names(needed(stages_for("attribute", cfg), pipeline)) == ("teacher", "maps")


def test_an_experiment_job_is_finished_when_its_student_and_analyses_are_current(tmp_path, cfg):
    cfg = cfg.model_copy(update={"report": cfg.report.model_copy(update={"agreement_images": 4})})
    folder = tmp_path / "students" / "run"
    folder.mkdir(parents=True)
    assert [s.done for s in job_statuses(tmp_path, "run", "s" * 64, cfg)][0] is False
    (folder / SUMMARY).write_text(json.dumps({"identity": "s" * 64}))
    assert not analysis_status(folder, "s" * 64, 4).done
    (folder / ANALYSIS).write_text(json.dumps({"identity": "s" * 64, "ig_agreement": {"images": 4}}))
    assert analysis_status(folder, "s" * 64, 4).done and not analysis_status(folder, "s" * 64, 8).done
    statuses = list(
        job_statuses(tmp_path, "run", "s" * 64, cfg.model_copy(update={"robustness": cfg.robustness.model_copy(update={"enabled": False})}))
    )
    assert [s.done for s in statuses] == [True, True, True]


def test_a_stage_publishes_model_pt_and_a_students_older_best_pt_is_still_found(tmp_path):
    from igkd.artifacts.layout import published_model

    old, new, empty = tmp_path / "old", tmp_path / "new", tmp_path / "empty"
    for folder in (old, new, empty):
        folder.mkdir()
    (old / "best.pt").write_bytes(b"a student from before the one name")
    (new / "model.pt").write_bytes(b"now")
    (new / "best.pt").write_bytes(b"older, superseded")
    assert published_model(old) == old / "best.pt" and published_model(new) == new / "model.pt"
    assert published_model(empty) == empty / "model.pt"  # where the next one is written
