"""``state.json``: which days a run directory has trained, written atomically.

Layout::

    {"version": 1, "name": ..., "global_step": 240,
     "days": [{"day": "2024-01-01", "steps": 120, "examples": 30720,
               "global_step": 120, "eval_day": "2024-01-02", "export_version": 1,
               "times_trained": 1, "trained_at": "..."}, ...],
     "pending": {"id": "...", "days": [...], "force": false, "done": [...]} | null,
     "lookup_migrations": [{"day": "2024-01-02", "command": "...", "migrated_at": "...",
                            "tables": [{"table": "item_id", "features": ["item_id", ...],
                                        "from": {"lookup": "hash", "num_buckets": 128},
                                        "to": {"lookup": "dynamic", ...}}]}],
     "sequence_encoders": {"clicks": {"encoder": "target_attention", "features": [...], ...}}}

``sequence_encoders`` (written by each ``train`` command): the histories' encoders the model
is built with, as full ``model.sequence_encoders`` entries; absent in runs trained before
encoders existed (every history mean-pooled). A config asking for others is refused
(``mtlrec.training.lookups.encoder_changes``).

``lookup_migrations`` (only after a ``--migrate-lookups``): the tables whose lookup
settings changed, recorded once the first checkpoint of the migrated model is written.

``pending`` is the ``train`` command in progress: running the same command
again after a crash resumes it (the days it already finished are skipped, not
refused), while any other command that names a trained day is refused unless
forced.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path

from mtlrec.conventions import atomic
from mtlrec.training.errors import RunError

STATE_FILE = "state.json"


def now_utc() -> str:
    """The time now (UTC) as an ISO string to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunState:
    """The trained days of a run directory (``run_dir/state.json``)."""

    def __init__(self, run_dir, data: dict | None = None):
        self.run_dir = Path(run_dir)
        self.data = data or {"version": 1, "global_step": 0, "days": [], "pending": None}

    @property
    def path(self) -> Path:
        return self.run_dir / STATE_FILE

    @classmethod
    def load(cls, run_dir) -> "RunState":
        """Read ``run_dir/state.json`` (a fresh state when there is none)."""
        path = Path(run_dir) / STATE_FILE
        if not path.exists():
            return cls(run_dir)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{path}: not a readable state file ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("days"), list):
            raise RunError(f"{path}: expected a JSON object with a 'days' list")
        data.setdefault("pending", None)
        data.setdefault("global_step", 0)
        return cls(run_dir, data)

    def save(self) -> None:
        self.data["updated_at"] = now_utc()
        atomic.write_json(self.path, self.data)

    # ------------------------------------------------------------ days

    @property
    def days(self) -> list[dict]:
        return self.data["days"]

    @property
    def trained_days(self) -> list[str]:
        return [entry["day"] for entry in self.days]

    @property
    def global_step(self) -> int:
        return int(self.data.get("global_step", 0))

    def entry(self, day: str) -> dict | None:
        for entry in self.days:
            if entry["day"] == day:
                return entry
        return None

    def is_trained(self, day: str) -> bool:
        return self.entry(day) is not None

    def record_day(self, day: str, **fields) -> dict:
        """Add ``day`` (or update it when it was trained again with force).

        ``fields``: ``steps``, ``examples``, ``global_step``, ``eval_day``,
        ``export_version``, ``tables`` (the day's identity/dynamic lookup figures);
        steps and examples add up over repeated trainings.
        """
        entry = self.entry(day)
        if entry is None:
            entry = {"day": day, "steps": 0, "examples": 0, "times_trained": 0}
            self.days.append(entry)
            self.days.sort(key=lambda e: e["day"])
        entry["steps"] = int(entry.get("steps", 0)) + int(fields.pop("steps", 0))
        entry["examples"] = int(entry.get("examples", 0)) + int(fields.pop("examples", 0))
        entry["times_trained"] = int(entry.get("times_trained", 0)) + 1
        entry.update(fields)
        entry["trained_at"] = now_utc()
        if "global_step" in fields:
            self.data["global_step"] = int(fields["global_step"])
        return entry

    def has_migration(self, record: dict) -> bool:
        """Whether ``lookup_migrations`` holds the migration of ``record``'s day and command."""
        key = (record["day"], record["command"])
        return any((m["day"], m["command"]) == key for m in self.data.get("lookup_migrations", []))

    def record_migration(self, record: dict) -> bool:
        """Add a lookup migration (``{day, command, tables: [{table, features, from, to}]}``;
        a ``schema`` key is left out) to ``lookup_migrations``, once; whether it was new."""
        if self.has_migration(record):
            return False
        entry = {k: v for k, v in record.items() if k != "schema"}
        self.data.setdefault("lookup_migrations", []).append(dict(entry, migrated_at=now_utc()))
        return True

    # ------------------------------------------------------------ the command in progress

    @property
    def pending(self) -> dict | None:
        return self.data.get("pending")

    def matches_pending(self, days: list[str]) -> bool:
        pending = self.pending
        return bool(pending) and list(pending.get("days", [])) == list(days)

    def begin(self, days: list[str], force: bool) -> dict:
        """Start (or, for the same day list, resume) a ``train`` command."""
        if self.matches_pending(days):
            self.pending["force"] = bool(self.pending.get("force")) or bool(force)
            return self.pending
        self.data["pending"] = {
            "id": uuid.uuid4().hex,
            "days": list(days),
            "force": bool(force),
            "done": [],
            "started_at": now_utc(),
        }
        return self.data["pending"]

    def mark_done(self, day: str) -> None:
        pending = self.pending
        if pending is not None and day not in pending["done"]:
            pending["done"].append(day)

    def finish(self) -> None:
        self.data["pending"] = None
