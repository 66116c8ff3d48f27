"""Soft parameter sharing: one column per task, L2 penalty between the columns."""

import keras
from keras import ops

from mtlrec.layers.mlp import MLP
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class SoftSharing(MultiTaskModel):
    """Soft parameter sharing, the "L2-constrained" baseline of the MMoE paper
    (Duong et al. 2015; Ma et al., KDD 2018).

    Task k has its own column MLP with parameters theta_k (same shapes for every
    task); the columns are tied by

        penalty = distance_penalty * sum_{k < l} sum_layers ||theta_k - theta_l||_2^2

    (kernels and biases of corresponding layers). The penalty is part of
    `model.losses`, so both `compute_loss` (model.fit) and a trainer that adds
    `model.losses` optimise it. The towers (if any) are not tied.

    Args:
        schema: the schema dict.
        tasks: list of at least two task dicts.
        column_units: widths of the hidden layers of every column.
        tower_units: hidden widths of each task tower (before its output layer).
        distance_penalty: the L2 factor on the column distance (>= 0).
        dropout: dropout rate of the hidden layers.
        interaction: None, `{"type": "fm"}`, `{"type": "dot"}` or `{"type": "dcn", ...}`.
        sequence_encoders: None (each behavior history mean-pooled) or history name ->
            encoder (`mean`, `target_attention`, `self_attention`, `property_gated_lstm`;
            see `mtlrec.models.base.history_specs`).
        loss_weighting: None (fixed task weights) or `{"type": "uncertainty"}`.
        seed: optional int for the initializers.
    """

    def __init__(
        self,
        schema,
        tasks,
        column_units=(64, 32),
        tower_units=(),
        distance_penalty=1e-3,
        dropout=0.0,
        interaction=None,
        sequence_encoders=None,
        loss_weighting=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        self._setup(schema, tasks, interaction, loss_weighting, seed, sequence_encoders)
        if len(self.task_specs) < 2:
            raise ValueError(
                f"SoftSharing ties task columns and needs at least two tasks. "
                f"Received: tasks={self.tasks!r}"
            )
        column_units = checks.check_units("column_units", column_units, int_as_list=True)
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        distance_penalty = checks.check_non_negative("distance_penalty", distance_penalty)
        dropout = checks.check_rate("dropout", dropout)
        names = [t.name for t in self.task_specs]
        self.columns = [
            MLP(
                column_units,
                dropout=dropout,
                seed=derive_seed(self.seed, f"{name}_column"),
                name=f"{name}_column",
            )
            for name in names
        ]

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        x = self._embed(inputs)
        hidden = {name: column(x) for name, column in zip(names, self.columns)}
        outputs = self._heads(hidden, tower_units, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.column_units = column_units
        self.tower_units = tower_units
        self.distance_penalty = distance_penalty
        self.dropout = dropout

    def column_distance(self):
        """sum_{k < l} sum_i ||theta_k,i - theta_l,i||^2 over corresponding column
        variables (without the factor)."""
        columns = [c.trainable_variables for c in getattr(self, "columns", [])]
        total = ops.zeros((), dtype="float32")
        for k in range(len(columns)):
            for other in columns[k + 1 :]:
                for a, b in zip(columns[k], other):
                    total = total + ops.sum(ops.square(ops.cast(a, "float32") - ops.cast(b, "float32")))
        return total

    @property
    def losses(self):
        losses = super().losses
        if getattr(self, "distance_penalty", 0.0) > 0 and getattr(self, "built", False):
            losses = losses + [self.distance_penalty * self.column_distance()]
        return losses

    def _task_layers(self):
        # A column serves one task; only the penalty links them.
        return [(t.name, c) for t, c in zip(self.task_specs, self.columns)] + super()._task_layers()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "column_units": list(self.column_units),
                "tower_units": list(self.tower_units),
                "distance_penalty": self.distance_penalty,
                "dropout": self.dropout,
            }
        )
        return config
