"""What ``state.json`` keeps about a follow run besides the trained partitions.

Under the ``follow`` key::

    {"skipped": [{"partition": "2024-01-01T03", "reason": "...", "at": "..."}],
     "late": [{"partition": "2024-01-01T03", "at": "..."}],
     "refused": [{"partition": "2024-01-01T01", "fingerprint": "...", "at": "..."}],
     "progressive": {"2024-01-01T04": {"ctr": {"auc": 0.71, ...}, ...}}}

``progressive`` holds the evaluation of a partition by the model before training on it,
written before its first step so a resumed partition reports the same figures; it moves
into the partition's entry in ``days`` once the partition is recorded.
"""

from __future__ import annotations

import math

from mtlrec.training.run.run_state import RunState, now_utc


class FollowRecord:
    """The ``follow`` part of a ``RunState`` (changes are saved with the state)."""

    def __init__(self, state: RunState):
        self.state = state
        self.data = state.data.setdefault("follow", {})
        for name in ("skipped", "late", "refused"):
            self.data.setdefault(name, [])
        self.data.setdefault("progressive", {})

    def _keys(self, name: str) -> set:
        return {item["partition"] for item in self.data[name]}

    @property
    def skipped(self) -> set:
        return self._keys("skipped")

    @property
    def late(self) -> set:
        return self._keys("late")

    def skip(self, key: str, reason: str) -> None:
        self.data["skipped"].append({"partition": key, "reason": reason, "at": now_utc()})

    def mark_late(self, key: str) -> None:
        self.data["late"].append({"partition": key, "at": now_utc()})

    def refused(self, key: str, fingerprint: str) -> bool:
        """Whether this rewrite (``key`` with ``fingerprint``) was refused already."""
        return any(r["partition"] == key and r["fingerprint"] == fingerprint for r in self.data["refused"])

    def refuse(self, key: str, fingerprint: str) -> None:
        self.data["refused"].append({"partition": key, "fingerprint": fingerprint, "at": now_utc()})

    def progressive(self, key: str) -> dict | None:
        return self.data["progressive"].get(key)

    def set_progressive(self, key: str, metrics: dict) -> None:
        self.data["progressive"][key] = {
            task: {name: _plain(value) for name, value in values.items()} for task, values in metrics.items()
        }

    def pop_progressive(self, key: str) -> dict | None:
        return self.data["progressive"].pop(key, None)

    def cursor(self) -> str | None:
        """The newest partition trained or skipped (the follow goes on after it)."""
        keys = self.state.trained_days + sorted(self.skipped)
        return max(keys) if keys else None


def _plain(value):
    """A metric value JSON can hold (NaN -> None)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value
