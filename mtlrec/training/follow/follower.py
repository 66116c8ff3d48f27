"""``mtlrec train CONFIG --follow``: train each complete partition once, in order, as it lands.

For each partition, in key order (``PartitionSource``):

1. validate it (a bad partition stops the follow before anything is written);
2. score it with the current model (progressive validation: the model has not seen it),
   saved in ``state.json`` before the first step;
3. train on it, checkpointing as a day does (a kill resumes mid-partition);
4. export when ``export.every`` says so (a version already holding this checkpoint is
   reused, so a kill between the export and the state never exports twice);
5. write its rows to ``metrics.csv`` and record it in ``state.json``.

A missing partition (a later one is complete, it is not) is waited for
``follow.missing_wait_seconds``, then skipped and recorded; if it lands afterwards it is
reported late, never trained out of order. A trained partition whose files changed is
refused (not trained again) with one warning naming it. SIGTERM stops after the current
step with a checkpoint; the same command resumes.
"""

from __future__ import annotations

import logging
import time
import types

from mtlrec.data_pipeline.partition_keys import hour_number, label, next_hour
from mtlrec.training.days.day_datasets import train_dataset
from mtlrec.training.days.day_plan import start_position
from mtlrec.training.days.day_validation import validate_days
from mtlrec.training.errors import RunError
from mtlrec.training.faults import fault_point
from mtlrec.training.follow.directory_source import DirectorySource
from mtlrec.training.follow.export_cadence import ExportCadence
from mtlrec.training.follow.follow_record import FollowRecord
from mtlrec.training.follow.follow_rows import lag_rows, partition_rows
from mtlrec.training.follow.stop_request import StopRequest
from mtlrec.training.lookups.encoder_changes import check_encoders, record_encoders
from mtlrec.training.run_schema import resolve_schema

logger = logging.getLogger("mtlrec.training")


