"""How far training has gone in a day: what a checkpoint's ``meta.json`` records."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class DayPosition:
    """How far training has gone in a day (what a checkpoint's sidecar records)."""

    day: str
    epoch: int = 0
    batch_in_epoch: int = 0
    steps: int = 0
    examples: int = 0
    completed: bool = False
    loss_sums: dict = dataclasses.field(default_factory=dict)

    def mean_losses(self) -> dict:
        """Mean training loss of the day so far: ``loss`` (total) and one per task."""
        return {k: v / self.steps for k, v in self.loss_sums.items()} if self.steps else {}
