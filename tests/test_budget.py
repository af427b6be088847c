"""Deadlines (``igkd experiment --budget/--stop-at``): parsing, stopping at epoch and IG-batch boundaries, resuming."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
import torch
from rich.console import Console

from conftest import run_cli, sets, tiny_config_tree, tiny_overrides
from igkd.attribution import AttributionCache, IGParams, attribution_key, compute_ig_maps
from igkd.config import validate_config
from igkd.errors import IgkdError
from igkd.models.registry import build_model
from igkd.runtime import budget
from igkd.runtime.progress import StageProgress
from igkd.stages.pipeline import Pipeline

NOW = 1_000_000.0


@pytest.fixture
def frozen_clock(monkeypatch):
    """``time.time()`` as the budget reads it stands still at NOW; no unit timed in an earlier test counts."""
    monkeypatch.setattr(budget.time, "time", lambda: NOW)
    monkeypatch.setattr(budget, "_last_seconds", {})


def test_durations_and_stop_times_parse_and_bad_ones_name_the_fix():
    assert [budget.parse_duration(t) for t in ("90m", "2h30m", "1.5h", "45s", "3600", "1d")] == [5400, 9000, 5400, 45, 3600, 86400]
    for bad in ("", "2 hours", "h", "30m2"):
        with pytest.raises(IgkdError, match="is not a duration; write e.g. 90m"):
            budget.parse_duration(bad)
    evening = datetime(2026, 12, 6, 18, 0)
    assert budget.parse_stop_at("18:30", evening) == datetime(2026, 12, 6, 18, 30).timestamp()
    assert budget.parse_stop_at("07:15", evening) == datetime(2026, 12, 7, 7, 15).timestamp()  # the next 07:15
    assert budget.parse_stop_at("2026-12-08T09:00", evening) == datetime(2026, 12, 8, 9, 0).timestamp()
    with pytest.raises(IgkdError, match="--stop-at 'soon' is not a time"):
        budget.parse_stop_at("soon")
    with pytest.raises(IgkdError, match="--budget and --stop-at both set a deadline"):
        budget.resolve_deadline("1h", "18:00")
    assert budget.resolve_deadline(None, None) is None


def test_resume_command_drops_only_the_deadline():
    argv = ["experiment", "ablation", "--budget", "2h", "--set", "out_dir=/a b", "--stop-at=18:00", "--seeds", "3"]
    assert budget.resume_command(argv) == "python3 -m igkd experiment ablation --set 'out_dir=/a b' --seeds 3"


def test_stop_if_past_counts_the_next_unit_and_only_under_a_deadline(frozen_clock):
    budget.stop_if_past(1e9, "anything")  # no deadline: never stops
    with budget.deadline_at(NOW + 10):
        budget.stop_if_past(10, "an epoch that ends at the deadline")
        with pytest.raises(budget.BudgetReached, match="stopped before student epoch 3: it would end after the deadline"):
            budget.stop_if_past(10.5, "student epoch 3")
    assert budget.deadline() is None


def test_training_stops_at_an_epoch_boundary_with_its_state_saved_and_resumes_to_the_same_weights(tmp_path, frozen_clock):
    tree = tiny_config_tree(tmp_path)
    tree["teacher"]["train"]["epochs"] = 3
    cfg = validate_config(tree)
    with budget.deadline_at(NOW):  # the first epoch is estimated at 0 s and runs; the second would end past NOW
        with pytest.raises(budget.BudgetReached, match="stopped before teacher epoch 2 of 3"):
            _ = Pipeline(cfg, Console(quiet=True)).teacher
    teacher_dir = cfg.run_dir / "teacher"
    state = torch.load(teacher_dir / "state.pt", weights_only=True)
    assert state["epoch"] == 0 and not (teacher_dir / "final.json").exists()
    assert state["seconds"] >= json.loads((teacher_dir / "metrics.jsonl").read_text())["seconds"] > 0
    state["seconds"] = 1000.0  # as if the first process had trained for 1000 s: the resumed run counts them
    torch.save(state, teacher_dir / "state.pt")
    resumed = Pipeline(cfg, Console(quiet=True)).teacher.model.state_dict()
    epochs = [json.loads(line) for line in (teacher_dir / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((teacher_dir / "final.json").read_text())
    assert len(epochs) == 3 and 1000 + sum(e["seconds"] for e in epochs[1:]) <= final["train_seconds"] < 1100
    batch = cfg.teacher.train.batch_size
    per_epoch = len(Pipeline(cfg, Console(quiet=True)).data.train_idx) // batch * batch
    assert final["train_images_per_second"] * final["train_seconds"] == pytest.approx(3 * per_epoch)  # every epoch's images

    tree["out_dir"] = str(tmp_path / "uninterrupted")
    whole = Pipeline(validate_config(tree), Console(quiet=True)).teacher.model.state_dict()
    assert all(torch.equal(value, resumed[key]) for key, value in whole.items())


def test_a_first_epoch_projected_past_the_deadline_from_its_first_steps_stops_there(tmp_path, frozen_clock, monkeypatch):
    """A new run in a new process has no epoch time to go by: its first steps project the epoch. It used to start
    regardless and end up to an epoch past the deadline."""
    from igkd.training import loop

    readings = iter(range(0, 10**6, 100))  # running time: each reading 100 s after the last
    monkeypatch.setattr(loop, "running_seconds", lambda: float(next(readings)))
    monkeypatch.setattr(loop, "DEADLINE_PROBE_STEPS", 4)
    cfg = validate_config(tiny_config_tree(tmp_path))
    steps = len(Pipeline(cfg, Console(quiet=True)).data.train_idx) // cfg.teacher.train.batch_size
    assert steps > 4
    with budget.deadline_at(NOW + 200), pytest.raises(budget.BudgetReached) as stopped:
        _ = Pipeline(cfg, Console(quiet=True)).teacher
    projected = 100 * (steps / 4 - 1)  # epoch_start, then the reading after step 4: 100 s for 4 steps
    assert str(stopped.value).startswith("stopped before the rest of teacher epoch 1 of 1 (not saved: the run resumes from its start)")
    assert "its first 4 steps took 100.0 s" in str(stopped.value) and projected > 200
    assert not (cfg.run_dir / "teacher" / "state.pt").exists() and not (cfg.run_dir / "teacher" / "final.json").exists()
    with budget.deadline_at(NOW + 10 * projected):  # time enough: the same run trains through
        assert Pipeline(cfg, Console(quiet=True)).teacher.model is not None
    assert (cfg.run_dir / "teacher" / "final.json").exists()


def test_ig_build_stops_between_batches_and_resumes_to_the_same_maps(tmp_path, frozen_clock):
    torch.manual_seed(0)
    teacher = build_model("mobilenetv2_cifar:width=0.25:k=12", 10).eval()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (6,), generator=g)
    params = IGParams(steps=4, batch_size=2)
    key = attribution_key(teacher, images, labels, params)
    cache = AttributionCache(tmp_path)
    with budget.deadline_at(NOW - 1):  # past: the first batch is kept, the next is not started
        with pytest.raises(budget.BudgetReached, match="stopped before IG image 3 of 6"):
            cache.build(key, teacher, images, labels, params, torch.device("cpu"))
    progress = [p for p in tmp_path.glob("*.json")]
    assert len(progress) == 1 and '"images_done": 2' in progress[0].read_text()
    cache.build(key, teacher, images, labels, params, torch.device("cpu"))
    maps = cache.load(key, (6, 8, 8)).numpy()
    expected = compute_ig_maps(teacher, images, labels, params, torch.device("cpu"))[0].astype(np.float32)
    np.testing.assert_array_equal(maps, expected)


def test_a_resumed_maps_stage_counts_its_progress_from_the_images_it_held(tmp_path, frozen_clock, monkeypatch):
    """Its rate and time left count only this call's images (the bar started at 0 showed 37,000 images "done" in the
    first seconds of a resumed CIFAR-10 stage: 128 images/s and 2 minutes left, for about 25)."""
    tree = tiny_config_tree(tmp_path)
    tree["attribution"]["batch_size"] = 100
    cfg = validate_config(tree)
    _ = Pipeline(cfg, Console(quiet=True)).teacher
    with budget.deadline_at(NOW - 1), pytest.raises(budget.BudgetReached, match="stopped before IG image 101"):
        Pipeline(cfg, Console(quiet=True)).attribute()
    starts: list[tuple[int, int]] = []
    start = StageProgress.start
    monkeypatch.setattr(
        StageProgress, "start", lambda self, total, done=0, *a: starts.append((total, done)) or start(self, total, done, *a)
    )
    maps = Pipeline(cfg, Console(quiet=True)).attribute()
    assert starts == [(len(maps), 100)]


def test_experiment_with_a_spent_budget_stops_before_anything_and_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    args = ["experiment", "ablation", *sets(tiny_overrides(tmp_path)), "--seeds", "1", "--methods", "Student", "--budget", "0s"]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert "budget: stopped before the ablation experiment" in out and "data:" not in out  # nothing decoded
    resume = next(line for line in out.splitlines() if line.startswith("resume with"))
    assert "experiment ablation" in resume and "--budget" not in resume and "--methods Student" in resume
    assert not (tmp_path / "runs").exists()
