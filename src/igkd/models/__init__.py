"""Model architectures and checkpoints."""

from igkd.models.mobilenetv2 import ArchSpec, ImageClassifier, build_model, parse_arch
from igkd.models.checkpoint import load_checkpoint, save_checkpoint, import_state_dict

__all__ = [
    "ArchSpec",
    "ImageClassifier",
    "build_model",
    "parse_arch",
    "load_checkpoint",
    "save_checkpoint",
    "import_state_dict",
]