class Follower:
    """Runs the follow loop of an ``Experiment`` (``Experiment.follow``).

    Args:
        experiment: the ``Experiment`` (its run directory, model building, checkpoints,
            evaluation and export are reused as they are for days).
        until: the key of the last partition to train (None: until stopped).
        stop: a ``StopRequest`` (default: a new one, fed by SIGTERM/SIGINT).
        source: a ``PartitionSource`` (default: the hours under ``data.root``).
        clock: seconds since the epoch (``time.time``; tests may pass another).
    """

    def __init__(self, experiment, until=None, stop=None, source=None, clock=time.time):
        config = experiment.config
        self.experiment = experiment
        self.config = config
        self.until = until
        self.stop = stop if stop is not None else StopRequest()
        self.source = source if source is not None else DirectorySource(config.data.root, config.data.format, config.data.done_marker)
        self.clock = clock
        self.cadence = ExportCadence(config.export.every)
        self._missing_since: dict[str, float] = {}
        self._trainer = None

    # ------------------------------------------------------------ the loop

    def run(self) -> list[dict]:
        """Follow until ``until`` is trained (or skipped) or a stop is requested; returns
        the ``state.json`` entries of the partitions trained by this call."""
        run = self.experiment.run
        trained = []
        with self.stop.installed(), run.locked():
            state = run.load_state()
            record = FollowRecord(state)
            while not self.stop:
                cursor = record.cursor()
                if self._reached(cursor):
                    break
                partition = self._next(state, record, cursor)
                if partition is None:
                    self.stop.wait(self.config.follow.poll_seconds)
                    continue
                entry = self._partition(partition, state, record)
                if entry is None:  # stopped mid-partition: its checkpoint is written
                    break
                trained.append(entry["day"])
            exported = self._reached(record.cursor()) and self._final_export(state)
            if exported or (state.pending and state.pending.get("follow")):
                state.finish()
                run.save_state(state)
            if self._trainer is not None:
                self._context.summaries.close()
            if not trained and not exported and self._reached(record.cursor()):
                logger.info("nothing to follow: %s is already trained or skipped", label(self.until))
        return [dict(state.entry(key)) for key in trained]

    def _reached(self, cursor) -> bool:
        return self.until is not None and cursor is not None and cursor >= self.until

    def _next(self, state, record: FollowRecord, cursor):
        """The partition to train now, or None (wait). Skips a missing partition once its
        wait is over; reports late partitions and rewritten ones."""
        self._report_late(record)
        self._check_rewrites(state, record)
        start = next_hour(cursor) if cursor is not None else self.config.follow.start
        complete = self.source.complete(start) if start is not None else self._first()
        if not complete:
            return None
        if start is None or complete[0].key == start:
            return complete[0]
        # a later partition is complete, ``start`` is not: wait for it, then skip it
        now = self.clock()
        since = self._missing_since.setdefault(start, now)
        waited = now - since
        if waited < self.config.follow.missing_wait_seconds:
            if waited == 0:
                logger.info("partition %s is missing while %s is complete: waiting up to %gs",
                            label(start), complete[0].label, self.config.follow.missing_wait_seconds)
            return None
        reason = f"missing after waiting {waited:.0f}s while {complete[0].label} was complete"
        logger.warning("skipping partition %s: %s", label(start), reason)
        record.skip(start, reason)
        self.experiment.run.save_state(state)
        return self._next(state, record, start)

    def _first(self) -> list:
        """A run without a partition: the complete ones from the oldest on."""
        from mtlrec.data_pipeline.partitions import list_days

        days = list_days(self.config.data.root)
        return self.source.complete(f"{days[0]}T00") if days else []

    def _report_late(self, record: FollowRecord) -> None:
        for key in sorted(record.skipped - record.late):
            if self.source.get(key) is not None:
                logger.warning(
                    "partition %s landed after later partitions were trained: it is not trained "
                    "(recorded as late in state.json)", label(key),
                )
                record.mark_late(key)
                self.experiment.run.save_state(record.state)

    def _check_rewrites(self, state, record: FollowRecord) -> None:
        """Trained partitions within ``follow.recheck_hours`` of the newest whose files
        changed: one warning each, recorded, never trained again."""
        entries = [e for e in state.days if e.get("fingerprint")]
        if not entries:
            return
        newest = hour_number(entries[-1]["day"])
        for entry in entries:
            if newest - hour_number(entry["day"]) > self.config.follow.recheck_hours:
                continue
            now = self.source.get(entry["day"])
            if now is None or now.fingerprint == entry["fingerprint"] or record.refused(entry["day"], now.fingerprint):
                continue
            logger.warning(
                "partition %s was rewritten after it was trained (its files changed); refused: "
                "it is not trained again", label(entry["day"]),
            )
            record.refuse(entry["day"], now.fingerprint)
            self.experiment.run.save_state(state)

    # ------------------------------------------------------------ one partition

    def _partition(self, partition, state, record: FollowRecord) -> dict | None:
        exp, run, key = self.experiment, self.experiment.run, partition.key
        checks = validate_days(self.config, run.saved_schema(), [key])  # before any write
        trainer = self._start(key, state)
        latest = run.latest_checkpoint()
        interrupted = _interrupted(latest, key, state)
        progressive = record.progressive(key)
        if progressive is None:
            if interrupted is not None:
                raise RunError(f"partition {label(key)} was interrupted before its evaluation was saved")
            evaluation = exp._evaluate(trainer, key, checks[key])
            record.set_progressive(key, evaluation.metrics)
            run.save_state(state)
            progressive = record.progressive(key)
        position = start_position(key, interrupted)
        if not position.completed:
            context = self._context
            position = trainer.train_day(
                position,
                train_dataset(self.config, trainer.schema, trainer.sharding, key, checks[key].rows),
                on_checkpoint=lambda pos: exp._checkpoint(context, pos, state),
                summary_writer=context.summaries.writer,
                label=self.config.name,
                total_rows=checks[key].rows * self.config.training.epochs_per_day,
                should_stop=lambda: bool(self.stop),
            )
            if not position.completed:
                logger.info("stopped in partition %s after %d steps (checkpoint written)", label(key), position.steps)
                return None
            exp._checkpoint(context, position, state)
        step = int(trainer.global_step.numpy())
        tables = trainer.lookup_report()
        unexported = [e for e in _since_export(state)] + [{"day": key, "ready_at_s": partition.ready_at}]
        version, exported_at = None, None
        if self.cadence.due(len(unexported), _last_export_time(state), self.clock()):
            version, exported_at = self._export(trainer, state, key)
            fault_point("follow.exported")
        run.save_model(trainer.local_model())  # after the export: off the path to freshness
        lags = {} if version is None else {e["day"]: exported_at - e["ready_at_s"] for e in unexported}
        for entry in unexported[:-1]:
            if version is not None:
                entry.update(export_version=version, exported_at_s=exported_at, lag_seconds=lags[entry["day"]])
                run.write_day_results(entry["day"], _rows_with_lag(run, entry, lags), None)
        rows = partition_rows(key, step, progressive, position.mean_losses(), tables, checks[key].rows, lags.get(key))
        run.write_day_results(key, rows, None)
        entry = state.record_day(
            key,
            steps=position.steps,
            examples=position.examples,
            global_step=step,
            rows=checks[key].rows,
            progressive=record.pop_progressive(key),
            ready_at=_iso(partition.ready_at),
            ready_at_s=partition.ready_at,
            fingerprint=partition.fingerprint,
            export_version=version,
            **({"exported_at_s": exported_at, "lag_seconds": lags[key]} if version is not None else {}),
            non_finite_replaced=dict(checks[key].non_finite),
            config=self.config.training_digest(),
            **({"tables": tables} if tables else {}),
        )
        run.save_state(state)
        fault_point("day.done")
        logger.info(
            "[%s] partition %s trained: %d rows, %d steps (global %d)%s%s", self.config.name, label(key),
            checks[key].rows, position.steps, step, _auc_text(progressive),
            f", export version {version}" if version is not None else "",
        )
        return dict(entry)

    def _start(self, key: str, state):
        """The trainer, built and restored at the first partition of this call."""
        if self._trainer is not None:
            return self._trainer
        exp, run = self.experiment, self.experiment.run
        from mtlrec.training.run.tensorboard_log import DaySummaries

        run.finish_migration(state)
        schema, _ = resolve_schema(self.config, run, key, False)
        check_encoders(self.config, run, state)
        trainer = exp._build(schema)
        exp._restore(trainer)
        pending = state.pending
        if not (pending and pending.get("follow")):
            pending = state.begin([], False)
            pending["follow"] = True
        state.data["name"] = self.config.name
        state.data["model_type"] = self.config.model.get("type")
        record_encoders(self.config, state)
        run.begin_command(schema, self.config.to_dict(), state)
        self._context = types.SimpleNamespace(
            trainer=trainer, command=pending["id"], checks={}, migration=None,
            summaries=DaySummaries(run.tensorboard_dir, trainer.is_chief),
        )
        self._trainer = trainer
        return trainer

    def _export(self, trainer, state, key: str):
        """``(version, time)`` of the export holding the model after ``key``: the newest
        export when it already is this checkpoint, else a new one."""
        run = self.experiment.run
        current = run.current_export()
        if current is not None:
            from mtlrec.training.serving.export import read_metadata

            meta = read_metadata(current)
            if meta.get("day") == key:
                return int(current.name), _export_time(current)
        path = self.experiment._export(trainer, state.trained_days + [key], key, f"the export of partition {label(key)}")
        return (None, None) if path is None else (int(path.name), self.clock())

    def _final_export(self, state) -> bool:
        """At ``--until``: the partitions trained since the last export get one; whether
        there were any."""
        unexported = _since_export(state)
        if not unexported:
            return False
        key = unexported[-1]["day"]
        version, exported_at = self._export(self._start(key, state), state, key)
        if version is None:
            return False
        run = self.experiment.run
        for entry in unexported:
            lag = exported_at - entry["ready_at_s"]
            entry.update(export_version=version, exported_at_s=exported_at, lag_seconds=lag)
            run.write_day_results(entry["day"], _rows_with_lag(run, entry, {entry["day"]: lag}), None)
        run.save_state(state)
        return True


