"""The one owner of a run directory: its lock, ``state.json`` and every write into it.

``run_dir/`` holds everything a run needs to continue::

    .lock                   held (flock) by the process using the directory
    state.json              days trained, step counts, the command in progress, lookup migrations
    schema.json             the schema the model was built with (numeric stats filled;
                            replaced by a lookup migration once its checkpoint is written)
    config.yaml             the config of the last command (for reference)
    checkpoints/ckpt-<n>/   tf.train.Checkpoint + meta.json (day, batches consumed)
    checkpoints/model.keras the model of the last trained day (fine-tuning, layer reuse)
    metrics.csv             day, task, metric, value, step
    calibration/<day>.json  reliability bins of the evaluation after each day
    tensorboard/            tf.summary scalars
    export/<version>/       SavedModels (TF Serving layout)

Every file is written aside, fsynced and renamed (``mtlrec.conventions.atomic``), so a crash
leaves the old file or the new one, never half of one. Only the chief of a multi-worker run
writes here; on other workers the write methods do nothing (checkpoints are still written
to a temporary directory: every worker must take part in saving distributed variables).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import yaml

from mtlrec.conventions import atomic
from mtlrec.training.distribute.cluster_env import is_chief_from_env
from mtlrec.training.errors import RunError
from mtlrec.training.run.metrics_log import write_day_metrics
from mtlrec.training.run.run_state import STATE_FILE, RunState

SCHEMA_FILE = "schema.json"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"
LOCK_FILE = ".lock"
#: The key of a lookup migration in the ``meta.json`` of the checkpoint that commits it.
MIGRATION_KEY = "lookup_migration"


class RunDirectory:
    """A run directory: the lock, ``state.json``, checkpoints, exports and the other files.

    Args:
        path: the run directory (created on the first write).
        is_chief: whether this process writes (default: the chief of ``TF_CONFIG``'s
            cluster, or True without one).

    Attributes:
        checkpoints: the ``CheckpointManager`` of the model being trained (``attach``),
            else None.
    """

    def __init__(self, path, is_chief: bool | None = None):
        self.path = Path(path)
        self._is_chief = is_chief
        self.checkpoints = None
        self._saved_step = None  # global step of the last checkpoint this process wrote

    @property
    def is_chief(self) -> bool:
        if self._is_chief is None:
            self._is_chief = is_chief_from_env()
        return self._is_chief

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    # ------------------------------------------------------------ lock and errors

    @contextlib.contextmanager
    def locked(self):
        """Exclusive use of the directory for this process (released on exit or kill).

        Only the chief locks it (the other workers write nothing there)."""
        import fcntl

        if not self.is_chief:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RunError(f"{self.path}: another mtlrec process is using this run directory") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    @contextlib.contextmanager
    def writing(self, what: str):
        """A failed write (disk full, read-only or vanished directory) as one clear ``RunError``."""
        import tensorflow as tf

        try:
            yield
        except (OSError, tf.errors.OpError) as err:
            reason = getattr(err, "strerror", None) or getattr(err, "message", None) or str(err)
            reason = _short_reason(reason)
            where = getattr(err, "filename", None)
            raise RunError(
                f"{self.path}: could not write {what}{f' ({where})' if where else ''}: {reason}; "
                f"is the disk full or the run directory not writable? {self._last_good()}"
            ) from None

    def _last_good(self) -> str:
        """What is still there after a failed write (for the error message)."""
        from mtlrec.training.serving.export import versions

        try:
            latest = self.latest_checkpoint()
            found = versions(self.export_dir)
        except (OSError, RunError):
            return "The run directory could not be read back."
        checkpoint = latest[0].name if latest else "none"
        export = str(found[-1]) if found else "none"
        return (
            f"Unchanged: the last good checkpoint ({checkpoint}) and export (version {export}); "
            f"run the same command again once the disk has room"
        )

    # ------------------------------------------------------------ state, schema, config

    def load_state(self) -> RunState:
        return RunState.load(self.path)

    def save_state(self, state: RunState) -> None:
        if self.is_chief:
            with self.writing(STATE_FILE):
                state.save()

    def saved_schema(self) -> dict | None:
        """The schema this run was trained with (``schema.json``), or None before the first
        day; the schema of a lookup migration when the newest checkpoint carries one (that
        checkpoint committed it: ``commit_migration`` may not have run before a crash)."""
        migration = self._checkpoint_migration()
        if migration is not None:
            return migration["schema"]
        path = self.path / SCHEMA_FILE
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def _checkpoint_migration(self) -> dict | None:
        latest = self.latest_checkpoint()
        return None if latest is None else latest[1].get(MIGRATION_KEY)

    def commit_migration(self, record: dict, state: RunState) -> None:
        """After the first checkpoint of a lookup migration (its ``meta.json`` carries
        ``record``, see ``mtlrec.training.lookups.lookup_changes.migration_record``):
        ``schema.json`` becomes its schema and ``state.json`` records it (once)."""
        if not self.is_chief:
            return
        with self.writing("the run's migrated schema and state"):
            atomic.write_json(self.path / SCHEMA_FILE, record["schema"])
            if state.record_migration(record):
                state.save()

    def finish_migration(self, state: RunState) -> None:
        """``commit_migration`` of a migration the newest checkpoint carries (a crash
        came between that checkpoint and its commit)."""
        migration = self._checkpoint_migration()
        if migration is not None:
            self.commit_migration(migration, state)

    def begin_command(self, schema: dict, config: dict, state: RunState) -> None:
        """Before the first step of a ``train`` command: the schema (first time only), the
        config of this command and the state with the command pending."""
        if not self.is_chief:
            return
        with self.writing("the run's schema, config and state"):
            if not (self.path / SCHEMA_FILE).exists():
                atomic.write_json(self.path / SCHEMA_FILE, schema)
            atomic.write_text(self.path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
            state.save()

    # ------------------------------------------------------------ checkpoints

    def latest_checkpoint(self) -> tuple[Path, dict] | None:
        """``(path, meta)`` of the newest complete checkpoint, or None (reads only)."""
        from mtlrec.training.run.checkpoints import CheckpointManager

        return CheckpointManager(self.checkpoint_dir, None, is_chief=False).latest()

    def attach(self, checkpoint, is_chief: bool, keep: int = 2):
        """Checkpoint ``checkpoint`` (a ``tf.train.Checkpoint``) here from now on; ``is_chief``
        (the trainer's strategy's) decides from then on whether this process writes."""
        from mtlrec.training.run.checkpoints import CheckpointManager

        self._is_chief = bool(is_chief)
        self.checkpoints = CheckpointManager(self.checkpoint_dir, checkpoint, keep=keep, is_chief=self.is_chief)
        self._saved_step = None
        return self.checkpoints

    def restore_latest(self) -> tuple[Path, dict] | None:
        """Load the newest checkpoint into the attached objects; ``(path, meta)`` or None."""
        latest = self.checkpoints.latest()
        if latest is not None:
            self.checkpoints.restore(latest[0])
        return latest

    def save_checkpoint(self, meta: dict, what: str) -> Path | None:
        """A new checkpoint with ``meta`` (its ``global_step`` included); when this process
        has just written one at the same global step (a day ending on a periodic
        checkpoint), only that checkpoint's meta is replaced."""
        with self.writing(what):
            if meta["global_step"] == self._saved_step:
                path = self.checkpoints.update_meta(meta)
            else:
                path = self.checkpoints.save(meta)
        self._saved_step = meta["global_step"]
        return path

    def save_model(self, model) -> None:
        """``checkpoints/model.keras``."""
        if self.is_chief:
            with self.writing(MODEL_FILE):
                atomic.write_with(self.checkpoint_dir / MODEL_FILE, model.save)

    # ------------------------------------------------------------ metrics, exports

    def write_day_results(self, day: str, rows: list[dict], calibration: dict | None) -> None:
        """A day's ``metrics.csv`` rows and, after an evaluation, ``calibration/<day>.json``."""
        if not self.is_chief:
            return
        with self.writing(f"the metrics of day {day}"):
            if calibration is not None:
                atomic.write_json(self.path / "calibration" / f"{day}.json", calibration)
            write_day_metrics(self.path, day, rows)

    def export(self, model, keep: int, metadata: dict, warmup: dict | None, what: str) -> Path | None:
        """A new SavedModel version under ``export/`` (None off-chief)."""
        from mtlrec.training.serving.export import export_model

        if not self.is_chief:
            return None
        with self.writing(what):
            return export_model(model, self.export_dir, keep=keep, metadata=metadata, warmup=warmup)

    def current_export(self) -> Path | None:
        """The newest export when it already is the newest checkpoint (same day and global
        step), else None."""
        from mtlrec.training.serving.export import latest_export, read_metadata

        latest = self.latest_checkpoint()
        path = latest_export(self.export_dir)
        if latest is None or path is None or not latest[1].get("completed", False):
            return None
        meta = read_metadata(path)
        same = (meta.get("day"), meta.get("global_step")) == (latest[1].get("day"), latest[1].get("global_step"))
        return path if same else None


def _short_reason(reason) -> str:
    """The OS's reason for a failed write, at most 300 characters.

    TensorFlow's errors start with the op's name and the temporary file's path and end
    with the reason (``...; File too large``): the end is kept, never the start alone.
    """
    text = " ".join(re.sub(r"\{\{[^}]*\}\}", "", str(reason)).split())
    return text if len(text) <= 300 else "..." + text[-297:]
