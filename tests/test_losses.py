"""KD, attention transfer and their combination."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from igkd.losses import LossWeights, at_loss, attention_map, distillation_loss, kd_loss


def test_kd_loss_matches_definition_and_is_zero_for_equal_logits():
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    p_t = F.softmax(t / 2.5, 1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / 2.5, 1))).sum(1).mean() * 2.5**2
    torch.testing.assert_close(kd_loss(s, t, 2.5), expected)
    assert float(kd_loss(t, t, 2.5)) == pytest.approx(0.0, abs=1e-6)


def test_attention_maps_are_unit_norm_and_at_loss_handles_size_mismatch():
    f = torch.randn(3, 8, 4, 4)
    a = attention_map(f)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    assert float(at_loss([f], [f * 3])) == pytest.approx(0.0, abs=1e-7)
    assert float(at_loss([torch.randn(3, 8, 2, 2)], [f])) > 1e-3


def test_at_loss_compares_maps_of_different_sizes_at_the_smaller_one_by_area_averaging():
    """A 4x4 map whose 2x2 blocks average to a 2x2 map's values is the same attention, whichever side is larger.

    (Squaring a resized map a second time, as an earlier version did, gave 9e-4 here; bilinear resizing of the
    smaller map to the larger invented attention between pixels.)
    """
    small = torch.rand(3, 8, 2, 2) + 0.5
    energy = small.pow(2).mean(1, keepdim=True)  # 3 x 1 x 2 x 2
    offsets = torch.tensor([[0.1, -0.1], [-0.2, 0.2]]).repeat(2, 2)  # zero mean in every 2x2 block
    large_energy = F.interpolate(energy, scale_factor=2, mode="nearest") * (1 + offsets)
    large = large_energy.sqrt().expand(3, 5, 4, 4)  # any channel count: its channel mean of squares is ``large_energy``
    assert float(at_loss([small], [large])) == pytest.approx(0.0, abs=1e-10)
    assert float(at_loss([large], [small])) == pytest.approx(0.0, abs=1e-10)
    torch.testing.assert_close(attention_map(large, (2, 2)), attention_map(small))
    assert float(at_loss([small], [large.flip(-1)])) > 1e-3  # and a different map is not
    rect = torch.rand(3, 4, 6, 3) + 0.5  # rectangular maps: both sides pooled to min height x min width
    assert attention_map(rect, (2, 3)).shape == (3, 6) and float(at_loss([rect], [small])) > 0


def test_distillation_loss_combines_terms_with_paper_weights():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    fs, ft = [torch.randn(4, 6, 4, 4)], [torch.randn(4, 6, 4, 4)]
    ce = F.cross_entropy(s, y)
    total, parts = distillation_loss(LossWeights(), s, y)
    torch.testing.assert_close(total, ce)
    assert set(parts) == {"ce"}
    w = LossWeights(use_kd=True, alpha=0.01, temperature=2.5, use_at=True, gamma=0.8)
    total, parts = distillation_loss(w, s, y, t, fs, ft)
    torch.testing.assert_close(total, 0.99 * ce + 0.01 * kd_loss(s, t, 2.5) + 0.8 * at_loss(fs, ft))
    assert set(parts) == {"ce", "kd", "at"}
