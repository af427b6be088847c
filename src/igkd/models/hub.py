"""Architectures from a model hub (torchvision, timm): ``SOURCE:NAME[:key=value...]``, values read as YAML scalars."""

from __future__ import annotations

from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict
from torch import nn

from igkd.errors import IgkdError
from igkd.models.registry import format_option

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HubSpec(BaseModel):
    """A hub model: its source (the family), its name there and the keyword arguments of its constructor."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sources: ClassVar[tuple[str, ...]] = ("torchvision", "timm")

    source: str
    name: str
    kwargs: dict[str, Any] = {}

    @property
    def family(self) -> str:
        return self.source

    def __str__(self) -> str:
        return ":".join([self.source, self.name] + [f"{k}={format_option(v)}" for k, v in sorted(self.kwargs.items())])


def parse_hub_arch(text: str) -> HubSpec:
    """``torchvision:resnet18`` or ``timm:resnet18:drop_rate=0.1:pretrained=false`` as a :class:`HubSpec`."""
    source, _, rest = text.partition(":")
    name, *options = rest.split(":")
    if not name:
        raise IgkdError(f"architecture '{text}' names no model: write '{source}:NAME' (e.g. '{source}:resnet18')")
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.isidentifier():
            raise IgkdError(f"architecture option '{option}' in '{text}' is not key=value (e.g. '{source}:{name}:drop_rate=0.1')")
        kwargs[key] = yaml.safe_load(value) if value else ""
    return HubSpec(source=source, name=name, kwargs=kwargs)


def logits_of(output: Any) -> Any:
    """The logits of a hub model's output: the tensor itself, a ``.logits`` field, or the first of a tuple
    (torchvision's Inception/GoogLeNet return named tuples with auxiliary logits while training)."""
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, tuple) else output


def load_matching(net: nn.Module, state_dict: dict[str, Any]) -> list[str]:
    """Load the tensors whose key and shape match (pretrained weights under a head of another size); the skipped keys."""
    own = net.state_dict()
    kept = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(kept, strict=False)
    return sorted(set(state_dict) - set(kept))
