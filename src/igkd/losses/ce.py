"""Cross-entropy with the labels: the term every method starts from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from igkd.losses.terms import LossInputs, LossTerm, register_term

if TYPE_CHECKING:
    from igkd.config import StudentConfig


@register_term("ce")
class CrossEntropyTerm(LossTerm):
    """Cross-entropy of the student's logits (in float32) with the labels, with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, student: StudentConfig) -> CrossEntropyTerm:
        return cls(student.train.label_smoothing)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return F.cross_entropy(inputs.student_logits.float(), inputs.labels, label_smoothing=self.label_smoothing)
