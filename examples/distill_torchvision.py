"""Distil a torchvision ResNet-18 teacher into a MobileNetV2 (width 0.5) student in a hand-written loop, with igkd's API only.

    python examples/distill_torchvision.py --output results.json

On the embedded digits data (16x16) it runs in about a minute on two CPU cores. The steps are the paper's
method: train (or bring) a teacher; precompute its IG maps once, on the un-augmented images in dataset order;
train the student on images whose crop is applied to the image and its map together (a ``tv_tensors.Mask``
through ``transforms.v2``), overlaid with probability p, with KD on the teacher's logits and attention
transfer between a teacher and a student layer named by module path.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import igkd

TEACHER, STUDENT = "torchvision:resnet18", "torchvision:mobilenet_v2:width_mult=0.5"


class ImagesWithMaps(Dataset):
    """Image i, its IG map i and its label, cropped and flipped together (the map travels as a mask)."""

    def __init__(self, images: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor, padding: int) -> None:
        self.images, self.maps, self.labels = images, maps, labels
        self.transform = v2.Compose([v2.RandomCrop(images.shape[-2:], padding=padding)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image, map_ = self.transform(tv_tensors.Image(self.images[i]), tv_tensors.Mask(self.maps[i][None]))
        return image.float().div(255), map_[0], self.labels[i]


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(images.float().div(255)).argmax(1) == labels).float().mean())


def train_teacher(teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int) -> None:
    optimizer = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    for _ in range(epochs):
        teacher.train()
        for idx in torch.randperm(len(labels)).split(64):
            loss = F.cross_entropy(teacher(images[idx].float().div(255)), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--student-epochs", type=int, default=4)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, help="where the IG maps are kept (default: a temporary folder)")
    parser.add_argument("--output", type=Path, help="write the accuracies as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    train, test = igkd.load_images("digits", "train", image_size=16), igkd.load_images("digits", "test", image_size=16)
    mean, std = train.channel_stats()
    teacher = igkd.create_model(TEACHER, len(train.classes), mean, std)
    train_teacher(teacher, train.images, train.labels, args.teacher_epochs)
    teacher.eval().requires_grad_(False)

    with tempfile.TemporaryDirectory() as scratch:
        maps = igkd.compute_attributions(teacher, train.images, train.labels, steps=args.ig_steps, cache_dir=args.cache_dir or scratch)

    student = igkd.create_model(STUDENT, len(train.classes), teacher.mean.flatten().tolist(), teacher.std.flatten().tolist())
    overlay, loss_fn = igkd.IGOverlay(prob=0.1), igkd.DistillationLoss(alpha=0.5, temperature=2.5, gamma=0.8)
    student_tap, teacher_tap = igkd.FeatureTap(student, ["features.6"]), igkd.FeatureTap(teacher, ["layer2"])
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-3)
    loader = DataLoader(ImagesWithMaps(train.images, maps, train.labels, padding=2), batch_size=64, shuffle=True)
    for epoch in range(args.student_epochs):
        student.train(), overlay.train()
        for images, batch_maps, labels in loader:
            inputs = overlay(images, batch_maps)
            logits = student(inputs)
            with torch.no_grad():
                teacher_logits = teacher(inputs)  # online: the teacher sees exactly the student's input
            loss = loss_fn(logits, labels, teacher_logits, student_tap.take(), teacher_tap.take())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"student epoch {epoch + 1}/{args.student_epochs}: loss {loss.item():.4f}")
    student_tap.remove(), teacher_tap.remove()

    results = {
        "teacher_test_accuracy": accuracy(teacher, test.images, test.labels),
        "student_test_accuracy": accuracy(student, test.images, test.labels),
        "maps_shape": list(maps.shape),
        "teacher": TEACHER,
        "student": STUDENT,
    }
    print(json.dumps(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
