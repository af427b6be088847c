"""One identity per stage: a change upstream re-runs every stage below it, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import run_cli, tiny_config_tree, tiny_overrides
from igkd.artifacts.identity import stage_identities
from igkd.config import validate_config
from igkd.experiments.plan import PlanOptions, plan_jobs
from igkd.stages.pipeline import Pipeline
from igkd.stages.plan import names, stages_for
from test_cli import _sets, igkd

DATA = "a" * 64


def _ids(tmp: Path, **changes):
    tree = tiny_config_tree(tmp)
    for dotted, value in changes.items():
        node = tree
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return stage_identities(validate_config(tree), DATA)


def test_each_change_reaches_exactly_the_stages_that_depend_on_it(tmp_path):
    base = _ids(tmp_path)
    teacher = _ids(tmp_path, teacher__train__epochs=2)
    assert (teacher.data, teacher.teacher != base.teacher, teacher.maps != base.maps, teacher.student != base.student) == (
        base.data,
        True,
        True,
        True,
    )
    maps = _ids(tmp_path, attribution__steps=5)
    assert (maps.teacher, maps.maps != base.maps, maps.student != base.student) == (base.teacher, True, True)
    assert _ids(tmp_path, attribution__batch_size=7) == base  # a throughput knob changes no result
    assert _ids(tmp_path, teacher__train__eval_batch_size=7, student__train__eval_batch_size=3) == base  # nor does this one
    student = _ids(tmp_path, student__train__epochs=3)
    assert (student.teacher, student.maps, student.student != base.student) == (base.teacher, base.maps, True)
    seed = _ids(tmp_path, seed=1)
    assert (seed.teacher, seed.maps, seed.student != base.student) == (base.teacher, base.maps, True)
    split = _ids(tmp_path, data__split_seed=3)
    assert split.data != base.data and split.teacher != base.teacher and split.student != base.student
    assert stage_identities(validate_config(tiny_config_tree(tmp_path)), "b" * 64).teacher != base.teacher  # other data content
    plain = _ids(tmp_path, student__method="KD")
    assert plain.maps is None and _ids(tmp_path, student__method="KD", attribution__steps=5) == plain  # KD overlays no maps
    assert _ids(tmp_path, name="other", out_dir=str(tmp_path / "elsewhere"), report__examples=1) == base


def test_a_term_that_reads_the_teachers_maps_makes_the_student_depend_on_them(tmp_path):
    frozen = _ids(tmp_path, student__method="KD_EXPL_FROZEN")
    assert frozen.maps == _ids(tmp_path).maps  # the same maps stage as KD_IG's
    other_maps = _ids(tmp_path, student__method="KD_EXPL_FROZEN", attribution__source="gradcam", attribution__layer="features.3")
    assert other_maps.maps != frozen.maps and other_maps.student != frozen.student
    assert _ids(tmp_path, student__method="KD_EXPL").maps is None  # the online term reads no maps
    frozen_cfg = validate_config(tiny_config_tree(tmp_path, method="KD_EXPL_FROZEN"))
    assert names(stages_for("distill", frozen_cfg)) == ("teacher", "maps", "student")
    assert names(stages_for("distill", validate_config(tiny_config_tree(tmp_path, method="KD_EXPL")))) == ("teacher", "student")


def test_settings_added_later_keep_old_identities_at_their_default_and_count_when_set(tmp_path):
    """student.normalize, student.terms/overlay/explain/cat and teacher.rename came after format 1: runs made before
    them keep their folders."""
    base = _ids(tmp_path)
    assert _ids(tmp_path, student__normalize="teacher", teacher__rename=[]) == base
    hashed = {
        "format": 1,
        "stage": "student",
        "data": base.data,
        "teacher": base.teacher,
        "maps": base.maps,
        "seed": 0,
        "settings": validate_config(tiny_config_tree(tmp_path)).student.model_dump(
            mode="json", exclude={"normalize", "terms", "overlay", "explain", "cat"}
        ),
    }
    hashed["settings"]["train"]["eval_batch_size"] = 1024  # its default then, hashed so still (it changes no result)
    from igkd.artifacts.fingerprint import hash_jsonable

    assert hash_jsonable(hashed) == base.student  # exactly the hash of the settings as they were before
    own = _ids(tmp_path, student__normalize="cifar10")
    assert (own.teacher, own.maps, own.student != base.student) == (base.teacher, base.maps, True)
    mix = _ids(tmp_path, student__method="MINE", student__terms={"ce": 0.99, "kd": 0.01}, student__overlay=True)
    assert (mix.maps, mix.student != base.student) == (base.maps, True)
    assert _ids(tmp_path, student__explain={"weight": 2.0}).student != base.student
    renamed = _ids(tmp_path, teacher__rename=["module.="])
    assert renamed.teacher != base.teacher and renamed.data == base.data


def test_an_imported_teacher_is_identified_by_its_bytes_not_its_path(tmp_path):
    first, copy = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"w": torch.zeros(2)}, first)
    copy.write_bytes(first.read_bytes())
    a, b = _ids(tmp_path, teacher__checkpoint=str(first)), _ids(tmp_path, teacher__checkpoint=str(copy))
    assert a.teacher == b.teacher != _ids(tmp_path).teacher
    torch.save({"w": torch.ones(2)}, copy)
    assert _ids(tmp_path, teacher__checkpoint=str(copy)).teacher != a.teacher


def test_the_plan_and_the_pipeline_compute_the_same_student_identity(tmp_path):
    cfg = validate_config(tiny_config_tree(tmp_path))
    pipeline = Pipeline(cfg)
    jobs = plan_jobs("ablation", cfg, PlanOptions(seeds=(0,), methods=("Student", "KD_IG")), pipeline.data.content_digest)
    assert [job.group for job in jobs] == ["Student", "KD_IG", "KD_IG-shuffled", "KD_IG-noise"]
    for job in jobs:
        job_pipeline = Pipeline(job.cfg)
        assert job.identity == job_pipeline.identities.student
        assert job_pipeline.student_dir == cfg.run_dir / "students" / job.run_id
    assert len({job.identity for job in jobs}) == 4


def test_the_noise_control_trains_on_maps_drawn_from_its_seed_without_building_the_teachers(tmp_path, capsys, monkeypatch):
    """Its maps are uniform noise of the maps' shape: the IG maps (an hour or more on a CPU) were built for nothing."""
    noise = ["student.method=KD_IG", "student.ig.maps=noise", "report.examples=0"]
    assert _ids(tmp_path, student__ig__maps="noise").maps is None and _ids(tmp_path).maps is not None
    code, out, err = run_cli(["distill", *_sets(tiny_overrides(tmp_path) + noise), "--dry-run", "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert [stage["stage"] for stage in json.loads(out)["stages"]] == ["teacher", "student"]
    code, _, err = run_cli(["distill", *_sets(tiny_overrides(tmp_path) + noise)], capsys, monkeypatch)
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "tiny" / "students").iterdir()
    assert run.name.startswith("KD_IG-noise-") and "maps" not in json.loads((run / "final.json").read_text())
    assert not list(tmp_path.rglob("ig-*.npy"))  # no IG maps were computed


def test_a_student_of_another_teacher_is_retrained_not_reused(tmp_path):
    """The reported bug: with teacher epochs 1 then 2, the second run published the first teacher's student."""
    common = tiny_overrides(tmp_path) + ["report.examples=0"]
    run_dir = tmp_path / "runs" / "tiny"
    first = igkd("run", *_sets(common))
    assert first.returncode == 0, first.stderr
    first_student = Path(json.loads((run_dir / "results.json").read_text())["student"]["checkpoint"]).read_bytes()
    second = igkd("run", *_sets(common + ["teacher.train.epochs=2"]))
    assert second.returncode == 0, second.stderr
    assert "teacher: training" in second.stdout and "student: reusing" not in second.stdout
    assert "student epoch 1/1" in second.stdout  # trained, not resumed from the old student's finished state
    results = json.loads((run_dir / "results.json").read_text())
    assert Path(results["student"]["checkpoint"]).read_bytes() != first_student
    teacher_final = json.loads((run_dir / "teacher" / "final.json").read_text())
    assert results["student"]["identities"]["teacher"] == teacher_final["identity"]
    assert len(list((run_dir / "students").iterdir())) == 2  # the old student stays in its own folder
    metrics = [json.loads(line) for line in (Path(results["student"]["checkpoint"]).parent / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in metrics] == [1]  # trained now, one epoch, not resumed from the old state
    third = igkd("run", *_sets(common + ["teacher.train.epochs=2"]))
    assert "teacher: reusing" in third.stdout and "student: reusing" in third.stdout


def test_a_run_hashes_the_training_pool_once(tmp_path, monkeypatch):
    import igkd.artifacts.fingerprint as fingerprint

    hashed: list[tuple[int, ...]] = []
    original = fingerprint.hash_tensor

    def counting(tensor, digest=None):
        hashed.append(tuple(tensor.shape))
        return original(tensor, digest)

    monkeypatch.setattr(fingerprint, "hash_tensor", counting)
    tree = tiny_config_tree(tmp_path)
    tree["student"]["kd"] = {"teacher_logits": "cached"}
    pipeline = Pipeline(validate_config(tree))
    pipeline.run_student()  # teacher, IG maps, cached teacher logits, student
    pool = tuple(pipeline.data.pool.images.shape)
    assert hashed.count(pool) == 1
