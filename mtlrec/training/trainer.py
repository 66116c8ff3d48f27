"""The training loop: a ``tf.function`` step under a ``tf.distribute`` strategy.

Keras' ``Model.fit`` fails under ``MultiWorkerMirroredStrategy`` upstream, and the
loss weighting strategies (PCGrad, GradNorm) need per-task gradients, so the
trainer owns its loop: the model, both optimizers and the weighting are built in
``strategy.scope()``; each step runs ``strategy.run`` on a batch of
``strategy.experimental_distribute_dataset``. The objective's terms come from
``mtlrec.losses.objective.objective_terms`` (the function a model's ``compute_loss``
uses) and their gradients from the weighting's ``gradients``, over the groups of
``model.variable_groups()``; embedding tables are updated by the embedding optimizer
(lazy, row-sparse), everything else, including the weighting's own trainable
variables, by the dense optimizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import time
from typing import Callable

import keras
import tensorflow as tf

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.losses import make_weighting
from mtlrec.losses.factory import STRATEGIES as WEIGHTINGS
from mtlrec.losses.objective import objective_terms
from mtlrec.models.base.fit_lookups import lookup_layers
from mtlrec.optimizers import make_optimizer, reset_slot_rows
from mtlrec.training.accelerator_options import DenseObjective, dtype_policy_scope
from mtlrec.training.progress import row_progress, time_left
from mtlrec.training.days.day_position import DayPosition
from mtlrec.training.errors import NonFiniteLossError
from mtlrec.training.faults import fault_point
from mtlrec.training.distribute.global_ids import gathered_ids, local_ids
from mtlrec.training.distribute.strategies import is_chief, make_strategy
from mtlrec.training.run.tensorboard_log import scalar
from mtlrec.training.run.trainer_checkpoint import TrainerCheckpoint

logger = logging.getLogger("mtlrec.training")


def _model_holds(weighting: dict) -> bool:
    """Whether the model holds the weighting (its variables save with the model and
    ``compute_loss`` can use it): every weighting that needs no per-task gradients."""
    cls, _ = WEIGHTINGS[weighting.get("type", "fixed")]
    return not cls.requires_custom_step


def _non_trainable_state(model, skip=()) -> tf.train.Checkpoint:
    """The model's non-trainable variables (BatchNorm moving statistics, ...) by path,
    but those in `skip` (ids of variables).

    A Keras 3 model does not put the variables of nested layers into TensorFlow's object
    graph: the trainable ones reach the checkpoint through the optimizers' slots, the
    others only through this entry. Without it a restore resets them.
    """
    state = {}
    for i, variable in enumerate(v for v in model.non_trainable_variables if id(v) not in skip):
        key = variable.path.replace("/", ".")
        state[key if key not in state else f"{key}.{i}"] = variable.value
    return tf.train.Checkpoint(**state)


class _LossWindow:
    """The losses and examples of the steps since the last progress line."""

    def __init__(self, examples: int, total_rows: int | None):
        self.total_rows = total_rows
        self.started, self.start_examples = time.perf_counter(), examples
        self.last_time, self.last_examples = self.started, examples
        self.loss, self.steps, self.tasks = 0.0, 0, {}

    def add(self, total: float, per_task: dict) -> None:
        self.loss += total
        self.steps += 1
        for k, v in per_task.items():
            self.tasks[k] = self.tasks.get(k, 0.0) + v

    def close(self, examples: int):
        """(mean loss, mean task losses, examples per second, "rows done, time left")
        of the window; the next window starts here."""
        now = time.perf_counter()
        rate = (examples - self.last_examples) / max(now - self.last_time, 1e-9)
        means = {k: v / self.steps for k, v in self.tasks.items()}
        total = self.total_rows
        rows = f"{examples}/{total} rows" if total else f"{examples} rows"
        left = time_left(examples - self.start_examples, (total or 0) - self.start_examples, now - self.started)
        loss = self.loss / self.steps
        self.last_time, self.last_examples = now, examples
        self.loss, self.steps, self.tasks = 0.0, 0, {}
        return loss, means, rate, ", ".join(filter(None, [rows, left]))


class Trainer:
    """Builds the model, optimizers and loss weighting of a config and trains on days.

    Args:
        config: an ``ExperimentConfig``.
        schema: the schema dict the model is built with (numeric statistics filled).
        strategy: a ``tf.distribute.Strategy`` (default: ``make_strategy()``).
    """

    def __init__(self, config, schema: dict, strategy: tf.distribute.Strategy | None = None):
        from mtlrec.models import build_model

        self.config = config
        self.schema = schema
        self.tasks = list(config.tasks)
        self._loss_names = {t.name: t.loss_name for t in self.tasks}
        self.strategy = strategy or make_strategy(getattr(config.training, "strategy", "auto"))
        self.is_chief = is_chief(self.strategy)
        self.sharding = self._data_sharding()
        if self.sharding.active and self.strategy.num_replicas_in_sync != self.sharding.count:
            raise KeyPathError(
                "training.strategy", f"a multi-worker run takes one device per worker; found "
                f"{self.strategy.num_replicas_in_sync} replicas on {self.sharding.count} workers"
            )
        weighting = dict(config.loss_weighting or {"type": "fixed"})
        in_model = _model_holds(weighting)
        with self.strategy.scope(), self._variable_scope(), dtype_policy_scope(config.training):
            keras.utils.set_random_seed(config.training.seed)
            model_config = dict(config.model)
            if in_model:
                # The model holds it (its variables save with the model); GradNorm and
                # PCGrad need per-task gradients, which only this loop gives.
                model_config["loss_weighting"] = weighting
            self.model = build_model(model_config, schema, config.tasks)
            self.weighting = self.model.weighting if in_model else make_weighting(weighting, self.tasks)
            self.dense_optimizer = make_optimizer(config.optimizer.dense, "optimizer.dense")
            self.embedding_optimizer = make_optimizer(
                config.optimizer.embedding, "optimizer.embedding"
            )
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self._split_variables()
            self.lookup_layers = lookup_layers(self.model)
            self._build_optimizers()
        self._objective = self._eager_objective
        if getattr(config.training, "jit_compile", False):
            self._objective = DenseObjective(self.model)
        self.checkpoint = TrainerCheckpoint(
            self._checkpoint_children, any(layer.id_maps for layer in self.lookup_layers)
        )
        self._step_fns = {}

    # ------------------------------------------------------------ hooks (ps_trainer)

    def _data_sharding(self):
        from mtlrec.training.distribute.sharding import sharding_of

        return sharding_of(self.strategy)

    def _variable_scope(self):
        """Where the model's variables are created (inside the strategy's scope)."""
        return contextlib.nullcontext()

    def _build_optimizers(self) -> None:
        if self.embedding_variables:
            self.embedding_optimizer.build(self.embedding_variables)
        if self.dense_variables:
            self.dense_optimizer.build(self.dense_variables)

    def _apply_embedding(self, pairs) -> None:
        self.embedding_optimizer.apply_gradients(pairs)

    def _observed_in_step(self) -> list:
        """The lookup layers whose ids the step itself counts (here: all of them)."""
        return self.lookup_layers

    def local_model(self):
        """The trained model with every weight on this process (here: the model itself)."""
        return self.model

    # ------------------------------------------------------------ variables

    def _split_variables(self) -> None:
        """The weighting's view (shared, task, GradNorm's W) and the optimizers' (tables,
        dense) of the model's variable groups. The order is fixed: shared, then the task
        variables, then the weighting's own; a checkpoint keys the optimizers' slots by
        position in it."""
        groups = self.model.variable_groups()
        self.groups = groups
        self.shared_variables = list(groups.all_shared)
        self.task_variables = list(groups.task_order) + list(self.weighting.trainable_variables)
        self.balance_variables = list(groups.balance_layer) or None  # None: all shared
        self.weighting.prepare(self.shared_variables)
        everything = self.shared_variables + self.task_variables
        tables = {id(v) for v in groups.embedding_tables}
        self.embedding_variables = [v for v in everything if id(v) in tables]
        self.dense_variables = [v for v in everything if id(v) not in tables]
        self._is_embedding = [id(v) in tables for v in everything]

    # ------------------------------------------------------------ the step

    def _eager_objective(self, features, labels):
        return objective_terms(self.model, labels, self.model(features, training=True))

    def _replica_step(self, features, labels):
        replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape(persistent=True) as tape:
            losses = self._objective(features, labels)
        grads, total = self.weighting.gradients(
            tape, losses, self.shared_variables, self.task_variables, self.balance_variables,
            step=self.global_step,  # the steps before this one (PCGrad's orders)
        )
        del tape
        dense, embedding = [], []
        for grad, variable, is_embedding in zip(
            grads, self.shared_variables + self.task_variables, self._is_embedding
        ):
            if grad is None:
                continue
            if replicas > 1:  # the optimizers sum the replicas' gradients
                if isinstance(grad, tf.IndexedSlices):
                    grad = tf.IndexedSlices(grad.values / replicas, grad.indices, grad.dense_shape)
                else:
                    grad = grad / replicas
            (embedding if is_embedding else dense).append((grad, variable))
        if embedding:
            self._apply_embedding(embedding)
        if dense:
            self.dense_optimizer.apply_gradients(dense)
        batch = tf.shape(next(iter(labels.values())))[0]
        per_task = {name: tf.cast(losses[name], tf.float32) for name in losses}
        return tf.cast(total, tf.float32), per_task, batch

    def _build_step(self, element_spec=None):
        """The ``tf.function`` of one step: ``(features, labels) -> (total, per-task
        losses, examples, global step)``, all tensors; it also counts ``global_step``.

        With ``element_spec`` (a distributed dataset's, whose batch dimension is free)
        the step is traced once for every batch size, so a day's short last batch does
        not trace it again (13.7 s a time for MMoE on large tables); without it,
        ``reduce_retracing`` makes the second batch size the last trace.
        """
        strategy = self.strategy
        global_step = self.global_step

        lookup_layers = self._observed_in_step()
        # every worker counts the whole global batch (distribute/global_ids), so all maps stay equal
        batch_ids = gathered_ids if self.sharding.active else local_ids

        def step(features, labels):
            for layer in lookup_layers:  # admissions on the global batch in data order, before any lookup
                layer.observe(batch_ids(strategy, features, layer.observed_ids))
            total, per_task, batch = strategy.run(self._replica_step, args=(features, labels))
            mean = tf.distribute.ReduceOp.MEAN
            total = strategy.reduce(mean, total, axis=None)
            per_task = {k: strategy.reduce(mean, v, axis=None) for k, v in per_task.items()}
            batch = strategy.reduce(tf.distribute.ReduceOp.SUM, batch, axis=None)
            # Counted in the graph: no eager op and host read of the variable per step.
            with tf.control_dependencies([global_step.assign_add(1, read_value=False)]):
                step_count = tf.identity(global_step.read_value())
            return total, per_task, batch, step_count

        # autograph=False: the step and everything it calls (Keras 3 layers, the losses,
        # the optimizers) is plain Python over tensors with no tensor-valued `if` or
        # `for`; autograph's rewriting of each function was 40% of tracing (MMoE, large
        # tables: 12.7 s -> 6.1 s for the first step at load 11).
        if element_spec is None:
            return tf.function(step, reduce_retracing=True, autograph=False)
        return tf.function(step, input_signature=list(element_spec), autograph=False)

    # ------------------------------------------------------------ a day

    def train_day(
        self,
        position: DayPosition,
        make_dataset: Callable[[int, int], tf.data.Dataset],
        on_checkpoint: Callable[[DayPosition], None] | None = None,
        summary_writer=None,
        label: str = "",
        total_rows: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> DayPosition:
        """Train on one day from ``position`` (a fresh day or a resumed one).

        Args:
            position: where to start: epoch, batches already consumed in it,
                steps and examples already done in the day.
            make_dataset: ``(epoch, skip_batches) -> tf.data.Dataset`` of
                ``(features, labels)`` batches in a deterministic order per epoch.
            on_checkpoint: called with the position every
                ``training.checkpoint_every`` steps of the day.
            summary_writer: optional ``tf.summary`` writer for the loss curves.
            label: prefix of the progress lines (e.g. the experiment name).
            total_rows: rows of the whole day (all epochs), for rows done of the total
                and the time left in the progress lines and bar.
            should_stop: asked after every step; when it says True, ``on_checkpoint`` gets
                the position and training stops there (``train --follow`` on SIGTERM).

        Returns:
            The position at the end of the day (``completed=True``), or where a stop
            asked by ``should_stop`` left it (``completed=False``).

        Raises:
            NonFiniteLossError: the loss became NaN or infinite; nothing is
                checkpointed from that step on.
        """
        training = self.config.training
        pos = dataclasses.replace(position, loss_sums=dict(position.loss_sums))
        if pos.steps == 0 and pos.epoch == 0 and pos.batch_in_epoch == 0:
            self.start_day(pos.day)
        cap = training.steps_per_day
        window = _LossWindow(pos.examples, total_rows)
        bar = row_progress(total_rows, f"day {pos.day}", done=pos.examples)
        for epoch in range(pos.epoch, training.epochs_per_day):
            if cap is not None and pos.steps >= cap:
                break
            skip = pos.batch_in_epoch if epoch == pos.epoch else 0
            pos.epoch, pos.batch_in_epoch = epoch, skip
            dataset = self._distribute(make_dataset, epoch, skip)
            step_fn = self._step_for(dataset)
            for features, labels in dataset:
                total, per_task, batch, step = self._run_step(step_fn, features, labels, pos)
                bar.update(batch)
                window.add(total, per_task)
                if pos.steps % training.log_every == 0:
                    self._report(window, label, pos, step, summary_writer)
                if on_checkpoint is not None and pos.steps % training.checkpoint_every == 0:
                    on_checkpoint(dataclasses.replace(pos, loss_sums=dict(pos.loss_sums)))
                if cap is not None and pos.steps >= cap:
                    break
                if should_stop is not None and should_stop():
                    bar.close()
                    if on_checkpoint is not None:
                        on_checkpoint(dataclasses.replace(pos, loss_sums=dict(pos.loss_sums)))
                    return pos
        bar.close()
        pos.completed = True
        return pos

    @staticmethod
    def _run_step(step_fn, features, labels, pos: DayPosition):
        """One step; ``pos`` counts it. Returns (total, per-task losses, examples, global
        step) as Python numbers; raises NonFiniteLossError before counting a NaN step."""
        total, per_task, batch, step = step_fn(features, labels)
        total = float(total)
        per_task = {k: float(v) for k, v in per_task.items()}
        step = int(step)
        if not math.isfinite(total):
            raise NonFiniteLossError(pos.day, step, pos.steps + 1, {"total": total, **per_task})
        pos.steps += 1
        pos.batch_in_epoch += 1
        fault_point("train.step")
        batch = int(batch)
        pos.examples += batch
        for k, v in {"loss": total, **per_task}.items():
            pos.loss_sums[k] = pos.loss_sums.get(k, 0.0) + v
        return total, per_task, batch, step

    def _report(self, window, label, pos, step, summary_writer) -> None:
        """The progress line (and TensorBoard scalars) of the steps since the last one:
        the total and the task losses are means over the same window of steps."""
        loss, means, rate, rows = window.close(pos.examples)
        named = {self._loss_names.get(k, k): v for k, v in means.items()}
        self._log(label, pos, step, loss, named, rate, rows)
        if summary_writer is not None:
            with summary_writer.as_default():
                scalar("train/loss", loss, step)
                scalar("train/examples_per_second", rate, step)
                for k, v in means.items():
                    scalar(f"train/loss_{k}", v, step)

    def _checkpoint_children(self, older: bool = False) -> dict:
        """What the checkpoint holds by name; ``older``: laid out as before the id maps'
        added variables (``TrainerCheckpoint``)."""
        added = set()
        if older:
            added = {id(v) for layer in self.lookup_layers for m in layer.id_maps.values() for v in m.added_variables()}
        return dict(
            model=self.model,
            dense_optimizer=self.dense_optimizer,
            embedding_optimizer=self.embedding_optimizer,
            weighting=self.weighting,
            global_step=self.global_step,
            model_state=_non_trainable_state(self.model, skip=added),
            **self._lookup_checkpoint(older),
        )

    def _lookup_checkpoint(self, older: bool = False) -> dict:
        """``{"lookups": ...}``: the id maps and lookup counters (nothing without them)."""
        state = {}
        for i, layer in enumerate(self.lookup_layers):
            state.update({f"{i}_{name}": value for name, value in layer.lookup_state(older).items()})
        return {"lookups": tf.train.Checkpoint(**state)} if state else {}

    def start_day(self, day: str) -> None:
        """Open ``day`` in the identity/dynamic lookups (before its first step; a resumed
        day was opened before its checkpoint): expired and evicted ids free their rows,
        which get fresh seeded values and reset optimizer slots. An hour (``YYYY-MM-DDTHH``)
        opens its day again: expiry and ageing count days, eviction runs at every hour."""
        number = datetime.date.fromisoformat(day[:10]).toordinal()
        for layer in self.lookup_layers:
            for owner, rows in layer.start_day(number, seed=self.config.training.seed).items():
                self._reset_slot_rows(layer.tables[owner], rows)
                logger.info("day %s: table %s: %d rows freed", day, owner, int(tf.size(rows)))

    def _reset_slot_rows(self, table, rows) -> None:
        """Reset the embedding optimizer's slots of ``rows`` of ``table`` (freed rows)."""
        reset_slot_rows(self.embedding_optimizer, table, rows)

    def lookup_report(self) -> dict:
        """Table name -> the day's figures of its identity/dynamic lookup."""
        report = {}
        for layer in self.lookup_layers:
            report.update(layer.lookup_report())
        return report

    def _step_for(self, dataset):
        """The step traced for ``dataset``'s element spec (one trace per spec, reused by
        every later epoch and day with the same spec)."""
        spec = dataset.element_spec
        key = repr(spec)
        if key not in self._step_fns:
            self._step_fns[key] = self._build_step(spec)
        return self._step_fns[key]

    def _distribute(self, make_dataset, epoch, skip):
        """One worker: global batches split over the local replicas. Several workers: each
        reads its own shard (``mtlrec.training.distribute.sharding``), one batch per replica."""
        if self.sharding.active:
            return self.strategy.distribute_datasets_from_function(
                lambda context: make_dataset(epoch, skip)
            )
        return self.strategy.experimental_distribute_dataset(make_dataset(epoch, skip))

    @staticmethod
    def _log(label, pos, step, loss, per_task, rate, rows):
        parts = " ".join(f"{k} {v:.4f}" for k, v in per_task.items())
        logger.info(
            "%sday %s step %d (global %d) loss %.4f (%s) %.0f examples/s, %s",
            f"[{label}] " if label else "",
            pos.day,
            pos.steps,
            step,
            loss,
            parts,
            rate,
            rows,
        )
