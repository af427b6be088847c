"""The training loss: a weighted sum of registered terms, with each term's value kept for the logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import nn

from igkd.losses.terms import LossInputs, LossTerm, Need, term_class


class WeightedLoss(nn.Module):
    """``sum(weight * term(inputs))`` over its terms, in the order given; returns the total and each term's detached
    value under its name (``ce``, ``kd``, ``at``, ...)."""

    def __init__(self, terms: Mapping[LossTerm, float] | list[tuple[LossTerm, float]]) -> None:
        super().__init__()
        pairs = list(terms.items()) if isinstance(terms, Mapping) else list(terms)
        self.terms = nn.ModuleList(term for term, _ in pairs)
        self.weights = [float(weight) for _, weight in pairs]
        self.needs: frozenset[Need] = frozenset().union(*(term.needs for term, _ in pairs))  # what the terms need of the teacher

    @property
    def loss_terms(self) -> list[LossTerm]:
        """The terms in order, typed (``terms`` holds them as submodules, so that they move with the loss)."""
        return cast("list[LossTerm]", list(self.terms))

    def forward(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | None = None
        parts: dict[str, torch.Tensor] = {}
        for term, weight in zip(self.loss_terms, self.weights, strict=True):
            value = term(inputs)
            parts[term.name] = value.detach()
            total = weight * value if total is None else total + weight * value
        assert total is not None, "a loss needs at least one term"
        return total, parts


def weighted_loss(weights: Mapping[str, float], student: object) -> WeightedLoss:
    """The :class:`WeightedLoss` of registered term names and weights, each term built from the student section."""
    return WeightedLoss([(term_class(name).from_config(student), weight) for name, weight in weights.items()])  # type: ignore[arg-type]
