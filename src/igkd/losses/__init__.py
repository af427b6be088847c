"""Every training loss, as registered terms and their weighted sum.

- ``ce`` (:mod:`~igkd.losses.ce`), ``kd`` (:mod:`~igkd.losses.kd`), ``at`` (:mod:`~igkd.losses.at`), and the
  explanation-matching ``gradcam`` and ``gradcam_frozen`` (e²KD) and ``cat`` (CAT-KD) (:mod:`~igkd.losses.explain`):
  one module per kind, each term an ``nn.Module`` registered by name with what it needs of the teacher (:mod:`~igkd.losses.terms`).
- :class:`WeightedLoss` sums weighted terms and keeps each term's value for the logs.
- A method (:mod:`igkd.methods`) is a named preset of terms and weights, plus the overlay of the teacher's maps; a
  config can declare its own mix with ``student.terms``.
"""

from igkd.losses.at import ATTerm, at_loss, attention_map
from igkd.losses.ce import CrossEntropyTerm
from igkd.losses.explain import CATTerm, FrozenGradCAMTerm, GradCAMTerm
from igkd.losses.kd import KDTerm, kd_loss
from igkd.losses.terms import NEEDS, LossInputs, LossTerm, Need, loss_terms, register_term, term_class
from igkd.losses.weighted import WeightedLoss, weighted_loss

__all__ = [
    "NEEDS",
    "ATTerm",
    "CATTerm",
    "FrozenGradCAMTerm",
    "GradCAMTerm",
    "CrossEntropyTerm",
    "KDTerm",
    "LossInputs",
    "LossTerm",
    "Need",
    "WeightedLoss",
    "at_loss",
    "attention_map",
    "kd_loss",
    "loss_terms",
    "register_term",
    "term_class",
    "weighted_loss",
]
