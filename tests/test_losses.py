"""KD, attention transfer and their combination."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from igkd.config import StudentConfig
from igkd.errors import IgkdError
from igkd.losses import LossInputs, LossTerm, at_loss, attention_map, kd_loss, register_term, weighted_loss
from igkd.methods import Mix, student_mix


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


def test_presets_weigh_their_terms_as_the_paper_does():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    fs, ft = [torch.randn(4, 6, 4, 4)], [torch.randn(4, 6, 4, 4)]
    ce = F.cross_entropy(s, y)
    student = StudentConfig(method="Student")
    total, parts = weighted_loss(student_mix(student).weights, student)(LossInputs(s, y))
    torch.testing.assert_close(total, ce)
    assert set(parts) == {"ce"}
    full = StudentConfig(method="KD_IG_AT")
    assert student_mix(full).weights == {"ce": 0.99, "kd": 0.01, "at": 0.8} and student_mix(full).overlay
    loss = weighted_loss(student_mix(full).weights, full)
    loss.terms[2].layer_pairs = [("layer3", "features.9")]  # as bound to the models
    total, parts = loss(LossInputs(s, y, t, {"features.9": fs[0]}, {"layer3": ft[0]}))
    torch.testing.assert_close(total, 0.99 * ce + 0.01 * kd_loss(s, t, 2.5) + 0.8 * at_loss(fs, ft))
    assert list(parts) == ["ce", "kd", "at"]
    tuned = StudentConfig(method="KD_AT", kd={"alpha": 0.3, "temperature": 4.0}, at={"gamma": 2.0})
    assert student_mix(tuned).weights == {"ce": 0.7, "kd": 0.3, "at": 2.0}
    assert weighted_loss(student_mix(tuned).weights, tuned).terms[1].temperature == 4.0


def test_a_mix_of_your_own_is_validated_and_named():
    mix = StudentConfig(method="CE_AT", terms={"kd": 0.5, "ce": 1.0}, overlay=True)
    assert list(mix.terms) == ["ce", "kd"]  # summed in name order, however written
    assert student_mix(mix) == Mix({"ce": 1.0, "kd": 0.5}, True) and student_mix(mix).needs == {"teacher_logits"}
    with pytest.raises(ValueError, match="name it with student.method=NAME, not the preset 'KD_IG'"):
        StudentConfig(terms={"ce": 1.0})
    with pytest.raises(ValueError, match="unknown loss term 'fitnets'; choose from"):
        StudentConfig(method="Mine", terms={"ce": 1.0, "fitnets": 0.1})
    with pytest.raises(ValueError, match="overlay belongs to a mix of your own"):
        StudentConfig(method="KD", overlay=True)
    with pytest.raises(ValueError, match="names a folder"):
        StudentConfig(method="my mix", terms={"ce": 1.0})


def test_a_term_name_is_registered_once():
    with pytest.raises(IgkdError, match="loss term 'kd' is already registered by igkd.losses.kd.KDTerm"):

        @register_term("kd")
        class OtherKD(LossTerm):
            pass

    with pytest.raises(IgkdError, match="needs \\['maps'\\], which no training step offers"):
        register_term("mapped", needs={"maps"})  # type: ignore[arg-type]
