"""Optional TensorBoard logging (``report.tensorboard: true``, extra ``igkd[tensorboard]``): per-epoch metrics of a
training stage and a few IG overlays, as event files in the stage's ``tensorboard/`` folder beside metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import torch

from igkd.config import OverlayConfig
from igkd.overlay import overlay_maps
from igkd.runtime.extras import require

OVERLAY_IMAGES = 8


class TensorBoardLog:
    """The event files of one training stage."""

    def __init__(self, folder: Path) -> None:
        require("tensorboard", "report.tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder) / "tensorboard"
        self.writer = SummaryWriter(str(self.folder))

    def epoch(self, epoch: int, _total: int, row: dict[str, float]) -> None:
        """Every number of the epoch's metrics row, at step ``epoch``."""
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def overlays(self, images_uint8: torch.Tensor, maps: torch.Tensor, overlay: OverlayConfig) -> None:
        """A few training images, their IG maps and the overlay the student is shown (power 1, always applied)."""
        count = min(OVERLAY_IMAGES, len(images_uint8))
        x, m = images_uint8[:count].float() / 255, maps[:count].float()
        blended = overlay_maps(x, m, 1.0, overlay.blend, (overlay.power_min, overlay.power_min))
        self.writer.add_images("ig/images", x, 0)
        self.writer.add_images("ig/maps", m.unsqueeze(1), 0)
        self.writer.add_images("ig/overlays", blended.clamp(0, 1), 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
