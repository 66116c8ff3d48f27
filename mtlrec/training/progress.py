"""Progress of long work (a day's training, ``evaluate``, ``predict``): a tqdm bar of rows.

The bar shows rows done of the total (when known: a day's rows are counted when it is
validated, a Parquet input's from its footers), rows/s and the time left. It is drawn on
stderr only when stderr is a terminal and INFO messages are shown (not with ``-q``), so
logs of schedulers and test output get none of it; training's log lines carry the same
facts for them (``mtlrec.training.trainer``).
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm


def row_progress(total: int | None, what: str, done: int = 0, stream=None) -> tqdm:
    """A bar of ``total`` rows (None: unknown) for ``what``, starting at ``done``;
    ``.update(n)`` after each batch, ``.close()`` at the end."""
    stream = sys.stderr if stream is None else stream
    shown = bool(getattr(stream, "isatty", lambda: False)()) and logging.getLogger("mtlrec").isEnabledFor(logging.INFO)
    return tqdm(
        total=total, initial=done, desc=what, unit=" rows", unit_scale=True, file=stream,
        disable=not shown, leave=False, dynamic_ncols=True, mininterval=0.5,
    )


def time_left(done: int, total: int | None, seconds: float) -> str:
    """``"01:02:03 left"`` for ``total`` at the rate of ``done`` in ``seconds``, or ""
    when it cannot be told."""
    if not total or done <= 0 or done >= total or seconds <= 0:
        return ""
    return f"{tqdm.format_interval(seconds * (total - done) / done)} left"
