"""ESMM: Entire Space Multi-task Model."""

import keras

from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs

DEFAULT_TASKS = (
    {"name": "ctr", "label": "click"},
    {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"},
)


@keras.saving.register_keras_serializable(package="mtlrec")
class ESMM(MultiTaskModel):
    """Entire Space Multi-task Model (Ma et al., SIGIR 2018).

    A CTR tower and a CVR tower over the shared embedding; the model outputs
    `ctr`, `cvr` and `ctcvr` = pCTR x pCVR. Both trained quantities live on the
    entire impression space:

        L = BCE(pCTR, click) + BCE(pCTR x pCVR, click AND conversion)

    so pCVR is learned without the sample-selection bias of training on clicked
    rows only (the conditional `cvr` output gets no loss of its own; `Task` with a
    `parent` routes its loss to the joint output). A longer funnel chain
    (impression -> click -> cart -> buy) is a chain of `parent`s: each step has its
    own tower and outputs its conditional and the product down to it.

    Args:
        schema: the schema dict.
        tasks: list of task dicts, at least one with a `parent`; default
            `ctr` (click) -> `cvr` (conversion) with the joint output `ctcvr`.
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
        tasks=None,
        tower_units=(64, 32),
        dropout=0.0,
        interaction=None,
        sequence_encoders=None,
        loss_weighting=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        if tasks is None:
            tasks = [dict(t) for t in DEFAULT_TASKS]
        self._setup(schema, tasks, interaction, loss_weighting, seed, sequence_encoders)
        if not any(t.parent is not None for t in self.task_specs):
            raise ValueError(
                "ESMM needs a funnel: at least one task with a parent (e.g. "
                "{'name': 'cvr', 'label': 'conversion', 'parent': 'ctr', 'joint': 'ctcvr'}). "
                f"Received: tasks={self.tasks!r}"
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
