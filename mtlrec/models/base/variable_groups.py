"""The trainable variables of a multi-task model, grouped by who uses them."""

from __future__ import annotations

import dataclasses
import types
from typing import Mapping


def _unique(variables) -> tuple:
    seen, out = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            out.append(variable)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class VariableGroups:
    """What `MultiTaskModel.variable_groups()` returns: the model's trainable variables by
    role, declared by the model (never guessed from variable names). A partition of the
    model's trainable variables less the loss weighting's own (`UncertaintyWeighting`'s
    log-variances), each variable once, each list in the model's order.

    Attributes:
        embedding_tables: the `FeatureEmbedding` tables (row-sparse gradients; the
            embedding optimizer updates them, a parameter-server trainer shards them).
        shared: every other variable that all tasks' losses reach (interaction block,
            backbone: experts, gates, stitches, the bottom).
        task: task name -> the variables of the layers serving that task (its tower and
            the model's other per-task layers); every task has an entry. Other tasks' losses
            may reach them too: a funnel parent's tower feeds its steps' joint outputs
            (pCTCVR = pCTR x pCVR), so PCGrad projects the tasks' conflict there as well.
        balance_layer: GradNorm's W, the variables of the last layer all tasks share
            (a subset of `embedding_tables + shared`); empty: GradNorm balances on all of them.
        task_order: the variables of `task`, each once, in the order the trainer gives
            them to the optimizers: towers first, then the model's other per-task
            layers. A checkpoint keys optimizer slots by this position: never reorder.
    """

    embedding_tables: tuple
    shared: tuple
    task: Mapping[str, tuple]
    balance_layer: tuple
    task_order: tuple

    @classmethod
    def of(cls, embedding_tables, task_layers, trainable, excluded=(), balance_layer=()):
        """The groups of a model: its `embedding_tables`; `task_layers`, (task name, layer)
        pairs in the fixed order; `trainable`, all its trainable variables (what is neither
        a table, a task variable nor `excluded` is shared)."""
        tables = _unique(embedding_tables)
        task, order = {}, []
        for name, layer in task_layers:
            task.setdefault(name, [])
            for variable in layer.trainable_variables:
                task[name].append(variable)
                order.append(variable)
        order = _unique(order)
        taken = {id(v) for v in tables + order} | {id(v) for v in excluded}
        shared = _unique(v for v in trainable if id(v) not in taken)
        return cls(
            embedding_tables=tables,
            shared=shared,
            task=types.MappingProxyType({k: _unique(v) for k, v in task.items()}),
            balance_layer=_unique(balance_layer),
            task_order=order,
        )

    @property
    def all_shared(self) -> tuple:
        """`embedding_tables + shared`: what every task's loss reaches (the model builds
        its tables first, so this is the model's order)."""
        return self.embedding_tables + self.shared
