"""The on-disk teacher-logits cache: built once, reused, verified against its manifest, refused when tampered."""

from __future__ import annotations

import json

import pytest
import torch

from igkd.errors import IgkdError
from igkd.models.registry import build_model
from igkd.runtime.device import native_bf16
from igkd.training import teacher_logits
from igkd.training.loop import predict_logits

CPU = torch.device("cpu")


def make_teacher(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mobilenetv2_cifar:width=0.25:k=12", 10).eval()


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (7,), generator=g)


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """Counts how often the logits are computed (not read from the cache)."""
    calls: list[int] = []

    def counting(model, images, *args, **kwargs):
        calls.append(len(images))
        return predict_logits(model, images, *args, **kwargs)

    monkeypatch.setattr(teacher_logits, "predict_logits", counting)
    return calls


def test_built_once_then_reused(tmp_path, data, counted):
    teacher = make_teacher(0)
    first = teacher_logits.cached_teacher_logits(teacher, *data, tmp_path, 4, CPU)
    again = teacher_logits.cached_teacher_logits(teacher, *data, tmp_path, 4, CPU)
    assert counted == [7]
    assert torch.equal(first, again) and torch.equal(first, predict_logits(teacher, data[0], 4, CPU))
    (path,) = tmp_path.glob("teacher-logits-*.pt")
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["shape"] == [7, 10] and manifest["dtype"] == "float32"
    assert manifest["precision"] == ("bfloat16" if native_bf16(CPU) else "float32")  # what predict_logits' amp auto uses here
    assert {"key", "sha256", "file_size", "teacher_hash", "data_hash"} <= manifest.keys()


def test_another_teacher_gets_its_own_file(tmp_path, data, counted):
    teacher_logits.cached_teacher_logits(make_teacher(0), *data, tmp_path, 4, CPU)
    teacher_logits.cached_teacher_logits(make_teacher(1), *data, tmp_path, 4, CPU)
    assert counted == [7, 7] and len(list(tmp_path.glob("teacher-logits-*.pt"))) == 2


@pytest.mark.parametrize("damage, message", [("flip", "SHA-256"), ("truncate", "truncated"), ("stale", "stale")])
def test_damaged_cache_is_refused_with_the_file_and_the_fix(tmp_path, data, damage, message):
    teacher = make_teacher(0)
    teacher_logits.cached_teacher_logits(teacher, *data, tmp_path, 4, CPU)
    (path,) = tmp_path.glob("teacher-logits-*.pt")
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-20] ^= 0x10
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(bytes(raw[:-8]))
    else:
        manifest = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**manifest, "key": "0" * 64}))
    with pytest.raises(IgkdError, match=message) as err:
        teacher_logits.cached_teacher_logits(teacher, *data, tmp_path, 4, CPU)
    assert path.name in str(err.value) and "delete it and its .json" in str(err.value) and "\n" not in str(err.value)


def test_file_without_manifest_is_an_interrupted_build_and_is_rebuilt(tmp_path, data, counted):
    teacher = make_teacher(0)
    expected = teacher_logits.cached_teacher_logits(teacher, *data, tmp_path, 4, CPU)
    (path,) = tmp_path.glob("teacher-logits-*.pt")
    path.with_suffix(".json").unlink()
    path.write_bytes(b"half")
    assert torch.equal(teacher_logits.cached_teacher_logits(teacher, *data, tmp_path, 4, CPU), expected)
    assert counted == [7, 7]
