"""When ``train --follow`` exports: every N partitions or every N minutes (``export.every``)."""

from __future__ import annotations

from mtlrec.training.config.values import every_minutes


class ExportCadence:
    """``export.every``: an integer N exports after every N-th partition trained since the
    last export; ``"30min"`` exports after the first partition finished 30 minutes or more
    after the last export (and after the first partition of a run that has none).

    Counting partitions from the run's ``state.json`` (not from this process) keeps the
    cadence of a resumed run equal to an uninterrupted one.
    """

    def __init__(self, every):
        self.every = every
        self.minutes = every_minutes(every)

    def due(self, unexported: int, last_export_time: float | None, now: float) -> bool:
        """Whether to export now, with ``unexported`` partitions trained since the last
        export (this one included) and the last export at ``last_export_time`` (seconds
        since the epoch; None: none yet)."""
        if unexported <= 0:
            return False
        if self.minutes is None:
            return unexported >= self.every
        return last_export_time is None or now - last_export_time >= self.minutes * 60
