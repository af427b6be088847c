"""One identity per stage of a run, computed here and nowhere else.

A stage's identity is the SHA-256 of its own settings and the identities of its inputs, so a change anywhere
upstream changes every identity below it:

    data     = how the data is split and augmented + the content of the training pool and the test set
    teacher  = the teacher section (an imported checkpoint by its bytes, not its path) + data
    maps     = the IG settings that change the maps + teacher + data
    student  = the student section + the run seed + teacher + data (+ maps when it reads the teacher's: not the noise control)

The identity of a stage is its folder's reuse check (``final.json`` records it), its training state's resume
key and, for students, part of its folder name. Identities depend on settings and data only, so they are known
before anything is trained: an experiment's plan names every run's folder up front.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from igkd.artifacts.atomic import read_json_object
from igkd.artifacts.fingerprint import hash_file, hash_jsonable
from igkd.attribution.cache import map_params
from igkd.config import CATConfig, ExplainConfig, RunConfig
from igkd.data.sources import expand_path
from igkd.errors import IgkdError
from igkd.methods import overlays_maps, uses_maps

FORMAT_VERSION = 1
# Where the data lives is not what it is (its content is hashed instead), and how it is loaded changes no batch.
_DATA_LOCATION = {"root", "download", "loader", "workers"}
# Settings added after format 1, hashed only when they differ from their default, so that every run made
# before they existed keeps its identity (and its folder, cache and resume state).
_LATER_SETTINGS: dict[str, dict[str, object]] = {
    "data": {"augment": "crop_flip", "crop_scale": [0.35, 1.0], "crop_ratio": [0.75, 4 / 3], "eval_crop": 1.0},
    "teacher": {"rename": []},
    "student": {
        "normalize": "teacher",
        "terms": None,
        "overlay": None,
        "explain": ExplainConfig().model_dump(mode="json"),
        "cat": CATConfig().model_dump(mode="json"),
    },
}


# Training settings that change no result, only speed: hashed at the value they had when format 1 hashed them, so that
# setting them (or a new device-dependent default) keeps every identity.
_RESULT_FREE_TRAIN_SETTINGS: dict[str, object] = {"eval_batch_size": 1024}


def _settings(section: str, values: dict) -> dict:
    """A config section's settings as hashed: later settings left out while at their default, result-free training
    settings at their format-1 value."""
    if isinstance(values.get("train"), dict):
        values = {**values, "train": {**values["train"], **_RESULT_FREE_TRAIN_SETTINGS}}
    return {k: v for k, v in values.items() if not (k in _LATER_SETTINGS.get(section, {}) and v == _LATER_SETTINGS[section][k])}


@dataclass(frozen=True)
class StageIdentities:
    """The identities of a run's stages (hex SHA-256 each); ``maps`` is None when the student overlays none."""

    data: str
    teacher: str
    maps: str | None
    student: str


@lru_cache(maxsize=32)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    return hash_file(path)


def checkpoint_digest(path: Path) -> str:
    """SHA-256 of an imported checkpoint's bytes (hashed once per file version and process)."""
    resolved = expand_path(path)
    if not resolved.is_file():
        raise IgkdError(f"teacher checkpoint '{path}' not found; fix teacher.checkpoint (or --import) to an existing file")
    stat = resolved.stat()
    return _file_digest(resolved, stat.st_size, stat.st_mtime_ns)


def stage_identities(cfg: RunConfig, data_content: str) -> StageIdentities:
    """Every stage's identity for ``cfg``, given the content digest of its data (``PreparedData.content_digest``)."""
    data = hash_jsonable(
        {
            "format": FORMAT_VERSION,
            "stage": "data",
            "content": data_content,
            "settings": _settings("data", cfg.data.model_dump(mode="json", exclude=_DATA_LOCATION)),
        }
    )
    teacher_settings = _settings("teacher", cfg.teacher.model_dump(mode="json", exclude={"checkpoint"}))
    imported = checkpoint_digest(cfg.teacher.checkpoint) if cfg.teacher.checkpoint is not None else None
    teacher = hash_jsonable(
        {"format": FORMAT_VERSION, "stage": "teacher", "data": data, "settings": teacher_settings, "imported_checkpoint": imported}
    )
    needs_maps = uses_maps(cfg.student)
    maps = (
        hash_jsonable(
            {"format": FORMAT_VERSION, "stage": "maps", "data": data, "teacher": teacher, "settings": map_params(cfg.attribution)}
        )
        if needs_maps
        else None
    )
    student = hash_jsonable(
        {
            "format": FORMAT_VERSION,
            "stage": "student",
            "data": data,
            "teacher": teacher,
            "maps": maps,
            "settings": _settings("student", cfg.student.model_dump(mode="json")),
            "seed": cfg.seed,
        }
    )
    return StageIdentities(data, teacher, maps, student)


def stage_finished(summary: Path, identity: str) -> bool:
    """Whether ``summary`` (a finished stage's ``final.json``) records ``identity``: the one reuse check."""
    return read_json_object(summary).get("identity") == identity


def student_run_id(cfg: RunConfig, student_identity: str) -> str:
    """A student's folder name under ``students/``: method, map control, architecture, seed and its identity."""
    arch = cfg.student.arch.replace(":", "_").replace("=", "")
    on_maps = overlays_maps(cfg.student) or uses_maps(cfg.student)
    control = "" if cfg.student.ig.maps == "aligned" or not on_maps else f"-{cfg.student.ig.maps}"
    return f"{cfg.student.method}{control}-{arch}-seed{cfg.seed}-{student_identity[:8]}"
