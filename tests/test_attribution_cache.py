"""IG map cache: round trip, keys, refusal of stale/corrupted/incomplete caches, resumable builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from igkd.attribution import AttributionCache, IGParams, attribution_key, compute_ig_maps, load_maps_file
from igkd.errors import IgkdError
from igkd.models.registry import build_model

CPU = torch.device("cpu")
PARAMS = IGParams(steps=4, batch_size=2)


def make_teacher(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mobilenetv2_cifar:width=0.25:k=12", 10, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)).eval()


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return make_teacher(0)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (5,), generator=g)


@pytest.fixture(scope="module")
def reference(teacher, data) -> np.ndarray:
    return compute_ig_maps(teacher, *data, PARAMS, CPU)[0].astype(np.float32)


@pytest.fixture
def built(tmp_path, teacher, data):
    """A finished float16 cache: (cache, key, path)."""
    cache = AttributionCache(tmp_path)
    key = attribution_key(teacher, *data, PARAMS)
    path, _ = cache.build(key, teacher, *data, PARAMS, CPU)
    return cache, key, path


@pytest.mark.parametrize("dtype, atol", [("float16", 1e-3), ("uint8", 0.5 / 255 + 1e-3)])
def test_round_trip(tmp_path, teacher, data, reference, dtype, atol):
    cache = AttributionCache(tmp_path, dtype=dtype)
    key = attribution_key(teacher, *data, PARAMS)
    assert cache.lookup(key) is None
    path, stats = cache.build(key, teacher, *data, PARAMS, CPU)
    assert cache.lookup(key) == path and path.name == f"ig-{key[:16]}.npy"
    maps = cache.load(key, (5, 8, 8))
    assert maps.dtype == torch.float32 and maps.shape == (5, 8, 8)
    np.testing.assert_allclose(maps.numpy(), reference, atol=atol)
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["key"] == key and manifest["complete"] is True and manifest["dtype"] == dtype
    assert manifest["batches_done"] == 3 and manifest["stats"]["images"] == stats.images == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


def test_key_depends_on_teacher_data_and_params(teacher, data):
    images, labels = data
    key = attribution_key(teacher, images, labels, PARAMS)
    assert key == attribution_key(make_teacher(0), images, labels, PARAMS)
    other_images = images.clone()
    other_images[0, 0, 0, 0] ^= 1
    others = [
        attribution_key(make_teacher(1), images, labels, PARAMS),
        attribution_key(build_model("mobilenetv2_cifar:width=0.25:k=12", 10, (0.5,) * 3, (0.2,) * 3), images, labels, PARAMS),
        attribution_key(teacher, other_images, labels, PARAMS),
        attribution_key(teacher, images, (labels + 1) % 10, PARAMS),
        attribution_key(teacher, images, labels, PARAMS.model_copy(update={"baseline": "black"})),
        attribution_key(teacher, images, labels, PARAMS.model_copy(update={"steps": 5})),
    ]
    assert len({key, *others}) == len(others) + 1
    assert key == attribution_key(teacher, images, labels, PARAMS.model_copy(update={"batch_size": 7}))


def test_stale_cache_is_refused(built, teacher, data):
    cache, key, path = built
    new_key = attribution_key(make_teacher(1), *data, PARAMS)
    with pytest.raises(IgkdError, match="igkd attribute"):
        cache.load(new_key, (5, 8, 8))
    # even a cache renamed to the new key's name is refused: its manifest names the old key
    for suffix in (".npy", ".json"):
        path.with_suffix(suffix).rename(cache.path(new_key).with_suffix(suffix))
    with pytest.raises(IgkdError, match="stale"):
        cache.load(new_key, (5, 8, 8))


def test_wrong_shape_is_refused(built):
    cache, key, _ = built
    with pytest.raises(IgkdError, match="shape"):
        cache.load(key, (6, 8, 8))


def test_flipped_byte_is_refused(built):
    cache, key, path = built
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(IgkdError, match="igkd attribute") as err:
        cache.load(key, (5, 8, 8))
    assert path.name in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_is_refused(built):
    cache, key, path = built
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IgkdError, match=f"{path.name}.*truncated"):
        cache.load(key, (5, 8, 8))


@pytest.mark.parametrize("damage", ["delete", "garble", "incomplete"])
def test_bad_manifest_is_refused(built, damage):
    cache, key, path = built
    manifest = path.with_suffix(".json")
    if damage == "delete":
        manifest.unlink()
    elif damage == "garble":
        manifest.write_text('{"key": ')
    else:
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))
    with pytest.raises(IgkdError, match="igkd attribute"):
        cache.load(key, (5, 8, 8))


def test_load_maps_file(built, reference):
    _, key, path = built
    np.testing.assert_allclose(load_maps_file(path, (5, 8, 8)).numpy(), reference, atol=1e-3)
    with pytest.raises(IgkdError, match="stale"):
        load_maps_file(path, expected_key="0" * 64)
    with pytest.raises(IgkdError, match="does not exist"):
        load_maps_file(path.with_name("missing.npy"))


class Interrupt(Exception):
    pass


def test_interrupted_build_resumes(tmp_path, teacher, data, reference):
    cache = AttributionCache(tmp_path)
    key = attribution_key(teacher, *data, PARAMS)

    def fail_after_two_batches(done: int, total: int) -> None:
        if done >= 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        cache.build(key, teacher, *data, PARAMS, CPU, progress=fail_after_two_batches)
    assert cache.lookup(key) is None and not cache.path(key).exists()
    partial = json.loads(cache.shard_path(key, 0, 1).with_suffix(".json").read_text())
    assert partial["images_done"] == 4 and partial["batches_done"] == 2 and partial["complete"] is False
    assert [builder["rows"] for builder in partial["built_by"]] == [[0, 4]]

    calls: list[tuple[int, int]] = []
    path, stats = cache.build(key, teacher, *data, PARAMS, CPU, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(5, 5)]  # only the last batch was computed
    assert stats.images == 5
    np.testing.assert_array_equal(cache.load(key, (5, 8, 8)).numpy(), reference)
    assert not cache.shard_path(key, 0, 1).exists()
    assert not cache.shard_path(key, 0, 1).with_suffix(".json").exists()
    built_by = json.loads(path.with_suffix(".json").read_text())["built_by"]  # each process that added rows, with its machine
    assert [builder["rows"] for builder in built_by] == [[0, 4], [4, 5]]
    assert all(b["environment"]["device"] == "cpu" and b["environment"]["cpu"] and b["git_commit"] for b in built_by)


def test_progress_is_made_durable_at_checkpoints_not_after_every_batch(tmp_path, teacher, data, monkeypatch):
    import igkd.attribution.cache as cache_module

    flushes: list[int] = []
    written: list[int] = []
    flush, write = np.memmap.flush, cache_module.atomic_write_json
    monkeypatch.setattr(np.memmap, "flush", lambda self: flushes.append(1) or flush(self))
    monkeypatch.setattr(cache_module, "atomic_write_json", lambda path, obj: written.append(obj["images_done"]) or write(path, obj))
    cache = AttributionCache(tmp_path)
    key = attribution_key(teacher, *data, PARAMS)
    cache.build_shard(key, teacher, *data, PARAMS, CPU)  # three batches, well within one checkpoint interval
    assert written == [5] and len(flushes) == 1


def test_checkpoints_record_the_images_done(tmp_path, teacher, data, reference):
    cache = AttributionCache(tmp_path, checkpoint_s=0.0)  # a checkpoint after every batch
    key = attribution_key(teacher, *data, PARAMS)
    state = cache.shard_path(key, 0, 1).with_suffix(".json")
    recorded: list[int] = []
    cache.build_shard(key, teacher, *data, PARAMS, CPU, progress=lambda d, t: recorded.append(json.loads(state.read_text())["images_done"]))
    assert recorded == [2, 4, 5]
    cache.merge_shards(key, 1)
    np.testing.assert_array_equal(cache.load(key, (5, 8, 8)).numpy(), reference)


def test_partial_for_other_shape_is_not_resumed(tmp_path, teacher, data, reference):
    cache = AttributionCache(tmp_path)
    key = attribution_key(teacher, *data, PARAMS)
    partial = cache.shard_path(key, 0, 1)
    np.lib.format.open_memmap(partial, mode="w+", dtype="float16", shape=(3, 8, 8)).flush()
    partial.with_suffix(".json").write_text(
        json.dumps(
            {"key": key, "shape": [3, 8, 8], "rows": [0, 3], "dtype": "float16", "file_size": partial.stat().st_size, "images_done": 3}
        )
    )
    cache.build(key, teacher, *data, PARAMS, CPU)
    np.testing.assert_array_equal(cache.load(key, (5, 8, 8)).numpy(), reference)


def test_build_rejects_mismatched_key(tmp_path, teacher, data):
    with pytest.raises(ValueError, match="attribution_key"):
        AttributionCache(tmp_path).build("0" * 64, teacher, *data, PARAMS, CPU)


def test_shards_built_separately_merge_into_the_single_process_cache(tmp_path, teacher, data, reference):
    """What torchrun's ranks do: each builds one shard (here in turn), rank 0 joins them."""
    cache = AttributionCache(tmp_path)
    key = attribution_key(teacher, *data, PARAMS)
    seen: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    for index in (1, 0):
        cache.build_shard(key, teacher, *data, PARAMS, CPU, index, 2, progress=lambda d, t, i=index: seen[i].append((d, t)))
    assert seen == {0: [(2, 2)], 1: [(2, 3), (3, 3)]}  # rows 0:2 and 2:5, PARAMS.batch_size = 2
    shard_states = [json.loads(cache.shard_path(key, i, 2).with_suffix(".json").read_text()) for i in range(2)]
    assert [s["rows"] for s in shard_states] == [[0, 2], [2, 5]] and all(s["complete"] for s in shard_states)
    path, stats = cache.merge_shards(key, 2)
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert stats.images == 5 and manifest["shards"] == 2 and [b["rows"] for b in manifest["built_by"]] == [[0, 2], [2, 5]]
    np.testing.assert_allclose(cache.load(key, (5, 8, 8)).numpy(), reference, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


def test_interrupted_shard_resumes_and_finished_shard_is_kept(tmp_path, teacher, data, reference):
    cache = AttributionCache(tmp_path)
    key = attribution_key(teacher, *data, PARAMS)
    cache.build_shard(key, teacher, *data, PARAMS, CPU, 0, 2)

    def interrupt(done: int, total: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        cache.build_shard(key, teacher, *data, PARAMS, CPU, 1, 2, progress=interrupt)
    with pytest.raises(IgkdError, match=r"part1of2.npy'\] are missing or unfinished"):
        cache.merge_shards(key, 2)
    calls: list[tuple[int, int]] = []
    starts: list[tuple[int, int]] = []
    for index in (0, 1):
        cache.build_shard(
            key,
            teacher,
            *data,
            PARAMS,
            CPU,
            index,
            2,
            progress=lambda d, t: calls.append((d, t)),
            started=lambda d, t: starts.append((d, t)),
        )
    assert calls == [(3, 3)]  # shard 0 was complete; shard 1 resumed after its first batch
    assert starts == [(2, 2), (2, 3)]  # what each held before any work: all of shard 0, shard 1's first batch
    cache.merge_shards(key, 2)
    np.testing.assert_allclose(cache.load(key, (5, 8, 8)).numpy(), reference, atol=1e-3)


def test_more_shards_than_images_is_refused(tmp_path, teacher, data):
    key = attribution_key(teacher, *data, PARAMS)
    with pytest.raises(IgkdError, match="cannot split 5 images into 6 IG shards"):
        AttributionCache(tmp_path).build_shard(key, teacher, *data, PARAMS, CPU, 0, 6)
