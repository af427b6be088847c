"""A loss term added the way a user adds one: this one file with one registration (see tests/test_loss_terms.py)."""

import torch

from igkd.losses import LossInputs, LossTerm, register_term


@register_term("logit_l2", needs={"teacher_logits"})
class LogitL2(LossTerm):
    """Mean squared difference of student and teacher logits."""

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        assert inputs.teacher_logits is not None
        return (inputs.student_logits.float() - inputs.teacher_logits.float()).pow(2).mean()
