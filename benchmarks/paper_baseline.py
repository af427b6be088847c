"""A faithful re-creation of the paper's training input pipeline, used only as the benchmark baseline.

One PIL image at a time (RandomCrop with padding, flip, ToTensor), a per-sample IG overlay, teacher logits
looked up by dataset index, DataLoader batch 64 with 1 worker, Adam, fp32.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class PaperStyleDataset(Dataset):
    """Per-sample PIL augmentation and overlay, as in the authors' code."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, maps: np.ndarray, teacher_logits: torch.Tensor, prob: float, padding: int
    ) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels
        self.maps = maps
        self.teacher_logits = teacher_logits
        self.prob = prob
        size = self.images.shape[1]
        self.transform = transforms.Compose(
            [transforms.RandomCrop(size, padding=padding), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.transform(Image.fromarray(self.images[index]))
        if random.random() < self.prob:
            saliency = torch.from_numpy(self.maps[index].astype(np.float32)) ** math.exp(random.uniform(0.0, math.log(2.0)))
            saliency = (saliency - saliency.min()) / (saliency.max() - saliency.min() + 1e-12)
            image = 0.5 * image + 0.5 * saliency
        return image, self.labels[index], self.teacher_logits[index]


def paper_style_throughput(
    student: nn.Module,
    dataset: PaperStyleDataset,
    device: torch.device,
    steps: int,
    warmup: int,
    repeats: int,
    batch_size: int = 64,
    workers: int = 1,
    alpha: float = 0.01,
    temperature: float = 2.5,
) -> list[float]:
    """Images per second of the paper-style loop, one figure per repeat of ``steps`` timed batches."""
    student.to(device).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    batches = iter(())
    figures = []

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    def step() -> None:
        x, y, t = next_batch()
        x, y, t = x.to(device), y.to(device), t.to(device)
        logits = student(x)
        kd = F.kl_div(F.log_softmax(logits / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean") * temperature**2
        loss = (1 - alpha) * F.cross_entropy(logits, y) + alpha * kd
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        figures.append(steps * batch_size / (time.perf_counter() - start))
    return figures
