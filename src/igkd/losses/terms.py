"""The loss-term registry: a term is an ``nn.Module`` registered by name, which says what it needs and computes one
scalar from a batch's :class:`LossInputs` (after torchdistill's registered losses).

Adding a term is one module with one registration::

    @register_term("my_term", needs={"teacher_logits"})
    class MyTerm(LossTerm):
        def forward(self, inputs: LossInputs) -> torch.Tensor:
            return (inputs.student_logits - inputs.teacher_logits).pow(2).mean()

after which ``student.terms: {ce: 1.0, my_term: 0.5}`` (with ``student.method`` naming the mix) trains with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

import torch
from torch import nn

from igkd.errors import IgkdError

if TYPE_CHECKING:
    from igkd.config import RunConfig, StudentConfig
    from igkd.models.base import NormalizedModel

Need = Literal["teacher_logits", "features", "teacher_gradients", "teacher_maps"]
NEEDS: tuple[Need, ...] = ("teacher_logits", "features", "teacher_gradients", "teacher_maps")


@dataclass
class LossInputs:
    """What one training step offers the terms: the student's logits and the labels, and what the mix needs of the
    teacher: its logits on the same input (detached), the outputs of the layers the terms read (by module path; the
    student's in the graph), with ``teacher_gradients`` the teacher's logits as computed from its recorded layers,
    so that gradients with respect to those layers can be taken (its Grad-CAM), and with ``teacher_maps`` its
    precomputed maps of the batch's images [B, H, W], cropped and flipped with them (``attribution.source``)."""

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_graph_logits: torch.Tensor | None = None
    teacher_maps: torch.Tensor | None = None


class LossTerm(nn.Module):
    """One registered loss term; ``name`` (its registry key and log key) and ``needs`` are set by :func:`register_term`.

    A term that reads layers sets ``layer_pairs`` ((teacher path, student path), the student's layer hooked before the
    model is wrapped), or ``student_layers`` for layers of the student alone, in :meth:`bind`, once the models exist.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[Need]] = frozenset()
    layer_pairs: list[tuple[str, str]]
    student_layers: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.layer_pairs = []
        self.student_layers = []

    @property
    def student_paths(self) -> list[str]:
        """Every layer of the student the term reads."""
        return [*(s for _, s in self.layer_pairs), *self.student_layers]

    def bind(self, cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> None:
        """Resolve what depends on the models (layer paths, a head's weights); a one-line error when they do not fit."""

    @classmethod
    def from_config(cls, student: StudentConfig) -> LossTerm:
        """The term with its settings from the student section (a term without settings takes none)."""
        return cls()

    @classmethod
    def default_weight(cls, student: StudentConfig) -> float:
        """The term's weight in a named method (a preset of :mod:`igkd.methods`)."""
        return 1.0

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        raise NotImplementedError


_TERMS: dict[str, type[LossTerm]] = {}
T = TypeVar("T", bound=type[LossTerm])


def register_term(name: str, needs: set[Need] | frozenset[Need] = frozenset()) -> Callable[[T], T]:
    """Class decorator: register a :class:`LossTerm` under ``name``, needing ``needs`` of the teacher."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise IgkdError(f"loss term '{name}' needs {sorted(unknown)}, which no training step offers; choose from {', '.join(NEEDS)}")

    def register(cls: T) -> T:
        taken = _TERMS.get(name)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise IgkdError(f"loss term '{name}' is already registered by {taken.__module__}.{taken.__qualname__}; choose another name")
        cls.name, cls.needs = name, frozenset(needs)
        _TERMS[name] = cls
        return cls

    return register


def loss_terms() -> dict[str, type[LossTerm]]:
    """The registered terms by name."""
    return dict(_TERMS)


def term_class(name: str) -> type[LossTerm]:
    """The term registered as ``name``; an unknown name is a one-line error."""
    if name not in _TERMS:
        raise IgkdError(f"unknown loss term '{name}'; choose from {', '.join(_TERMS)} or register one with igkd.losses.register_term")
    return _TERMS[name]
