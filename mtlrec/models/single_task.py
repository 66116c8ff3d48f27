"""Single-task baseline: an independent tower per task over the shared embedding."""

import keras

from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs


@keras.saving.register_keras_serializable(package="mtlrec")
class SingleTask(MultiTaskModel):
    """The single-task baseline: y_k = t_k(x), x the shared embedding vector.

    With one task it is the plain one-tower model (e.g. a CVR model trained on
    clicked rows only through the task's `sample_space`). With several tasks, each
    gets its own tower and they share nothing but the embedding tables. Funnel
    steps (tasks with a `parent`) belong to `ESMM`.

    Args:
        schema: the schema dict.
        tasks: list of task dicts (`mtlrec.Task` fields).
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
        tower_units=(64, 32),
        dropout=0.0,
        interaction=None,
        sequence_encoders=None,
        loss_weighting=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        self._setup(schema, tasks, interaction, loss_weighting, seed, sequence_encoders)
        for task in self.task_specs:
            if task.parent is not None:
                raise ValueError(
                    f"SingleTask has no funnel (use ESMM): task {task.name!r} has "
                    f"parent={task.parent!r}. Received: tasks={self.tasks!r}"
                )
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        x = self._embed(inputs)
        outputs = self._heads({t.name: x for t in self.task_specs}, tower_units, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.tower_units = tower_units
        self.dropout = dropout

    def get_config(self):
        config = super().get_config()
        config.update({"tower_units": list(self.tower_units), "dropout": self.dropout})
        return config
