"""igkd: compress image classifiers by knowledge distillation guided by Integrated Gradients.

The Python API (:mod:`igkd.api`) is importable from here; it is loaded on first use, so that the command line
starts without importing torch until it needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_images": "igkd.api",
    "create_model": "igkd.api",
    "load_model": "igkd.api",
    "compute_attributions": "igkd.api",
    "IGOverlay": "igkd.api",
    "KDLoss": "igkd.api",
    "ATLoss": "igkd.api",
    "GradCAMLoss": "igkd.api",
    "CATLoss": "igkd.api",
    "twice_differentiable": "igkd.losses.cam",
    "DistillationLoss": "igkd.api",
    "distill": "igkd.api",
    "LossTerm": "igkd.losses",
    "LossInputs": "igkd.losses",
    "register_term": "igkd.losses",
    "FeatureTap": "igkd.models.features",
    "register_family": "igkd.models.registry",
    "ModelFamily": "igkd.models.registry",
    "NormalizedModel": "igkd.models.base",
    "IgkdError": "igkd.errors",
}
# Spelled out (not built from _API) so that static tools, mypy and the API reference read it; a test keeps the two equal.
__all__ = [
    "__version__",
    "load_images",
    "create_model",
    "load_model",
    "compute_attributions",
    "IGOverlay",
    "KDLoss",
    "ATLoss",
    "GradCAMLoss",
    "CATLoss",
    "twice_differentiable",
    "DistillationLoss",
    "distill",
    "LossTerm",
    "LossInputs",
    "register_term",
    "FeatureTap",
    "register_family",
    "ModelFamily",
    "NormalizedModel",
    "IgkdError",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'igkd' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
