"""Methods: named presets of loss terms (:mod:`igkd.losses`) and whether the teacher's maps are overlaid on the input.

The paper's eight methods are presets here, beside KD_EXPL and KD_EXPL_FROZEN (e²KD) and KD_CAT (CAT-KD); a config
may instead declare its own mix (``student.terms`` with ``student.overlay``, named by ``student.method``). :func:`student_mix` answers,
for either, what a student trains with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from igkd.errors import IgkdError
from igkd.losses import Need, term_class

if TYPE_CHECKING:
    from igkd.config import StudentConfig


@dataclass(frozen=True)
class Method:
    """A named preset: its loss terms, summed in this order, and whether the maps are overlaid (the paper's IG)."""

    name: str
    terms: tuple[str, ...]
    overlay: bool = False

    def weights(self, student: StudentConfig) -> dict[str, float]:
        """Each term's weight from the student's settings; with KD, cross-entropy weighs 1 - alpha (Hinton's mix)."""
        weights = {name: term_class(name).default_weight(student) for name in self.terms}
        if "kd" in weights and "ce" in weights:
            weights["ce"] = 1.0 - weights["kd"]
        return weights


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` a preset name of ``student.method``, ``igkd methods`` and the experiments."""
    for name in method.terms:
        term_class(name)
    METHODS[method.name] = method
    return method


for _preset in (
    Method("Student", ("ce",)),
    Method("KD", ("ce", "kd")),
    Method("IG", ("ce",), overlay=True),
    Method("AT", ("ce", "at")),
    Method("KD_IG", ("ce", "kd"), overlay=True),
    Method("KD_AT", ("ce", "kd", "at")),
    Method("IG_AT", ("ce", "at"), overlay=True),
    Method("KD_IG_AT", ("ce", "kd", "at"), overlay=True),
    Method("KD_EXPL", ("ce", "kd", "gradcam")),  # e²KD: KD plus Grad-CAM matching
    Method("KD_EXPL_FROZEN", ("ce", "kd", "gradcam_frozen")),  # e²KD with the teacher's maps precomputed
    Method("KD_CAT", ("ce", "kd", "cat")),  # KD plus CAT-KD's class activation transfer
):
    register_method(_preset)


def find_method(name: str) -> Method | None:
    """The preset called ``name`` (case-insensitive), or None."""
    return next((method for key, method in METHODS.items() if key.lower() == name.lower()), None)


def canonical_method(name: str) -> str:
    """The preset's canonical spelling (e.g. 'kd_ig' -> 'KD_IG'); an unknown name is a one-line error."""
    method = find_method(name)
    if method is None:
        raise IgkdError(f"unknown method '{name}'; choose one of {', '.join(METHODS)} or declare a mix with student.terms")
    return method.name


@dataclass(frozen=True)
class Mix:
    """What a student trains with: loss-term weights by name (summed in this order) and whether maps are overlaid."""

    weights: dict[str, float]
    overlay: bool

    @property
    def needs(self) -> frozenset[Need]:
        """What the terms need of the teacher (its logits, paired features)."""
        return frozenset().union(*(term_class(name).needs for name in self.weights))


def student_mix(student: StudentConfig) -> Mix:
    """The student section's mix: its own ``terms`` (and ``overlay``) when set, else its method's preset."""
    if student.terms is not None:
        return Mix(dict(student.terms), bool(student.overlay))
    method = METHODS[canonical_method(student.method)]
    return Mix(method.weights(student), method.overlay)


def overlays_maps(student: StudentConfig) -> bool:
    """Whether the student trains on inputs overlaid with the teacher's maps."""
    return student_mix(student).overlay


def uses_maps(student: StudentConfig) -> bool:
    """Whether the student's run needs the teacher's maps: it overlays them (the noise control's maps are drawn, not
    the teacher's), or a term reads them."""
    mix = student_mix(student)
    return (mix.overlay and student.ig.maps != "noise") or "teacher_maps" in mix.needs
