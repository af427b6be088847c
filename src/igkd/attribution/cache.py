"""On-disk, memory-mapped cache of IG maps, keyed to the exact teacher, data and IG parameters.

Each entry is ``ig-<key[:16]>.npy`` ([N, H, W], float16 or uint8 = round(map * 255)) plus a JSON manifest
``ig-<key[:16]>.json`` holding the full key, shape, dtype, source hashes and the .npy's SHA-256.

A build is split into shards, one per process (a single process builds one): shard i of n computes its
contiguous rows into ``ig-<key16>.part<i>of<n>.npy`` and records its progress in the ``.json`` beside it (the
rows flushed to disk first, then the record, both durable) at checkpoints: at most every ``checkpoint_s``
seconds, when the build is interrupted by an exception, and when the shard is done. An interrupted build
resumes each shard from its last recorded batch (a killed process recomputes at most one interval). Once every
shard is complete, :meth:`AttributionCache.merge_shards` joins them; the entry's final names appear only then.

Each record names who computed which rows (``built_by``: command, commit, device, versions and the rows, one entry per
process that added rows): bf16 maps differ in their last bits between CPUs, so a run folder moved between machines
says which machine's maps a student trained on (the student's summary copies them with the file's SHA-256).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import igkd
from igkd.artifacts import integrity
from igkd.artifacts.atomic import atomic_write_json, read_json_object
from igkd.artifacts.fingerprint import data_hash, hash_file, hash_jsonable, hash_state_dict
from igkd.artifacts.provenance import command_line, source_commit
from igkd.attribution.ig import IGRunStats, compute_ig_maps
from igkd.attribution.params import IGParams
from igkd.errors import IgkdError
from igkd.runtime import budget
from igkd.runtime.clock import running_seconds
from igkd.runtime.device import environment_info

FORMAT_VERSION = 1
CacheDtype = Literal["float16", "uint8"]
_REBUILD = "re-run 'igkd attribute' (it rebuilds the cache)"
_WHAT = "IG attribution cache"
# Throughput knobs: they do not change the maps, so they do not invalidate a cache.
_NON_KEY_PARAMS = {"batch_size", "internal_batch_size", "channels_last"}
_SOURCE_PARAMS = {"source", "layer", "noise_samples", "noise_std"}  # added with the Captum sources
CHECKPOINT_SECONDS = 30.0  # at most this long between durable records of a build's progress (two fsyncs each)


def teacher_hash(teacher: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Hash of a teacher's state dict; for a module also its non-persistent buffers (its normalisation)."""
    if isinstance(teacher, nn.Module):
        teacher = {**teacher.state_dict(), **dict(teacher.named_buffers())}
    return hash_state_dict(teacher)


def map_params(params: IGParams) -> dict[str, Any]:
    """The parameters that change the maps (not the throughput knobs); the source's settings only for other sources
    than IG, so that IG maps keep the key they had before there were others."""
    values = params.model_dump(exclude=_NON_KEY_PARAMS)
    return values if params.source != "ig" else {k: v for k, v in values.items() if k not in _SOURCE_PARAMS}


def attribution_key(
    teacher: nn.Module | Mapping[str, torch.Tensor],
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    params: IGParams,
    *,
    data_digest: str | None = None,
) -> str:
    """Cache key: teacher weights (+ normalisation), data, map-relevant IG params and the format version.

    ``data_digest`` is :func:`data_hash` of the images and labels when the caller holds it already.
    """
    return _key(teacher_hash(teacher), data_digest or data_hash(images_uint8, labels), params)


def _key(teacher_digest: str, data_digest: str, params: IGParams) -> str:
    return hash_jsonable({"format": FORMAT_VERSION, "teacher": teacher_digest, "data": data_digest, "params": map_params(params)})


def _fail(path: Path, problem: str) -> IgkdError:
    return IgkdError(f"{_WHAT} '{path}' {problem}; {_REBUILD}")


def read_manifest(npy_path: str | Path) -> dict[str, Any]:
    """The complete manifest next to ``npy_path`` (``.json`` suffix); IgkdError if missing, garbled or unfinished."""
    path = Path(npy_path)
    manifest = integrity.read_manifest(path, _WHAT, _REBUILD, frozenset({"key", "shape", "dtype", "sha256", "file_size", "complete"}))
    if manifest["complete"] is not True:
        raise _fail(path, "has an incomplete or invalid manifest (.json)")
    return manifest


