"""Config loading, overrides and one-line validation errors."""

from __future__ import annotations

import pytest

from igkd.config import load_config, parse_override
from igkd.errors import IgkdError


def test_builtin_configs_load_and_paper_settings_are_in_the_cifar_config():
    digits = load_config("digits")
    assert digits.data.source == "digits"
    cifar = load_config("cifar10")
    assert cifar.student.arch == "mobilenetv2_cifar:k=5" and cifar.student.kd.alpha == 0.01
    assert cifar.student.kd.temperature == 2.5 and cifar.student.at.gamma == 0.8 and cifar.student.ig.prob == 0.1
    assert cifar.attribution.steps == 50 and cifar.student.train.optimizer == "adam" and cifar.student.train.batch_size == 64
    jpeg = load_config("cifar10_jpeg")
    assert jpeg.data.source == "imagefolder" and jpeg.data.classes[0] == "airplane"


def test_overrides_are_typed_and_method_names_canonical():
    cfg = load_config("digits", ["student.train.epochs=3", "student.method=kd_ig_at", "student.at.pairs=[[3, 3]]", "seed=7"])
    assert cfg.student.train.epochs == 3 and cfg.seed == 7
    assert cfg.student.method == "KD_IG_AT" and cfg.student.at.pairs == [(3, 3)]
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert load_config("digits", ["student.train.lr=1e-3"]).student.train.lr == 1e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("student.kd.alpha=2", "student.kd.alpha"),
        ("student.method=distill", "unknown method 'distill'"),
        ("student.arch=resnet50", "unknown architecture"),
        ("student.train.optimizer=lbfgs", "student.train.optimizer"),
        ("teacher.train.epochs=0", "teacher.train.epochs"),
        ("student.nonsense=1", "student.nonsense"),
        ("attribution.baseline=white", "attribution.baseline"),
        ("student.ig.prob=-0.1", "student.ig.prob"),
        ("no_equals_sign", "not of the form"),
        ("student.train.lr_scaling=sqrt", r"needs base_batch_size .*--set student.train.<key>="),
        ("student.train.lr_scaling=cubic", "student.train.lr_scaling"),
    ],
)
def test_invalid_values_give_one_line_errors(override, message):
    with pytest.raises(IgkdError, match=message) as info:
        load_config("digits", [override])
    assert "\n" not in str(info.value)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(IgkdError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(IgkdError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(IgkdError, match="no built-in config 'nope'"):
        load_config("nope")


def test_lr_scales_with_the_batch_from_its_base_batch_size():
    paper = load_config("cifar10_jpeg")
    assert paper.teacher.train.scaled_lr == paper.teacher.train.lr == 0.1  # the paper's batch: unchanged
    assert paper.student.train.scaled_lr == paper.student.train.lr == 1e-3
    large = load_config("cifar10_jpeg", ["teacher.train.batch_size=512", "student.train.batch_size=1024"])
    assert large.teacher.train.scaled_lr == pytest.approx(0.1 * 512 / 128)  # linear, SGD
    assert large.student.train.scaled_lr == pytest.approx(1e-3 * 4.0)  # sqrt(1024 / 64), Adam
    unscaled = load_config("cifar10_jpeg", ["student.train.batch_size=1024", "student.train.lr_scaling=none"])
    assert unscaled.student.train.scaled_lr == 1e-3


def test_a_config_extends_another_and_overrides_only_what_it_names(tmp_path):
    jpeg, cifar = load_config("cifar10_jpeg"), load_config("cifar10")
    assert jpeg.teacher == cifar.teacher and jpeg.student == cifar.student and jpeg.attribution == cifar.attribution
    assert (jpeg.data.source, jpeg.data.image_size, jpeg.data.crop_padding) == ("imagefolder", 32, 4)
    assert jpeg.name == "cifar10-jpeg-paper" and jpeg.report.data_label == "CIFAR-10 (JPEG q75)"
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: cifar10_jpeg\nstudent:\n  train:\n    epochs: 3\n")
    cfg = load_config(mine)
    assert cfg.student.train.epochs == 3 and cfg.student.train.batch_size == 64 and cfg.data.source == "imagefolder"
    (tmp_path / "child.yaml").write_text("extends: mine.yaml\nseed: 4\n")  # a path relative to the extending file
    assert load_config(tmp_path / "child.yaml").student.train.epochs == 3
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(IgkdError, match="leads back to itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(IgkdError, match="nowhere.yaml' not found"):
        load_config(tmp_path / "c.yaml")


def test_one_normalisation_syntax_for_the_config_and_the_command_line():
    from igkd.models.loading import parse_normalize
    from igkd.normalization import normalization_values

    for text, expected in [("0.5,0.4,0.3/0.2,0.25,0.3", ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])), ("none", ([0.0] * 3, [1.0] * 3))]:
        cfg = load_config("digits", [f"teacher.normalize={text}"])
        assert normalization_values(cfg.teacher.normalize, None) == parse_normalize(text) == expected
    for bad in ("0.5,0.4/0.2,0.2,0.2", "1,1,1/0,1,1", "imagenet"):
        with pytest.raises(IgkdError, match="m1,m2,m3/s1,s2,s3") as from_config:
            load_config("digits", [f"teacher.normalize={bad}"])
        with pytest.raises(IgkdError, match="m1,m2,m3/s1,s2,s3") as from_option:
            parse_normalize(bad)
        assert "\n" not in str(from_config.value) + str(from_option.value)


def test_on_and_off_switches_survive_yaml_booleans(tmp_path):
    cfg = load_config("digits", ["student.train.amp=off", "teacher.train.channels_last=on", "student.train.channels_last=off"])
    assert (cfg.student.train.amp, cfg.teacher.train.channels_last, cfg.student.train.channels_last) == ("off", "on", "off")
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: digits\nteacher:\n  train:\n    amp: off\n    channels_last: on\n")
    assert (load_config(mine).teacher.train.amp, load_config(mine).teacher.train.channels_last) == ("off", "on")
    with pytest.raises(IgkdError, match=r"student\.train\.amp.*write bf16 .* or auto"):
        load_config("digits", ["student.train.amp=on"])  # on could mean bf16 or auto: refused, not guessed


def test_the_config_option_names_every_built_in_config(capsys, monkeypatch):
    from conftest import run_cli
    from igkd.configs import builtin_config_names

    code, out, _ = run_cli(["experiment", "--help"], capsys, monkeypatch)
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "cifar10_jpeg_cpu" in builtin_config_names()
    assert f"a built-in name: {', '.join(builtin_config_names())}." in text
