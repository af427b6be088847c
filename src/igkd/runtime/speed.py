"""Which speed settings a run's stages use on a device, and which faster ones it leaves off (for dry runs and notes)."""

from __future__ import annotations

import torch

from igkd.config import RunConfig, TrainConfig
from igkd.runtime.device import autocast_dtype, native_bf16, use_channels_last


def training_settings(train: TrainConfig, device: torch.device) -> dict[str, str]:
    """What a training section's ``amp`` and ``channels_last`` come to on ``device`` (``auto`` resolved)."""
    return {
        "amp": "bf16" if autocast_dtype(device, train.amp) is not None else "off",
        "channels_last": "on" if use_channels_last(device, train.channels_last) else "off",
    }


def settings_off(cfg: RunConfig, device: torch.device, stages: tuple[str, ...]) -> list[str]:
    """The faster settings ``stages`` leave off on ``device``, each as the ``--set`` that turns it on.

    bf16 counts only where the device computes it natively; IG in bf16 is listed as an option with its cost (the maps
    move), since it is off by default everywhere."""
    sections = {"teacher": cfg.teacher.train, "student": cfg.student.train}
    off = []
    for stage in ("teacher", "student"):
        if stage in stages and not (stage == "teacher" and cfg.teacher.checkpoint is not None):
            used = training_settings(sections[stage], device)
            if used["amp"] == "off" and native_bf16(device):
                off.append(f"{stage}.train.amp=auto")
            if used["channels_last"] == "off" and use_channels_last(device, "auto"):
                off.append(f"{stage}.train.channels_last=auto")
    if "maps" in stages:
        if not use_channels_last(device, cfg.attribution.channels_last) and use_channels_last(device, "auto"):
            off.append("attribution.channels_last=auto")
        if cfg.attribution.precision == "float32" and native_bf16(device):
            off.append("attribution.precision=bfloat16 (moves the maps)")
    return off
