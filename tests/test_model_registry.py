"""Any teacher, any student: the model registry, hub families, rename rules and feature layers by module path."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision
from torch import nn

from igkd.config import load_config
from igkd.errors import IgkdError
from igkd.losses.at import attention_pairs
from igkd.models import build_model, import_state_dict, load_checkpoint, parse_arch, save_checkpoint
from igkd.models.base import NormalizedModel
from igkd.models.features import FeatureTap, convolutions_on_1x1
from igkd.models.registry import ModelFamily, families, register_family
from igkd.models.rename import rename_keys
from igkd.normalization import normalization_values

CLASSES = [str(i) for i in range(7)]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_hub_names_parse_to_one_canonical_string_from_text_and_from_yaml_mappings():
    assert str(parse_arch("timm:resnet18:drop_rate=0.1")) == "timm:resnet18:drop_rate=0.1"
    spec = parse_arch("torchvision:resnet18:zero_init_residual=true:width_per_group=32")
    assert spec.kwargs == {"zero_init_residual": True, "width_per_group": 32}  # YAML scalars, not strings
    cfg = load_config("digits", ["student.arch={name: 'timm:resnet18', drop_rate: 0.1, drop_path_rate: 0.05}"])
    assert cfg.student.arch == "timm:resnet18:drop_path_rate=0.05:drop_rate=0.1"
    assert str(parse_arch("mobilenetv2_cifar:width=0.5:k=5")) == "mobilenetv2_cifar:width=0.5:k=5"  # the built-in as before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resnet18", "unknown architecture 'resnet18'"),
        ("torchvison:resnet18", "(closest: torchvision)"),
        ("torchvision:resnet_18", "unknown torchvision classification model 'resnet_18' (closest: resnet18"),
        ("timm:resnet18:drop_rate", "is not key=value"),
        ("torchvision:", "names no model"),
        ("torchvision:resnet18:no_such_option=1", "rejects the options {'no_such_option': 1}"),
    ],
)
def test_bad_architecture_names_are_one_line_errors_naming_the_fix(text, message):
    with pytest.raises(IgkdError) as info:
        build_model(text, 10)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_torchvision_and_timm_models_get_a_head_for_the_classes_and_normalise_inside():
    x = torch.rand(2, 3, 16, 16)
    for arch in ("torchvision:resnet18", "timm:resnet18"):
        torch.manual_seed(0)
        model = build_model(arch, len(CLASSES), MEAN, STD).eval()
        assert isinstance(model, NormalizedModel) and model(x).shape == (2, len(CLASSES))
        net = model.network
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        torch.testing.assert_close(model(x), net((x - mean) / std))
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=len(CLASSES))
    assert set(build_model("torchvision:resnet18", 7).network.state_dict()) == set(reference.state_dict())


def test_googlenet_training_output_is_reduced_to_its_logits():
    model = build_model("torchvision:googlenet:aux_logits=false:init_weights=false", 3).train()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_pretrained_normalisation_follows_the_family():
    assert normalization_values("pretrained", None, "timm:resnet18") == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert normalization_values("pretrained", None, "timm:vit_base_patch16_clip_224.openai")[0] == pytest.approx(
        [0.4815, 0.4578, 0.4082], abs=1e-4
    )
    assert normalization_values("pretrained", None, "mobilenetv2_cifar")[0] == pytest.approx([0.4914, 0.4822, 0.4465])


def test_student_normalisation_defaults_to_the_teachers_and_can_be_its_own(tmp_path):
    from igkd.data.prepare import prepare_data
    from igkd.models.checkpoint import LoadedModel
    from igkd.training.distill import new_student

    teacher = LoadedModel(
        build_model("mobilenetv2_cifar:width=0.5", 10, MEAN, STD), parse_arch("mobilenetv2_cifar:width=0.5"), CLASSES, list(MEAN), list(STD)
    )
    cfg = load_config("digits", [f"out_dir={tmp_path}"])
    data = prepare_data(cfg)
    assert new_student(cfg, data, teacher).mean.flatten().tolist() == pytest.approx(MEAN)
    own = load_config("digits", [f"out_dir={tmp_path}", "student.arch=timm:resnet18", "student.normalize=pretrained"])
    student = new_student(own, data, teacher)
    assert student.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406]) and isinstance(student.network, nn.Module)


def test_hub_checkpoints_record_the_spec_and_keep_the_networks_key_names(tmp_path):
    model = build_model("timm:resnet18:drop_rate=0.1", len(CLASSES), MEAN, STD)
    save_checkpoint(tmp_path / "m.pt", model, "timm:resnet18:drop_rate=0.1", CLASSES)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["arch"] == {"family": "timm", "source": "timm", "name": "resnet18", "kwargs": {"drop_rate": 0.1}}
    assert "conv1.weight" in payload["state_dict"]  # timm's own names: loadable by timm without igkd
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert str(loaded.arch) == "timm:resnet18:drop_rate=0.1" and loaded.mean == pytest.approx(list(MEAN))
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_checkpoints_written_before_the_registry_still_load(tmp_path):
    model = build_model("mobilenetv2_cifar:width=0.5:k=5", 10)
    save_checkpoint(tmp_path / "new.pt", model, "mobilenetv2_cifar:width=0.5:k=5", CLASSES + ["7", "8", "9"])
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["arch"].pop("family")  # the record of igkd <= 2227d6b: {name, width_mult, drop_last_blocks}
    torch.save(payload, tmp_path / "old.pt")
    assert str(load_checkpoint(tmp_path / "old.pt").arch) == "mobilenetv2_cifar:width=0.5:k=5"


def test_a_state_dict_with_renamed_and_regrouped_modules_imports_with_rename_rules(tmp_path):
    """A Lightning-style checkpoint of a CIFAR MobileNetV2 whose blocks sit in three differently named containers."""
    reference = build_model("mobilenetv2_cifar:width=0.5:k=5", 10, MEAN, STD)
    foreign = {}
    for key, value in reference.state_dict().items():
        if key.startswith("features."):
            block, rest = key.split(".")[1], key.split(".", 2)[2]
            group = "stem" if block == "0" else ("body" if int(block) < 8 else "tail")
            key = f"{group}.{int(block) - (1 if group == 'body' else 8 if group == 'tail' else 0)}.{rest}"
            key = key if group != "stem" else f"stem.{rest}"
        foreign[f"model.{key.replace('classifier.', 'head.')}"] = value
    torch.save({"state_dict": foreign}, tmp_path / "lightning.ckpt")
    with pytest.raises(IgkdError) as info:
        import_state_dict(tmp_path / "lightning.ckpt", "mobilenetv2_cifar:width=0.5:k=5", [str(i) for i in range(10)], MEAN, STD)
    message = str(info.value)
    assert "missing: 'features.0.0.weight'" in message and "unexpected: 'model.stem.0.weight'" in message and "--rename" in message
    rules = (
        ["model.=", "stem.=features.0.", "head.=classifier."]
        + [f"body.{i}.=features.{i + 1}." for i in range(7)]
        + [f"tail.{i}.=features.{i + 8}." for i in range(6)]
    )
    loaded = import_state_dict(
        tmp_path / "lightning.ckpt", "mobilenetv2_cifar:width=0.5:k=5", [str(i) for i in range(10)], MEAN, STD, rules
    )
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded.model(x), reference.eval()(x))


def test_rename_rules_apply_in_order_and_refuse_collisions_and_bad_syntax():
    assert list(rename_keys({"module.backbone.0.w": 1}, ["module.=", "backbone.=features."])) == ["features.0.w"]
    assert list(rename_keys({"a.x": 1}, ["a.=b.", "b.=c."])) == ["c.x"]  # each rule sees the previous one's output
    with pytest.raises(IgkdError, match="map both 'a.x' and 'b.x' to 'b.x'"):
        rename_keys({"a.x": 1, "b.x": 2}, ["a.=b."])
    with pytest.raises(IgkdError, match="is not OLD=NEW"):
        rename_keys({"a": 1}, ["=prefix."])
    with pytest.raises(IgkdError, match="teacher.rename.*is not OLD=NEW"):
        load_config("digits", ["teacher.rename=[nonsense]"])


def test_feature_tap_records_the_named_layers_output_on_every_pass_and_is_removable():
    model = build_model("torchvision:resnet18", 5).eval()
    x = torch.rand(2, 3, 32, 32)
    net = model.network
    expected = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(model.normalize(x)))))))
    with FeatureTap(model, ["layer2", "layer1", "layer2"]) as tap:
        model(x)
        layer2, layer1, again = tap.take()
        torch.testing.assert_close(layer2, expected)
        torch.testing.assert_close(again, expected)
        assert layer1.shape == (2, 64, 8, 8)
        with pytest.raises(IgkdError, match="did not run"):
            tap.take()  # taken outputs are forgotten
    assert not net.layer2._forward_hooks  # removed with the context


@pytest.mark.parametrize(
    ("arch", "size", "first", "count", "spatial"),
    [
        ("torchvision:resnet18", 16, "layer3.0.conv2", 7, 17),  # 16 -> 8 (stem) -> 4 (max pool) -> 2 -> 1 (layer3)
        ("torchvision:resnet18", 32, "layer4.0.conv2", 3, 17),
        ("torchvision:resnet18", 64, None, 0, 17),
        ("timm:mobilenetv3_small_100", 32, "blocks.4.1.conv_dw", 2, 12),  # depthwise kernels count too
        ("mobilenetv2_cifar", 32, None, 0, 18),  # made for 32x32: its last stage is 4x4
    ],
)
def test_convolutions_on_1x1_features_are_named_for_models_made_for_larger_images(arch, size, first, count, spatial):
    model = build_model(arch, 10).train()
    blind, total = convolutions_on_1x1(model, (size, size))
    assert (blind[:1] or [None])[0] == first and len(blind) == count and total == spatial
    assert model.training and not any(m._forward_pre_hooks for m in model.modules())  # left as it was


def test_attention_pairs_by_module_path_with_suggestions_and_the_builtin_default(tmp_path):
    hub = load_config(
        "digits",
        [
            f"out_dir={tmp_path}",
            "teacher.arch=torchvision:resnet18",
            "student.arch=timm:mobilenetv3_small_100",
            "student.method=KD_AT",
            "student.at.pairs=[[layer3, blocks.3]]",
        ],
    )
    teacher, student = build_model(hub.teacher.arch, 10), build_model(hub.student.arch, 10)
    assert attention_pairs(hub, teacher, student) == [("layer3", "blocks.3")]
    wrong = hub.model_copy(
        update={"student": hub.student.model_copy(update={"at": hub.student.at.model_copy(update={"pairs": [("layer3", "block.3")]})})}
    )
    with pytest.raises(IgkdError) as info:
        attention_pairs(wrong, teacher, student)
    assert "the student has no layer 'block.3' (closest: blocks.3" in str(info.value) and "\n" not in str(info.value)
    no_pairs = wrong.model_copy(
        update={"student": wrong.student.model_copy(update={"at": wrong.student.at.model_copy(update={"pairs": []})})}
    )
    with pytest.raises(IgkdError, match="needs its layers: set student.at.pairs"):
        attention_pairs(no_pairs, teacher, student)
    paper = load_config("digits", ["student.method=KD_AT"])
    assert attention_pairs(paper, build_model(paper.teacher.arch, 10), build_model(paper.student.arch, 10)) == [
        ("features.6", "features.6")
    ]
    mixed = load_config("digits", ["student.method=KD_AT", "student.at.pairs=[[9, features.3]]"])
    assert attention_pairs(mixed, build_model(mixed.teacher.arch, 10), build_model(mixed.student.arch, 10)) == [
        ("features.9", "features.3")
    ]


def test_the_family_owns_its_blocks_attention_default_and_smaller_students():
    from igkd.experiments.plan import sweep_archs
    from igkd.models.registry import family_of

    mobilenet, resnet = family_of(parse_arch("mobilenetv2_cifar:k=5")), family_of(parse_arch("torchvision:resnet18"))
    student = build_model("mobilenetv2_cifar:width=0.25:k=5", 10)
    assert mobilenet.block_paths is not None and mobilenet.block_paths(student) == [f"features.{i}" for i in range(14)]
    assert mobilenet.default_attention_pair is not None and mobilenet.default_attention_pair(student, student) == (6, 6)
    assert mobilenet.smaller_students is not None and mobilenet.smaller_students(parse_arch("mobilenetv2_cifar"), (5,), (0.5,)) == [
        ("blocks", "mobilenetv2_cifar:k=5"),
        ("width", "mobilenetv2_cifar:width=0.5"),
    ]
    assert resnet.block_paths is resnet.default_attention_pair is resnet.smaller_students is None  # the hooks' defaults
    with pytest.raises(IgkdError, match="narrows widths of mobilenetv2_cifar; the teacher 'torchvision:resnet18' is another family"):
        sweep_archs("torchvision:resnet18", (3,), ())
    ints = load_config("digits", ["teacher.arch=torchvision:resnet18", "student.method=KD_AT", "student.at.pairs=[[3, 3]]"])
    with pytest.raises(IgkdError, match=r"attention pair \(3, 3\): integer layers name blocks of mobilenetv2_cifar only"):
        attention_pairs(ints, build_model(ints.teacher.arch, 10), build_model(ints.student.arch, 10))


def test_a_layer_that_is_not_a_feature_map_is_a_clear_error():
    model = build_model("torchvision:resnet18", 5)
    with FeatureTap(model, ["fc"]), pytest.raises(IgkdError, match="layer 'fc' outputs \\(2, 5\\), not an N x C x H x W"):
        model(torch.rand(2, 3, 16, 16))


def test_timm_names_say_which_extra_to_install_when_timm_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what an environment without timm imports
    with pytest.raises(IgkdError, match=r"needs the optional extra 'timm' .*pip install 'igkd\[timm\]'"):
        build_model("timm:resnet18", 10)


def test_a_new_family_is_one_registration():
    from pydantic import BaseModel, ConfigDict

    class LinearSpec(BaseModel):
        model_config = ConfigDict(frozen=True)
        family: str = "linear_probe"
        size: int = 16

        def __str__(self) -> str:
            return f"linear_probe:{self.size}"

    class LinearProbe(NormalizedModel):
        def __init__(self, spec, classes, mean, std):
            super().__init__(mean, std)
            self.fc = nn.Linear(3 * spec.size * spec.size, classes)

        def forward(self, images):
            return self.fc(self.normalize(images).flatten(1))

    family = ModelFamily(
        "linear_probe",
        LinearSpec,
        lambda text: LinearSpec(size=int(text.split(":")[1])),
        LinearProbe,
        lambda spec: ([0.0] * 3, [1.0] * 3),
        "'linear_probe:SIZE'",
    )
    register_family(family)
    try:
        model = build_model("linear_probe:8", 4)
        assert model(torch.rand(2, 3, 8, 8)).shape == (2, 4) and "linear_probe" in families()
    finally:
        from igkd.models import registry

        registry._FAMILIES.pop("linear_probe")