class MappedMaps:
    """A verified cache file memory-mapped and indexed like a tensor of maps: rows come back as float32 tensors in
    [0, 1] (uint8 caches divided by 255), read from disk only when asked for."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def __getitem__(self, index: Any) -> torch.Tensor:
        index = index.cpu().numpy() if isinstance(index, torch.Tensor) else index
        rows = torch.from_numpy(np.asarray(self.array[index], dtype=np.float32))
        return rows.div_(255.0) if self.array.dtype == np.uint8 else rows


def load_maps_file(
    npy_path: str | Path, expected_shape: Sequence[int] | None = None, expected_key: str | None = None, mmap: bool = False
) -> torch.Tensor | MappedMaps:
    """Load a cached .npy as float32 maps [N, H, W] in [0, 1], verified against its manifest; with ``mmap``, the
    verified file memory-mapped (:class:`MappedMaps`), read per sample by its user.

    Checks the manifest, the key (if given), the shape (if given), the file size and the SHA-256.
    """
    path = Path(npy_path)
    if not path.is_file():
        raise _fail(path, "does not exist")
    manifest = read_manifest(path)
    if expected_key is not None and manifest["key"] != expected_key:
        raise _fail(path, "was built for another teacher, data set or IG parameters (stale)")
    if expected_shape is not None and list(manifest["shape"]) != list(expected_shape):
        raise _fail(path, f"has shape {tuple(manifest['shape'])}, expected {tuple(expected_shape)} (stale)")
    integrity.check_file(path, manifest, _WHAT, _REBUILD)
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        raise _fail(path, "is not a readable .npy file") from None
    if list(data.shape) != list(manifest["shape"]) or str(data.dtype) != manifest["dtype"]:
        raise _fail(path, "does not match its manifest's shape/dtype")
    if mmap:
        return MappedMaps(data)
    maps = torch.from_numpy(np.asarray(data, dtype=np.float32))
    return maps.div_(255.0) if data.dtype == np.uint8 else maps


class AttributionCache:
    """A directory of IG map caches, one .npy + .json manifest per key; a build records its progress every
    ``checkpoint_s`` seconds at most (and when interrupted or done)."""

    def __init__(self, directory: str | Path, dtype: CacheDtype = "float16", checkpoint_s: float = CHECKPOINT_SECONDS) -> None:
        self.directory = Path(directory)
        self.dtype = dtype
        self.checkpoint_s = checkpoint_s

    def path(self, key: str) -> Path:
        """The .npy path for ``key`` (its manifest has the same name with .json)."""
        return self.directory / f"ig-{key[:16]}.npy"

    def shard_path(self, key: str, index: int, count: int) -> Path:
        """The .npy of shard ``index`` of ``count`` while ``key`` is being built (progress in the .json beside it)."""
        return self.directory / f"ig-{key[:16]}.part{index}of{count}.npy"

    def lookup(self, key: str) -> Path | None:
        """The .npy path if a finished cache (data and manifest) exists for ``key``; not verified."""
        path = self.path(key)
        return path if path.is_file() and path.with_suffix(".json").is_file() else None

    def load(self, key: str, expected_shape: Sequence[int], mmap: bool = False) -> torch.Tensor | MappedMaps:
        """Verified float32 maps [N, H, W] in [0, 1] for ``key`` (with ``mmap`` the file memory-mapped as stored);
        IgkdError if missing, stale or corrupted."""
        return load_maps_file(self.path(key), expected_shape, expected_key=key, mmap=mmap)

    def build(
        self,
        key: str,
        model: nn.Module,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        params: IGParams,
        device: torch.device,
        progress: Callable[[int, int], None] | None = None,
        *,
        data_digest: str | None = None,
    ) -> tuple[Path, IGRunStats]:
        """Compute all maps in this process (resuming an interrupted build of ``key``); return path and stats.

        ``data_digest`` is :func:`data_hash` of the images and labels when the caller holds it already."""
        self.build_shard(key, model, images_uint8, labels, params, device, 0, 1, progress, data_digest=data_digest)
        return self.merge_shards(key, 1)

    def build_shard(
        self,
        key: str,
        model: nn.Module,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        params: IGParams,
        device: torch.device,
        index: int = 0,
        count: int = 1,
        progress: Callable[[int, int], None] | None = None,
        *,
        data_digest: str | None = None,
        started: Callable[[int, int], object] | None = None,
    ) -> Path:
        """Compute shard ``index`` of ``count`` (a contiguous block of rows), resuming from its last recorded batch.

        ``started(done, total)`` is called once, before any work, with the images the shard holds already (0 when it
        starts afresh, ``total`` when it is complete) and its size; then ``progress(done, total)`` after each batch. A
        shard that is already complete is left as it is. ``data_digest`` is :func:`data_hash` of the images and labels
        when the caller holds it already.
        """
        teacher_digest, data_digest = teacher_hash(model), data_digest or data_hash(images_uint8, labels)
        if _key(teacher_digest, data_digest, params) != key:
            raise ValueError("key does not match this teacher, data and params; compute it with attribution_key()")
        n, _, h, w = images_uint8.shape
        if not 0 <= index < count:
            raise ValueError(f"shard {index} of {count} does not exist")
        if n < count:
            raise IgkdError(f"cannot split {n} images into {count} IG shards; use at most {n} processes")
        lo, hi = n * index // count, n * (index + 1) // count
        info = {
            "key": key,
            "shape": [hi - lo, h, w],
            "rows": [lo, hi],
            "dtype": self.dtype,
            "params": params.model_dump(),
            "teacher_hash": teacher_digest,
            "data_hash": data_digest,
        }
        path = self.shard_path(key, index, count)
        self.directory.mkdir(parents=True, exist_ok=True)
        out, start, stats, complete, built_by = self._open_shard(path, info)
        if started is not None:
            started(start, hi - lo)
        if complete:
            return path
        builder = {
            "command": command_line(),
            "git_commit": source_commit(),
            "igkd_version": igkd.__version__,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": environment_info(device),
        }

        def record(done: int, finished: bool) -> None:
            out.flush()  # type: ignore[union-attr]
            added = [{**builder, "rows": [lo + start, lo + done]}] if done > start else []
            atomic_write_json(
                path.with_suffix(".json"),
                {
                    **info,
                    "file_size": path.stat().st_size,
                    "images_done": done,
                    "batches_done": -(-done // params.batch_size),
                    "stats": asdict(stats),
                    "complete": finished,
                    "built_by": [*built_by, *added],
                },
            )

        done, recorded_at, batch_ended = start, time.monotonic(), running_seconds()

        def checkpoint(images_done: int, total: int) -> None:
            nonlocal done, recorded_at, batch_ended
            done = images_done
            if time.monotonic() - recorded_at >= self.checkpoint_s:
                record(done, finished=False)
                recorded_at = time.monotonic()
            if progress is not None:
                progress(done, total)
            now = running_seconds()
            last_batch, batch_ended = now - batch_ended, now
            if done < total:  # the record below, on the way out, keeps this batch
                budget.stop_if_past(last_batch, f"IG image {done + 1} of {total}")

        try:  # also on igkd.runtime.budget.BudgetReached, raised between batches
            compute_ig_maps(model, images_uint8[lo:hi], labels[lo:hi], params, device, checkpoint, out, start, stats)
        except BaseException:
            record(done, finished=False)  # the batches finished so far are kept
            raise
        record(hi - lo, finished=True)
        return path

    def merge_shards(self, key: str, count: int) -> tuple[Path, IGRunStats]:
        """Join the ``count`` complete shards of ``key`` into the verified cache entry; return path and stats.

        A single shard is renamed, several are copied into one file; the shard files are removed afterwards.
        """
        shards = [self.shard_path(key, i, count) for i in range(count)]
        states = [read_json_object(p.with_suffix(".json")) for p in shards]
        unfinished = [str(p) for p, state in zip(shards, states) if not (state.get("complete") is True and state.get("key") == key)]
        if unfinished:
            raise IgkdError(f"IG attribution shards {unfinished} are missing or unfinished; {_REBUILD} with the same number of processes")
        first, last = states[0], states[-1]
        n, (h, w) = int(last["rows"][1]), first["shape"][1:]
        stats = IGRunStats()
        for state in states:
            stats.add(IGRunStats(**state["stats"]))
        final = self.path(key)
        final.with_suffix(".json").unlink(missing_ok=True)
        if count == 1:
            os.replace(shards[0], final)
        else:
            merged = final.with_name(f".{final.name}.merging.npy")
            out = np.lib.format.open_memmap(merged, mode="w+", dtype=first["dtype"], shape=(n, h, w))
            for path, state in zip(shards, states):
                lo, hi = state["rows"]
                out[lo:hi] = np.load(path, mmap_mode="r")
            out.flush()
            del out
            os.replace(merged, final)
        manifest = {key_: first[key_] for key_ in ("key", "dtype", "params", "teacher_hash", "data_hash")}
        manifest.update(
            shape=[n, h, w],
            sha256=hash_file(final),
            file_size=final.stat().st_size,
            shards=count,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            igkd_version=igkd.__version__,
            complete=True,
            images_done=n,
            batches_done=sum(state["batches_done"] for state in states),
            stats=asdict(stats),
            built_by=[builder for state in states for builder in state.get("built_by", [])],
        )
        atomic_write_json(final.with_suffix(".json"), manifest)
        for path in shards:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
        return final, stats

    def _open_shard(self, path: Path, info: dict[str, Any]) -> tuple[np.memmap | None, int, IGRunStats, bool, list[dict[str, Any]]]:
        """Reopen a matching shard (memmap, images done, stats, complete?, who built its rows) or start it afresh."""
        state = read_json_object(path.with_suffix(".json"))
        try:
            if {k: state.get(k) for k in ("key", "shape", "rows", "dtype")} == {
                k: info[k] for k in ("key", "shape", "rows", "dtype")
            } and path.stat().st_size == state["file_size"]:
                stats, built_by = IGRunStats(**state["stats"]), list(state.get("built_by", []))
                if state.get("complete") is True:
                    return None, int(state["images_done"]), stats, True, built_by
                out = np.lib.format.open_memmap(path, mode="r+")
                if list(out.shape) == info["shape"] and str(out.dtype) == info["dtype"]:
                    return out, int(state["images_done"]), stats, False, built_by
        except (OSError, ValueError, KeyError, TypeError):
            pass
        path.with_suffix(".json").unlink(missing_ok=True)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=info["dtype"], shape=tuple(info["shape"]))
        return out, 0, IGRunStats(), False, []
