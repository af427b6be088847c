"""The experiment report on a campaign that grows call by call: every finished run counted, arms by student, planned
comparisons, per-pair n, Holm families stated, corruption records checked against the teacher's (synthetic records)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from scipy import stats as sps

from igkd.config import load_config
from igkd.evaluation.robustness import RECORD
from igkd.experiments.grid import Experiment, ExperimentGrid
from igkd.experiments.plan import PlanOptions, plan_jobs
from igkd.experiments.report import build_report
from igkd.experiments.report.ablation import paper_note
from igkd.experiments.report.comparisons import planned_pairs
from igkd.experiments.report.ig_figure import classes_first
from igkd.experiments.report.provenance import maps_used
from igkd.experiments.report.runs import jobs_by_run, status_line
from igkd.experiments.runner import ExperimentRunner

DATA = "0" * 64
WIDTH = "mobilenetv2_cifar:width=0.25"
# test accuracy by arm and seed (k=5 unless the arm names its student)
ACCURACY = {
    "Student": [0.80, 0.82, 0.81],
    "KD": [0.82, 0.83, 0.83],
    "KD_IG": [0.84, 0.83, 0.86],
    "KD_IG-shuffled": [0.81, 0.84],
    "Student @ width=0.25": [0.78, 0.80],
}

CURVE = [0.3, 0.1, 0.02, 0.0]  # validation accuracy per epoch: the run's test accuracy less these
EPOCH_SECONDS = [20.0, 30.0, 40.0, 50.0]  # each run's epochs' times on the first machine
EPYC, XEON = "AMD EPYC (family 25, model 17)", "Intel(R) Xeon(R) Processor (family 6, model 207)"
SPEED = {EPYC: 1.0, XEON: 2.0}  # seed 2 trains on another machine, twice as fast
MAPS = {EPYC: "a" * 64, XEON: "b" * 64}  # the SHA-256 of the IG maps each machine built


def _train_seconds(seed: int) -> float:
    return 600.0 * (seed + 1)


def _config(tmp_path: Path, *sets: str):
    return load_config("digits", [f"out_dir={tmp_path}", "name=grow", *sets])


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _protocol(corruptions: list[str]) -> dict:
    return {"corruptions": corruptions, "severities": [1, 2], "seed": 0, "source": "test"}


def _robustness(accuracy: float, corruptions: list[str], teacher_sha: str | None) -> dict:
    return {
        "protocol": _protocol(corruptions),
        "clean_accuracy": accuracy,
        "mean_corruption_accuracy": accuracy - 0.1,
        "relative_drop": 0.1,
        "mce": 1.5,
        "test_images": 10,
        "checkpoint_sha256": "x",
        "accuracy": {c: {"1": accuracy - 0.05, "2": accuracy - 0.15} for c in corruptions},
        "reference": {"checkpoint_sha256": teacher_sha} if teacher_sha else {},
    }


def _finish(run_dir: Path, job, accuracy: float, robustness: dict | None = None) -> None:
    folder = run_dir / "students" / job.run_id
    cpu = XEON if job.seed == 2 else EPYC
    _write(
        folder / "final.json",
        {
            "identity": job.identity,
            "arch": job.arch,
            "method": job.method,
            "seed": job.seed,
            "params": 1000,
            "macs": 2000,
            # seed 2's machine recorded the precision of its evaluation; the others ran before igkd recorded it
            "test": {"accuracy": accuracy, "balanced_accuracy": accuracy, "teacher_agreement": 0.9}
            | ({"precision": "bfloat16"} if job.seed == 2 else {}),
            "config": job.cfg.model_dump(mode="json"),
            "git_commit": "abc",
            "environment": {"device": "cpu", "cpu": cpu},
            "best_epoch": len(CURVE),
            "best_val_accuracy": accuracy - CURVE[-1],
            "train_seconds": _train_seconds(job.seed),
            # the IG maps it trained on: each machine built its own (bf16 maps differ in their last bits)
            **(
                {
                    "maps": {
                        "sha256": MAPS[cpu],
                        "created": "2026-12-07T09:30:03+00:00",
                        "built_by": [{"environment": {"device": "cpu", "cpu": cpu}}],
                    }
                }
                if job.method == "KD_IG"
                else {}
            ),
        },
    )
    epochs = [
        {"epoch": epoch, "train_loss": 1.0, "val_accuracy": accuracy - gap, "seconds": seconds / SPEED[cpu]}
        for epoch, (gap, seconds) in enumerate(zip(CURVE, EPOCH_SECONDS, strict=True), 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in epochs))
    if robustness:
        _write(folder / RECORD, robustness)


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """Three experiment calls into one run folder: the k=5 arms, then a width arm, then a third seed of the k=5 arms."""
    tmp = tmp_path_factory.mktemp("grown")
    base, width = _config(tmp), _config(tmp, f"student.arch={WIDTH}")
    run_dir = base.run_dir
    _write(
        run_dir / "teacher" / "final.json", {"arch": "t", "params": 4000, "macs": 8000, "test": {"accuracy": 0.9, "balanced_accuracy": 0.9}}
    )
    _write(run_dir / "teacher" / RECORD, {**_robustness(0.9, ["contrast", "fog"], None), "checkpoint_sha256": "teacher"})
    calls = [
        (base, PlanOptions(seeds=(0, 1), methods=("Student", "KD", "KD_IG"), controls=("shuffled",))),
        (width, PlanOptions(seeds=(0, 1), methods=("Student",), controls=())),
        (base, PlanOptions(seeds=(2,), methods=("Student", "KD", "KD_IG"), controls=("shuffled",))),
    ]
    runner = ExperimentRunner(base, Console(quiet=True))
    for cfg, options in calls + calls[:1]:  # the first call again adds nothing
        runner.base = cfg
        runner.write_plan("ablation", plan_jobs("ablation", cfg, options, DATA), options)
    plan = json.loads((run_dir / "experiments" / "ablation.json").read_text())
    labels = {j["run_id"]: (j["group"] if j["arch"] == base.student.arch else f"{j['group']} @ width=0.25") for j in plan["jobs"]}
    jobs = {j.run_id: j for cfg, options in calls for j in plan_jobs("ablation", cfg, options, DATA)}
    for run_id, job in jobs.items():
        values = ACCURACY[labels[run_id]]
        if job.seed < len(values):
            # one student measured under another protocol, one against another teacher: both must be left out
            corruptions, teacher_sha = ["contrast", "fog"], "teacher"
            if (labels[run_id], job.seed) == ("KD", 0):
                corruptions = ["contrast"]
            if (labels[run_id], job.seed) == ("KD", 1):
                teacher_sha = "another teacher"
            _finish(run_dir, job, values[job.seed], _robustness(values[job.seed], corruptions, teacher_sha))
    build_report(base, Console(quiet=True))
    return plan, json.loads((run_dir / "report" / "summary.json").read_text()), (run_dir / "report" / "report.md").read_text()


def test_every_call_adds_its_jobs_and_options_to_the_experiment_record(grown):
    plan, _, _ = grown
    assert len(plan["calls"]) == 3 and [c["student_arch"] for c in plan["calls"]] == [
        "mobilenetv2_cifar:width=0.5:k=5",
        WIDTH,
        "mobilenetv2_cifar:width=0.5:k=5",
    ]
    assert len(plan["jobs"]) == 8 + 2 + 4 and len({j["run_id"] for j in plan["jobs"]}) == 14


def test_report_counts_the_runs_of_every_call_with_arms_named_by_student(grown):
    _, summary, markdown = grown
    counts = {arm: s["n"] for arm, s in summary["ablation"]["summary"].items()}
    assert counts == {"Student": 3, "KD": 3, "KD_IG": 3, "KD_IG-shuffled": 2, "Student @ width=0.25": 2}
    assert summary["ablation"]["summary"]["KD_IG"]["mean"] == pytest.approx(np.mean(ACCURACY["KD_IG"]))
    assert "13 of 14 planned runs finished (seeds 0, 1, 2" in markdown
    precisions = "Test accuracy computed in: bfloat16 (3 runs), not recorded (10 runs)."
    assert f"git commits `abc`, devices cpu ({EPYC}), cpu ({XEON}). {precisions}" in markdown
    assert (  # KD_IG (3 seeds) and its shuffled-maps control (2): the machine of seed 2 built its own maps
        "IG maps trained on (SHA-256 of the file, for the runs that record it): "
        f"`aaaaaaaaaaaa` (computed on cpu ({EPYC}); 4 runs); `bbbbbbbbbbbb` (computed on cpu ({XEON}); 1 run)." in markdown
    )
    assert maps_used({"run": {"final": {"maps": {"sha256": "c" * 64, "built_by": []}}}}) == (
        " IG maps trained on (SHA-256 of the file, for the runs that record it): `cccccccccccc` (its builders not recorded; 1 run)."
    )
    assert "Status: not started: KD_IG-shuffled (seed 2)." in markdown


def test_the_papers_figures_beside_the_ablation_are_those_of_its_arms_and_marked_not_comparable(grown):
    _, _, markdown = grown  # arms Student, KD, KD_IG, the shuffled-maps control and a width arm: the paper has the first three
    note = next(line for line in markdown.splitlines() if line.startswith("For orientation only"))
    assert "not comparable" in note and "of Student 91.18%, KD 91.62%, KD_IG 92.02%, and a teacher of 93.91%." in note
    assert paper_note(["Student @ width=0.25", "KD_IG-shuffled"]) is None
    assert "of AT 91.16%, KD_AT 91.75%, and" in (paper_note(["KD_AT", "AT"]) or "")  # in the paper's order


def test_every_finished_run_has_a_line_of_the_runs_table_seed_by_seed(grown):
    _, _, markdown = grown
    table = markdown.split("## Runs")[1].split("\n\n")[1].splitlines()[2:]
    assert len(table) == 13 and [line.split(" | ")[0] for line in table[:5]] == [
        "| Student, seed 0",
        "| KD, seed 0",
        "| KD_IG, seed 0",
        "| KD_IG-shuffled, seed 0",
        "| Student @ width=0.25, seed 0",
    ]
    shuffled = next(line for line in table if line.startswith("| KD_IG-shuffled, seed 1 |"))
    assert shuffled.startswith("| KD_IG-shuffled, seed 1 | 84.00 | 84.00 (4) | 90.00 | 74.00 | 1.500 |")
    assert shuffled.endswith(f"| `abc`, cpu ({EPYC}) |")
    assert next(line for line in table if line.startswith("| KD, seed 2 |")).endswith(f"| `abc`, cpu ({XEON}) |")


def test_validation_curves_are_averaged_over_seeds_with_the_change_over_the_last_epochs(grown):
    _, summary, markdown = grown
    curve = summary["ablation"]["curves"]["KD_IG"]
    assert [point["epoch"] for point in curve] == [1, 2, 3, 4] and [point["n"] for point in curve] == [3] * 4
    assert curve[0]["mean"] == pytest.approx(np.mean(ACCURACY["KD_IG"]) - CURVE[0])
    assert (curve[-1]["min"], curve[-1]["max"]) == (pytest.approx(0.83), pytest.approx(0.86))
    section = markdown.split("### Validation accuracy by epoch")[1]
    assert f"| KD_IG | 3 | 4 | {100 * np.mean(ACCURACY['KD_IG']):.2f} | +30.00 | 4 |" in section
    assert "| Student @ width=0.25 | 2 | 4 |" in section and "figures/ablation_curves.png" in section


def test_training_time_per_machine_per_arm_and_in_all_from_the_runs_records(grown):
    _, summary, markdown = grown
    times = summary["training_time"]
    run = sum(EPOCH_SECONDS)  # a run's epochs, not its train_seconds (a resumed run's can miss its earlier processes)
    epyc, xeon = times["devices"][f"cpu ({EPYC})"], times["devices"][f"cpu ({XEON})"]
    assert list(times["devices"]) == [f"cpu ({EPYC})", f"cpu ({XEON})"]  # seed 2 trained on the second machine
    arms = ["Student", "KD", "KD_IG", "KD_IG-shuffled", "Student @ width=0.25"]
    assert {arm: t["runs"] for arm, t in epyc.items()} == {**dict.fromkeys(arms, 2), "all": 10}
    assert {arm: t["runs"] for arm, t in xeon.items()} == {"Student": 1, "KD": 1, "KD_IG": 1, "all": 3}
    assert epyc["Student"] == {"runs": 2, "median_epoch_s": 35.0, "median_run_s": run, "total_s": 2 * run}
    assert xeon["all"] == {"runs": 3, "median_epoch_s": 17.5, "median_run_s": run / 2, "total_s": 3 * run / 2}
    assert times["all"] == {"runs": 13, "total_s": 10 * run + 3 * run / 2}  # no median across machines
    section = markdown.split("### Training time")[1].split("\n\n")[1].splitlines()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in section[2:]]
    assert rows == [*arms, "all", "Student", "KD", "KD_IG", "all", "all"]
    assert section[2] == f"| Student | cpu ({EPYC}) | 2 | 35 | {run / 60:.0f} | {2 * run / 3600:.1f} |"
    assert section[-2] == f"| all | cpu ({XEON}) | 3 | 18 | {run / 120:.0f} | {3 * run / 7200:.1f} |"
    assert section[-1] == f"| all | every device | 13 | n/a | n/a | {(10 * run + 1.5 * run) / 3600:.1f} |"


def test_planned_comparisons_are_their_own_holm_family_with_each_pairs_n(grown):
    _, summary, markdown = grown
    planned = summary["ablation"]["planned"]
    assert planned["pairs"] == [["KD_IG", "KD"], ["KD_IG", "KD_IG-shuffled"], ["KD", "Student"], ["Student", "Student @ width=0.25"]]
    paired = {(c["a"], c["b"]): c for c in planned["paired"]}
    shuffled = paired[("KD_IG", "KD_IG-shuffled")]
    assert shuffled["n_a"] == 2 and shuffled["p_value"] == pytest.approx(
        sps.ttest_rel(ACCURACY["KD_IG"][:2], ACCURACY["KD_IG-shuffled"]).pvalue
    )
    assert paired[("Student", "Student @ width=0.25")]["n_a"] == 2
    welch = {(c["a"], c["b"]): c for c in planned["welch"]}
    expected = sps.ttest_ind(ACCURACY["KD_IG"], ACCURACY["KD"], equal_var=False).pvalue
    assert welch[("KD_IG", "KD")]["p_value"] == pytest.approx(expected)
    raw = sorted(c["p_value"] for c in planned["welch"])
    assert max(c["p_holm"] for c in planned["welch"]) >= min(1.0, 4 * raw[0])  # Holm over the 4 planned pairs, not all 10
    assert len(summary["ablation"]["tests"]["welch"]) == 10
    assert "### Planned comparisons" in markdown and "Welch p (Holm, m=4)" in markdown and "Welch p (Holm, m=10)" in markdown
    interval = sps.ttest_rel(ACCURACY["KD_IG"][:2], ACCURACY["KD_IG-shuffled"]).confidence_interval(0.95)
    assert (shuffled["ci_low"], shuffled["ci_high"]) == (pytest.approx(interval.low), pytest.approx(interval.high))
    row = next(line for line in markdown.split("### Planned comparisons")[1].splitlines() if line.startswith("| KD_IG - KD_IG-shuffled |"))
    assert f"| 2 | +1.00 [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}] |" in row


def test_corruption_records_of_another_protocol_or_teacher_are_left_out_with_the_reason(grown):
    _, summary, markdown = grown
    assert summary["ablation"]["robustness"]["mca"]["KD"]["n"] == 1  # of 3 KD records, 2 do not match the teacher's
    # the planned family on mCA: its own Holm correction over the planned pairs with 2 runs each (KD has 1 record left)
    planned = summary["ablation"]["robustness"]["planned"]
    assert planned["family"] == "planned" and [(c["a"], c["b"]) for c in planned["welch"]] == [
        ("KD_IG", "KD_IG-shuffled"),
        ("Student", "Student @ width=0.25"),
    ]
    assert "#### Planned comparisons on mean corruption accuracy" in markdown
    assert "1 student record(s): measured under another corruption protocol than the teacher's" in markdown
    assert "1 student record(s): its mCE is relative to another teacher" in markdown


def test_figure_examples_show_one_image_per_class_first():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    assert classes_first(torch.tensor([0, 1, 3, 4, 5, 7]), labels).tolist() == [0, 3, 5, 1, 4, 7]


def test_the_planned_family_asks_whether_a_maps_content_matters_and_whether_attention_adds_to_kd():
    arms = ["Student", "KD", "KD_IG", "KD_IG-shuffled", "KD_IG-noise", "AT", "KD_AT"]
    assert planned_pairs(arms) == [
        ("KD_IG", "KD"),
        ("KD_IG", "KD_IG-shuffled"),
        ("KD_IG", "KD_IG-noise"),
        ("KD_IG-noise", "KD"),
        ("KD", "Student"),
        ("KD_AT", "KD"),
    ]


def test_the_planned_family_asks_whether_explanation_matching_adds_to_kd():
    arms = ["Student", "KD", "KD_IG", "KD_EXPL", "KD_CAT", "KD_IG-shuffled"]
    assert planned_pairs(arms) == [
        ("KD_IG", "KD"),
        ("KD_IG", "KD_IG-shuffled"),
        ("KD", "Student"),
        ("KD_EXPL", "KD"),
        ("KD_CAT", "KD"),
    ]
    assert planned_pairs(["Student", "KD", "KD_CAT"]) == [("KD", "Student"), ("KD_CAT", "KD")]
    frozen = [("KD_EXPL", "KD"), ("KD_EXPL_FROZEN", "KD"), ("KD_EXPL_FROZEN", "KD_EXPL")]
    assert planned_pairs(["KD", "KD_EXPL", "KD_EXPL_FROZEN"]) == frozen


def test_the_report_says_what_its_data_can_and_cannot_show(tmp_path):
    cfg, options = _config(tmp_path), PlanOptions(seeds=(0,), methods=("Student",), controls=())
    ExperimentRunner(cfg, Console(quiet=True)).write_plan("ablation", plan_jobs("ablation", cfg, options, DATA), options)
    assert "cannot show" not in build_report(_config(tmp_path, "report.note=null"), Console(quiet=True)).read_text()
    noted = build_report(_config(tmp_path, "report.note=These toy images cannot show X."), Console(quiet=True)).read_text()
    assert noted.splitlines()[4] == "These toy images cannot show X."  # under the data line
    assert "What digits can and cannot show" in (load_config("digits").report.note or "")


def test_runs_csv_names_every_column_before_any_run_has_finished(tmp_path):
    cfg, options = _config(tmp_path), PlanOptions(seeds=(0,), methods=("Student",), controls=())
    ExperimentRunner(cfg, Console(quiet=True)).write_plan("ablation", plan_jobs("ablation", cfg, options, DATA), options)
    build_report(cfg, Console(quiet=True))
    lines = (cfg.run_dir / "report" / "runs.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_id,experiment,group,method,")
    assert lines[0].endswith(",mce,git_commit,device,maps_sha256")


def test_each_experiment_of_a_run_folder_draws_its_own_figures(tmp_path):
    cfg = _config(tmp_path)
    runner = ExperimentRunner(cfg, Console(quiet=True))
    for name, methods in (("ablation", ("Student", "KD")), ("frozen", ("KD", "KD_EXPL_FROZEN"))):
        options = PlanOptions(seeds=(0, 1), methods=methods, controls=())
        experiment = Experiment(name, tmp_path / f"{name}.yaml", ExperimentGrid(seeds=2, train_fraction=0.8, methods=methods))
        jobs = plan_jobs(experiment, cfg, options, DATA)
        runner.write_plan(experiment, jobs, options)
        for job in jobs:
            _finish(cfg.run_dir, job, 0.8 + 0.01 * job.seed)
    markdown = build_report(cfg, Console(quiet=True)).read_text()
    for name in ("ablation", "frozen"):
        assert f"figures/{name}_box.png" in markdown and (cfg.run_dir / "report" / "figures" / f"{name}_box.png").stat().st_size > 1000


def test_a_new_report_leaves_no_file_of_an_earlier_one(tmp_path):
    """A figure or run record the new report does not write (a renamed figure, a run folder deleted) does not linger."""
    cfg, options = _config(tmp_path), PlanOptions(seeds=(0, 1), methods=("Student",), controls=())
    jobs = plan_jobs("ablation", cfg, options, DATA)
    ExperimentRunner(cfg, Console(quiet=True)).write_plan("ablation", jobs, options)
    for job in jobs:
        _finish(cfg.run_dir, job, 0.8)
    report = cfg.run_dir / "report"
    for stale in (report / "figures" / "box.png", report / "runs" / "a-deleted-run.json"):
        _write(stale, {})
    written = build_report(cfg, Console(quiet=True))
    assert written == report / "report.md" and written.is_file()
    assert not (report / "figures" / "box.png").exists() and not (report / "runs" / "a-deleted-run.json").exists()
    assert sorted(p.name for p in (report / "runs").iterdir()) == sorted(f"{job.run_id}.json" for job in jobs)
    assert [p.name for p in cfg.run_dir.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


def test_the_report_sets_the_models_of_a_bench_result_side_by_side_and_refuses_another_file(tmp_path, capsys, monkeypatch):
    from conftest import TINY_STUDENT, TINY_TEACHER, run_cli
    from igkd.deploy.bench import bench
    from igkd.models.checkpoint import save_checkpoint
    from igkd.models.registry import build_model

    cfg, options = _config(tmp_path), PlanOptions(seeds=(0,), methods=("Student",), controls=())
    ExperimentRunner(cfg, Console(quiet=True)).write_plan("ablation", plan_jobs("ablation", cfg, options, DATA), options)
    paths = []
    for name, arch in (("teacher.pt", TINY_TEACHER), ("Student-k14.pt", TINY_STUDENT)):
        save_checkpoint(tmp_path / name, build_model(arch, 10), arch, [str(i) for i in range(10)])
        paths.append(tmp_path / name)
    result = bench(paths, batch_sizes=(2,), threads=1, warmup=0, repeats=2, cold=False, image_size=8, backends=["torch-cpu"])
    (tmp_path / "latency.json").write_text(json.dumps(result))
    markdown = build_report(cfg, Console(quiet=True), tmp_path / "latency.json").read_text()
    section = markdown[markdown.index("## Size and latency") :]
    assert "| metric | teacher.pt | Student-k14.pt | vs teacher.pt |" in section
    student_ms = result["models"][1]["latency"][0]["median_ms"]
    assert "| torch-cpu, batch 2: median (p90) ms | " in section and f"{student_ms:.3f}" in section
    assert f"at commit `{result['provenance']['git_commit'][:7]}`" in section
    summary = json.loads((cfg.run_dir / "report" / "summary.json").read_text())
    assert summary["latency"]["file"] == str(tmp_path / "latency.json")
    (tmp_path / "other.json").write_text(json.dumps({"models": []}))
    args = ["report", "--set", f"out_dir={tmp_path}", "--set", "name=grow", "--latency", str(tmp_path / "other.json")]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code != 0 and "not a result of 'igkd bench -o FILE'" in " ".join((out + err).split())
    assert "## Size and latency" in (cfg.run_dir / "report" / "report.md").read_text()  # the earlier report stays whole


def test_status_names_partly_trained_runs_and_groups_the_unstarted_by_arm_and_seed(tmp_path):
    base = "mobilenetv2_cifar:k=5"
    jobs = [
        {"run_id": f"{group}{'-w' * (arch == WIDTH)}-{seed}", "group": group, "arch": arch, "seed": seed}
        for group, arch in [("Student", base), ("KD_IG", base), ("KD_IG", WIDTH)]
        for seed in (0, 1, 2)
    ]
    plan = {"calls": [{"train_fraction": 0.8}], "jobs": jobs}
    (tmp_path / "students" / "KD_IG-1").mkdir(parents=True)
    (tmp_path / "students" / "KD_IG-1" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    runs = {"Student-0": {}, "Student-1": {}, "KD_IG-0": {}}
    assert status_line(plan, runs, tmp_path, base) == (
        "3 of 9 planned runs finished (seeds 0, 1, 2, each on a fresh stratified 80% subset of the training split). "
        "Status: partly trained: `KD_IG-1` (2 epochs done); not started: Student (seed 2); KD_IG (seed 2); "
        "KD_IG @ width=0.25 (seeds 0, 1, 2)."
    )
    every_run = dict.fromkeys([j["run_id"] for j in jobs], {})
    assert status_line(plan, every_run, tmp_path, base).endswith("Status: every planned run has finished.")


def test_status_says_seed_and_epoch_in_the_singular_for_one(tmp_path):
    """The compression sweep plans one seed: its status said 'seeds 0'; and a run one epoch in, '1 epochs done'."""
    jobs = [{"run_id": f"KD-k{k}", "group": "KD", "arch": f"m:k={k}", "seed": 0} for k in (3, 7)]
    (tmp_path / "students" / "KD-k7").mkdir(parents=True)
    (tmp_path / "students" / "KD-k7" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert status_line({"calls": [{"train_fraction": 0.8}], "jobs": jobs}, {}, tmp_path, "m:k=5") == (
        "0 of 2 planned runs finished (seed 0, each on a fresh stratified 80% subset of the training split). "
        "Status: partly trained: `KD-k7` (1 epoch done); not started: KD @ k=3 (seed 0)."
    )


def test_a_run_two_experiments_plan_is_one_job_naming_both():
    """The compression sweep's k=5 runs are the ablation's: runs.csv names both experiments, and the first plan's arm
    (a later plan overwrote it: the ablation's runs read as the sweep's, family 'blocks')."""
    ablation = {"jobs": [{"run_id": "KD-k5", "group": "KD", "family": "ablation", "seed": 0}]}
    sweep = {"jobs": [{"run_id": "KD-k3", "group": "KD", "family": "blocks", "seed": 0}, {**ablation["jobs"][0], "family": "blocks"}]}
    jobs = jobs_by_run({"ablation": ablation, "sweep": sweep})
    assert list(jobs) == ["KD-k5", "KD-k3"]
    assert (jobs["KD-k5"]["experiment"], jobs["KD-k5"]["family"]) == ("ablation, sweep", "ablation")
    assert (jobs["KD-k3"]["experiment"], jobs["KD-k3"]["family"]) == ("sweep", "blocks")
