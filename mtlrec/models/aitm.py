"""AITM: Adaptive Information Transfer Multi-task model."""

import keras
from keras import ops

from mtlrec.layers.sharing.information_transfer import InformationTransfer
from mtlrec.layers.mlp import MLP
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.conventions.seeding import derive_seed

DEFAULT_TASKS = (
    {"name": "ctr", "label": "click"},
    {"name": "ctcvr", "label": "conversion"},
)
CALIBRATION = "calibration"


@keras.saving.register_keras_serializable(package="mtlrec")
class AITM(MultiTaskModel):
    """Adaptive Information Transfer Multi-task model (Xi et al., KDD 2021).

    The tasks, in order, are the steps of a conversion funnel (impression -> click ->
    purchase, or longer), each a binary task over the entire impression space (a
    purchase label is click AND purchase). Over the shared embedding x, step t has its
    own tower q_t = f_t(x); from the second step on, what it learns from step t - 1
    passes through the Adaptive Information Transfer module (`InformationTransfer`):

        z_1 = q_1,   z_t = AIT(z_{t-1}, q_t),   y_t = sigmoid(w_t . z_t + b_t)

    (the heads output logits; the `ctr`, `ctcvr`, ... outputs are their sigmoids) and the
    behavioural expectation calibrator adds to the loss

        L = sum_t BCE(y_t, label_t) + lambda * sum_{t >= 2} mean(max(y_t - y_{t-1}, 0))

    so a later step's probability is pushed not to exceed the earlier one's
    (p(purchase) <= p(click)). The calibrator is `auxiliary_losses()["calibration"]`.

    Args:
        schema: the schema dict.
        tasks: two or more binary task dicts without `parent`, in funnel order; default
            `ctr` (click) -> `ctcvr` (conversion).
        tower_units: widths of each step's tower f_t (the last is the width of z_t).
        lambda_: the calibrator's weight, >= 0 (config key `lambda`).
        dropout: dropout rate inside the towers.
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
        lambda_=0.6,
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
        specs = self.task_specs
        if len(specs) < 2 or any(t.kind != "binary" or t.parent is not None for t in specs):
            raise ValueError(
                "AITM needs a funnel of two or more binary tasks without `parent`, in order "
                "(e.g. ctr on click, then ctcvr on conversion). "
                f"Received: tasks={self.tasks!r}"
            )
        if CALIBRATION in {t.name for t in specs}:
            raise ValueError(f"AITM reserves the loss name {CALIBRATION!r}. Received: tasks={self.tasks!r}")
        tower_units = checks.check_units("tower_units", tower_units, int_as_list=True)
        lambda_ = checks.check_non_negative("lambda", lambda_)
        dropout = checks.check_rate("dropout", dropout)
        self.representations = [
            MLP(
                tower_units,
                dropout=dropout,
                seed=derive_seed(self.seed, f"{t.name}_representation"),
                name=f"{t.name}_representation",
            )
            for t in specs
        ]
        self.transfers = [
            InformationTransfer(
                seed=derive_seed(self.seed, f"{t.name}_information_transfer"),
                name=f"{t.name}_information_transfer",
            )
            for t in specs[1:]
        ]

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        x = self._embed(inputs)
        z = [self.representations[0](x)]
        for representation, transfer in zip(self.representations[1:], self.transfers):
            z.append(transfer([z[-1], representation(x)]))
        outputs = self._heads({t.name: h for t, h in zip(specs, z)}, [], dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.tower_units = tower_units
        self.lambda_ = lambda_
        self.dropout = dropout

    def auxiliary_losses(self, labels, outputs):
        """{"calibration": lambda * sum_{t >= 2} mean(max(y_t - y_{t-1}, 0))}."""
        names = [t.name for t in self.task_specs]
        penalty = 0.0
        for earlier, later in zip(names, names[1:]):
            gap = ops.reshape(outputs[later], (-1,)) - ops.reshape(outputs[earlier], (-1,))
            penalty = penalty + ops.mean(ops.relu(ops.cast(gap, "float32")))
        return {CALIBRATION: self.lambda_ * penalty}

    def _task_layers(self):
        # Task k's representation also feeds the later tasks through their transfers;
        # it is grouped with the task it is named after (its own head).
        names = [t.name for t in self.task_specs]
        return (
            super()._task_layers()
            + list(zip(names, self.representations))
            + list(zip(names[1:], self.transfers))
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tower_units": list(self.tower_units),
                "lambda_": self.lambda_,
                "dropout": self.dropout,
            }
        )
        return config
