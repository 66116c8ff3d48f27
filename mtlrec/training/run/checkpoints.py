"""Crash-safe checkpoints of a run: ``run_dir/checkpoints/ckpt-<n>/``.

Each checkpoint directory holds a ``tf.train.Checkpoint`` (model weights, both
optimizers with their slots, the loss weighting's variables, the global step)
and ``meta.json`` (the day, the epoch and batches consumed in it, whether the
day is complete, the ``model_format``: a checkpoint of another format is refused,
see ``mtlrec.models.model_format``). It is written into ``.tmp-*``, fsynced and renamed, so a
directory named ``ckpt-<n>`` is always complete; the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import tensorflow as tf

from mtlrec.models.model_format import MODEL_FORMAT, READABLE_FORMATS, check_model_format
from mtlrec.conventions import atomic
from mtlrec.training.errors import RunError
from mtlrec.training.faults import fault_point

_NAME = re.compile(r"^ckpt-(\d+)$")
META_FILE = "meta.json"
PREFIX = "ckpt"


class CheckpointManager:
    """Writes, lists and restores the checkpoints of one run directory.

    Args:
        directory: ``run_dir/checkpoints``.
        checkpoint: the ``tf.train.Checkpoint`` holding the tracked objects.
        keep: how many of the newest checkpoints to keep (at least 1).
        is_chief: only the chief keeps what it writes (other workers of a
            multi-worker run write to a temporary directory and drop it).
    """

    def __init__(self, directory, checkpoint: tf.train.Checkpoint, keep: int = 2, is_chief=True):
        if keep < 1:
            raise ValueError(f"keep must be at least 1. Received: keep={keep}")
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.keep = keep
        self.is_chief = is_chief
        if is_chief:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic.remove_stale(self.directory)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _NAME.match(entry.name)
            if match and entry.is_dir() and (entry / META_FILE).exists():
                found.append((int(match.group(1)), entry))
        return [path for _, path in sorted(found)]

    def latest(self) -> tuple[Path, dict] | None:
        """``(path, meta)`` of the newest checkpoint, or None."""
        paths = self.checkpoints()
        if not paths:
            return None
        return paths[-1], _read_meta(paths[-1])

    def save(self, meta: dict) -> Path | None:
        """Write a new checkpoint with ``meta``; returns its directory (None off-chief)."""
        paths = self.checkpoints()
        number = int(_NAME.match(paths[-1].name).group(1)) + 1 if paths else 1
        name = f"ckpt-{number:06d}"
        if not self.is_chief:
            tmp = Path(atomic.temp_dir(Path(tempfile_root()), name))
            try:
                self.checkpoint.write(str(tmp / PREFIX))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return None
        with atomic.new_directory(self.directory, name) as tmp:
            self.checkpoint.write(str(tmp / PREFIX))
            (tmp / META_FILE).write_text(json.dumps(_stamped(meta), indent=2) + "\n", encoding="utf-8")
            fault_point("checkpoint.write")
        final = self.directory / name
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def update_meta(self, meta: dict) -> Path | None:
        """Replace the newest checkpoint's ``meta`` (its weights are still the model's: the
        day ended on a periodic checkpoint), instead of a second checkpoint of one step."""
        if not self.is_chief:
            return None
        path = self.checkpoints()[-1]
        atomic.write_json(path / META_FILE, _stamped(meta))
        return path

    def restore(self, path) -> None:
        """Load the checkpoint at ``path`` into the tracked objects (refused, with a
        RunError, when it was written in another model format)."""
        path = Path(path)
        try:
            model = getattr(self.checkpoint, "model", None)
            readable = model.readable_model_formats() if hasattr(model, "readable_model_formats") else READABLE_FORMATS
            check_model_format(_read_meta(path).get("model_format"), f"checkpoint {path}", readable)
        except ValueError as err:
            raise RunError(str(err)) from None
        try:
            status = self.checkpoint.read(str(path / PREFIX))
            status.assert_existing_objects_matched()
            status.expect_partial()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunError(
                f"{path}: the checkpoint does not match the model built from the config "
                f"(was the model, schema or optimizer changed?): {first}"
            ) from None


def _stamped(meta: dict) -> dict:
    """A checkpoint's meta with the model format its weights are in."""
    return dict(meta, model_format=MODEL_FORMAT)


def _read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunError(f"{path / META_FILE}: unreadable checkpoint metadata ({err})") from None


def tempfile_root() -> str:
    import tempfile

    return tempfile.gettempdir()
