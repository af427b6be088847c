"""Class-activation explanations of a model at a feature layer, differentiable for the student's side: Grad-CAM
(Selvaraju et al. 2017) for one class, and CAMs (Zhou et al. 2016) of every class; the explanation-matching terms
compare them between teacher and student."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _wide(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 (bf16/fp16 activations) or as it is when wider (float64)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


class TwiceDifferentiableHardsigmoid(nn.Hardsigmoid):
    """``relu6(x + 3) / 6``: PyTorch's hardsigmoid in value and gradient, with the second derivative it lacks."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu6(input + 3) / 6


def twice_differentiable(model: nn.Module) -> nn.Module:
    """``model`` with each ``nn.Hardsigmoid`` (the gates of MobileNetV3 and other hub models) replaced by
    :class:`TwiceDifferentiableHardsigmoid`, so that a loss on its Grad-CAM can train it (a double backward); the same
    outputs and gradients, no parameter changes. Returns ``model``."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.Hardsigmoid and name:  # a model that is a bare hardsigmoid has nothing to explain
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, TwiceDifferentiableHardsigmoid())
    return model


def grad_cam(features: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """Grad-CAM [B, h, w] of ``targets`` at ``features`` [B, C, h, w], which ``logits`` [B, K] were computed from:
    ReLU of the channel sum of the features weighted by the spatial mean of the target logit's gradient.

    ``create_graph`` keeps the graph of the gradient, so that a loss on the map trains the model (double backward).
    """
    selected = _wide(logits).gather(1, targets.view(-1, 1)).sum()
    (gradients,) = torch.autograd.grad(selected, features, create_graph=create_graph)
    weights = _wide(gradients).mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * _wide(features)).sum(dim=1))


def _common_size(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps [B, (K,) h, w] at the smaller height and width, the larger area-averaged down (as attention transfer)."""
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))

    def down(maps: torch.Tensor) -> torch.Tensor:
        if tuple(maps.shape[-2:]) == size:
            return maps
        flat = maps.reshape(-1, 1, *maps.shape[-2:])
        return F.adaptive_avg_pool2d(flat, size).reshape(*maps.shape[:-2], *size)

    return down(student), down(teacher)


def explanation_similarity_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of the student's and the teacher's maps [B, h, w] per image, averaged over the batch
    (e²KD's loss; maps of different sizes are compared at the smaller one)."""
    student, teacher = _common_size(_wide(student_maps), _wide(teacher_maps))
    return (1.0 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1, eps=1e-8)).mean()


def class_activation_maps(features: torch.Tensor, classifier_weight: torch.Tensor) -> torch.Tensor:
    """CAMs [B, K, h, w] of every class: the linear classifier's weights [K, C] applied at each position of the
    features [B, C, h, w] that it pools (the classifier's bias, the same everywhere, left out)."""
    return torch.einsum("bchw,kc->bkhw", _wide(features), _wide(classifier_weight))


def cat_loss(student_cams: torch.Tensor, teacher_cams: torch.Tensor, resolution: int = 2) -> torch.Tensor:
    """CAT-KD's transfer loss: both CAMs [B, K, h, w] area-averaged to ``resolution`` x ``resolution``, each class
    map L2-normalised, then the mean squared difference."""
    size = (resolution, resolution)
    student = F.normalize(F.adaptive_avg_pool2d(_wide(student_cams), size).flatten(2), dim=2)
    teacher = F.normalize(F.adaptive_avg_pool2d(_wide(teacher_cams), size).flatten(2), dim=2)
    return (student - teacher).pow(2).mean()
