"""The Python API: igkd's method inside your own training loop (plain PyTorch or Lightning).

    import igkd
    teacher = igkd.create_model("torchvision:resnet18", num_classes=10)
    maps = igkd.compute_attributions(teacher, images_uint8, labels, cache_dir="ig-cache")
    overlay, kd, at = igkd.IGOverlay(prob=0.1), igkd.KDLoss(temperature=2.5), igkd.ATLoss()
    explain, cat = igkd.GradCAMLoss(), igkd.CATLoss()   # explanation matching (e²KD, CAT-KD)
    tap = igkd.FeatureTap(student, ["features.6"])
    ...
    results = igkd.distill("digits", ["student.method=KD_IG"])   # or the whole method in one call

Images are float in [0, 1] (models normalise inside); IG maps are N x H x W in [0, 1], one per image, in the
images' order. Apply every geometric transform to an image and its map together (e.g. as a
``torchvision.tv_tensors.Mask`` through ``transforms.v2``) before the overlay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from igkd.artifacts.fingerprint import data_hash
from igkd.attribution.cache import AttributionCache, attribution_key
from igkd.attribution.ig import compute_ig_maps
from igkd.attribution.params import BaselineKind, IGParams, Method, Source, TargetKind
from igkd.data.imageset import ImageSet
from igkd.data.sources import DataConfig, load_split
from igkd.errors import IgkdError
from igkd.losses import ATTerm, CrossEntropyTerm, KDTerm, LossInputs, LossTerm, WeightedLoss, at_loss, kd_loss
from igkd.losses.cam import cat_loss, class_activation_maps, explanation_similarity_loss, grad_cam
from igkd.models.base import NormalizedModel
from igkd.models.checkpoint import LoadedModel, load_checkpoint
from igkd.models.registry import build_model
from igkd.overlay import Blend, overlay_maps
from igkd.runtime.device import resolve_device


def load_images(
    source: str = "digits",
    split: str = "train",
    image_size: int | tuple[int, int] = 32,
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSet:
    """A labelled image set in memory (``.images`` uint8 N x 3 x H x W, ``.labels``, ``.classes``): the embedded
    ``digits``, ``cifar10`` (torchvision's download) or an ``imagefolder`` under ``root``/``split``."""
    cfg = DataConfig(
        source=source,
        root=root,
        classes=list(classes) if classes else None,
        image_size=image_size,
        train_split="train",
        test_split=split if split != "train" else "test",
    )
    return load_split(cfg, "train" if split == "train" else "test")


def create_model(
    name: str, num_classes: int, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)
) -> NormalizedModel:
    """A freshly initialised classifier by architecture name (``mobilenetv2_cifar:k=5``, ``torchvision:resnet18``,
    ``timm:resnet18``) with a ``num_classes`` head; it takes [0, 1] images and normalises them with ``mean``/``std``."""
    return build_model(name, num_classes, mean, std)


def load_model(path: str | Path) -> LoadedModel:
    """An igkd checkpoint: ``.model`` (eval mode), ``.arch``, ``.classes``, ``.mean``, ``.std``."""
    return load_checkpoint(path)


