"""Cross-stitch network: one column per task, cross-stitch units between layers."""

import keras

from mtlrec.layers.sharing.cross_stitch import CrossStitch
from mtlrec.layers.mlp import MLP
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class CrossStitchNet(MultiTaskModel):
    """Cross-stitch networks (Misra et al., CVPR 2016).

    Each task k has its own column of dense layers; after every hidden layer a
    `CrossStitch` unit mixes the K columns, [x~_1..x~_K] = A [x_1..x_K] with A
    initialised to a_kk = self_weight, a_kl = (1 - self_weight) / (K - 1). Each
    column's last output feeds its task tower. Needs at least two tasks.

    Args:
        schema: the schema dict.
        tasks: list of at least two task dicts.
        column_units: widths of the hidden layers of every column.
        tower_units: hidden widths of each task tower (before its output layer).
        self_weight: initial a_kk of the cross-stitch units.
        per_channel: one K x K mixing matrix per channel.
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
        self_weight=0.9,
        per_channel=False,
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
                f"CrossStitchNet links task columns and needs at least two tasks. "
                f"Received: tasks={self.tasks!r}"
            )
        column_units = checks.check_units("column_units", column_units, int_as_list=True)
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)
        names = [t.name for t in self.task_specs]
        self.columns = [
            [
                MLP(
                    [width],
                    dropout=dropout,
                    seed=derive_seed(self.seed, f"{name}_column_{depth}"),
                    name=f"{name}_column_{depth}",
                )
                for depth, width in enumerate(column_units)
            ]
            for name in names
        ]
        self.stitches = [
            CrossStitch(self_weight=self_weight, per_channel=per_channel, name=f"cross_stitch_{depth}")
            for depth in range(len(column_units))
        ]

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        x = self._embed(inputs)
        hidden = [x] * len(names)
        for depth, stitch in enumerate(self.stitches):
            hidden = stitch([column[depth](h) for column, h in zip(self.columns, hidden)])
        outputs = self._heads(dict(zip(names, hidden)), tower_units, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.column_units = column_units
        self.tower_units = tower_units
        self.self_weight = self_weight
        self.per_channel = per_channel
        self.dropout = dropout

    def _balance_layer_variables(self):
        """GradNorm's W: the last cross-stitch unit."""
        return list(self.stitches[-1].trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "column_units": list(self.column_units),
                "tower_units": list(self.tower_units),
                "self_weight": self.self_weight,
                "per_channel": self.per_channel,
                "dropout": self.dropout,
            }
        )
        return config
