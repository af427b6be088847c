"""Attribution sources besides igkd's own Integrated Gradients, computed with Captum.

- ``smoothgrad_ig``: IG averaged over noisy copies of the image (Smilkov et al. 2017's SmoothGrad over IG);
- ``smoothgrad``: SmoothGrad over the plain gradient;
- ``input_x_gradient``: input times gradient;
- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) at the layer ``attribution.layer``, upsampled to the image.

Each gives per-pixel attributions that :func:`igkd.attribution.ig.attribution_maps` turns into [0, 1] maps, as it
does IG's. The noise of the SmoothGrad sources is seeded by the batch's first row, so maps do not depend on how a
build was interrupted and resumed.
"""

from __future__ import annotations

import torch
from torch import nn

from igkd.attribution.params import IGParams
from igkd.errors import IgkdError
from igkd.runtime.extras import require


def grad_cam_layer(model: nn.Module, path: str | None) -> nn.Module:
    """The module at ``path`` of the model's network (``features.16``, ``layer4``), for Grad-CAM."""
    if not path:
        raise IgkdError("attribution.source gradcam needs attribution.layer, a module path of the teacher (e.g. features.16 or layer4)")
    from igkd.models.features import check_layer

    network = getattr(model, "network", model)
    return network.get_submodule(check_layer(model, path, "teacher", "attribution.layer"))  # type: ignore[arg-type]


def captum_attributions(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, baselines: torch.Tensor, params: IGParams, seed: int
) -> torch.Tensor:
    """Attributions [N, C or 1, H, W] of ``images`` (pixel space, [0, 1]) for ``targets`` by ``params.source``."""
    require("captum", f"attribution.source {params.source}")
    from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

    x = images.detach().clone().requires_grad_(True)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        if params.source == "smoothgrad_ig":
            tunnel = NoiseTunnel(IntegratedGradients(model))
            return tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=params.noise_samples,
                nt_samples_batch_size=1,
                stdevs=params.noise_std,
                baselines=baselines,
                target=targets,
                n_steps=params.steps,
                method=params.method,
            ).detach()
        if params.source == "smoothgrad":
            tunnel = NoiseTunnel(Saliency(model))
            return tunnel.attribute(
                x, nt_type="smoothgrad", nt_samples=params.noise_samples, stdevs=params.noise_std, target=targets, abs=False
            ).detach()
        if params.source == "input_x_gradient":
            return InputXGradient(model).attribute(x, target=targets).detach()
        if params.source == "gradcam":
            cam = LayerGradCam(model, grad_cam_layer(model, params.layer)).attribute(x, target=targets, relu_attributions=True)
            return LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), "bilinear")
    raise IgkdError(f"attribution.source '{params.source}' is not a Captum source; choose ig, {', '.join(CAPTUM_SOURCES)}")


CAPTUM_SOURCES = ("smoothgrad_ig", "smoothgrad", "input_x_gradient", "gradcam")
