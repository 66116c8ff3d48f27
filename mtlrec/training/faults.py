"""A test-only hook: SIGKILL this process at a named point of a run.

``MTLREC_FAULT_POINT=NAME[:N]`` makes the N-th (default first) arrival at
``fault_point(NAME)`` kill the process with ``SIGKILL`` (no cleanup, no
``finally``, like a power cut or the OOM killer). Unset (always, outside the
fault-injection tests) it does nothing. The points:

- ``train.step``: after a training step, before any checkpoint of that step;
- ``checkpoint.write``: a checkpoint's files are written into ``.tmp-*``, not yet renamed;
- ``export.write``: a SavedModel is written into ``export/.tmp-*``, not yet renamed;
- ``day.done``: a day (or a followed partition) is recorded in ``state.json``, the next
  not started;
- ``follow.exported``: ``train --follow`` exported after a partition, not yet recorded it;
- ``migration.checkpointed``: the first checkpoint of a lookup migration is written,
  ``schema.json`` and ``state.json`` not yet updated.
"""

from __future__ import annotations

import os
import signal

ENV = "MTLREC_FAULT_POINT"
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, count = spec.partition(":")
    if wanted != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
