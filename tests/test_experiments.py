"""Experiments at tiny scale on CPU: plans, resumable/sharded/parallel runs, transfer evaluation and the report."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from conftest import tiny_overrides, write_image_folder
from igkd.artifacts.fingerprint import hash_file
from igkd.config import load_config
from igkd.errors import IgkdError
from igkd.evaluation.modelstats import count_params
from igkd.experiments.analysis import map_agreement
from igkd.experiments.document import Document
from igkd.experiments.plan import PlanOptions, parse_shard, plan_jobs, shard, sweep_archs
from igkd.experiments.restore import restore_runs
from igkd.models.registry import build_model
from test_cli import _sets, igkd

TINY_EXPERIMENT = ["report.agreement_images=24", "attribution.steps=4"]
DATA = "0" * 64  # a data content digest: plans are pure functions of config and data


def _args(tmp: Path) -> list[str]:
    return _sets(tiny_overrides(tmp) + TINY_EXPERIMENT)


def test_ablation_plan_has_ten_methods_two_controls_per_seed_with_unique_runs():
    jobs = plan_jobs("ablation", load_config("digits"), PlanOptions(seeds=(0, 1, 2)), DATA)
    assert len(jobs) == 36 and len({j.run_id for j in jobs}) == 36
    assert [j.group for j in jobs[:12]] == [
        "Student",
        "KD",
        "IG",
        "AT",
        "KD_IG",
        "KD_AT",
        "IG_AT",
        "KD_IG_AT",
        "KD_EXPL",
        "KD_CAT",
        "KD_IG-shuffled",
        "KD_IG-noise",
    ]
    assert [j.seed for j in jobs] == [0] * 12 + [1] * 12 + [2] * 12
    assert all(j.cfg.student.train_fraction == 0.8 and j.cfg.seed == j.seed for j in jobs)
    assert {j.cfg.student.ig.maps for j in jobs if j.group == "KD_IG-noise"} == {"noise"}


def test_ablation_runs_only_the_chosen_controls_and_duplicate_options_plan_one_job_each():
    jobs = plan_jobs(
        "ablation",
        load_config("digits"),
        PlanOptions(seeds=(0,), methods=("Student", "kd_ig", "KD_IG"), controls=("shuffled", "shuffled")),
        DATA,
    )
    assert [j.group for j in jobs] == ["Student", "KD_IG", "KD_IG-shuffled"]
    none = plan_jobs("ablation", load_config("digits"), PlanOptions(seeds=(0,), methods=("KD_IG",), controls=()), DATA)
    assert [j.group for j in none] == ["KD_IG"]
    sweep = plan_jobs("sweep", load_config("digits"), PlanOptions(seeds=(0,), methods=("kd", "KD"), blocks=(3, 3), widths=(0.5, 0.5)), DATA)
    assert [(j.family, j.method) for j in sweep] == [("blocks", "KD"), ("width", "KD")]
    with pytest.raises(IgkdError, match="--controls blurred: unknown map control"):
        plan_jobs("ablation", load_config("digits"), PlanOptions(seeds=(0,), controls=("blurred",)), DATA)


def test_a_control_named_by_its_arm_runs_alone_as_the_same_run_the_method_with_controls_plans():
    """--methods KD_IG-noise: the noise control without KD_IG on the teacher's maps (a campaign on a machine without
    maps can run it), the very job that --methods KD_IG --controls noise plans beside KD_IG."""
    digits = load_config("digits")
    alone = plan_jobs("ablation", digits, PlanOptions(seeds=(1,), methods=("kd_ig-noise", "AT"), controls=()), DATA)
    assert [(j.group, j.method, j.cfg.student.ig.maps) for j in alone] == [("AT", "AT", "aligned"), ("KD_IG-noise", "KD_IG", "noise")]
    beside = plan_jobs("ablation", digits, PlanOptions(seeds=(1,), methods=("KD_IG",), controls=("noise",)), DATA)
    assert [j.group for j in beside] == ["KD_IG", "KD_IG-noise"] and beside[1].run_id == alone[1].run_id
    with pytest.raises(IgkdError, match=r"--methods KD-noise: KD overlays no maps, so it has no noise control; .* \(e.g. KD_IG-noise\)"):
        plan_jobs("ablation", digits, PlanOptions(seeds=(0,), methods=("KD-noise",)), DATA)


def test_sweep_students_span_the_papers_compression_range():
    archs = sweep_archs("mobilenetv2_cifar")
    teacher = count_params(build_model("mobilenetv2_cifar", 10))
    factors = {arch: round(teacher / count_params(build_model(arch, 10)), 2) for family, arch in archs if family == "blocks"}
    assert factors["mobilenetv2_cifar:k=3"] == 2.19 and factors["mobilenetv2_cifar:k=5"] == 4.12
    assert factors["mobilenetv2_cifar:k=17"] == 1121.71
    assert [arch for family, arch in archs if family == "width"][:2] == ["mobilenetv2_cifar:width=0.75", "mobilenetv2_cifar:width=0.5"]
    jobs = plan_jobs("sweep", load_config("digits"), PlanOptions(seeds=(0,), blocks=(3, 17), widths=(0.5,)), DATA)
    assert len(jobs) == 3 * 4 and {j.method for j in jobs} == {"Student", "KD", "IG", "KD_IG"}
    assert sweep_archs("mobilenetv2_cifar:width=0.5:k=10", (2,), (0.5,)) == [
        ("blocks", "mobilenetv2_cifar:width=0.5:k=12"),
        ("width", "mobilenetv2_cifar:width=0.25:k=10"),
    ]
    with pytest.raises(IgkdError, match="allows removing 1..7 more blocks"):
        sweep_archs("mobilenetv2_cifar:k=10", (8,), ())


def test_shards_are_disjoint_and_cover_every_job():
    jobs = plan_jobs("ablation", load_config("digits"), PlanOptions(seeds=(0, 1)), DATA)
    parts = [shard(jobs, i, 3) for i in range(3)]
    ids = [j.run_id for part in parts for j in part]
    assert sorted(ids) == sorted(j.run_id for j in jobs) and len(ids) == len(set(ids))
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1"):
        with pytest.raises(IgkdError, match="--shard"):
            parse_shard(bad)


def test_map_agreement_is_one_for_equal_maps_and_minus_one_for_reversed_ranks():
    a = np.random.default_rng(0).random((3, 8, 8))
    same = map_agreement(a, a)
    assert same["spearman_mean"] == pytest.approx(1.0) and same["top10_iou_mean"] == pytest.approx(1.0)
    reverse = map_agreement(a, -a)
    assert reverse["spearman_mean"] == pytest.approx(-1.0) and reverse["top10_iou_mean"] == 0.0


def test_document_renders_the_same_table_to_markdown_and_escaped_html():
    doc = Document("t")
    doc.table(["a", "b"], [["**x**", "1 < 2"]])
    assert "| **x** | 1 < 2 |" in doc.markdown()
    assert "<td><b>x</b></td><td>1 &lt; 2</td>" in doc.html()


def _spearman_agreement(teacher: Path, student: Path, args: list[str]) -> float:
    """Mean per-image Spearman correlation of the two models' IG maps on the analysis images: Pearson of average ranks."""
    from igkd.attribution import compute_ig_maps
    from igkd.data.sources import load_split
    from igkd.experiments.analysis import agreement_indices
    from igkd.models.checkpoint import load_checkpoint

    cfg = load_config("digits", args[1::2])
    test = load_split(cfg.data, "test", cfg.cache_path)
    picks = agreement_indices(test.labels, cfg.report.agreement_images)
    images, labels = test.images[picks], test.labels[picks]
    maps = [compute_ig_maps(load_checkpoint(p).model, images, labels, cfg.attribution, torch.device("cpu"))[0] for p in (teacher, student)]
    ranks = [sps.rankdata(m.reshape(len(m), -1), axis=1) for m in maps]
    return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(*ranks)]))


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    result = igkd("experiment", "ablation", *_args(tmp), "--seeds", "2", "--methods", "Student,KD_IG")
    assert result.returncode == 0, result.stderr
    return tmp, result


