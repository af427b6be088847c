"""Model architectures (one registry of families) and checkpoints."""

from igkd.models import mobilenetv2, timm_family, torchvision_family  # noqa: F401  (each registers its family)
from igkd.models.base import NormalizedModel, WrappedClassifier
from igkd.models.checkpoint import import_state_dict, load_checkpoint, save_checkpoint
from igkd.models.hub import HubSpec
from igkd.models.mobilenetv2 import ArchSpec, ImageClassifier
from igkd.models.registry import ModelFamily, build_model, families, parse_arch, register_family

__all__ = [
    "ArchSpec",
    "HubSpec",
    "ImageClassifier",
    "ModelFamily",
    "NormalizedModel",
    "WrappedClassifier",
    "build_model",
    "families",
    "import_state_dict",
    "load_checkpoint",
    "parse_arch",
    "register_family",
    "save_checkpoint",
]
