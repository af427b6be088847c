"""Content hashes that key caches to the exact weights, data and parameters they were made from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

HASH_ROWS_BYTES = 64 << 20  # rows of a large tensor (a memory-mapped image pool) are hashed this many bytes at a time


def hash_tensor(tensor: torch.Tensor, digest: hashlib._Hash | None = None) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (row blocks in turn: the same digest, without a full copy)."""
    h = digest or hashlib.sha256()
    t = tensor.detach().cpu()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel() == 0:
        return h.hexdigest()
    rows = max(1, HASH_ROWS_BYTES // max(1, t[0].numel() * t.element_size())) if t.dim() else 1
    for start in range(0, len(t) if t.dim() else 1, rows):
        block = (t[start : start + rows] if t.dim() else t).contiguous()
        h.update(block.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def hash_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's keys and tensors, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        hash_tensor(state_dict[key], h)
    return h.hexdigest()


def data_hash(images_uint8: torch.Tensor, labels: torch.Tensor) -> str:
    """Hash of the images and their (int64) labels, in dataset order."""
    return hash_jsonable([hash_tensor(images_uint8), hash_tensor(labels.to(torch.long))])


def hash_jsonable(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()
