"""Attention transfer (Zagoruyko & Komodakis 2017): the student matches the teacher's spatial attention at paired layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from igkd.losses.terms import LossInputs, LossTerm, register_term

if TYPE_CHECKING:
    from igkd.config import StudentConfig


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


@register_term("at", needs={"features"})
class ATTerm(LossTerm):
    """:func:`at_loss` over the layer pairs of ``student.at.pairs``; weight ``student.at.gamma`` in a method (the
    paper's 0.8)."""

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        return student.at.gamma

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert inputs.student_features is not None and inputs.teacher_features is not None, "the at term needs features"
        return at_loss(inputs.student_features, inputs.teacher_features)
