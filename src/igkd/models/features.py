"""Feature layers addressed by module path (``features.9``, ``layer3``), recorded by forward hooks.

Hooks work for any model, under DistributedDataParallel and ``torch.compile`` alike (registered before the
model is wrapped), and leave the model's forward and state dict untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from igkd.errors import IgkdError
from igkd.models.base import NormalizedModel
from igkd.models.registry import closest


def layer_names(model: NormalizedModel) -> list[str]:
    """Every module path of the model's network (what a layer may be called)."""
    return [name for name, _ in model.network.named_modules() if name]


def check_layer(model: NormalizedModel, path: str, role: str, setting: str) -> str:
    """``path`` when the model's network has that module, else a one-line error with the closest names."""
    names = layer_names(model)
    if path not in names:
        raise IgkdError(
            f"the {role} has no layer '{path}'{closest(path, names)}; fix {setting} with a module path of the {role} "
            f"(its top-level layers: {', '.join(n for n in names if '.' not in n)[:200]})"
        )
    return path


def _feature_map(output: Any, path: str) -> torch.Tensor:
    tensor = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise IgkdError(f"layer '{path}' outputs {shape}, not an N x C x H x W feature map; pick a convolutional layer")
    return tensor


class FeatureTap:
    """Keeps the output of each named layer of ``model.network`` on every forward pass; :meth:`take` hands them over.

    Use it for the whole life of a model (``tap.remove()`` at the end) or for one pass (``with FeatureTap(...)``).
    """

    def __init__(self, model: NormalizedModel, paths: Iterable[str], keep_graph: bool = False) -> None:
        """``keep_graph``: each recorded output is made a leaf that requires grad (under ``torch.enable_grad``), so
        gradients of the outputs computed from it can be taken with respect to it (a frozen teacher's Grad-CAM)."""
        self.paths = list(paths)
        self.keep_graph = keep_graph
        modules = dict(model.network.named_modules())
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [modules[p].register_forward_hook(self._keeper(p)) for p in dict.fromkeys(self.paths)]

    def _keeper(self, path: str):
        def keep(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor | None:
            self._outputs[path] = _feature_map(output, path)
            if not self.keep_graph:
                return None
            if not isinstance(output, torch.Tensor):
                raise IgkdError(f"layer '{path}' outputs a {type(output).__name__}; explanations need a layer that outputs one tensor")
            self._outputs[path] = self._outputs[path].detach().requires_grad_(True)
            return self._outputs[path]  # the rest of the pass computes from it

        return keep

    def take_by_path(self) -> dict[str, torch.Tensor]:
        """The latest output of each path, by path (then forgotten)."""
        return dict(zip(self.paths, self.take(), strict=True))

    def take(self) -> list[torch.Tensor]:
        """The latest output of each path, in the order asked (then forgotten)."""
        missing = [p for p in self.paths if p not in self._outputs]
        if missing:
            raise IgkdError(f"layer '{missing[0]}' did not run in the forward pass; pick a layer the model's forward uses")
        taken = [self._outputs[p] for p in self.paths]
        self._outputs.clear()
        return taken

    def remove(self) -> None:
        """Unregister the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def linear_head(model: NormalizedModel) -> nn.Linear:
    """The classifier's last linear layer (``classifier.1``, ``fc``, timm's head): the weights that class activation maps
    apply to the pooled feature map."""
    linears = [module for module in model.network.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise IgkdError("class activation maps need a model whose head is a linear layer; this model has none")
    return linears[-1]


def convolutions_on_1x1(model: NormalizedModel, image_size: tuple[int, int], channels: int = 3) -> tuple[list[str], int]:
    """The module paths of the spatial convolutions (a kernel larger than 1x1) that see a 1x1 feature map when the
    model takes one ``image_size`` image, and how many spatial convolutions it has.

    Such a kernel uses only its centre weight: the rest meets zero padding. A model made for larger images (an
    ImageNet ResNet on 32x32 CIFAR, or on 16x16 digits) loses its spatial detail there, and trains worse.
    """
    seen: list[str] = []
    spatial = {
        name: module
        for name, module in model.network.named_modules()
        if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)
    }

    def watch(name: str):
        def check(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if tuple(inputs[0].shape[-2:]) == (1, 1):
                seen.append(name)

        return check

    handles = [module.register_forward_pre_hook(watch(name)) for name, module in spatial.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.network(torch.zeros(1, channels, *image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return seen, len(spatial)
