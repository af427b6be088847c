"""Integrated Gradients attribution maps and their on-disk cache."""

from igkd.artifacts.fingerprint import data_hash
from igkd.attribution.cache import (
    AttributionCache,
    attribution_key,
    load_maps_file,
    map_params,
    read_manifest,
    teacher_hash,
)
from igkd.attribution.ig import (
    IGRunStats,
    alphas_and_weights,
    attribution_maps,
    compute_ig_maps,
    eval_mode,
    integrated_gradients,
    make_baselines,
    select_targets,
)
from igkd.attribution.params import IGParams

__all__ = [
    "AttributionCache",
    "IGParams",
    "IGRunStats",
    "alphas_and_weights",
    "attribution_key",
    "attribution_maps",
    "compute_ig_maps",
    "data_hash",
    "eval_mode",
    "integrated_gradients",
    "load_maps_file",
    "map_params",
    "make_baselines",
    "read_manifest",
    "select_targets",
    "teacher_hash",
]
