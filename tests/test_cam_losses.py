"""Grad-CAM and CAM explanations and the losses that compare them: values against their definitions, gradients
against finite differences (double backward for Grad-CAM)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igkd.losses.cam import (
    TwiceDifferentiableHardsigmoid,
    cat_loss,
    class_activation_maps,
    explanation_similarity_loss,
    grad_cam,
    twice_differentiable,
)


class TinyNet(nn.Module):
    """conv -> ReLU -> global average pool -> linear: Grad-CAM equals CAM up to a positive factor here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = F.relu(self.conv(x))
        return self.fc(features.mean(dim=(2, 3))), features


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().double()


def test_grad_cam_of_a_pooled_linear_head_is_its_cam(net):
    x = torch.rand(3, 3, 6, 6, dtype=torch.float64)
    logits, features = net(x)
    targets = torch.tensor([0, 3, 4])
    cam = grad_cam(features, logits, targets)
    cams = class_activation_maps(features, net.fc.weight)
    expected = F.relu(cams[torch.arange(3), targets]) / 36  # gradient of a mean over 6 x 6 positions
    torch.testing.assert_close(cam, expected)


def test_explanation_similarity_loss_is_zero_for_proportional_maps_and_two_for_opposite_ones():
    maps = torch.rand(2, 4, 4) + 0.1
    assert float(explanation_similarity_loss(maps, 3 * maps)) == pytest.approx(0.0, abs=1e-6)
    assert float(explanation_similarity_loss(maps, -maps)) == pytest.approx(2.0, abs=1e-6)
    large = maps.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # the same map at twice the size
    assert float(explanation_similarity_loss(large, maps)) == pytest.approx(0.0, abs=1e-6)


def test_cat_loss_compares_pooled_normalised_class_maps():
    cams = torch.randn(2, 5, 4, 4)
    assert float(cat_loss(cams, 2 * cams)) == pytest.approx(0.0, abs=1e-7)
    pooled = F.normalize(F.adaptive_avg_pool2d(cams, 2).flatten(2), dim=2)
    other = torch.randn(2, 5, 4, 4)
    expected = (pooled - F.normalize(F.adaptive_avg_pool2d(other, 2).flatten(2), dim=2)).pow(2).mean()
    torch.testing.assert_close(cat_loss(cams, other), expected)


def test_the_student_side_of_grad_cam_trains_by_double_backward(net):
    """d loss / d conv weight through Grad-CAM (a gradient of a gradient) against central finite differences."""
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    teacher_map = torch.rand(2, 5, 5, dtype=torch.float64)
    targets = torch.tensor([1, 2])

    def loss() -> torch.Tensor:
        logits, features = net(x)
        cam = grad_cam(features, logits, targets, create_graph=True)
        return 1 - F.cosine_similarity(cam.flatten(1), teacher_map.flatten(1), dim=1).mean()

    (analytic,) = torch.autograd.grad(loss(), net.conv.weight)
    assert analytic.abs().sum() > 0
    index, eps = (1, 2, 0, 1), 1e-6
    weight = net.conv.weight.data
    weight[index] += eps
    plus = loss().item()
    weight[index] -= 2 * eps
    minus = loss().item()
    weight[index] += eps
    assert (plus - minus) / (2 * eps) == pytest.approx(float(analytic[index]), rel=1e-6)


def test_the_student_side_of_cat_and_the_frozen_map_loss_pass_gradcheck(net):
    """Every gradient of the CAT loss (features and head weights) and of the frozen-map Grad-CAM loss (the student's
    features, with a teacher map of another size) against finite differences, in float64."""
    features = torch.rand(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    teacher_cams = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f, w: cat_loss(class_activation_maps(f, w), teacher_cams), (features, weight))

    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    big_map = torch.rand(2, 10, 10, dtype=torch.float64)  # the teacher's map at image size, area-averaged to the layer's
    targets = torch.tensor([1, 2])

    def frozen_loss(conv_weight: torch.Tensor) -> torch.Tensor:
        features = F.relu(F.conv2d(x, conv_weight, net.conv.bias, padding=1))
        logits = net.fc(features.mean(dim=(2, 3)))
        return explanation_similarity_loss(grad_cam(features, logits, targets, create_graph=True), big_map)

    assert torch.autograd.gradcheck(frozen_loss, (net.conv.weight.detach().clone().requires_grad_(True),))


def test_hardsigmoid_gates_are_made_twice_differentiable_with_the_same_values_and_gradients():
    torch.manual_seed(0)
    gate = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardsigmoid(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()
    x = torch.cat([torch.tensor([-3.0, 3.0, -4.0, 4.0, 0.0]), torch.randn(3 * 8 * 8 - 5) * 4]).view(1, 3, 8, 8).double()
    raw = torch.linspace(-5, 5, 101, dtype=torch.float64).repeat_interleave(2)  # boundaries -3 and 3 included
    raw.requires_grad_(True)
    (expected,) = torch.autograd.grad(F.hardsigmoid(raw).pow(2).sum(), raw)
    smooth = raw.detach().clone().requires_grad_(True)
    values = TwiceDifferentiableHardsigmoid()(smooth)
    (gradient,) = torch.autograd.grad(values.pow(2).sum(), smooth)
    torch.testing.assert_close(values, F.hardsigmoid(raw.detach()), rtol=1e-12, atol=0)
    torch.testing.assert_close(gradient, expected, rtol=1e-7, atol=0)  # PyTorch's kernel scales by a float32 1/6
    assert torch.equal(gradient == 0, expected == 0)  # zero from -3 down and from 3 up, the boundaries included
    before = gate(x)
    with pytest.raises(RuntimeError, match="hardsigmoid_backward is not implemented"):
        _double_backward(gate, x)
    assert twice_differentiable(gate) is gate and isinstance(gate[1], TwiceDifferentiableHardsigmoid)
    assert torch.equal(gate(x), before)
    _double_backward(gate, x)
    assert float(gate[0].weight.grad.abs().sum()) > 0


def _double_backward(model: nn.Module, x: torch.Tensor) -> None:
    """A loss on the gradient of the output with respect to the input, back to the weights (as a Grad-CAM loss does)."""
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
    gradient.pow(2).sum().backward()
