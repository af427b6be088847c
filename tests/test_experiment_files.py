"""Experiments declared in YAML files: the built-ins by name or by path plan the same jobs, the command line overrides a
file's values, a user's own grid runs end to end, and a bad file is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, sets, tiny_overrides
from igkd.config import load_config
from igkd.errors import IgkdError
from igkd.experiments.grid import BUILTIN_DIR, load_experiment
from igkd.experiments.plan import PlanOptions, cli_options, plan_jobs, resolve_options
from test_cli import igkd

DATA = "0" * 64
TINY_EXPERIMENT = ["report.agreement_images=24", "attribution.steps=4"]


def test_the_builtin_files_by_path_plan_the_same_jobs_as_by_name():
    cfg = load_config("digits")
    for name in ("ablation", "sweep"):
        options = PlanOptions(seeds=(0, 1), methods=("KD_IG", "Student"), controls=("noise",), blocks=(3,), widths=(0.5,))
        by_name = plan_jobs(name, cfg, options, DATA)
        by_path = plan_jobs(str(BUILTIN_DIR / f"{name}.yaml"), cfg, options, DATA)
        assert [j.describe() for j in by_path] == [j.describe() for j in by_name]
        assert load_experiment(BUILTIN_DIR / f"{name}.yaml").name == name
    # the ablation picks --methods from its list, in its order; the sweep runs them in the order given
    assert [j.group for j in plan_jobs("ablation", cfg, PlanOptions(seeds=(0,), methods=("KD_IG", "Student")), DATA)] == [
        "Student",
        "KD_IG",
        "KD_IG-shuffled",
        "KD_IG-noise",
    ]
    # by default: the paper's eight, the explanation-matching presets beside them, then KD_IG on control maps
    assert [j.group for j in plan_jobs("ablation", cfg, PlanOptions(seeds=(0,)), DATA)] == [
        *("Student", "KD", "IG", "AT", "KD_IG", "KD_AT", "IG_AT", "KD_IG_AT", "KD_EXPL", "KD_CAT"),
        *("KD_IG-shuffled", "KD_IG-noise"),
    ]
    sweep = plan_jobs("sweep", cfg, PlanOptions(seeds=(0,), methods=("KD_IG", "Student"), blocks=(3,), widths=()), DATA)
    assert [j.group for j in sweep] == ["KD_IG", "Student"]


def test_the_command_line_plans_a_file_by_path_as_the_builtin(tmp_path, capsys, monkeypatch):
    """``igkd experiment PATH`` and ``igkd experiment ablation`` with the campaign's options plan the same jobs."""
    import igkd.experiments.plan as plan

    planned: list[list] = []

    def spy(experiment, base, options, data_content):
        planned.append(plan_jobs(experiment, base, options, data_content))
        raise IgkdError("stop here: planned")

    monkeypatch.setattr(plan, "plan_jobs", spy)
    common = [*sets(tiny_overrides(tmp_path)), "--first-seed", "1", "--seeds", "1", "--methods", "IG,KD_IG", "--controls", "shuffled"]
    for source in ("ablation", str(BUILTIN_DIR / "ablation.yaml")):
        code, _, err = run_cli(["experiment", source, *common], capsys, monkeypatch)
        assert code == 2 and "stop here" in err, err
    assert len(planned) == 2 and planned[0] == planned[1]
    assert [(j.group, j.seed) for j in planned[0]] == [("IG", 1), ("KD_IG", 1), ("KD_IG-shuffled", 1)]


def test_command_line_options_override_the_files_values():
    ablation = load_experiment("ablation")
    assert resolve_options(ablation, cli_options(ablation)) == PlanOptions(
        tuple(range(10)), 0.8, None, ("shuffled", "noise"), None, None
    )  # the file's values: written once, in ablation.yaml
    assert resolve_options(ablation, cli_options(ablation, first_seed=3, controls="none")).seeds == tuple(range(3, 13))
    assert cli_options(ablation, seeds=2, first_seed=3, controls="none", methods="KD") == PlanOptions((3, 4), None, ("KD",), (), None, None)
    sweep = load_experiment("sweep")
    assert resolve_options(sweep, cli_options(sweep, blocks="3,5")).blocks == (3, 5)
    assert resolve_options(sweep, cli_options(sweep)).widths == (0.75, 0.5, 0.35, 0.25, 0.1, 0.05)
    truncated_only = resolve_options(sweep, cli_options(sweep, blocks="3,5", widths="none"))  # none: no width students
    assert (truncated_only.blocks, truncated_only.widths) == ((3, 5), ())
    assert cli_options(sweep, blocks=" None ").blocks == ()


GRID = """\
description: Two methods and one map control, one seed.
seeds: 1
first_seed: 4
train_fraction: 0.5
methods: [Student, kd_ig]
controls: {KD_IG: [shuffled]}
"""