def test_ablation_runs_every_job_with_analysis_and_skips_them_when_re_run(ablation):
    tmp, result = ablation
    run_dir = tmp / "runs" / "tiny"
    plan = json.loads((run_dir / "experiments" / "ablation.json").read_text())
    assert [j["group"] for j in plan["jobs"][:4]] == ["Student", "KD_IG", "KD_IG-shuffled", "KD_IG-noise"] and len(plan["jobs"]) == 8
    for job in plan["jobs"]:
        folder = run_dir / "students" / job["run_id"]
        assert json.loads((folder / "final.json").read_text())["identity"] == job["identity"]
        agreement = json.loads((folder / "analysis.json").read_text())["ig_agreement"]
        assert agreement["images"] == 24
    # the recorded agreement is that of this student with this teacher: recompute one from fresh IG maps
    first = run_dir / "students" / plan["jobs"][1]["run_id"]
    assert json.loads((first / "analysis.json").read_text())["ig_agreement"]["spearman_mean"] == pytest.approx(
        _spearman_agreement(run_dir / "teacher" / "model.pt", first / "model.pt", _args(tmp)), abs=1e-6
    )
    again = igkd("experiment", "ablation", *_args(tmp), "--seeds", "2", "--methods", "Student,KD_IG")
    assert again.returncode == 0 and "8 finished earlier, 0 to run" in again.stdout
    victim = run_dir / "students" / plan["jobs"][5]["run_id"] / "final.json"
    victim.unlink()
    resumed = igkd("experiment", "ablation", *_args(tmp), "--seeds", "2", "--methods", "Student,KD_IG")
    assert resumed.returncode == 0 and "7 finished earlier, 1 to run" in resumed.stdout and victim.is_file()
    robustness = run_dir / "students" / plan["jobs"][2]["run_id"] / "robustness.json"
    robustness.unlink()  # as if robustness.enabled were turned on after training: only the evaluation runs
    backfilled = igkd("experiment", "ablation", *_args(tmp), "--seeds", "2", "--methods", "Student,KD_IG")
    assert backfilled.returncode == 0 and "7 finished earlier, 1 to run" in backfilled.stdout
    assert "student: reusing" in backfilled.stdout and "student epoch" not in backfilled.stdout and robustness.is_file()


