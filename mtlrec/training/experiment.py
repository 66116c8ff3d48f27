"""One experiment's run directory: train day by day, evaluate, export.

``run_dir/`` holds everything a run needs to continue::

    state.json              days trained, step counts, the command in progress
    schema.json             the schema the model was built with (numeric stats filled)
    config.yaml             the config of the last command (for reference)
    checkpoints/ckpt-<n>/   tf.train.Checkpoint + meta.json (day, batches consumed)
    checkpoints/model.keras the model of the last trained day (fine-tuning, layer reuse)
    metrics.csv             day, task, metric, value, step
    calibration/<day>.json  reliability bins of the evaluation after each day
    tensorboard/            tf.summary scalars
    export/<version>/       SavedModels (TF Serving layout)

Order of the writes for a day: mid-day checkpoints, the end-of-day checkpoint,
``model.keras``, the evaluation, a new export, then ``state.json``. A crash
anywhere leaves a consistent directory; the same command resumes from the last
checkpoint (skipping the batches already consumed) and redoes only what is
missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
from pathlib import Path

import yaml

from mtlrec.training import atomic
from mtlrec.training.errors import RunError
from mtlrec.training.faults import fault_point
from mtlrec.training.metrics_log import metric_rows, write_day_metrics
from mtlrec.training.run_state import STATE_FILE, RunState

logger = logging.getLogger("mtlrec.training")

SCHEMA_FILE = "schema.json"
MODEL_FILE = "model.keras"
LOCK_FILE = ".lock"


def _data():
    import mtlrec.data_pipeline as data_pipeline

    return data_pipeline


class Experiment:
    """Runs one ``ExperimentConfig`` against its run directory.

    Args:
        config: a validated ``ExperimentConfig``.
        run_dir: overrides ``config.run_dir``.
        strategy: a ``tf.distribute.Strategy`` (default: from ``TF_CONFIG``).
    """

    def __init__(self, config, run_dir=None, strategy=None):
        self.config = config
        self.run_dir = Path(run_dir or config.run_dir)
        self.strategy = strategy
        self.trainer = None
        self._lock = None
        self._writer = None
        self._saved_step = None  # global step of the last checkpoint this process wrote

    # ------------------------------------------------------------ paths

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return self.run_dir / "export"

    # ------------------------------------------------------------ setup

    @contextlib.contextmanager
    def _locked(self):
        """Exclusive use of the run directory for this process (released on exit or kill).

        Only the chief of a multi-worker run locks it (the other workers write nothing there).
        """
        import fcntl

        from mtlrec.training.trainer import is_chief_from_env

        if not is_chief_from_env():
            yield
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RunError(
                f"{self.run_dir}: another mtlrec process is using this run directory"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _days(self, day=None, days=None) -> list[str]:
        from mtlrec.training.config import config_error, parse_days

        data = _data()
        root = self.config.data.root
        if day is not None and days is not None:
            raise ValueError("give --day or --days, not both")
        if day is not None:
            wanted = parse_days(day)
        elif days is not None:
            wanted = parse_days(days)
        elif self.config.data.train_days is not None:
            wanted = self.config.data.train_days
        else:
            raise config_error(
                self.config, "data.train_days", "no days to train: give --day/--days or set data.train_days"
            )
        if not Path(root).is_dir():
            raise data.DataValidationError("data root does not exist", file=root)
        return data.resolve_days(root, wanted)

    def _next_day(self, day: str) -> str | None:
        later = [d for d in _data().list_days(self.config.data.root) if d > day]
        return later[0] if later else None

    def _validate(self, days) -> None:
        data = _data()
        self._non_finite = {}
        self._rows = {}
        stats = _standardize_stats(self.run_dir / SCHEMA_FILE, self.config.schema.to_dict())
        self._id_collisions = {}
        schema = self.config.schema
        for day in days:
            logger.info("validating day %s", day)
            counts, far, id_counts = {}, {}, {}
            self._rows[day] = data.validate_day(
                self.config.data.root,
                day,
                self.config.schema,
                fmt=self.config.data.format,
                funnel=tuple(tuple(p) for p in self.config.data.funnel),
                non_finite=self.config.data.non_finite_numeric,
                counts=counts,
                stats=stats,
                far=far,
                id_counts=id_counts,
            )
            self._id_collisions[day] = data.collision_report(schema, id_counts)
            for line in data.collision_warnings(self._id_collisions[day]):
                logger.warning("day %s: %s", day, line)
            if far:
                logger.warning(
                    "day %s: numeric values far outside the training statistics (more than %g "
                    "standard deviations from the mean; they saturate the model): %s",
                    day, data.validation.FAR_STDS,
                    ", ".join(f"{k} {n} values (largest {v:g})" for k, (n, v) in sorted(far.items())),
                )
            if counts:
                logger.warning(
                    "day %s: NaN/infinite numeric values replaced by the feature default: %s",
                    day,
                    ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                )
            self._non_finite[day] = counts

    def _resolved_schema(self, first_day: str | None) -> dict:
        """The schema the model is built with: saved in the run, or the config's with stats."""
        path = self.run_dir / SCHEMA_FILE
        wanted = self.config.schema.to_dict()
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            _refuse_lookup_change(path, saved, wanted)
            if _without_stats(saved) != _without_stats(wanted):
                raise RunError(
                    f"{path}: the config's schema differs from the schema this run "
                    f"directory was trained with; use a new run_dir for a new schema"
                )
            return saved
        needs_stats = any(
            f.get("normalize") == "standardize" and (f.get("mean") is None or f.get("std") is None)
            for f in wanted.get("numeric", [])
        )
        if not needs_stats:
            return wanted
        if first_day is None:
            raise RunError(f"{self.run_dir}: no trained model here (no {SCHEMA_FILE})")
        from mtlrec.schema import compute_numeric_stats

        logger.info("computing numeric statistics from day %s", first_day)
        dataset = _data().make_dataset(
            self.config.data.root,
            [first_day],
            wanted,
            fmt=self.config.data.format,
            batch_size=8192,
            deterministic=True,
        )
        return compute_numeric_stats(wanted, (features for features, _ in dataset))

    def _build(self, schema: dict):
        from mtlrec.training.checkpoints import CheckpointManager
        from mtlrec.training.trainer import Trainer

        try:
            self.trainer = Trainer(self.config, schema, strategy=self.strategy)
        except (ValueError, TypeError) as err:
            raise _model_error(err, self.config) from None
        self.checkpoints = CheckpointManager(
            self.checkpoint_dir, self.trainer.checkpoint, keep=2, is_chief=self.trainer.is_chief
        )
        return self.trainer

    @contextlib.contextmanager
    def _writing(self, what: str):
        """A failed write (disk full, read-only or vanished directory) as one clear ``RunError``."""
        import tensorflow as tf

        try:
            yield
        except (OSError, tf.errors.OpError) as err:
            reason = getattr(err, "strerror", None) or getattr(err, "message", None) or str(err)
            reason = " ".join(str(reason).split())[:300]
            where = getattr(err, "filename", None)
            raise RunError(
                f"{self.run_dir}: could not write {what}{f' ({where})' if where else ''}: {reason}; "
                f"is the disk full or the run directory not writable? {self._last_good()}"
            ) from None

    def _last_good(self) -> str:
        """What is still there after a failed write (for the error message)."""
        from mtlrec.training.checkpoints import CheckpointManager
        from mtlrec.training.export import versions

        try:
            latest = CheckpointManager(self.checkpoint_dir, None, is_chief=False).latest()
            found = versions(self.export_dir)
        except (OSError, RunError):
            return "The run directory could not be read back."
        checkpoint = latest[0].name if latest else "none"
        export = str(found[-1]) if found else "none"
        return (
            f"Unchanged: the last good checkpoint ({checkpoint}) and export (version {export}); "
            f"run the same command again once the disk has room"
        )

    def _restore_latest(self) -> dict | None:
        latest = self.checkpoints.latest()
        if latest is None:
            return None
        path, meta = latest
        self.checkpoints.restore(path)
        logger.info("restored %s (global step %s)", path, meta.get("global_step"))
        return meta

    def _load_trained(self) -> dict:
        """Build the model of an existing run and restore its newest checkpoint."""
        if not (self.run_dir / SCHEMA_FILE).exists():
            raise RunError(f"{self.run_dir}: no trained model here (train a day first)")
        self._build(self._resolved_schema(None))
        meta = self._restore_latest()
        if meta is None:
            raise RunError(f"{self.checkpoint_dir}: no checkpoint to load (train a day first)")
        if not meta.get("completed", False):
            logger.warning(
                "the newest checkpoint is mid-day (day %s, step %s of the day)",
                meta.get("day"),
                meta.get("steps"),
            )
        return meta

    # ------------------------------------------------------------ datasets

    def _train_dataset(self, day: str):
        from mtlrec.training import sharding as shards
        from mtlrec.training.trainer import day_seed

        training = self.config.training
        schema = self.trainer.schema
        sharding = self.trainer.sharding

        def make(epoch: int, skip: int, **kwargs):
            kwargs.setdefault("batch_size", training.batch_size)
            return _data().make_dataset(
                self.config.data.root,
                [day],
                schema,
                fmt=self.config.data.format,
                shuffle_buffer=training.shuffle_buffer,
                seed=day_seed(training.seed, day, epoch),
                deterministic=True,
                skip_batches=skip,
                **kwargs,
            )

        if not sharding.active:
            return make
        try:
            per_worker = shards.per_worker_batch(training.batch_size, sharding)
        except ValueError as err:
            from mtlrec.training.config import config_error

            raise config_error(self.config, "training.batch_size", str(err)) from None
        from mtlrec.data_pipeline.partitions import day_files

        files = day_files(self.config.data.root, day, self.config.data.format)
        if shards.mode(len(files), sharding) == "record":
            logger.info(
                "day %s: %d file(s) for %d workers: sharded by record (worker %d keeps its "
                "slice of each global batch)", day, len(files), sharding.count, sharding.index
            )
            return lambda epoch, skip: shards.record_slice(make(epoch, skip), sharding)
        steps = shards.steps_per_pass(self._rows[day], training.batch_size)
        logger.info(
            "day %s: %d files for %d workers: sharded by file (worker %d reads %d of them, "
            "%d steps of %d rows)", day, len(files), sharding.count, sharding.index,
            len(files[sharding.index::sharding.count]), steps, per_worker,
        )
        # each pass over a worker's files ends with a short batch: rebatch the cycled stream
        # so every step is a full share, then skip the steps done (a resumed day)
        return lambda epoch, skip: make(
            epoch, 0, batch_size=per_worker, repeat=True,
            shard=(sharding.index, sharding.count),
        ).rebatch(per_worker).skip(skip).take(max(steps - skip, 0))

    def _eval_dataset(self, day: str):
        evaluation = self.config.evaluation
        return _data().make_dataset(
            self.config.data.root,
            [day],
            self.trainer.schema,
            fmt=self.config.data.format,
            batch_size=evaluation.batch_size,
            deterministic=True,
            extra_columns=tuple(evaluation.extras),
        )

    # ------------------------------------------------------------ commands

    def train(self, day=None, days=None, force: bool = False) -> list[dict]:
        """Train the given days in order (``--day D`` / ``--days A:B`` / ``data.train_days``).

        Returns:
            The ``state.json`` entries of the days trained by this call.

        Raises:
            RunError: a day already trained (without ``force``), an interrupted
                day that is not the first one asked for, a non-finite loss.
            DataValidationError: a bad or missing day (before anything is written).
            ConfigError: a model the config cannot build.
        """
        if self.strategy is None:
            from mtlrec.training.trainer import cluster_from_env, make_strategy

            if cluster_from_env():  # before TensorFlow runs anything (collectives need it)
                self.strategy = make_strategy("multi_worker")
        days = self._days(day, days)
        state = RunState.load(self.run_dir)
        if not force and self._already_done(state, days):
            return []
        self._plan(state, days, force)  # refuse early, before reading data
        # Validate the days and the days they are evaluated on before touching the run dir.
        following = [self._next_day(d) for d in days]
        self._validate(days + sorted({d for d in following if d and d not in days}))
        with self._locked():
            return self._train(days, force)

    def _train(self, days: list[str], force: bool) -> list[dict]:
        from mtlrec.training.checkpoints import CheckpointManager

        state = RunState.load(self.run_dir)
        to_train = self._plan(state, days, force)
        if state.matches_pending(days):
            logger.info("resuming the interrupted command (days %s)", ", ".join(to_train))

        peek = CheckpointManager(self.checkpoint_dir, checkpoint=None, is_chief=False)
        latest = peek.latest()
        meta = latest[1] if latest else None
        interrupted = None
        if meta is not None:
            pending = state.pending
            own = pending is not None and meta.get("command") == pending.get("id")
            if (own and meta["day"] not in pending["done"]) or not state.is_trained(meta["day"]):
                interrupted = meta
        if interrupted and (not to_train or to_train[0] != interrupted["day"]):
            if not force:
                raise RunError(
                    f"day {interrupted['day']} was interrupted at step {interrupted['steps']} "
                    f"of the day (checkpoint {latest[0].name}); train it first "
                    f"(`mtlrec train CONFIG --day {interrupted['day']}` or the same command "
                    f"again) or pass --force to continue from that checkpoint"
                )
            logger.warning(
                "continuing from a checkpoint taken mid-day %s (forced)", interrupted["day"]
            )
            interrupted = None

        next_days = {d: self._next_day(d) for d in to_train}
        schema = self._resolved_schema(to_train[0] if to_train else days[0])
        self._build(schema)
        restored = self._restore_latest()
        if restored is None and interrupted is not None:
            interrupted = None

        chief = self.trainer.is_chief
        pending = state.begin(days, force)
        state.data["name"] = self.config.name
        state.data["model_type"] = self.config.model.get("type")
        if chief:
            with self._writing("the run's schema, config and state"):
                if not (self.run_dir / SCHEMA_FILE).exists():
                    atomic.write_json(self.run_dir / SCHEMA_FILE, schema)
                atomic.write_text(
                    self.run_dir / "config.yaml",
                    yaml.safe_dump(self.config.to_dict(), sort_keys=False),
                )
                state.save()

        results = []
        for i, d in enumerate(to_train):
            from mtlrec.training.day_position import DayPosition

            if i == 0 and interrupted is not None and interrupted["day"] == d:
                position = DayPosition(
                    **{f.name: interrupted[f.name] for f in dataclasses.fields(DayPosition) if f.name in interrupted}
                )
                logger.info(
                    "resuming day %s after %d steps (epoch %d, %d batches consumed)",
                    d,
                    position.steps,
                    position.epoch,
                    position.batch_in_epoch,
                )
            else:
                position = DayPosition(day=d)
            entry = self._run_day(position, next_days[d], state, pending)
            results.append(entry)
        state.finish()
        if chief:
            with self._writing(STATE_FILE):
                state.save()
        self._close_writer()
        return results

    def _already_done(self, state: RunState, days: list[str]) -> bool:
        """Every day asked is trained with this config (a scheduler's retry of a finished
        command): nothing to do."""
        if state.matches_pending(days):
            return False
        digest = self.config.training_digest()
        if not all(state.is_trained(d) and state.entry(d).get("config") == digest for d in days):
            return False
        logger.info(
            "nothing to train: %s already trained in %s with this config (global step %d); "
            "--force trains again", ", ".join(days), self.run_dir, state.global_step,
        )
        return True

    def _plan(self, state: RunState, days: list[str], force: bool) -> list[str]:
        """The days still to train; refuses a trained day unless forced or resuming."""
        if state.matches_pending(days):
            return [d for d in days if d not in state.pending["done"]]
        trained = [d for d in days if state.is_trained(d)]
        if trained and not force:
            entry = state.entry(trained[0])
            changed = entry.get("config") not in (None, self.config.training_digest())
            raise RunError(
                f"day {trained[0]} is already trained in {self.run_dir} (global step "
                f"{entry.get('global_step')})"
                + (" with a config that differs from this one" if changed else "")
                + "; pass --force to train it again"
            )
        return list(days)

    def _day_rows(self, day) -> int | None:
        """Rows a day's training reads (its validated rows, every epoch, within steps_per_day)."""
        rows, training = getattr(self, "_rows", {}).get(day), self.config.training
        if rows is None:
            return None
        total = rows * training.epochs_per_day
        cap = training.steps_per_day
        return total if cap is None else min(total, cap * training.batch_size)

    def _checkpoint(self, position, command_id: str) -> None:
        meta = dataclasses.asdict(position)
        meta["global_step"] = int(self.trainer.global_step.numpy())
        meta["command"] = command_id
        meta["written_at"] = _now()
        with self._writing(f"a checkpoint (day {position.day}, step {position.steps} of the day)"):
            if meta["global_step"] == self._saved_step:  # a day ending on a periodic checkpoint
                path = self.checkpoints.update_meta(meta)
            else:
                path = self.checkpoints.save(meta)
        self._saved_step = meta["global_step"]
        if path is not None:
            logger.info(
                "checkpoint %s (day %s, step %d of the day)", path.name, position.day, position.steps
            )

    def _run_day(self, position, eval_day, state: RunState, pending: dict) -> dict:
        day = position.day
        chief = self.trainer.is_chief
        if not position.completed:
            position = self.trainer.train_day(
                position,
                self._train_dataset(day),
                on_checkpoint=lambda pos: self._checkpoint(pos, pending["id"]),
                summary_writer=self._summary_writer(),
                label=self.config.name,
                total_rows=self._day_rows(day),
            )
            self._checkpoint(position, pending["id"])
        step = int(self.trainer.global_step.numpy())
        tables = self.trainer.lookup_report()
        for name, figures in tables.items():
            if figures.get("overflow_lookups"):
                logger.warning(
                    "day %s: table %s is full (%d of %d rows in use): %d lookups of ids due for "
                    "admission read out-of-vocabulary rows; raise num_buckets or set ttl_days",
                    day, name, figures["rows_in_use"], figures["capacity"], figures["overflow_lookups"],
                )
        evaluation = None
        if chief:
            with self._writing(MODEL_FILE):
                self._save_keras()
            if eval_day is not None:
                evaluation = self._evaluate(eval_day)
            with self._writing(f"the metrics of day {day}"):
                if evaluation is not None:
                    self._write_calibration(day, eval_day, evaluation)
                rows = metric_rows(day, step, evaluation, position.mean_losses(), tables)
                write_day_metrics(self.run_dir, day, rows)
                self._tensorboard(step, evaluation, position.mean_losses())
        with self._writing(f"the export of day {day}"):
            version = self._export(trained_days=state.trained_days + [day], day=day)
        entry = state.record_day(
            day,
            steps=position.steps,
            examples=position.examples,
            global_step=step,
            eval_day=eval_day,
            export_version=None if version is None else int(version.name),
            non_finite_replaced=dict(getattr(self, "_non_finite", {}).get(day) or {}),
            config=self.config.training_digest(),
            id_collisions=dict(getattr(self, "_id_collisions", {}).get(day) or {}),
            **({"tables": tables} if tables else {}),
        )
        state.mark_done(day)
        if chief:
            with self._writing(STATE_FILE):
                state.save()
        fault_point("day.done")
        summary = ""
        if evaluation is not None:
            summary = " ".join(
                f"{task} auc {values.get('auc', float('nan')):.4f}"
                for task, values in evaluation.metrics.items()
                if "auc" in values
            )
        logger.info(
            "[%s] day %s done: %d steps, global step %d%s%s",
            self.config.name,
            day,
            position.steps,
            step,
            f"; on {eval_day}: {summary}" if summary else "",
            f"; export {version}" if version is not None else "",
        )
        return dict(entry)

    def evaluate(self, day: str | None = None):
        """Metrics of the newest checkpoint on ``day`` (default: ``data.eval_day``)."""
        from mtlrec.training.config import config_error, parse_days

        day = day or self.config.data.eval_day
        if day is None:
            raise config_error(
                self.config, "data.eval_day", "no day to evaluate: give --day or set data.eval_day"
            )
        parsed = parse_days(day)
        if not isinstance(parsed, list) or len(parsed) != 1:
            raise ValueError(f"expected one day as YYYY-MM-DD to evaluate, got {day!r}")
        day = parsed[0]
        self._validate([day])
        self._load_trained()
        return self._evaluate(day)

    def current_export(self) -> Path | None:
        """The newest export when it already is the newest checkpoint (same day and global
        step), else None."""
        from mtlrec.training.checkpoints import CheckpointManager
        from mtlrec.training.export import latest_export, read_metadata

        latest = CheckpointManager(self.checkpoint_dir, None, is_chief=False).latest()
        path = latest_export(self.export_dir)
        if latest is None or path is None or not latest[1].get("completed", False):
            return None
        meta = read_metadata(path)
        same = (meta.get("day"), meta.get("global_step")) == (latest[1].get("day"), latest[1].get("global_step"))
        return path if same else None

    def export(self) -> Path:
        """Export the newest checkpoint as a new SavedModel version."""
        with self._locked():
            meta = self._load_trained()
            state = RunState.load(self.run_dir)
            with self._writing("the export"):
                return self._export(trained_days=state.trained_days, day=meta.get("day"))

    # ------------------------------------------------------------ after a day

    def _evaluate(self, day: str):
        from mtlrec.training.evaluation import evaluate_model

        gate_model = None
        if callable(getattr(self.trainer.model, "gate_model", None)):
            gate_model = self.trainer.model.gate_model()
        logger.info("evaluating on day %s", day)
        return evaluate_model(
            self.trainer.model,
            self.config.tasks,
            self._eval_dataset(day),
            extras=self.config.evaluation.extras,
            gate_model=gate_model,
            total_rows=getattr(self, "_rows", {}).get(day),
        )

    def _write_calibration(self, day, eval_day, evaluation) -> None:
        atomic.write_json(
            self.run_dir / "calibration" / f"{day}.json",
            {"day": day, "eval_day": eval_day, "bins": evaluation.calibration},
        )

    def _save_keras(self) -> None:
        path = self.checkpoint_dir / MODEL_FILE
        tmp = self.checkpoint_dir / f"{atomic.TMP_PREFIX}model.{os.getpid()}.keras"
        self.trainer.model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        atomic.fsync_dir(self.checkpoint_dir)

    def _export(self, trained_days, day) -> Path | None:
        from mtlrec.training.export import export_model

        if not self.trainer.is_chief:
            return None
        schema = self.trainer.schema
        metadata = {
            "name": self.config.name,
            "model_type": self.config.model.get("type"),
            "key": schema.get("key"),
            "schema": schema,
            "tasks": self.config.to_dict()["tasks"],
            "trained_days": sorted(set(trained_days)),
            "day": day,
            "global_step": int(self.trainer.global_step.numpy()),
            "exported_at": _now(),
        }
        path = export_model(
            self.trainer.model, self.export_dir, keep=self.config.export.keep, metadata=metadata,
            warmup=self._warmup_rows(day),
        )
        logger.info("exported %s", path)
        return path

    def _warmup_rows(self, day, rows: int = 3) -> dict | None:
        """The first ``rows`` rows of ``day`` as model inputs (TF Serving's warmup requests);
        None when the day can no longer be read."""
        from mtlrec.data_pipeline import DataValidationError

        if day is None:
            return None
        try:
            dataset = _data().make_dataset(
                self.config.data.root, [day], self.trainer.schema, fmt=self.config.data.format,
                batch_size=rows, deterministic=True,
            )
            features = next(iter(dataset))[0]
        except (DataValidationError, StopIteration) as err:
            logger.warning("export without warmup requests: day %s cannot be read (%s)", day, err)
            return None
        return {name: value.numpy() for name, value in features.items()}

    def _summary_writer(self):
        if self._writer is None and self.trainer.is_chief:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def _tensorboard(self, step, evaluation, train_losses) -> None:
        from mtlrec.training.tensorboard_log import scalar

        writer = self._summary_writer()
        if writer is None:
            return
        with writer.as_default():
            for name, value in train_losses.items():
                scalar(f"day/train_{name}", value, step)
            if evaluation is not None:
                for task, values in evaluation.metrics.items():
                    for metric, value in values.items():
                        scalar(f"eval/{task}/{metric}", value, step)
                for task, weights in evaluation.utilization.items():
                    for i, value in enumerate(weights):
                        scalar(f"experts/{task}/expert_{i}", value, step)
        writer.flush()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _standardize_stats(saved_schema: Path, schema: dict) -> dict:
    """{column: (mean, std)} of the standardized features, from the run's schema (else the config's)."""
    if saved_schema.exists():
        schema = json.loads(saved_schema.read_text(encoding="utf-8"))
    return {
        f["name"]: (float(f["mean"]), float(f["std"]))
        for f in schema.get("numeric", [])
        if f.get("normalize") == "standardize" and f.get("mean") is not None and f.get("std") is not None
    }


