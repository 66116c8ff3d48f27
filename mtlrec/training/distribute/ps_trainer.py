"""The training loop of ``training.strategy: parameter_server``: the chief schedules each
step on the workers through a ``ClusterCoordinator``.

The model is built under ``ParameterServerStrategy``: the embedding tables are split by
rows over the ps tasks (``parameter_server.TablePartitioner``), every other variable lives
whole on one ps task. A step (traced once, as in ``Trainer``) runs on whichever worker is
free: it reads the rows of its batch from the shards that hold them, takes the gradient of
each shard (``IndexedSlices`` in the shard's row numbers) and updates only those rows and
their slots on their shard (``ShardedRowOptimizer``); the dense optimizer updates the rest.
Workers run asynchronously, so the weights are not those of one process.

Data: the chief reads the day as on one machine (same order, same batches) and ships each
batch with its step; up to ``lookahead`` steps are in flight, never past the next
checkpoint, so a checkpoint holds exactly the steps before it and a resumed day skips
exactly the batches done (at the price of reading on the chief alone).

Id maps (``identity`` and ``dynamic`` lookups): the chief counts and admits each batch's ids
as it schedules the batch's step, in data order (``chief_id_maps``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
import time

import tensorflow as tf

from mtlrec.optimizers.sharded_rows import ShardedRowOptimizer, table_shards
from mtlrec.training.distribute import parameter_server
from mtlrec.training.errors import RunError
from mtlrec.training.distribute.chief_id_maps import ChiefIdMaps
from mtlrec.training.distribute.sharding import Sharding
from mtlrec.training.distribute.cluster_env import cluster_from_env
from mtlrec.training.trainer import Trainer

logger = logging.getLogger("mtlrec.training")


class ParameterServerTrainer(Trainer):
    """A ``Trainer`` on a ``ParameterServerStrategy`` (made by ``make_strategy``).

    Adds ``coordinator`` (the ``ClusterCoordinator``), ``sharded_rows`` (the tables'
    optimizer) and ``placement()`` (where each variable lives); ``local_model()`` gathers
    the shards into one model on the chief (for ``model.keras``, evaluation and export).
    """

    #: steps in flight per worker
    LOOKAHEAD_PER_WORKER = 2

    def __init__(self, config, schema: dict, strategy: tf.distribute.Strategy):
        self.coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        super().__init__(config, schema, strategy=strategy)
        self.id_maps = ChiefIdMaps(self.lookup_layers) if self.lookup_layers else None
        tables = {id(v) for v in self.embedding_variables}
        # gradients are taken per shard: a ShardedVariable has no handle of its own
        self.shared_variables = _shards_of(self.shared_variables, tables)
        self.task_variables = _shards_of(self.task_variables, tables)
        if self.balance_variables:
            self.balance_variables = _shards_of(self.balance_variables, tables)
        self._shard_table = {
            id(shard): table for table in self.embedding_variables for shard in table_shards(table)
        }
        self._is_embedding = [id(v) in self._shard_table for v in self.shared_variables + self.task_variables]
        self.checkpoint.tables = tf.train.Checkpoint(
            **{_path(t): t.value for t in self.embedding_variables}
        )
        self.checkpoint.embedding_slots = self.sharded_rows.checkpoint()
        self._local = None
        self._fetched = 0
        for table in self.embedding_variables:
            logger.info(
                "table %s: rows split over the ps tasks as %s", table.path,
                ", ".join(f"{shape[0]} on {device}" for device, shape in self.placement()[table.path]),
            )

    # ------------------------------------------------------------ hooks of Trainer

    def _data_sharding(self) -> Sharding:
        return Sharding()  # the chief reads the whole day

    def _variable_scope(self):
        return self.strategy.partitioner.tables_sharded()

    def _build_optimizers(self) -> None:
        self.embedding_optimizer.build([])  # its step counter and learning rate only
        self.sharded_rows = ShardedRowOptimizer(
            self.embedding_optimizer, self.embedding_variables, self.strategy
        )
        if self.dense_variables:
            self.dense_optimizer.build(self.dense_variables)

    def _observed_in_step(self) -> list:
        return []  # the chief counts each batch before it schedules the step (ChiefIdMaps)

    def _reset_slot_rows(self, table, rows) -> None:
        self.sharded_rows.reset_rows(table, rows)

    def _apply_embedding(self, pairs) -> None:
        by_table = collections.OrderedDict()
        for grad, shard in pairs:
            table = self._shard_table[id(shard)]
            by_table.setdefault(id(table), (table, {}))[1][id(shard)] = grad
        self.sharded_rows.apply(
            [([grads.get(id(s)) for s in table_shards(table)], table) for table, grads in by_table.values()]
        )

    # ------------------------------------------------------------ scheduling

    def train_day(self, position, make_dataset, on_checkpoint=None, **kwargs):
        self._fetched = position.steps
        self._local = None
        with _StallWatch(parameter_server.env_seconds("MTLREC_PS_STALL_WARNING")) as self._stall:
            return super().train_day(position, make_dataset, on_checkpoint, **kwargs)

    def _distribute(self, make_dataset, epoch, skip):
        return _Scheduled(self, make_dataset(epoch, skip))

    def _step_for(self, scheduled):
        step_fn = super()._step_for(scheduled.dataset)
        scheduled.step_fn = step_fn

        def fetch(remote, _):
            self._fetched += 1
            with unavailable_as_run_error(), self._stall.waiting():
                return remote.fetch()

        return fetch

    def _next_boundary(self) -> int:
        """The last step of the day that may be scheduled now: the next checkpoint (or the
        day's cap), so that no step past a checkpoint runs before it is written."""
        training = self.config.training
        every = training.checkpoint_every
        boundary = (self._fetched // every + 1) * every
        if training.steps_per_day is not None:
            boundary = min(boundary, training.steps_per_day)
        return boundary

    @property
    def lookahead(self) -> int:
        return self.LOOKAHEAD_PER_WORKER * max(len(cluster_from_env().get("worker", [])), 1)

    # ------------------------------------------------------------ after training

    def placement(self) -> dict:
        """Variable path -> ``[(device, shape), ...]`` of its shards (one for a whole variable)."""
        return {
            v.path: [(s.device, tuple(s.shape.as_list())) for s in table_shards(v)] for v in self.model.weights
        }

    def local_model(self):
        """A copy of the model on this process with every shard gathered (built once per
        day, at its first use after training)."""
        if self._local is None:
            local = type(self.model).from_config(self.model.get_config())
            wanted = {v.path: v for v in self.model.weights}
            for variable in local.weights:
                variable.assign(tf.convert_to_tensor(wanted[variable.path].value))
            if self.id_maps is not None:
                self.id_maps.copy_to(local)
            self._local = local
        return self._local


class _Scheduled:
    """The steps of one epoch of a day, scheduled on the workers ahead of the loop that
    reads their results: iterating yields ``(remote results, None)`` per batch, in order."""

    def __init__(self, trainer: ParameterServerTrainer, dataset):
        self.trainer = trainer
        self.dataset = dataset
        self.element_spec = dataset.element_spec
        self.step_fn = None

    def __iter__(self):
        trainer = self.trainer
        batches = iter(self.dataset)
        queue = collections.deque()
        exhausted = False
        while True:
            limit = min(trainer.lookahead, trainer._next_boundary() - trainer._fetched)
            while not exhausted and len(queue) < limit:
                try:
                    features, labels = next(batches)
                except StopIteration:
                    exhausted = True
                    break
                if trainer.id_maps is not None:  # admissions in data order, before the step reads them
                    trainer.id_maps.observe(features)
                with unavailable_as_run_error():
                    queue.append(trainer.coordinator.schedule(self.step_fn, args=(features, labels)))
            if not queue:
                return
            yield queue.popleft(), None


class _StallWatch:
    """Logs a line every ``interval`` seconds that the chief has waited for one step's
    result: which tasks do not answer, and what to do.

    A dead worker is not an error to TensorFlow's coordinator: it runs that worker's steps
    on the others, and once no worker is left it waits until every worker answers again
    (it reconnects the whole cluster, not one task), silently. This says so while it waits.
    """

    def __init__(self, interval: float):
        self.interval = interval
        self._since = None  # when the step now awaited was asked for; None between steps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mtlrec-stall-watch", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def waiting(self):
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _watch(self):
        awaited, warnings = None, 0  # the step now awaited (when it was asked for), its warnings
        while not self._stop.wait(min(self.interval, 1.0)):
            since = self._since
            if since is None:
                continue
            if since != awaited:
                awaited, warnings = since, 0
            waited = time.monotonic() - since
            if waited < self.interval * (warnings + 1):
                continue
            warnings += 1
            down = parameter_server.unreachable_tasks(cluster_from_env())
            logger.warning(
                "parameter_server cluster: no step finished for %.0f s; %s", waited,
                f"not answering: {down}; TensorFlow's coordinator waits until every worker answers: "
                "restart each dead task with its TF_CONFIG (same address), the day goes on where it stopped"
                if down else "every task answers (a slow step?)",
            )


# what a restarted worker answers for a dataset or function the chief had placed on it before
_RESTARTED_TASK = "Unable to find the relevant tensor remote_handle"


@contextlib.contextmanager
def unavailable_as_run_error():
    """A task of the cluster that went away (or came back without this chief's state on it),
    as one ``RunError``."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as err:
        raise RunError(_task_error("a task stopped answering", "restart it and run", err)) from None
    except tf.errors.InvalidArgumentError as err:
        if _RESTARTED_TASK not in str(err):
            raise
        raise RunError(_task_error("a task restarted while this chief ran", "run", err)) from None


def _task_error(what_happened: str, remedy: str, err) -> str:
    text = str(err)
    task = re.search(r"remote target (/job:\w+/replica:\d+/task:\d+)", text)
    detail = re.search(r"(UNAVAILABLE|CANCELLED|ABORTED|INVALID_ARGUMENT):[^\n]*", text)
    what = ", ".join(m.group(0 if m is detail else 1)[:200] for m in (task, detail) if m) or type(err).__name__
    return (f"parameter_server cluster: {what_happened} ({what}); {remedy} the same command on the "
            "chief: it resumes from the newest checkpoint")


def _shards_of(variables, tables):
    """``variables`` with each table (its id in ``tables``) replaced by its shards."""
    out = []
    for v in variables:
        out.extend(table_shards(v) if id(v) in tables else [v])
    return out


def _path(variable) -> str:
    return variable.path.replace("/", ".")


def trainer_class(strategy):
    """``ParameterServerTrainer`` for a ``ParameterServerStrategy``, else ``Trainer``."""
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        return ParameterServerTrainer
    return Trainer
