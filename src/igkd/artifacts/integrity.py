"""Manifests for cached artifacts: a JSON beside each file with its key, size and SHA-256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igkd.artifacts.atomic import atomic_write_json, read_json_object
from igkd.artifacts.fingerprint import hash_file
from igkd.artifacts.layout import LANDED, published_model
from igkd.errors import IgkdError


def manifest_path(path: Path) -> Path:
    """Where the manifest of ``path`` lives (same name, ``.json``)."""
    return path.with_suffix(".json")


def write_manifest(path: Path, key: str, meta: dict[str, Any]) -> None:
    """Record ``path``'s key, size and checksum (call after the file is completely written)."""
    atomic_write_json(manifest_path(path), {"key": key, "file_size": path.stat().st_size, "sha256": hash_file(path), **meta})


def read_manifest(path: Path, what: str, fix: str, required: frozenset[str] = frozenset({"key", "file_size", "sha256"})) -> dict[str, Any]:
    """The manifest of ``path``, with at least the ``required`` keys; else one-line IgkdError."""
    try:
        manifest = json.loads(manifest_path(path).read_text())
    except (OSError, ValueError):
        raise IgkdError(f"{what} '{path}' has no readable manifest (.json); {fix}") from None
    if not isinstance(manifest, dict) or not required <= manifest.keys():
        raise IgkdError(f"{what} '{path}' has an incomplete or invalid manifest (.json); {fix}")
    return manifest


def check_file(path: Path, manifest: dict[str, Any], what: str, fix: str) -> None:
    """One-line IgkdError unless ``path`` has the size and SHA-256 its manifest records."""
    if path.stat().st_size != manifest.get("file_size"):
        raise IgkdError(
            f"{what} '{path}' has {path.stat().st_size} bytes, its manifest says {manifest.get('file_size')} (truncated?); {fix}"
        )
    if hash_file(path) != manifest.get("sha256"):
        raise IgkdError(f"{what} '{path}' does not match its manifest's SHA-256 (corrupted); {fix}")


def verify(path: Path, key: str, what: str, fix: str) -> dict[str, Any]:
    """The manifest of ``path`` if file and manifest are intact and built for ``key``; else one-line IgkdError."""
    manifest = read_manifest(path, what, fix)
    if manifest.get("key") != key:
        raise IgkdError(f"{what} '{path}' was built from other inputs (stale); {fix}")
    check_file(path, manifest, what, fix)
    return manifest


def model_sha256(folder: Path) -> str | None:
    """The SHA-256 of the model ``folder`` publishes; for a run restored without its model (``landed.json``,
    :mod:`igkd.experiments.restore`), the one its records name; None when there is neither."""
    model = published_model(folder)
    if model.is_file():
        return hash_file(model)
    return read_json_object(folder / LANDED).get("model_sha256")
