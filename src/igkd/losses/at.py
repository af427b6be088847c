"""Attention transfer (Zagoruyko & Komodakis 2017): the student matches the teacher's spatial attention at paired layers
(``student.at.pairs`` by module path, or the model family's default pair)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from igkd.errors import IgkdError
from igkd.losses.terms import LossInputs, LossTerm, register_term
from igkd.models.base import NormalizedModel
from igkd.models.features import check_layer
from igkd.models.registry import ModelFamily, families, family_of, parse_arch

if TYPE_CHECKING:
    from igkd.config import RunConfig, StudentConfig


def attention_map(features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Zagoruyko & Komodakis attention: channel mean of squared activations, optionally area-averaged down to
    ``size``, flattened and L2-normalised."""
    spatial = features.float().pow(2).mean(dim=1, keepdim=True)
    if size is not None and tuple(spatial.shape[-2:]) != tuple(size):
        spatial = F.adaptive_avg_pool2d(spatial, tuple(size))  # type: ignore[arg-type]
    return F.normalize(spatial.flatten(1), dim=1)


def at_loss(student_features: list[torch.Tensor], teacher_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared difference of attention maps over layer pairs. Maps of different sizes are compared at the
    smaller height and width, the larger map area-averaged down (no interpolation invents attention)."""
    losses = []
    for s, t in zip(student_features, teacher_features, strict=True):
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        losses.append((attention_map(s, size) - attention_map(t, size)).pow(2).mean())
    return torch.stack(losses).mean()


def _block_path(family: ModelFamily, model: NormalizedModel, layer: int | str) -> str | None:
    """An integer layer as the family's block path (None when out of range or the family names no blocks)."""
    if isinstance(layer, str):
        return layer
    paths = family.block_paths(model) if family.block_paths else None
    return paths[layer] if paths is not None and 0 <= layer < len(paths) else None


def attention_pairs(cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> list[tuple[str, str]]:
    """Configured (teacher layer, student layer) module paths; by default the family's pair (for the built-in
    MobileNetV2, the student's middle block and the same teacher block). Integers name blocks of families that
    number them (:attr:`ModelFamily.block_paths`)."""
    t_family, s_family = family_of(parse_arch(cfg.teacher.arch)), family_of(parse_arch(cfg.student.arch))
    pairs = cfg.student.at.pairs
    if not pairs:
        if t_family is not s_family or s_family.default_attention_pair is None:
            raise IgkdError(
                f"attention transfer from {cfg.teacher.arch} to {cfg.student.arch} needs its layers: set "
                "student.at.pairs=[[TEACHER_LAYER,STUDENT_LAYER]] with module paths (e.g. [[layer3,features.9]])"
            )
        pairs = [s_family.default_attention_pair(teacher, student)]
    paths = []
    for t, s in pairs:
        tp, sp = _block_path(t_family, teacher, t), _block_path(s_family, student, s)
        if tp is None or sp is None:
            t_blocks = t_family.block_paths(teacher) if t_family.block_paths else None
            s_blocks = s_family.block_paths(student) if s_family.block_paths else None
            if t_blocks is not None and s_blocks is not None:
                raise IgkdError(
                    f"attention pair ({t}, {s}) is out of range: the teacher has {len(t_blocks)} blocks, "
                    f"the student {len(s_blocks)}; fix student.at.pairs"
                )
            numbered = ", ".join(name for name, family in families().items() if family.block_paths) or "no family"
            raise IgkdError(
                f"attention pair ({t}, {s}): integer layers name blocks of {numbered} only; "
                "fix student.at.pairs with module paths (e.g. [[layer3,features.9]])"
            )
        paths.append((check_layer(teacher, tp, "teacher", "student.at.pairs"), check_layer(student, sp, "student", "student.at.pairs")))
    return paths


@register_term("at", needs={"features"})
class ATTerm(LossTerm):
    """:func:`at_loss` over the layer pairs of ``student.at.pairs``; weight ``student.at.gamma`` in a method (the
    paper's 0.8)."""

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        return student.at.gamma

    def bind(self, cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> None:
        self.layer_pairs = attention_pairs(cfg, teacher, student)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        student = [inputs.student_features[s] for _, s in self.layer_pairs]
        teacher = [inputs.teacher_features[t] for t, _ in self.layer_pairs]
        return at_loss(student, teacher)
