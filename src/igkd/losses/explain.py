"""Explanation matching: the student learns where the teacher looks, not only what it predicts.

- ``gradcam``: e²KD (Parchami-Araghi, Böhle, Rao, Schiele, "Good Teachers Explain: Explanation-Enhanced Knowledge
  Distillation", ECCV 2024, arXiv 2402.03119): 1 - cosine similarity of the student's and the teacher's Grad-CAM for
  the teacher's predicted class, the teacher's computed online on the student's very input. The paper adds it to KD
  with a weight λ that it tunes per setting; igkd's default ``student.explain.weight`` is 1.
- ``gradcam_frozen``: e²KD's "frozen explanations" variant: the teacher's maps are computed once, before training
  (``attribution.source: gradcam`` at ``attribution.layer`` gives e²KD's; any other source works too), cropped and
  flipped with their images, and the student's Grad-CAM for the image's label is matched to them. The teacher does not
  run during training for this term.
- ``cat``: CAT-KD (Guo, Zhang, Zhang, Lan, "Class Attention Transfer Based Knowledge Distillation", CVPR 2023): the
  class activation maps of every class, area-averaged to 2 x 2 (``student.cat.resolution``, the CAM resolution of
  every setting in the authors' configs) and L2-normalised per class, matched by mean squared difference. The authors'
  configs pair it with cross-entropy alone (no logit KD) at a weight β set per teacher-student pair (0.7 to 15 on
  CIFAR-100, 10 on ImageNet), and normalise the maps in some settings only. igkd's preset KD_CAT adds it to KD at
  ``student.cat.weight`` 1; CAT-KD itself is the mix ``student.terms: {ce: 1, cat: BETA}``.

They read each model's last feature map by default (the family's ``explanation_layer``), or the module paths of
``student.explain.layers`` / ``student.cat.layers`` (``gradcam_frozen`` reads the student's of the pair).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from igkd.errors import IgkdError
from igkd.losses.cam import cat_loss, class_activation_maps, explanation_similarity_loss, grad_cam, twice_differentiable
from igkd.losses.terms import LossInputs, LossTerm, register_term
from igkd.models.base import NormalizedModel
from igkd.models.features import check_layer, linear_head
from igkd.models.registry import family_of, parse_arch

if TYPE_CHECKING:
    from igkd.config import RunConfig, StudentConfig


def explanation_layer(role: str, arch: str, model: NormalizedModel, given: str | None, setting: str) -> str:
    """One model's layer: ``given`` when set, else its family's last feature map; checked against the model."""
    if given is None:
        hook = family_of(parse_arch(arch)).explanation_layer
        given = hook(model) if hook is not None else None
        if given is None:
            raise IgkdError(
                f"{setting} has no default layer for the {role} {arch}: set {setting}=[TEACHER_LAYER,STUDENT_LAYER] "
                "with module paths of the last feature maps (e.g. [layer4,features.18])"
            )
    return check_layer(model, given, role, setting)


def explanation_layers(
    layers: tuple[str, str] | None, cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel, setting: str
) -> tuple[str, str]:
    """(teacher path, student path): ``layers`` when given, else each model's family's last feature map."""
    teacher_layer, student_layer = layers if layers is not None else (None, None)
    return (
        explanation_layer("teacher", cfg.teacher.arch, teacher, teacher_layer, setting),
        explanation_layer("student", cfg.student.arch, student, student_layer, setting),
    )


@register_term("gradcam", needs={"features", "teacher_gradients"})
class GradCAMTerm(LossTerm):
    """e²KD: 1 - cos(student Grad-CAM, teacher Grad-CAM) for the teacher's predicted class; the student's map is
    differentiated twice (the gradient of its logit, then of the loss), which costs about one more backward pass."""

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        return student.explain.weight

    def bind(self, cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> None:
        self.layer_pairs = [explanation_layers(cfg.student.explain.layers, cfg, teacher, student, "student.explain.layers")]
        twice_differentiable(student)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert inputs.teacher_graph_logits is not None, "the gradcam term needs the teacher's gradients"
        (teacher_path, student_path), graph = self.layer_pairs[0], inputs.teacher_graph_logits
        targets = graph.detach().argmax(dim=1)
        teacher_map = grad_cam(inputs.teacher_features[teacher_path], graph, targets).detach()
        student_map = grad_cam(inputs.student_features[student_path], inputs.student_logits, targets, create_graph=True)
        return explanation_similarity_loss(student_map, teacher_map)


@register_term("gradcam_frozen", needs={"features", "teacher_maps"})
class FrozenGradCAMTerm(LossTerm):
    """e²KD with frozen explanations: 1 - cos(student Grad-CAM for the label, the teacher's precomputed map of the
    image, as cropped and flipped with it, area-averaged to the student's layer); one more backward, no teacher pass."""

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        return student.explain.weight

    def bind(self, cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> None:
        if cfg.attribution.target != "label":
            raise IgkdError(
                f"the gradcam_frozen term matches the student's Grad-CAM for each image's label, but the teacher's maps are "
                f"built for its {cfg.attribution.target}: set attribution.target=label"
            )
        layers = cfg.student.explain.layers  # the student's side only: the teacher's maps are already built
        self.student_layers = [
            explanation_layer("student", cfg.student.arch, student, layers[1] if layers else None, "student.explain.layers")
        ]
        twice_differentiable(student)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert inputs.teacher_maps is not None, "the gradcam_frozen term needs the teacher's maps of the batch"
        features = inputs.student_features[self.student_layers[0]]
        student_map = grad_cam(features, inputs.student_logits, inputs.labels, create_graph=True)
        return explanation_similarity_loss(student_map, inputs.teacher_maps)


@register_term("cat", needs={"features"})
class CATTerm(LossTerm):
    """CAT-KD: pooled, normalised class activation maps of every class, the student's matched to the teacher's."""

    def __init__(self, resolution: int = 2) -> None:
        super().__init__()
        self.resolution = resolution
        self.heads: tuple[nn.Linear, nn.Linear] | None = None  # (teacher, student) classifiers, bound to the models

    @classmethod
    def from_config(cls, student: StudentConfig) -> CATTerm:
        return cls(student.cat.resolution)

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        return student.cat.weight

    def bind(self, cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> None:
        self.layer_pairs = [explanation_layers(cfg.student.cat.layers, cfg, teacher, student, "student.cat.layers")]
        self.heads = (linear_head(teacher), linear_head(student))

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert self.heads is not None, "the cat term is bound to its models before training"
        (teacher_path, student_path), (teacher_head, student_head) = self.layer_pairs[0], self.heads
        for role, path, head, features in (
            ("teacher", teacher_path, teacher_head, inputs.teacher_features),
            ("student", student_path, student_head, inputs.student_features),
        ):
            if features[path].shape[1] != head.in_features:
                raise IgkdError(
                    f"student.cat.layers: the {role}'s layer '{path}' has {features[path].shape[1]} channels, its classifier "
                    f"takes {head.in_features}; name the layer its head pools (e.g. layer4 of a ResNet, features.18 of MobileNetV2)"
                )
        teacher_maps = class_activation_maps(inputs.teacher_features[teacher_path], teacher_head.weight).detach()
        student_maps = class_activation_maps(inputs.student_features[student_path], student_head.weight)
        return cat_loss(student_maps, teacher_maps, self.resolution)
