"""How much each row counts in each task's loss and metrics.

Two things weigh a row, both declared on the tasks (``mtlrec.tasks.Task``):

- ``sample_weight``: a column of finite non-negative weights, read per row.
- negative downsampling, declared on one binary task D at the top of its funnel: the data
  kept only a share of D's negatives (rows of D's space with D's label 0), either one
  rate w (``negative_keep_rate``) or each row's own rate w_i
  (``negative_keep_rate_column``). A kept negative stands for 1 / w of them.

What a row weighs, for a task T (1 where nothing applies):

- in the metrics of every output: ``s_T x f``, with s_T the row's sample weight and the
  importance factor f = 1 / w (or 1 / w_i) on D's negatives, 1 elsewhere: the metrics of
  a downsampled day estimate those of the full traffic;
- in T's loss: the same, except that with one rate w, D and the funnel steps below it
  (whose chain of parents holds D) learn the downsampled data as it is and get no
  factor: their probabilities are corrected afterwards, as the served ones are (He et al.
  2014, ``mtlrec.models.base.downsampling_correction``). A pCTR learned on the kept rows
  is p' = p / (p + (1 - p) w), and an ESMM's pCTCVR on them is p' x pCVR with pCVR
  unbiased, since every clicked row was kept. Tasks outside D's funnel (a "like" over
  every row) cannot be corrected afterwards: they get the factor. A rate column has no
  single w to correct with when serving, so there every task gets the factor and learns
  the full traffic directly.

The functions take ``flatten``, which turns a column into a float (N,) vector of the
caller's kind (``keras.ops`` tensors in a loss, numpy arrays in the metrics); the
arithmetic is the same for both.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from mtlrec.tasks import Task, funnel_chain, require


def downsampled_task(tasks: Iterable[Task]) -> Task | None:
    """The task declaring negative downsampling (at most one does), or None."""
    return next((t for t in tasks if t.downsampled), None)


def in_funnel_of(task: Task, top: Task, tasks: Iterable[Task]) -> bool:
    """Whether ``top`` is ``task`` or on its chain of parents."""
    return any(t.name == top.name for t in funnel_chain(task, list(tasks)))


def weight_columns(tasks: Iterable[Task]) -> list[str]:
    """The columns the row weights read (sample weights, then a keep-rate column), each
    once, in task order."""
    names = []
    for task in tasks:
        for name in (task.sample_weight, task.negative_keep_rate_column):
            if name is not None and name not in names:
                names.append(name)
    return names


def importance_factor(tasks: Iterable[Task], labels: Mapping, flatten: Callable, for_task: str):
    """1 / w on the downsampled task's negatives, 1 on every other row; None without
    downsampling. ``for_task`` names the task asking, for messages."""
    tasks = list(tasks)
    top = downsampled_task(tasks)
    if top is None:
        return None
    negative = 1.0 - flatten(require(labels, top.label, "label", for_task))
    if top.sample_space is not None:
        negative = negative * flatten(require(labels, top.sample_space, "sample_space label", for_task))
    if top.negative_keep_rate is not None:
        return 1.0 + (1.0 / top.negative_keep_rate - 1.0) * negative
    rate = flatten(require(labels, top.negative_keep_rate_column, "keep-rate column", for_task))
    return 1.0 + (1.0 / rate - 1.0) * negative


def _times(weight, factor):
    if factor is None:
        return weight
    return factor if weight is None else weight * factor


def sample_weights(task: Task, labels: Mapping, flatten: Callable):
    """The task's sample weight column as a vector, None without one."""
    if task.sample_weight is None:
        return None
    return flatten(require(labels, task.sample_weight, "sample weight column", task.name))


def metric_weights(task: Task, tasks: Iterable[Task], labels: Mapping, flatten: Callable):
    """(N,) weights of the rows in the metrics of ``task``'s outputs, None when every row
    weighs 1 (see the module docstring)."""
    return _times(sample_weights(task, labels, flatten), importance_factor(tasks, labels, flatten, task.name))


def loss_weights(task: Task, tasks: Iterable[Task], labels: Mapping, flatten: Callable):
    """(N,) weights of the rows in ``task``'s loss, None when every row weighs 1 (see the
    module docstring: with one keep rate, the downsampled task's funnel gets no factor)."""
    tasks = list(tasks)
    weight = sample_weights(task, labels, flatten)
    top = downsampled_task(tasks)
    if top is None or (top.negative_keep_rate is not None and in_funnel_of(task, top, tasks)):
        return weight
    return _times(weight, importance_factor(tasks, labels, flatten, task.name))
