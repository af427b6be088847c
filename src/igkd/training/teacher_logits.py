"""Teacher logits of the clean training pool, cached on disk with a manifest (``student.kd.teacher_logits: cached``).

The file ``teacher-logits-<key16>.pt`` holds float32 logits [N, classes] in dataset order; its manifest
(``.json``) records the key (teacher weights, data, precision), shape, dtype, source hashes and SHA-256.
A truncated or tampered file is refused; a file without a manifest (an interrupted build) is rebuilt.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from igkd.artifacts.atomic import atomic_torch_save
from igkd.artifacts.fingerprint import data_hash, hash_jsonable
from igkd.artifacts.integrity import manifest_path, verify, write_manifest
from igkd.attribution.cache import teacher_hash
from igkd.errors import IgkdError
from igkd.runtime import distributed
from igkd.runtime.device import precision_name
from igkd.training.loop import predict_logits

FORMAT_VERSION = 1


def cached_teacher_logits(
    teacher: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cache_dir: Path,
    batch_size: int | None,
    device: torch.device,
    *,
    data_digest: str | None = None,
) -> torch.Tensor:
    """Teacher logits (float32, CPU) for uint8 ``images``, read from the verified cache or computed and cached.

    ``data_digest`` is :func:`data_hash` of the images and labels when the caller holds it already. Under torchrun
    rank 0 builds the file and the other ranks read it.
    """
    precision = precision_name(device, "auto")
    teacher_digest, data_digest = teacher_hash(teacher), data_digest or data_hash(images, labels)
    key = hash_jsonable({"format": FORMAT_VERSION, "teacher": teacher_digest, "data": data_digest, "precision": precision})
    path = Path(cache_dir) / f"teacher-logits-{key[:16]}.pt"
    with distributed.main_first():
        if distributed.current().is_main and not (path.is_file() and manifest_path(path).is_file()):
            logits = predict_logits(teacher, images, batch_size, device)
            atomic_torch_save(path, logits)
            write_manifest(
                path,
                key,
                {
                    "shape": list(logits.shape),
                    "dtype": "float32",
                    "precision": precision,
                    "teacher_hash": teacher_digest,
                    "data_hash": data_digest,
                },
            )
    fix = "delete it and its .json, then re-run the same command (it is rebuilt from the teacher)"
    manifest = verify(path, key, "teacher logits cache", fix)
    logits = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(logits, torch.Tensor) or list(logits.shape) != manifest.get("shape") or list(logits.shape[:1]) != [len(images)]:
        raise IgkdError(f"teacher logits cache '{path}' does not hold {len(images)} rows of logits; {fix}")
    return logits
