"""Optional extras (``pip install 'igkd[NAME]'``): whether one is installed, and one error line when it is needed."""

from __future__ import annotations

import importlib
from types import ModuleType

from igkd.errors import IgkdError

# extra -> the modules it brings (all must import for the extra to count as installed)
EXTRAS: dict[str, tuple[str, ...]] = {
    "deploy": ("onnx", "onnxruntime", "onnxscript"),
    "tensorboard": ("tensorboard",),
    "timm": ("timm",),
    "captum": ("captum",),
    "test": ("pytest", "captum"),
}


def _import(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` imports."""
    return all(_import(module) is not None for module in EXTRAS[extra])


def require(extra: str, purpose: str) -> None:
    """Nothing when ``extra`` is installed; otherwise a one-line error naming the missing module and the pip command."""
    missing = [module for module in EXTRAS[extra] if _import(module) is None]
    if missing:
        raise IgkdError(
            f"{purpose} needs the optional extra '{extra}' ({', '.join(missing)} not installed); "
            f"install it with: pip install 'igkd[{extra}]'"
        )
