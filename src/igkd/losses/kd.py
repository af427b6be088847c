"""Hinton knowledge distillation: the student matches the teacher's softened class probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from igkd.losses.terms import LossInputs, LossTerm, register_term

if TYPE_CHECKING:
    from igkd.config import StudentConfig


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over the batch."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


@register_term("kd", needs={"teacher_logits"})
class KDTerm(LossTerm):
    """:func:`kd_loss` at ``student.kd.temperature``; weight ``student.kd.alpha`` in a method, whose cross-entropy then
    weighs 1 - alpha (Hinton et al. 2015; the paper's T = 2.5, alpha = 0.01)."""

    def __init__(self, temperature: float = 2.5) -> None:
        super().__init__()
        self.temperature = temperature

    @classmethod
    def from_config(cls, student: StudentConfig) -> KDTerm:
        return cls(student.kd.temperature)

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        return student.kd.alpha

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert inputs.teacher_logits is not None, "the kd term needs teacher logits"
        return kd_loss(inputs.student_logits, inputs.teacher_logits, self.temperature)
