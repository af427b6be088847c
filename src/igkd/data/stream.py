"""The streaming data path: DataLoader workers crop (or resized-crop) and flip each image together with its IG map.

Each map is stacked onto its image as a fourth channel, so every geometric transform (crop, resized crop,
flip, resize) moves both identically, and is read per sample from wherever the maps live (a memory-mapped
cache file, or a tensor). The random parameters of an epoch are drawn in the main process from the run's
``augment`` stream, batch by batch in step order, exactly as the on-device path draws them: for ``crop_flip``
the two paths make the same batches (:func:`igkd.data.augment.crop_flip_params`); workers only apply them,
so the result depends neither on the number of workers nor on which worker loads what.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator, Sequence
from multiprocessing import util as multiprocessing_util
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from igkd.attribution.cache import MappedMaps
from igkd.data.augment import apply_crop_flip, crop_flip_params
from igkd.data.batch import Batch
from igkd.errors import IgkdError
from igkd.runtime.device import RandomStreams

Augment = Literal["crop_flip", "resized_crop_flip"]
SampleParams = tuple[int, tuple[float, ...]]  # (dataset index, its crop box/offsets and flip)


def resized_crop_params(
    b: int, size: tuple[int, int], scale: Sequence[float], ratio: Sequence[float], flip: bool, generator: torch.Generator
) -> list[tuple[int, int, int, int, bool]]:
    """Per sample (top, left, height, width, flipped): torchvision's RandomResizedCrop box, drawn from ``generator``
    (each sample's box from its own seed, through ``RandomResizedCrop.get_params`` on a forked global generator)."""
    seeds = torch.randint(0, 2**62, (b,), generator=generator, device=generator.device).tolist()
    flips = (torch.rand(b, generator=generator, device=generator.device) < 0.5).tolist() if flip else [False] * b
    boxes = []
    probe = torch.empty(1, *size)
    for seed, flipped in zip(seeds, flips):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            boxes.append((*RandomResizedCrop.get_params(probe, list(scale), list(ratio)), bool(flipped)))
    return boxes


class AugmentedPool(Dataset):
    """Image ``i`` with its map stacked as a fourth channel (float in [0, 1]), augmented by the parameters it is
    asked with; ``(index, params)`` in, ``(stacked C+1 x H x W, label)`` out."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, maps: torch.Tensor | MappedMaps | None, augment: Augment, padding: int
    ) -> None:
        self.images, self.labels, self.maps, self.augment, self.padding = images, labels, maps, augment, padding

    def __len__(self) -> int:
        return len(self.labels)

    def _stacked(self, index: int) -> torch.Tensor:
        image = self.images[index].float().div(255)
        if self.maps is None:
            return image
        map_ = self.maps[index].float()  # a tensor row, or one read from the memory-mapped cache (MappedMaps)
        return torch.cat([image, map_.unsqueeze(0)])

    def __getitem__(self, item: SampleParams) -> tuple[torch.Tensor, torch.Tensor]:
        index, params = item
        stacked = self._stacked(index)
        if self.augment == "crop_flip":
            top, left, flipped = params
            out = apply_crop_flip(
                stacked[None],
                self.padding,
                torch.tensor([int(top)]),
                torch.tensor([int(left)]),
                None if flipped < 0 else torch.tensor([bool(flipped)]),
            )[0]
        else:
            top, left, height, width, flipped = params
            out = TF.resized_crop(
                stacked,
                int(top),
                int(left),
                int(height),
                int(width),
                list(stacked.shape[-2:]),
                interpolation=InterpolationMode.BILINEAR,
                antialias=True,
            )
            out = TF.horizontal_flip(out) if flipped else out
        return out, self.labels[index]


def epoch_params(
    batches: Sequence[torch.Tensor],
    augment: Augment,
    padding: int,
    flip: bool,
    image_size: tuple[int, int],
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
) -> list[list[SampleParams]]:
    """Every batch's per-sample parameters, drawn in step order from ``generator`` (the run's augment stream)."""
    planned = []
    for indices in batches:
        b = len(indices)
        if augment == "crop_flip" and padding == 0 and not flip:  # nothing to draw, as on the device path
            params: Sequence[tuple[int | bool, ...]] = [(0, 0, -1)] * b
        elif augment == "crop_flip":
            top, left, flipped = crop_flip_params(b, padding, flip, generator, generator.device)
            flips = flipped.tolist() if flipped is not None else [-1] * b
            params = list(zip(top.tolist(), left.tolist(), flips))
        else:
            params = resized_crop_params(b, image_size, scale, ratio, flip, generator)
        planned.append([(int(i), tuple(float(v) for v in p)) for i, p in zip(indices.tolist(), params)])
    return planned


def check_worker_handover(workers: int) -> None:
    """Raise an :class:`IgkdError` when ``workers`` DataLoader processes could not hand their batches over.

    On Linux a worker passes each batch's memory through a Unix socket in multiprocessing's temporary folder (a
    ``pymp-*`` folder in ``$TMPDIR``). A socket path has at most 107 bytes, so a ``$TMPDIR`` longer than about 75
    characters fails inside the worker and the training waits for its batch forever. One socket bound at the name
    multiprocessing gives it finds that out first.
    """
    if workers == 0 or torch.multiprocessing.get_sharing_strategy() != "file_descriptor":
        return
    folder = multiprocessing_util.get_temp_dir()
    path = os.path.join(folder, f"listener-{secrets.token_hex(4)}")  # the length of multiprocessing's listener names
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.bind(path)
        except OSError as exc:
            raise IgkdError(
                f"data.workers={workers}: DataLoader workers cannot hand batches over through a socket in '{folder}' ({exc}); "
                "set TMPDIR to a shorter folder (e.g. /tmp) or data.workers=0"
            ) from None
    os.unlink(path)


class StreamingBatches:
    """A ``make_inputs`` for :func:`igkd.training.loop.fit` on the streaming path.

    ``fit`` hands over each epoch's batches first (:meth:`start_epoch`); a DataLoader then prefetches them in
    ``workers`` processes while the model trains, and each call returns the next :class:`Batch`, with its maps
    when the pool has them, overlaid (``overlay``: a function of images, maps and the overlay generator) in the main
    process.
    """

    def __init__(
        self,
        pool: AugmentedPool,
        image_size: tuple[int, int],
        flip: bool,
        scale: Sequence[float],
        ratio: Sequence[float],
        device: torch.device,
        channels_last: bool,
        workers: int,
        overlay: Any = None,
    ) -> None:
        self.pool, self.image_size, self.flip, self.scale, self.ratio = pool, image_size, flip, scale, ratio
        self.device, self.layout, self.workers, self.overlay = (
            device,
            torch.channels_last if channels_last else torch.contiguous_format,
            workers,
            overlay,
        )
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._expected: list[list[int]] = []
        check_worker_handover(workers)

    def start_epoch(self, batches: Sequence[torch.Tensor], streams: RandomStreams) -> None:
        """Plan the epoch: draw every batch's augmentation now (in step order) and start loading them."""
        planned = epoch_params(
            batches, self.pool.augment, self.pool.padding, self.flip, self.image_size, self.scale, self.ratio, streams.augment
        )
        self._expected = [[i for i, _ in batch] for batch in planned]
        loader = DataLoader(
            self.pool,
            batch_sampler=planned,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if self.workers else None,
        )
        self._batches = iter(loader)

    def __call__(self, indices: torch.Tensor, streams: RandomStreams) -> Batch:
        if self._batches is None:  # not planned by fit (a benchmark, a single step): plan this batch alone
            self.start_epoch([indices], streams)
        stacked, labels = next(self._batches)  # type: ignore[arg-type]
        expected = self._expected.pop(0)
        if expected != indices.tolist():
            raise RuntimeError("streaming batches out of step with the training loop's order")
        if not self._expected:
            self._batches = None
        stacked = stacked.to(self.device, non_blocking=True)
        images, maps = stacked[:, :3], (stacked[:, 3] if self.pool.maps is not None else None)
        if self.overlay is not None and maps is not None:
            images = self.overlay(images, maps, streams.overlay)
        return Batch(images.contiguous(memory_format=self.layout), labels.to(self.device, non_blocking=True), indices, maps)