def test_a_users_grid_file_runs_end_to_end_and_resumes(tmp_path):
    grid = tmp_path / "two-arms.yaml"
    grid.write_text(GRID)
    args = ["experiment", str(grid), *sets(tiny_overrides(tmp_path) + TINY_EXPERIMENT)]
    result = igkd(*args)
    assert result.returncode == 0, result.stderr
    assert "two-arms: shard 0/1 holds 3 of 3 runs" in result.stdout
    run_dir = tmp_path / "runs" / "tiny"
    record = json.loads((run_dir / "experiments" / "two-arms.json").read_text())
    assert [(j["group"], j["seed"]) for j in record["jobs"]] == [("Student", 4), ("KD_IG", 4), ("KD_IG-shuffled", 4)]
    assert record["calls"][0]["train_fraction"] == 0.5 and record["calls"][0]["seeds"] == [4]
    assert all((run_dir / "students" / j["run_id"] / "final.json").is_file() for j in record["jobs"])
    again = igkd(*args, "--methods", "Student")
    assert again.returncode == 0 and "1 runs, 1 finished earlier, 0 to run" in again.stdout, again.stdout + again.stderr
    report = igkd("report", *sets(tiny_overrides(tmp_path) + TINY_EXPERIMENT))
    assert report.returncode == 0, report.stderr
    assert "## Two-arms" in (run_dir / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: 1\ntrain_fraction: 0.5\nmethods: [Student]\nseed: 3\n", "invalid experiment value 'seed'"),
        ("seeds: 1\ntrain_fraction: 0.5\nmethods: [Student, KD_XX]\n", "unknown method 'KD_XX'"),
        ("seeds: 1\ntrain_fraction: 0.5\nmethods: [Student]\ncontrols: {KD_IG: [shuffled]}\n", "controls name KD_IG, which is not in"),
        ("seeds: 1\ntrain_fraction: 0.5\nmethods: [KD_IG]\ncontrols: {KD_IG: [blurred]}\n", "invalid experiment value 'controls.KD_IG.0'"),
        ("seeds: 0\ntrain_fraction: 0.5\nmethods: [Student]\n", "invalid experiment value 'seeds'"),
        ("train_fraction: 0.5\nmethods: [Student]\n", "invalid experiment value 'seeds'"),
        ("seeds: 1\ntrain_fraction: 0.5\nmethods: [Student]\nstudents: {blocks: [3], depth: 2}\n", "'students.depth'"),
        ("seeds: [1\n", "is not valid YAML"),
        ("- Student\n", "must hold a mapping"),
    ],
)
def test_a_bad_grid_file_is_one_error_line_and_writes_nothing(tmp_path, capsys, monkeypatch, text, message):
    grid = tmp_path / "bad.yaml"
    grid.write_text(text)
    code, out, err = run_cli(["experiment", str(grid), *sets(tiny_overrides(tmp_path))], capsys, monkeypatch)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err + out, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_the_documented_example_is_a_valid_experiment_file(tmp_path):
    page = (Path(__file__).parents[1] / "docs" / "experiments.md").read_text()
    example = page.split("## Experiment files", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "doc.yaml").write_text(example)
    jobs = plan_jobs(str(tmp_path / "doc.yaml"), load_config("digits"), PlanOptions(), DATA)
    assert [j.group for j in jobs[:3]] == ["KD", "KD_IG", "KD_IG-shuffled"] and len(jobs) == 9


def test_an_unknown_experiment_name_or_missing_file_is_one_line(tmp_path, capsys, monkeypatch):
    for source, message in (("ablations", "unknown experiment 'ablations'; choose one of ablation, sweep"), ("no.yaml", "not found")):
        code, _, err = run_cli(["experiment", source, *sets(tiny_overrides(tmp_path))], capsys, monkeypatch)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_grid_declares_its_own_mix_of_loss_terms_as_an_arm(tmp_path):
    grid = tmp_path / "mixes.yaml"
    grid.write_text(
        "seeds: 1\ntrain_fraction: 0.8\n"
        "mixes: {KD_HALF: {terms: {kd: 0.5, ce: 0.5}}, CE_IG: {terms: {ce: 1.0}, overlay: true}}\n"
        "methods: [KD, KD_HALF, CE_IG]\ncontrols: {CE_IG: [shuffled]}\n"
    )
    jobs = plan_jobs(str(grid), load_config("digits"), PlanOptions(), DATA)
    assert [j.group for j in jobs] == ["KD", "KD_HALF", "CE_IG", "CE_IG-shuffled"]
    kd, half, ig, shuffled = (j.cfg.student for j in jobs)
    assert (kd.terms, half.terms, half.overlay, ig.overlay, shuffled.ig.maps) == (None, {"ce": 0.5, "kd": 0.5}, False, True, "shuffled")
    assert jobs[1].run_id.startswith("KD_HALF-") and jobs[3].run_id.startswith("CE_IG-shuffled-")
    assert len({j.identity for j in jobs}) == 4
    assert [j.group for j in plan_jobs(str(grid), load_config("digits"), PlanOptions(methods=("KD_HALF",)), DATA)] == ["KD_HALF"]
    grid.write_text("seeds: 1\ntrain_fraction: 0.8\nmixes: {KD: {terms: {ce: 1.0}}}\nmethods: [KD]\n")
    with pytest.raises(IgkdError, match="not the preset 'KD'"):
        plan_jobs(str(grid), load_config("digits"), PlanOptions(), DATA)
