"""Shared-Bottom: hard parameter sharing."""

import keras

from mtlrec.layers.mlp import MLP
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class SharedBottom(MultiTaskModel):
    """Hard parameter sharing (Caruana 1997): y_k = t_k(f(x)), one bottom MLP f shared
    by all task towers t_k.

    Args:
        schema: the schema dict.
        tasks: list of task dicts.
        bottom_units: widths of the shared bottom MLP.
        tower_units: hidden widths of each task tower (before its output layer).
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
        bottom_units=(128, 64),
        tower_units=(32,),
        dropout=0.0,
        interaction=None,
        sequence_encoders=None,
        loss_weighting=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        self._setup(schema, tasks, interaction, loss_weighting, seed, sequence_encoders)
        bottom_units = checks.check_units("bottom_units", bottom_units, int_as_list=True)
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)
        self.bottom = MLP(
            bottom_units, dropout=dropout, seed=derive_seed(self.seed, "shared_bottom"), name="shared_bottom"
        )

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        h = self.bottom(self._embed(inputs))
        outputs = self._heads({t.name: h for t in self.task_specs}, tower_units, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.bottom_units = bottom_units
        self.tower_units = tower_units
        self.dropout = dropout

    def _balance_layer_variables(self):
        """GradNorm's W: the bottom's last layer."""
        return self.bottom.last_layer_variables()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bottom_units": list(self.bottom_units),
                "tower_units": list(self.tower_units),
                "dropout": self.dropout,
            }
        )
        return config
