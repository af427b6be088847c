"""Batch construction: on the device (gather, crop/flip with maps moving with their images, IG overlay) or on the
streaming path (:mod:`igkd.data.stream`); :func:`input_maker` picks the one ``data.loader`` asks for. A batch built
with maps carries them, cropped and flipped as its images, for the loss terms that read them."""

from __future__ import annotations

from typing import Literal

import torch

from igkd.attribution.cache import MappedMaps
from igkd.config import OverlayConfig
from igkd.data.augment import random_crop_flip
from igkd.data.batch import Batch
from igkd.data.imageset import ImageSet
from igkd.data.sources import DataConfig
from igkd.data.stream import AugmentedPool, StreamingBatches
from igkd.overlay import overlay_maps
from igkd.runtime.device import RandomStreams
from igkd.training.loop import MakeInputs, StartEpoch

DEVICE_POOL_LIMIT = 2 * 1024**3  # bytes of uint8 pool images above which data.loader=auto streams


def batch_maker(
    images: torch.Tensor,
    labels: torch.Tensor,
    padding: int,
    flip: bool,
    maps: torch.Tensor | None = None,
    overlay: OverlayConfig | None = None,
    channels_last: bool = False,
) -> MakeInputs:
    """A ``make_inputs`` for :func:`fit`: uint8 images (and their maps) indexed by dataset index.

    Maps are cropped and flipped with their images and carried in the batch; with ``overlay`` they are also blended
    into the images. Crops and flips draw from ``streams.augment`` the same numbers with or without maps, and the
    overlay draws from ``streams.overlay`` alone, so a run with IG sees the same crops and flips as one without.
    Batches come in the models' memory format (``channels_last``), so the training step passes them on as they are.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def make(indices: torch.Tensor, streams: RandomStreams) -> Batch:
        if maps is None:  # crop and flip the bytes, then one pass to float in the models' layout
            cropped = random_crop_flip(images[indices], padding, flip, streams.augment)
            return Batch(cropped.to(torch.float32, memory_format=layout).div_(255), labels[indices], indices)
        stacked = torch.cat([images[indices].float().div_(255), maps[indices].float().unsqueeze(1)], dim=1)
        stacked = random_crop_flip(stacked, padding, flip, streams.augment)
        inputs, batch_maps = stacked[:, :3], stacked[:, 3]
        if overlay is not None:
            inputs = overlay_maps(inputs, batch_maps, overlay.prob, overlay.blend, (overlay.power_min, overlay.power_max), streams.overlay)
        return Batch(inputs.contiguous(memory_format=layout), labels[indices], indices, batch_maps)

    return make


def data_path(cfg: DataConfig, pool: ImageSet) -> Literal["memory", "stream"]:
    """The data path ``data.loader`` means for this pool (auto: stream for resized crops or a pool over 2 GiB)."""
    if cfg.loader != "auto":
        return cfg.loader
    return "stream" if cfg.augment == "resized_crop_flip" or pool.images.numel() > DEVICE_POOL_LIMIT else "memory"


def input_maker(
    cfg: DataConfig,
    pool: ImageSet,
    device: torch.device,
    channels_last: bool,
    maps: torch.Tensor | MappedMaps | None = None,
    overlay: OverlayConfig | None = None,
) -> MakeInputs:
    """The training batches of ``pool`` on the configured data path, with its ``maps`` (pool order) moving with their
    images, and blended into them with ``overlay``."""
    if data_path(cfg, pool) == "memory":
        device_maps = maps[:] if isinstance(maps, MappedMaps) else maps
        return batch_maker(
            pool.images.to(device),
            pool.labels.to(device),
            cfg.crop_padding,
            cfg.flip,
            None if device_maps is None else device_maps.to(device),
            overlay,
            channels_last,
        )

    def blend(images: torch.Tensor, batch_maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert overlay is not None
        return overlay_maps(images, batch_maps, overlay.prob, overlay.blend, (overlay.power_min, overlay.power_max), generator)

    dataset = AugmentedPool(pool.images, pool.labels, maps, cfg.augment, cfg.crop_padding)
    return StreamingBatches(
        dataset, pool.image_size, cfg.flip, cfg.crop_scale, cfg.crop_ratio, device, channels_last, cfg.workers, blend if overlay else None
    )


def epoch_start(make_inputs: MakeInputs) -> StartEpoch | None:
    """What :class:`igkd.training.loop.FitPlan` hands each epoch's batches to first: the streaming path's
    :meth:`StreamingBatches.start_epoch` (it loads them ahead); None on the device path, which needs no plan."""
    return make_inputs.start_epoch if isinstance(make_inputs, StreamingBatches) else None