def _refuse_lookup_change(path, saved: dict, wanted: dict) -> None:
    """One clear error when a feature's lookup differs from the one the run was trained with."""
    from mtlrec.schema import Schema

    before = {f.name: f.lookup.lookup for f in Schema.from_dict(saved).features if hasattr(f, "lookup")}
    for f in Schema.from_dict(wanted).features:
        if hasattr(f, "lookup") and f.name in before and before[f.name] != f.lookup.lookup:
            raise RunError(
                f"{path}: feature {f.name!r} was trained with lookup {before[f.name]}, the config "
                f"asks for {f.lookup.lookup}; changing a feature's lookup on an existing run is "
                f"refused (its rows would no longer mean the same ids); use a new run_dir"
            )


def _without_stats(schema: dict) -> dict:
    out = json.loads(json.dumps(schema))
    for feature in out.get("numeric", []):
        if feature.get("normalize") == "standardize":
            feature.pop("mean", None)
            feature.pop("std", None)
    return out


def _model_error(err: Exception, config) -> Exception:
    """A ``ValueError`` of building the model, weighting or optimizers as a ``ConfigError``
    on its key path (``KeyPathError.path``; ``model`` for any other error)."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    from mtlrec.training.config import config_error

    return config_error(config, getattr(err, "path", None) or "model", message)
