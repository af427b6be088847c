"""All training losses: cross-entropy, Hinton KD, attention transfer, and their weighted sum."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over the batch."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


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


@dataclass(frozen=True)
class LossWeights:
    """Which terms are on and their weights: (1-alpha)*CE + alpha*KD + gamma*AT (CE alone without KD)."""

    use_kd: bool = False
    alpha: float = 0.01
    temperature: float = 2.5
    use_at: bool = False
    gamma: float = 0.8
    label_smoothing: float = 0.0


def distillation_loss(
    weights: LossWeights,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    student_features: list[torch.Tensor] | None = None,
    teacher_features: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and its detached parts (``ce``, ``kd``, ``at``) for logging."""
    ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=weights.label_smoothing)
    parts = {"ce": ce.detach()}
    total = ce
    if weights.use_kd:
        assert teacher_logits is not None, "KD needs teacher logits"
        kd = kd_loss(student_logits, teacher_logits, weights.temperature)
        total = (1.0 - weights.alpha) * ce + weights.alpha * kd
        parts["kd"] = kd.detach()
    if weights.use_at:
        assert student_features is not None and teacher_features is not None, "AT needs features"
        at = at_loss(student_features, teacher_features)
        total = total + weights.gamma * at
        parts["at"] = at.detach()
    return total, parts
