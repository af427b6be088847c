"""Attribution sources besides IG (Captum's SmoothGrad, input x gradient, Grad-CAM): the maps igkd stores equal Captum's
own, other sources key other caches, and IG's maps keep their key."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

from conftest import TINY_TEACHER, run_cli, sets, tiny_overrides
from igkd.attribution import IGParams, attribution_key, attribution_maps, compute_ig_maps, map_params
from igkd.errors import IgkdError
from igkd.models.registry import build_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = build_model(TINY_TEACHER, 10, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding them matters
        model.train()(torch.rand(64, 3, 8, 8))
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=generator), torch.tensor([0, 1, 2, 3, 4])


def _captum(model, x, targets, params):
    """Captum called directly, on the unfolded model, with the noise seeded as igkd seeds a batch at row 0."""
    x = x.clone().requires_grad_(True)
    baselines = model.mean.expand_as(x).clone()
    torch.manual_seed(0)
    if params.source == "smoothgrad_ig":
        return NoiseTunnel(IntegratedGradients(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=params.noise_samples, nt_samples_batch_size=1, stdevs=params.noise_std,
            baselines=baselines, target=targets, n_steps=params.steps, method=params.method,
        )  # fmt: skip
    if params.source == "smoothgrad":
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=params.noise_samples, stdevs=params.noise_std, target=targets, abs=False
        )
    if params.source == "input_x_gradient":
        return InputXGradient(model).attribute(x, target=targets)
    cam = LayerGradCam(model, model.get_submodule(params.layer)).attribute(x, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam, (8, 8), "bilinear")


@pytest.mark.parametrize(
    "settings",
    [
        {"source": "smoothgrad_ig", "steps": 8, "noise_samples": 3},
        {"source": "smoothgrad", "noise_samples": 4},
        {"source": "input_x_gradient"},
        {"source": "gradcam", "layer": "features.5"},
    ],
    ids=lambda s: s["source"],
)
def test_each_source_stores_captums_maps(teacher, batch, settings):
    images, labels = batch
    params = IGParams(batch_size=8, channels_last="off", **settings)
    maps, stats = compute_ig_maps(copy.deepcopy(teacher), images, labels, params, CPU)
    reference = attribution_maps(_captum(copy.deepcopy(teacher), images.float() / 255, labels, params).detach())
    assert maps.shape == (5, 8, 8) and stats.images == 0  # completeness is IG's alone
    torch.testing.assert_close(torch.from_numpy(maps).float(), reference, atol=2e-3, rtol=0)  # float16 storage, folded BN
    assert float(reference.amax()) == pytest.approx(1.0)


def test_ig_keeps_its_key_and_other_sources_key_other_caches(teacher, batch):
    images, labels = batch
    ig = IGParams()
    assert "source" not in map_params(ig) and "noise_std" not in map_params(ig)  # IG maps made before sources keep their key
    keys = {attribution_key(teacher, images, labels, IGParams(**s)) for s in (
        {}, {"source": "smoothgrad"}, {"source": "smoothgrad", "noise_std": 0.3}, {"source": "gradcam", "layer": "features.5"},
        {"source": "gradcam", "layer": "features.6"},
    )}  # fmt: skip
    assert len(keys) == 5


def test_bad_source_settings_are_one_line_errors(teacher, batch):
    with pytest.raises(ValueError, match="source gradcam needs layer"):
        IGParams(source="gradcam")
    with pytest.raises(ValueError, match="runs in float32"):
        IGParams(source="smoothgrad", precision="bfloat16")
    images, labels = batch
    with pytest.raises(IgkdError, match="the teacher has no layer 'features.99'.*fix attribution.layer"):
        compute_ig_maps(copy.deepcopy(teacher), images, labels, IGParams(source="gradcam", layer="features.99"), CPU)


def test_the_attribute_command_builds_maps_of_another_source(tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(["attribute", *sets([*tiny_overrides(tmp_path), "attribution.source=input_x_gradient"])], capsys, monkeypatch)
    assert code == 0, err
    (cache,) = (tmp_path / "runs" / "tiny" / "cache").glob("ig-*.json")
    manifest = json.loads(cache.read_text())
    assert manifest["params"]["source"] == "input_x_gradient" and manifest["stats"]["images"] == 0


def test_the_python_api_takes_a_source(teacher, batch):
    import igkd

    images, labels = batch
    maps = igkd.compute_attributions(copy.deepcopy(teacher), images, labels, source="gradcam", layer="features.5", device="cpu")
    assert maps.shape == (5, 8, 8) and float(maps.amax()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(IgkdError, match="compute_attributions: .*source gradcam needs layer"):
        igkd.compute_attributions(teacher, images, labels, source="gradcam")
