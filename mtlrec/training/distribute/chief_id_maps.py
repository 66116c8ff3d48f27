"""The ``identity`` and ``dynamic`` lookups of a ``parameter_server`` run: one id map per
table, kept by the chief in the order one process would keep it.

Workers run steps asynchronously, so no step's order among them is that of the data; the
chief alone reads the day in data order (``ps_trainer``). So the chief counts each batch's
ids and admits new ones (``FeatureEmbedding.observe``) just before it schedules that batch's
step, and opens each day (expiry, eviction) before the day's first step: the maps go through
exactly the states of one process on the same days. Each map's hash table is created on
the chief (a ``MutableHashTable`` is not a variable, so the strategy does not move it to a
ps task); the workers' steps read rows from it remotely, and never write it. A row, once
given to an id, stays that id's until the next day opens, and a day opens only when no step
is in flight: no two ids ever share a row, whatever the workers' order.

What differs from one process: a step may run after the chief counted up to ``lookahead``
later batches (``ParameterServerTrainer.lookahead``), so it may read the own row of an id
that one of those batches admitted where one process would still read its OOV row.
"""

from __future__ import annotations

import tensorflow as tf


class ChiefIdMaps:
    """Counts and admissions on the chief, and the maps' copy into the chief's local model.

    Args:
        layers: the model's ``FeatureEmbedding`` layers with identity/dynamic lookups.
    """

    def __init__(self, layers):
        self.layers = list(layers)

        def observe(features):
            for layer in self.layers:
                layer.observe(layer.observed_ids(features))

        self._observe = tf.function(observe, reduce_retracing=True)

    def observe(self, features) -> None:
        """Count one batch's ids (the whole global batch, data order) and admit those due."""
        self._observe(features)

    def copy_to(self, local_model) -> None:
        """Give the same-named layers of ``local_model`` (a copy of the model on the chief,
        its weights already copied) the maps' entries: a copy of a layer copies its
        variables, not its hash tables."""
        local = {layer.name: layer for layer in local_model._flatten_layers(include_self=False)}
        for layer in self.layers:
            for owner, id_map in layer.id_maps.items():
                keys, values = id_map.table.export()
                target = local[layer.name].id_maps[owner].table
                target.remove(target.export()[0])
                target.insert(keys, values)