def _welch_p(a: list[float], b: list[float]) -> float:
    """Welch's p-value by scipy; 1 where both arms hold one same value (t = 0/0: no evidence of a difference)."""
    if len(set(a) | set(b)) == 1:
        return 1.0
    with warnings.catch_warnings():  # an arm of one repeated value: scipy warns, though its variance is exactly 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


@pytest.fixture(scope="module")
def reported(ablation):
    """The ablation's report, as ``igkd report`` writes it (before the tests below add transfer records)."""
    tmp, _ = ablation
    result = igkd("report", *_args(tmp))
    assert result.returncode == 0, result.stderr
    return tmp


def test_report_statistics_match_an_independent_computation(reported):
    tmp = reported
    out = tmp / "runs" / "tiny" / "report"
    summary = json.loads((out / "summary.json").read_text())["ablation"]
    with open(out / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and len(list((out / "runs").glob("*.json"))) == 9  # 8 students + teacher
    by_group = {g: [float(r["test_accuracy"]) for r in rows if r["group"] == g] for g in ("Student", "KD_IG")}
    assert summary["summary"]["KD_IG"]["mean"] == pytest.approx(np.mean(by_group["KD_IG"]))
    assert summary["summary"]["KD_IG"]["n"] == 2
    welch = next(t for t in summary["tests"]["welch"] if {t["a"], t["b"]} == {"KD_IG", "Student"})
    assert welch["p_value"] == pytest.approx(_welch_p(by_group["KD_IG"], by_group["Student"]))
    markdown = (out / "report.md").read_text()
    for needle in ("## Ablation", "### Pairwise tests", "figures/ablation_box.png", "figures/ig_maps.png", "IG Spearman", "## Provenance"):
        assert needle in markdown
    assert "student maps: Student seed 0, KD_IG seed 0." in markdown
    assert (out / "figures" / "ablation_box.png").stat().st_size > 1000 and (out / "report.html").read_text().startswith("<!doctype html>")
    robustness = summary["robustness"]
    mca = {g: [float(r["mean_corruption_accuracy"]) for r in rows if r["group"] == g] for g in ("Student", "KD_IG")}
    assert robustness["mca"]["KD_IG"]["mean"] == pytest.approx(np.mean(mca["KD_IG"])) and robustness["mca"]["KD_IG"]["n"] == 2
    welch = next(t for t in robustness["tests"]["welch"] if {t["a"], t["b"]} == {"KD_IG", "Student"})
    assert welch["p_value"] == pytest.approx(_welch_p(mca["KD_IG"], mca["Student"]))
    assert (
        "### Robustness: common corruptions and distribution shift" in markdown and "Pairwise tests on mean corruption accuracy" in markdown
    )
    assert (out / "figures" / "ablation_robustness.png").stat().st_size > 1000


def test_transfer_evaluates_teacher_and_students_on_a_subset_of_classes(ablation, tmp_path):
    tmp, _ = ablation
    root = tmp_path / "other"
    write_image_folder(root / "val", {"3": 4, "5": 2}, size=12)
    result = igkd("transfer", *_args(tmp), "--root", str(root), "--split", "val", "--name", "other")
    assert result.returncode == 0, result.stderr
    teacher = json.loads((tmp / "runs" / "tiny" / "teacher" / "transfer-other.json").read_text())["splits"]["val"]
    assert teacher["n"] == 6 and teacher["classes_present"] == ["3", "5"] and len(teacher["classes"]) == 10
    per_class = teacher["per_class_accuracy"]
    assert teacher["balanced_accuracy"] == pytest.approx((per_class["3"] + per_class["5"]) / 2)
    assert len(list((tmp / "runs" / "tiny" / "students").glob("*/transfer-other.json"))) == 8
    again = igkd("transfer", *_args(tmp), "--root", str(root), "--split", "val", "--name", "other")
    assert "evaluated 0 of 9 models" in again.stdout


def _landing(run_dir: Path, landing: Path, kept: list[str]) -> Path:
    """What a campaign lands: a copy of the report, and some models with a manifest (file, sha256, run folder)."""
    shutil.copytree(run_dir / "report", landing / "report")
    models = landing / "models"
    models.mkdir()
    manifest = []
    for run in kept:
        folder = run_dir / "teacher" if run == "teacher" else run_dir / "students" / run
        shutil.copy(folder / "model.pt", models / f"{run}.pt")
        manifest.append({"file": f"{run}.pt", "sha256": hash_file(models / f"{run}.pt"), "run": run})
    (models / "manifest.json").write_text(json.dumps(manifest))
    return models


def test_a_landed_report_restores_the_runs_on_a_new_machine_and_nothing_trains_again(reported, tmp_path):
    tmp = reported
    run_dir = tmp / "runs" / "tiny"
    jobs = json.loads((run_dir / "experiments" / "ablation.json").read_text())["jobs"]
    kept, dropped = jobs[0]["run_id"], jobs[1]["run_id"]
    kd_ig_seed1 = next(j["run_id"] for j in jobs if j["group"] == "KD_IG" and j["seed"] == 1)  # KD_IG's best, say
    models = _landing(run_dir, tmp_path / "landing", ["teacher", kept, kd_ig_seed1])
    args = _sets(tiny_overrides(tmp_path / "new") + TINY_EXPERIMENT)
    new_dir = tmp_path / "new" / "runs" / "tiny"
    # the campaign started on the new machine before the restore: one run under way, one folder still empty
    (new_dir / "students" / kept).mkdir(parents=True)
    (new_dir / "students" / kept / "metrics.jsonl").write_text('{"epoch": 1, "seconds": 1.0}\n')
    (new_dir / "students" / dropped).mkdir()

    restored = igkd("restore", str(tmp_path / "landing" / "report"), "--models", str(models), *args)
    assert restored.returncode == 0, restored.stderr
    assert "9 runs written" in restored.stdout and "(6 without their model" in restored.stdout and "plans: ablation" in restored.stdout
    assert "2 in place of a folder with no finished run), 0 finished there already" in restored.stdout
    assert hash_file(new_dir / "students" / kept / "model.pt") == hash_file(run_dir / "students" / kept / "model.pt")
    assert (new_dir / "students" / kept / "metrics.jsonl").read_text() == (run_dir / "students" / kept / "metrics.jsonl").read_text()
    assert not list((new_dir / "students").glob(".*"))  # nothing staged or set aside is left behind
    landed = json.loads((new_dir / "students" / dropped / "landed.json").read_text())
    assert not (new_dir / "students" / dropped / "model.pt").exists()
    assert landed["model_sha256"] == hash_file(run_dir / "students" / dropped / "model.pt")

    again = igkd("experiment", "ablation", *args, "--seeds", "2", "--methods", "Student,KD_IG")
    assert again.returncode == 0, again.stderr
    assert "8 finished earlier, 0 to run" in again.stdout and "attributions:" not in again.stdout  # no maps for finished runs
    assert igkd("report", *args).returncode == 0
    assert (new_dir / "report" / "runs.csv").read_text() == (run_dir / "report" / "runs.csv").read_text()
    # the IG figure takes each arm's lowest seed whose model is here: KD_IG's seed 0 came back without its model
    assert "student maps: Student seed 0, KD_IG seed 1." in (new_dir / "report" / "report.md").read_text()
    assert (
        json.loads((new_dir / "report" / "summary.json").read_text())["ablation"]
        == json.loads((run_dir / "report" / "summary.json").read_text())["ablation"]
    )

    final = new_dir / "students" / kept / "final.json"  # a restored summary names the model's folder on its own machine
    final.write_text(json.dumps({**json.loads(final.read_text()), "checkpoint": "/elsewhere/model.pt"}))
    more = igkd(
        "experiment",
        "ablation",
        *args,
        "--set",
        "report.agreement_images=12",
        "--seeds",
        "1",
        "--methods",
        "Student,KD_IG",
        "--controls",
        "none",
    )
    assert more.returncode == 2 and f"1 of 2 runs failed (first: {dropped}:" in more.stderr and "restored without its model" in more.stderr
    assert json.loads((new_dir / "students" / kept / "analysis.json").read_text())["ig_agreement"]["images"] == 12

    root = write_image_folder(tmp_path / "shifted" / "val", {"3": 2, "5": 2}, size=12).parent
    transfer = igkd("transfer", *args, "--root", str(root), "--split", "val", "--name", "shifted")
    assert transfer.returncode == 0, transfer.stderr
    assert "evaluated 3 of 9 models (0 up to date; not " in transfer.stdout and dropped in transfer.stdout
    twice = restore_runs(tmp_path / "landing" / "report", new_dir, models)
    assert twice.runs == [] and twice.replaced == [] and len(twice.present) == 9 and twice.plans == ["ablation"]


def test_restore_checks_the_models_and_the_config_before_writing_anything(reported, tmp_path):
    run_dir = reported / "runs" / "tiny"
    first = json.loads((run_dir / "experiments" / "ablation.json").read_text())["jobs"][0]["run_id"]
    models = _landing(run_dir, tmp_path / "landing", [first])
    (models / f"{first}.pt").write_bytes(b"not this model")
    report = tmp_path / "landing" / "report"
    with pytest.raises(IgkdError, match="does not match the SHA-256 its manifest.json records"):
        restore_runs(report, tmp_path / "new" / "tiny", models)
    with pytest.raises(IgkdError, match="is the report of config 'tiny', not of 'other'"):
        restore_runs(report, tmp_path / "new" / "other")
    with pytest.raises(IgkdError, match="holds no runs/ folder"):
        restore_runs(run_dir, tmp_path / "new" / "tiny")
    (report / "runs" / "broken.json").write_text("{not json")
    with pytest.raises(IgkdError, match="broken.json is not what 'igkd report' writes"):
        restore_runs(report, tmp_path / "new" / "tiny")
    assert not (tmp_path / "new").exists()


def test_plan_only_plans_the_runs_for_the_reports_status_and_trains_nothing(tmp_path):
    options = ["--seeds", "2", "--methods", "Student,KD"]
    planned = igkd("experiment", "ablation", *_args(tmp_path), *options, "--plan-only")
    assert planned.returncode == 0, planned.stderr
    assert "ablation: 4 runs planned in" in planned.stdout and "nothing trained" in planned.stdout
    run_dir = tmp_path / "runs" / "tiny"
    assert len(json.loads((run_dir / "experiments" / "ablation.json").read_text())["jobs"]) == 4
    assert not (run_dir / "teacher").exists() and not (run_dir / "students").exists()
    reported = igkd("report", *_args(tmp_path))
    assert reported.returncode == 0, reported.stderr
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "0 of 4 planned runs finished" in markdown and "Status: not started: Student (seeds 0, 1); KD (seeds 0, 1)." in markdown
    both = igkd("experiment", "ablation", *_args(tmp_path), *options, "--plan-only", "--dry-run")
    assert both.returncode == 2 and "--plan-only writes the plan and --dry-run writes nothing" in both.stderr


def test_sharded_sweep_in_parallel_workers_needs_the_shared_teacher_first(tmp_path, ablation):
    fresh = igkd("experiment", "sweep", *_args(tmp_path), "--seeds", "1", "--blocks", "5", "--shard", "0/2")
    assert fresh.returncode == 2 and "shared teacher" in fresh.stderr and len(fresh.stderr.strip().splitlines()) == 1
    tmp, _ = ablation
    common = ["experiment", "sweep", *_args(tmp), "--seeds", "1", "--blocks", "5", "--widths", "0.5", "--methods", "Student,KD"]
    first = igkd(*common, "--shard", "0/2", "--jobs", "2")
    second = igkd(*common, "--shard", "1/2")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "holds 2 of 4 runs" in first.stdout and "holds 2 of 4 runs" in second.stdout
    plan = json.loads((tmp / "runs" / "tiny" / "experiments" / "sweep.json").read_text())
    folders = [tmp / "runs" / "tiny" / "students" / job["run_id"] for job in plan["jobs"]]
    assert all((f / "final.json").is_file() for f in folders)
    assert sum((f / "log.txt").is_file() for f in folders) == 2  # the parallel shard's workers log to files


def test_the_agreement_is_integrated_gradients_whatever_source_trained_the_students():
    from igkd.attribution.params import IGParams
    from igkd.data.imageset import ImageSet
    from igkd.experiments.analysis import ig_agreement

    torch.manual_seed(0)
    teacher, student = build_model("mobilenetv2_cifar:width=0.1", 4).eval(), build_model("mobilenetv2_cifar:width=0.1:k=5", 4).eval()
    test = ImageSet(torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8), torch.arange(8) % 4, list("abcd"))
    ig = IGParams(steps=4)
    gradcam = ig.model_copy(update={"source": "gradcam", "layer": "features.18"})  # a layer the k=5 student lacks
    cpu = torch.device("cpu")
    assert ig_agreement(teacher, student, test, 8, gradcam, cpu) == ig_agreement(teacher, student, test, 8, ig, cpu)
