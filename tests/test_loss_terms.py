"""Loss terms as registered modules: a user's term (tests/toy_loss_term.py, one file and one registration) trains from
the command line, a mix spelled out in the config equals its preset, and bad mixes fail with one line."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import run_cli, sets, tiny_config_tree, tiny_overrides
from igkd.artifacts.fingerprint import hash_state_dict
from igkd.artifacts.identity import stage_identities
from igkd.config import validate_config
from igkd.data.prepare import prepare_data
from igkd.training.distill import distill_student
from igkd.training.teacher import train_teacher

CPU = torch.device("cpu")


def test_a_term_of_your_own_trains_from_the_command_line(tmp_path, capsys, monkeypatch):
    mix = ["imports=[toy_loss_term]", "student.method=KD_L2", "student.terms={ce: 0.9, logit_l2: 0.1}"]
    code, out, err = run_cli(["distill", *sets(tiny_overrides(tmp_path) + mix)], capsys, monkeypatch)
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "tiny" / "students").glob("KD_L2-*")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "train_kd" not in rows[0] and rows[0]["train_logit_l2"] > 0
    assert rows[0]["train_loss"] == pytest.approx(0.9 * rows[0]["train_ce"] + 0.1 * rows[0]["train_logit_l2"], rel=1e-5)
    assert json.loads((run / "final.json").read_text())["method"] == "KD_L2"
    assert not list((tmp_path / "runs" / "tiny" / "cache").glob("ig-*"))  # a mix without the overlay needs no maps


def test_a_mix_spelled_out_trains_exactly_as_its_preset(tmp_path):
    tree = tiny_config_tree(tmp_path)
    cfg = validate_config(tree)
    data = prepare_data(cfg)
    teacher, _ = train_teacher(cfg, data, CPU, tmp_path / "teacher")
    maps = torch.rand(len(data.pool), *data.pool.image_size, generator=torch.Generator().manual_seed(0))
    spelled = validate_config(tiny_config_tree(tmp_path, method="MY_KD_IG", terms={"kd": 0.01, "ce": 0.99}, overlay=True))
    preset, _ = distill_student(cfg, data, teacher, maps, CPU, tmp_path / "preset")
    mine, _ = distill_student(spelled, data, teacher, maps, CPU, tmp_path / "mine")
    assert hash_state_dict(mine.model.state_dict()) == hash_state_dict(preset.model.state_dict())
    # a different run all the same: its own identity (and folder), with the maps it overlays
    ids, preset_ids = stage_identities(spelled, data.content_digest), stage_identities(cfg, data.content_digest)
    assert ids.student != preset_ids.student and ids.maps == preset_ids.maps


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("student.terms={ce: 1.0, nope: 1.0}", "unknown loss term 'nope'; choose from"),
        ("student.terms={ce: 1.0}", "name it with student.method=NAME, not the preset 'KD_IG'"),
        ("imports=[no_such_module_here]", "imports in .*cannot import 'no_such_module_here'"),
    ],
)
def test_a_bad_mix_is_one_error_line_and_writes_nothing(tmp_path, capsys, monkeypatch, setting, message):
    code, _, err = run_cli(["distill", *sets([*tiny_overrides(tmp_path), setting])], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert not (tmp_path / "runs").exists()