def compute_attributions(
    teacher: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    source: Source = "ig",
    layer: str | None = None,
    steps: int = 50,
    method: Method = "gausslegendre",
    baseline: BaselineKind = "zero",
    target: TargetKind = "label",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The teacher's IG maps of ``images`` (uint8 N x 3 x H x W, un-augmented, in dataset order): float32 N x H x W
    in [0, 1], row i the map of image i. ``source`` picks another attribution (Captum's ``smoothgrad_ig``,
    ``smoothgrad``, ``input_x_gradient``, or ``gradcam`` at the module path ``layer``).

    With ``cache_dir`` the maps are stored there under a key of the teacher's weights, the data and the IG
    settings, reused when the key matches and resumed when a build was interrupted.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise IgkdError(
            f"compute_attributions needs uint8 images N x C x H x W, got {images.dtype} {tuple(images.shape)}; "
            "pass the un-augmented images as stored (e.g. (x * 255).round().to(torch.uint8))"
        )
    try:
        params = IGParams(source=source, layer=layer, steps=steps, method=method, baseline=baseline, target=target, batch_size=batch_size)
    except ValidationError as exc:
        raise IgkdError(f"compute_attributions: {exc.errors()[0]['msg']}; fix the arguments") from None
    target_device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if cache_dir is None:
        maps, _ = compute_ig_maps(teacher, images, labels, params, target_device, progress)
        return torch.from_numpy(maps.astype("float32"))
    cache = AttributionCache(cache_dir)
    digest = data_hash(images, labels)  # hashed once: the key and the build both need it
    key = attribution_key(teacher, images, labels, params, data_digest=digest)
    if cache.lookup(key) is None:
        cache.build(key, teacher, images, labels, params, target_device, progress, data_digest=digest)
    loaded = cache.load(key, (len(images), *images.shape[2:]))
    assert isinstance(loaded, torch.Tensor)  # mmap=False loads a tensor
    return loaded


class IGOverlay(nn.Module):
    """The paper's IG overlay on a batch: with probability ``prob`` per image, its map (min-max normalised, raised to
    a log-uniform power in ``power_range``) blended in: ``paper`` 0.5 * image + 0.5 * map, ``multiply`` image * map.
    Active in training mode only (``eval()`` passes images through)."""

    def __init__(
        self,
        prob: float = 0.1,
        blend: Blend = "paper",
        power_range: tuple[float, float] = (1.0, 2.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0 or not 0 < power_range[0] <= power_range[1]:
            raise IgkdError(f"IGOverlay needs 0 <= prob <= 1 and 0 < power_range[0] <= power_range[1], got {prob} and {power_range}")
        self.prob, self.blend, self.power_range, self.generator = prob, blend, power_range, generator

    def forward(self, images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """``images`` B x C x H x W in [0, 1] and their ``maps`` B x H x W (or B x 1 x H x W), equally transformed."""
        maps = maps.squeeze(1) if maps.ndim == 4 else maps
        if maps.shape != (images.shape[0], *images.shape[2:]):
            raise IgkdError(f"IGOverlay got maps {tuple(maps.shape)} for images {tuple(images.shape)}; give one H x W map per image")
        if not self.training:
            return images
        return overlay_maps(images, maps, self.prob, self.blend, self.power_range, self.generator)


class KDLoss(nn.Module):
    """Hinton KD: KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over the batch."""

    def __init__(self, temperature: float = 2.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, self.temperature)


class ATLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis): mean squared difference of normalised attention maps over layer
    pairs; maps of different sizes are compared at the smaller size."""

    def forward(self, student_features: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
        return at_loss(list(student_features), list(teacher_features))


class GradCAMLoss(nn.Module):
    """e²KD's explanation loss (Parchami-Araghi et al., ECCV 2024): 1 - cosine similarity of the student's Grad-CAM and
    the teacher's, per image, averaged; the student's map keeps its graph (double backward), so the loss trains it.

    Online: pass the teacher's ``teacher_features`` and ``teacher_logits`` recorded with their graph
    (``FeatureTap(teacher, [layer], keep_graph=True)`` under ``torch.enable_grad()``); ``targets`` default to the
    teacher's predicted classes. Frozen: pass ``teacher_maps`` [B, H, W] (the teacher's precomputed maps, e.g.
    ``compute_attributions(..., source="gradcam")``, transformed with their images) and the ``targets`` they explain.
    Maps of different sizes are compared at the smaller one. A student with hardsigmoid gates (MobileNetV3) needs
    ``igkd.twice_differentiable(student)`` once before training: PyTorch's hardsigmoid has no second derivative.
    """

    def forward(
        self,
        student_features: torch.Tensor,
        student_logits: torch.Tensor,
        teacher_features: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
        teacher_maps: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if teacher_maps is None:
            if teacher_features is None or teacher_logits is None:
                raise IgkdError("GradCAMLoss needs teacher_features and teacher_logits (online) or teacher_maps (frozen)")
            targets = teacher_logits.detach().argmax(dim=1) if targets is None else targets
            teacher_maps = grad_cam(teacher_features, teacher_logits, targets).detach()
        elif targets is None:
            raise IgkdError("GradCAMLoss with teacher_maps needs the targets the maps explain (e.g. the labels)")
        student_maps = grad_cam(student_features, student_logits, targets, create_graph=True)
        return explanation_similarity_loss(student_maps, teacher_maps)


class CATLoss(nn.Module):
    """CAT-KD's class attention transfer (Guo et al., CVPR 2023): the class activation maps of every class (each
    model's linear classifier weights [K, C] applied at every position of the features [B, C, h, w] it pools),
    area-averaged to ``resolution`` x ``resolution``, L2-normalised per class, matched by mean squared difference."""

    def __init__(self, resolution: int = 2) -> None:
        super().__init__()
        self.resolution = resolution

    def forward(
        self,
        student_features: torch.Tensor,
        student_classifier_weight: torch.Tensor,
        teacher_features: torch.Tensor,
        teacher_classifier_weight: torch.Tensor,
    ) -> torch.Tensor:
        teacher_maps = class_activation_maps(teacher_features, teacher_classifier_weight).detach()
        return cat_loss(class_activation_maps(student_features, student_classifier_weight), teacher_maps, self.resolution)


class DistillationLoss(nn.Module):
    """igkd's training loss: (1 - alpha) * CE + alpha * KD (CE alone without teacher logits) + gamma * AT (with features)."""

    def __init__(self, alpha: float = 0.01, temperature: float = 2.5, gamma: float = 0.8, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.alpha, self.temperature, self.gamma, self.label_smoothing = alpha, temperature, gamma, label_smoothing

    def forward(
        self,
        student_logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        student_features: Sequence[torch.Tensor] | None = None,
        teacher_features: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        terms: list[tuple[LossTerm, float]] = [(CrossEntropyTerm(self.label_smoothing), 1.0)]
        if teacher_logits is not None:
            terms = [(terms[0][0], 1.0 - self.alpha), (KDTerm(self.temperature), self.alpha)]
        inputs = LossInputs(student_logits, labels, teacher_logits)
        if student_features is not None and teacher_features is not None:
            at = ATTerm()
            at.layer_pairs = [(str(i), str(i)) for i in range(len(student_features))]  # the i-th pair, by position
            inputs.student_features = {str(i): f for i, f in enumerate(student_features)}
            inputs.teacher_features = {str(i): f for i, f in enumerate(teacher_features)}
            terms.append((at, self.gamma))
        total, _ = WeightedLoss(terms)(inputs)
        return total


def distill(config: str | Path = "digits", overrides: Iterable[str] = (), quiet: bool = True) -> dict:
    """The whole method in one call, as ``igkd run``: teacher, IG maps, student, evaluation and report (finished
    stages reused). ``overrides`` are ``key.path=value`` settings; returns the run's results (its report rows)."""
    from rich.console import Console

    from igkd.config import load_config
    from igkd.stages.pipeline import Pipeline

    pipeline = Pipeline(load_config(str(config), list(overrides)), Console(quiet=quiet))
    pipeline.check("run")
    return pipeline.run_all()


__all__ = [
    "load_images",
    "ATLoss",
    "CATLoss",
    "GradCAMLoss",
    "DistillationLoss",
    "IGOverlay",
    "KDLoss",
    "compute_attributions",
    "create_model",
    "distill",
    "load_model",
]