def _interrupted(latest, key: str, state) -> dict | None:
    """The newest checkpoint's meta when it is of ``key`` and ``key`` is not recorded yet."""
    if latest is None:
        return None
    meta = latest[1]
    if meta.get("day") == key and not state.is_trained(key):
        return meta
    if not state.is_trained(meta.get("day")) and meta.get("day") is not None:
        raise RunError(
            f"the newest checkpoint ({latest[0].name}) is of {label(meta['day'])}, which is not "
            f"recorded as trained, while {label(key)} comes next; finish that partition or day first"
        )
    return None


def _since_export(state) -> list[dict]:
    """The follow entries trained after the newest entry that has an export."""
    out = []
    for entry in reversed(state.days):
        if entry.get("export_version") is not None or "ready_at_s" not in entry:
            break
        out.append(entry)
    return out[::-1]


def _last_export_time(state) -> float | None:
    for entry in reversed(state.days):
        if entry.get("exported_at_s") is not None:
            return float(entry["exported_at_s"])
    return None


def _export_time(path) -> float:
    import datetime

    from mtlrec.training.serving.export import read_metadata

    stamp = read_metadata(path).get("exported_at")
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return path.stat().st_mtime


def _rows_with_lag(run, entry: dict, lags: dict) -> list[dict]:
    from mtlrec.training.run.metrics_log import read_metrics

    kept = [r for r in read_metrics(run.path) if r["day"] == entry["day"] and r["metric"] != "lag_seconds"]
    return kept + lag_rows(entry["day"], entry["global_step"], lags.get(entry["day"]))


def _iso(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _auc_text(progressive: dict) -> str:
    aucs = [f"{task} {values['auc']:.4f}" for task, values in (progressive or {}).items()
            if isinstance(values, dict) and values.get("auc") is not None]
    return f", progressive AUC {' '.join(aucs)}" if aucs else ""


def follow(experiment, until=None, stop=None, source=None) -> list[dict]:
    """``Experiment.follow``: checks the config and ``until``, then runs a ``Follower``."""
    from mtlrec.data_pipeline.partition_keys import hour_key, is_hour, parse_partition
    from mtlrec.training.config import config_error
    from mtlrec.training.distribute.cluster_env import cluster_from_env

    config = experiment.config
    if config.data.partitioning != "hour":
        raise config_error(config, "data.partitioning", "train --follow reads hourly partitions: set it to hour")
    if cluster_from_env() or experiment.strategy is not None and experiment.strategy.num_replicas_in_sync > 1:
        raise RunError("train --follow runs on one worker (no TF_CONFIG cluster, no multi-replica strategy)")
    if until is not None:
        until = parse_partition(until)
        if not is_hour(until):  # a day: through its last hour
            until = hour_key(until, 23)
    return Follower(experiment, until, stop, source).run()
