"""Input normalisation: the one syntax of ``teacher.normalize`` and ``--normalize``, and the mean/std it means."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

if TYPE_CHECKING:
    from igkd.data.prepare import PreparedData

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
NORMALIZE_SYNTAX = (
    "dataset (the training split's statistics), cifar10, pretrained (what the architecture's pretrained "
    "weights expect), none, or m1,m2,m3/s1,s2,s3"
)
NAMED = ("dataset", "cifar10", "pretrained", "none")


class NormSpec(BaseModel):
    """Explicit per-channel input normalisation."""

    model_config = ConfigDict(extra="forbid")

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @model_validator(mode="after")
    def _positive_std(self) -> NormSpec:
        if min(self.std) <= 0:
            raise ValueError("std must be positive")
        return self


NormSetting = Literal["dataset", "cifar10", "pretrained", "none"] | NormSpec


def parse_normalization(value: Any) -> Any:
    """A name as is; ``m1,m2,m3/s1,s2,s3`` or a ``{mean, std}`` mapping as a :class:`NormSpec`.

    Anything else raises ValueError, which the config reports as an invalid value.
    """
    if isinstance(value, (NormSpec, dict)):
        try:
            return NormSpec.model_validate(value)
        except ValidationError as exc:
            raise ValueError(f"{{mean, std}} needs three means and three positive stds ({exc.errors()[0]['msg']})") from None
    if value in NAMED:
        return value
    try:
        mean_text, std_text = str(value).split("/")
        return NormSpec(mean=tuple(float(v) for v in mean_text.split(",")), std=tuple(float(v) for v in std_text.split(",")))
    except ValueError:
        raise ValueError(f"'{value}' is not one of {NORMALIZE_SYNTAX} (three means, three positive stds)") from None


def normalization_values(setting: NormSetting, data: PreparedData | None, arch: str | None = None) -> tuple[list[float], list[float]]:
    """Mean and std of a validated setting; ``dataset`` takes the training split's statistics from ``data``,
    ``pretrained`` those of ``arch``'s pretrained weights (timm's ``pretrained_cfg``, ImageNet's for torchvision)."""
    if isinstance(setting, NormSpec):
        return list(setting.mean), list(setting.std)
    if setting == "pretrained":
        from igkd.models.registry import pretrained_normalization  # the models import this module's constants

        if arch is None:
            raise ValueError("'pretrained' needs the architecture whose weights it follows")
        return pretrained_normalization(arch)
    if setting == "cifar10":
        return list(CIFAR10_MEAN), list(CIFAR10_STD)
    if setting == "none":
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if data is None:
        raise ValueError("'dataset' needs the training data the model was trained on; give the statistics as m1,m2,m3/s1,s2,s3")
    mean, std = data.pool.channel_stats(data.train_idx)
    return mean, [max(s, 1e-3) for s in std]
