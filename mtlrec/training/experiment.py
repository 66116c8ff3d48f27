"""One experiment: train day by day, evaluate, export, against its run directory.

``Experiment.train`` is a short loop over a ``DayPlan`` (``mtlrec.training.days.day_plan``):
validate the days (``day_validation``), build the model with the run's schema
(``run_schema``), then per day: train (checkpoints on the way), the end-of-day
checkpoint, ``model.keras``, the evaluation on the next day, the metrics, a new export,
then ``state.json``. Every write goes through the ``RunDirectory`` (layout and crash
safety in ``mtlrec.training.run.run_directory``): a crash anywhere leaves a consistent
directory; the same command resumes from the last checkpoint (skipping the batches already
consumed) and redoes only what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from mtlrec.training.days.day_datasets import eval_dataset, train_dataset, warmup_rows
from mtlrec.training.run.background_write import BackgroundWrite
from mtlrec.training.run.day_log import log_day_done, warn_full_tables
from mtlrec.training.days.day_plan import (
    DayPlan,
    already_trained,
    asked_days,
    interrupted_day,
    one_eval_day,
    start_position,
)
from mtlrec.training.days.day_validation import DayCheck, validate_days
from mtlrec.training.errors import RunError
from mtlrec.training.faults import fault_point
from mtlrec.training.run.metrics_log import metric_rows
from mtlrec.training.lookups.encoder_changes import check_encoders, record_encoders
from mtlrec.training.lookups.lookup_changes import migration_record
from mtlrec.training.lookups.lookup_migration import log_migration, restore_migrated
from mtlrec.training.run.run_directory import MIGRATION_KEY, RunDirectory
from mtlrec.training.run_schema import resolve_schema
from mtlrec.training.run.run_state import RunState, now_utc
from mtlrec.training.thread_pools import apply_thread_pools

logger = logging.getLogger("mtlrec.training")

class Experiment:
    """Runs one ``ExperimentConfig`` against its run directory.

    Args:
        config: a validated ``ExperimentConfig``.
        run_dir: overrides ``config.run_dir``.
        strategy: a ``tf.distribute.Strategy`` (default: from ``TF_CONFIG``).

    Attributes:
        run: the ``RunDirectory``.
        trainer: the ``Trainer`` of the last command (None before one).
    """

    def __init__(self, config, run_dir=None, strategy=None):
        apply_thread_pools(config.training)
        self.config = config
        self.run = RunDirectory(run_dir or config.run_dir)
        self.strategy = strategy
        self.trainer = None

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def checkpoint_dir(self) -> Path:
        return self.run.checkpoint_dir

    @property
    def export_dir(self) -> Path:
        return self.run.export_dir

    @property
    def checkpoints(self):
        """The ``CheckpointManager`` of the last command's model."""
        return self.run.checkpoints

    # ------------------------------------------------------------ commands

    def train(self, day=None, days=None, force: bool = False, migrate_lookups: bool = False) -> list[dict]:
        """Train the given days in order (``--day D`` / ``--days A:B`` / ``data.train_days``).

        ``migrate_lookups`` (``--migrate-lookups``): the tables whose lookup settings the
        config changes start afresh (``mtlrec.training.lookups.lookup_migration``) instead of
        being refused.

        Returns:
            The ``state.json`` entries of the days trained by this call.

        Raises:
            RunError: a day already trained (without ``force``), an interrupted
                day that is not the first one asked for, a non-finite loss.
            DataValidationError: a bad or missing day (before anything is written).
            ConfigError: a model the config cannot build; changed lookup settings
                without ``migrate_lookups``.
        """
        if self.strategy is None:
            from mtlrec.training.distribute.cluster_env import cluster_from_env
            from mtlrec.training.distribute.strategies import make_strategy

            if cluster_from_env():  # before TensorFlow runs anything (collectives need it)
                self.strategy = make_strategy("multi_worker")
        days = asked_days(self.config, day, days)
        state = self.run.load_state()
        if not force and already_trained(self.config, state, days):
            return []
        plan = DayPlan.make(self.config, state, days, force)  # refuse early, before reading data
        # the days and the days they are evaluated on, before touching the run directory
        checks = validate_days(self.config, self.run.saved_schema(), plan.validation_days)
        with self.run.locked():
            return self._train(days, force, checks, migrate_lookups)

    def follow(self, until: str | None = None, stop=None, source=None) -> list[dict]:
        """Near-line training (``train --follow``): train each complete partition once, in
        order, as it lands, scoring it first (``mtlrec.training.follow.follower``).

        Args:
            until: the last partition (``dt=YYYY-MM-DD/hour=HH``, ``YYYY-MM-DDTHH`` or a
                day); None follows until stopped.
            stop: a ``StopRequest`` (SIGTERM and SIGINT also stop it).
            source: a ``PartitionSource`` (default: the hours under ``data.root``).

        Returns:
            The ``state.json`` entries of the partitions trained by this call.
        """
        from mtlrec.training.follow.follower import follow

        return follow(self, until, stop, source)

    def evaluate(self, day: str | None = None):
        """Metrics of the newest checkpoint on ``day`` (default: ``data.eval_day``)."""
        day = one_eval_day(self.config, day)
        checks = validate_days(self.config, self.run.saved_schema(), [day])
        trainer, _ = self._load_trained()
        return self._evaluate(trainer, day, checks[day])

    def current_export(self) -> Path | None:
        """The newest export when it already is the newest checkpoint (same day and global
        step), else None."""
        return self.run.current_export()

    def export(self) -> Path:
        """Export the newest checkpoint as a new SavedModel version."""
        with self.run.locked():
            trainer, meta = self._load_trained()
            state = self.run.load_state()
            return self._export(trainer, state.trained_days, meta.get("day"), "the export")

    # ------------------------------------------------------------ the loop over the plan

    def _train(self, days: list[str], force: bool, checks: dict[str, DayCheck], migrate: bool) -> list[dict]:
        from mtlrec.training.run.tensorboard_log import DaySummaries

        state = self.run.load_state()
        self.run.finish_migration(state)
        plan = DayPlan.make(self.config, state, days, force)
        if plan.resuming:
            logger.info("resuming the interrupted command (days %s)", ", ".join(plan.to_train))
        interrupted = interrupted_day(plan, state, self.run.latest_checkpoint(), force)
        first_day = (plan.to_train or days)[0]
        schema, changes = resolve_schema(self.config, self.run, first_day, migrate)
        check_encoders(self.config, self.run, state)
        trainer = self._build(schema)
        if self._restore(trainer, changes) is None:
            interrupted = None
        command = state.begin(days, force)["id"]
        migration = migration_record(changes, schema, first_day, command) if changes else None
        state.data["name"] = self.config.name
        state.data["model_type"] = self.config.model.get("type")
        record_encoders(self.config, state)
        self.run.begin_command(schema, self.config.to_dict(), state)
        summaries = DaySummaries(self.run.tensorboard_dir, trainer.is_chief)
        run = _DayRun(trainer, command, checks, summaries, migration)
        results = []
        for i, day in enumerate(plan.to_train):
            position = start_position(day, interrupted if i == 0 else None)
            results.append(self._run_day(run, position, plan.eval_days[day], state))
        state.finish()
        self.run.save_state(state)
        run.summaries.close()
        return results

    def _run_day(self, run: "_DayRun", position, eval_day, state: RunState) -> dict:
        day, trainer = position.day, run.trainer
        pending = None
        if not position.completed:
            rows = run.checks[day].rows
            position = trainer.train_day(
                position,
                train_dataset(self.config, trainer.schema, trainer.sharding, day, rows),
                on_checkpoint=lambda pos: self._checkpoint(run, pos, state),
                summary_writer=run.summaries.writer,
                label=self.config.name,
                total_rows=_day_rows(self.config.training, rows),
            )
            pending = self._end_of_day_checkpoint(run, position, state)
        try:
            step = int(trainer.global_step.numpy())
            tables = trainer.lookup_report()
            warn_full_tables(day, tables)
            evaluation = None
            if trainer.is_chief:
                evaluation = self._day_results(run, position, eval_day, step, tables)
            version = self._export(trainer, state.trained_days + [day], day, f"the export of day {day}")
        except BaseException:
            if pending is not None:
                _wait_quietly(pending)  # the error reported is the first one
            raise
        if pending is not None:
            pending.wait()
        entry = state.record_day(
            day,
            steps=position.steps,
            examples=position.examples,
            global_step=step,
            eval_day=eval_day,
            export_version=None if version is None else int(version.name),
            non_finite_replaced=dict(run.checks[day].non_finite),
            config=self.config.training_digest(),
            id_collisions=dict(run.checks[day].id_collisions),
            **({"tables": tables} if tables else {}),
        )
        state.mark_done(day)
        self.run.save_state(state)
        fault_point("day.done")
        log_day_done(self.config.name, position, step, eval_day, evaluation, version)
        return dict(entry)

    def _day_results(self, run: "_DayRun", position, eval_day, step: int, tables: dict):
        """``model.keras``, the evaluation on ``eval_day``, the day's metrics and scalars
        (the chief's); returns the ``EvaluationResult`` (None without an eval day)."""
        day, losses = position.day, position.mean_losses()
        self.run.save_model(run.trainer.local_model())
        evaluation = None if eval_day is None else self._evaluate(run.trainer, eval_day, run.checks[eval_day])
        calibration = None
        if evaluation is not None:
            calibration = {"day": day, "eval_day": eval_day, "bins": evaluation.calibration}
        self.run.write_day_results(day, metric_rows(day, step, evaluation, losses, tables), calibration)
        with self.run.writing(f"the metrics of day {day}"):
            run.summaries.day(step, evaluation, losses)
        return evaluation

    # ------------------------------------------------------------ model and files

    def _build(self, schema: dict):
        from mtlrec.training.distribute.ps_trainer import trainer_class

        try:
            trainer = trainer_class(self.strategy)(self.config, schema, strategy=self.strategy)
        except (ValueError, TypeError) as err:
            raise _model_error(err, self.config) from None
        self.run.attach(trainer.checkpoint, trainer.is_chief, keep=2)
        self.trainer = trainer
        return trainer

    def _restore(self, trainer, migrated=()) -> dict | None:
        """Load the newest checkpoint into ``trainer``; its meta, or None when there is none.
        The tables of ``migrated`` (``TableChange``) start afresh (``restore_migrated``)."""
        if any(not change.kept for change in migrated):
            return restore_migrated(self.run, trainer, self.run.saved_schema(), migrated)
        latest = self.run.restore_latest()
        if latest is None:
            return None
        path, meta = latest
        if migrated:
            log_migration(migrated, path)
        logger.info("restored %s (global step %s)", path, meta.get("global_step"))
        return meta

    def _load_trained(self):
        """``(trainer, meta)``: the model of an existing run with its newest checkpoint."""
        if self.run.saved_schema() is None:
            raise RunError(f"{self.run_dir}: no trained model here (train a day first)")
        schema = resolve_schema(self.config, self.run, None)[0]
        check_encoders(self.config, self.run, self.run.load_state())
        trainer = self._build(schema)
        meta = self._restore(trainer)
        if meta is None:
            raise RunError(f"{self.checkpoint_dir}: no checkpoint to load (train a day first)")
        if not meta.get("completed", False):
            logger.warning(
                "the newest checkpoint is mid-day (day %s, step %s of the day)", meta.get("day"), meta.get("steps")
            )
        return trainer, meta

    def _checkpoint(self, run: "_DayRun", position, state: RunState) -> None:
        """A checkpoint at ``position``; until one has committed the command's lookup
        migration (``RunDirectory.commit_migration``), each carries it."""
        meta = dataclasses.asdict(position)
        meta["global_step"] = int(run.trainer.global_step.numpy())
        meta["command"] = run.command
        meta["written_at"] = now_utc()
        migration = run.migration if run.migration and not state.has_migration(run.migration) else None
        if migration is not None:
            meta[MIGRATION_KEY] = migration
        what = f"a checkpoint (day {position.day}, step {position.steps} of the day)"
        path = self.run.save_checkpoint(meta, what)
        if migration is not None:
            fault_point("migration.checkpointed")
            self.run.commit_migration(migration, state)
        if path is not None:
            logger.info("checkpoint %s (day %s, step %d of the day)", path.name, position.day, position.steps)

    def _end_of_day_checkpoint(self, run: "_DayRun", position, state: RunState):
        """The checkpoint of a trained day: written in a thread (returned, to wait for before
        the day is recorded) while ``model.keras``, the evaluation and the export are made,
        since nothing changes the weights until the next day; in this thread (None returned)
        on a cluster, whose workers save together, and when it commits a lookup migration."""
        single = getattr(run.trainer.strategy, "cluster_resolver", None) is None
        if not single or (run.migration and not state.has_migration(run.migration)):
            self._checkpoint(run, position, state)
            return None
        return BackgroundWrite(self._checkpoint, run, position, state, name="mtlrec-checkpoint")

    def _evaluate(self, trainer, day: str, check: DayCheck):
        from mtlrec.training.evaluation import evaluate_model

        gate_model = None
        model = trainer.local_model()
        if callable(getattr(model, "gate_model", None)):
            gate_model = model.gate_model()
        logger.info("evaluating on day %s", day)
        return evaluate_model(
            model,
            self.config.tasks,
            eval_dataset(self.config, trainer.schema, day),
            extras=self.config.evaluation.extras,
            gate_model=gate_model,
            total_rows=check.rows,
        )

    def _export(self, trainer, trained_days, day, what: str) -> Path | None:
        if not trainer.is_chief:
            return None
        schema = trainer.schema
        metadata = {
            "name": self.config.name,
            "model_type": self.config.model.get("type"),
            "key": schema.get("key"),
            "schema": schema,
            "tasks": self.config.to_dict()["tasks"],
            "trained_days": sorted(set(trained_days)),
            "day": day,
            "global_step": int(trainer.global_step.numpy()),
            "exported_at": now_utc(),
        }
        warmup = warmup_rows(self.config, schema, day)
        path = self.run.export(trainer.local_model(), self.config.export.keep, metadata, warmup, what)
        logger.info("exported %s", path)
        return path


@dataclasses.dataclass(frozen=True)
class _DayRun:
    """What every day of one ``train`` command shares."""

    trainer: object
    command: str  # the id of the command in progress (checkpoints carry it)
    checks: dict  # {day: DayCheck} of the days trained and evaluated on
    summaries: object  # DaySummaries
    migration: dict | None = None  # the command's lookup migration (``migration_record``)


def _wait_quietly(pending) -> None:
    """Wait for a background write while another error is on its way out; its own error
    is logged, not raised."""
    try:
        pending.wait()
    except Exception as err:  # noqa: BLE001
        logger.warning("the end-of-day checkpoint failed too: %s", err)


def _day_rows(training, rows: int | None) -> int | None:
    """Rows a day's training reads (its validated rows, every epoch, within steps_per_day)."""
    if rows is None:
        return None
    total = rows * training.epochs_per_day
    cap = training.steps_per_day
    return total if cap is None else min(total, cap * training.batch_size)


def _model_error(err: Exception, config) -> Exception:
    """A ``ValueError`` of building the model, weighting or optimizers as a ``ConfigError``
    on its key path (``KeyPathError.path``; ``model`` for any other error)."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    from mtlrec.training.config import config_error

    return config_error(config, getattr(err, "path", None) or "model", message)
