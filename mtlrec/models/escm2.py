"""ESCM²: Entire Space Counterfactual Multi-task Model."""

import keras
import numpy as np
from keras import ops

from mtlrec.conventions.key_paths import ArgumentError
from mtlrec.layers.mlp import MLP
from mtlrec.losses.functions import binary_crossentropy_from_logits
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.esmm import DEFAULT_TASKS
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.conventions.seeding import derive_seed
from mtlrec.tasks import logit_name

VARIANTS = ("ips", "dr")
RISK = "counterfactual_cvr"
IMPUTATION = "imputation"


@keras.saving.register_keras_serializable(package="mtlrec")
class ESCM2(MultiTaskModel):
    """Entire Space Counterfactual Multi-task Model (Wang et al., SIGIR 2022).

    ESMM (CTR and CVR towers over the shared embedding, pCTCVR = pCTR x pCVR learned on
    all impressions) plus a counterfactual risk on the CVR tower that removes the bias
    of learning CVR where clicks were observed. With o the click label, r the conversion
    label, e = BCE(r, pCVR) the CVR error (from the CVR tower's logit) and the propensity p^ = pCTR (from the CTR
    tower, clipped below at `propensity_clip`, no gradient), over all N impressions:

        IPS:  R = 1/N sum_i o_i e_i / p^_i
        DR:   R = 1/N sum_i [ e^_i + o_i (e_i - e^_i) / p^_i ]
              L_imp = 1/N sum_i o_i (e_i - e^_i)^2 / p^_i

    where e^ is an imputation tower's estimate of the error (DR only; e^ is held fixed
    in R and e is held fixed in L_imp, the usual alternating DR updates in one step).
    The objective is

        L = L_CTR + w_cvr L_CTCVR + lambda_c (R [+ L_imp])

    with L_CTR and L_CTCVR the ESMM task losses and lambda_c = `counterfactual_weight`.
    R and L_imp are `auxiliary_losses()` ("counterfactual_cvr", "imputation"). The DR
    model also outputs e^ under `<cvr>_imputation`; it is not among `probability_names()`,
    so export and `predict` leave it out.

    Args:
        schema: the schema dict.
        tasks: task dicts with exactly one funnel step (a task with a `parent` that has
            none itself): its parent is the CTR task; default `ctr` (click) -> `cvr`
            (conversion) with the joint `ctcvr`.
        variant: "ips" or "dr".
        counterfactual_weight: lambda_c >= 0.
        propensity_clip: lower bound of p^ in (0, 1] (caps the weights 1/p^). Each day's
            evaluation reports the share of impressions, and of clicked ones, it clips
            (`evaluation_counts`). At a CTR of 2% the default 0.05 clips most impressions
            and about half the clicked ones; still, on the synthetic funnel it gave a
            next-day CVR AUC better than, or within the spread over seeds of, 0.01, 0.001
            and no clip (`benchmarks/escm2_propensity_clip.py`).
        tower_units: hidden widths of each tower (the imputation tower's too).
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
        variant="dr",
        counterfactual_weight=0.5,
        propensity_clip=0.05,
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
        by_name = {t.name: t for t in self.task_specs}
        steps = [t for t in self.task_specs if t.parent is not None]
        if len(steps) != 1 or by_name[steps[0].parent].parent is not None:
            raise ValueError(
                "ESCM2 needs exactly one funnel step: a CVR task whose parent (the CTR task) "
                "has no parent, e.g. {'name': 'cvr', 'label': 'conversion', 'parent': 'ctr', "
                f"'joint': 'ctcvr'}}. Received: tasks={self.tasks!r}"
            )
        if variant not in VARIANTS:
            raise ArgumentError("variant", f"Expected variant to be one of {VARIANTS}. Received: variant={variant!r}")
        counterfactual_weight = checks.check_non_negative("counterfactual_weight", counterfactual_weight)
        if (
            isinstance(propensity_clip, bool)
            or not isinstance(propensity_clip, (int, float))
            or not 0 < propensity_clip <= 1
        ):
            raise ArgumentError(
                "propensity_clip",
                "Expected propensity_clip to be a number in (0, 1]. "
                f"Received: propensity_clip={propensity_clip!r}"
            )
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)
        self._cvr_task = steps[0]
        self._ctr_task = by_name[steps[0].parent]
        self.imputation_tower = None
        if variant == "dr":
            self.imputation_tower = MLP(
                list(tower_units) + [1],
                dropout=dropout,
                output_activation="softplus",  # an error estimate: e^ >= 0
                seed=derive_seed(self.seed, f"{self._cvr_task.name}_imputation_tower"),
                name=f"{self._cvr_task.name}_imputation_tower",
            )

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        x = self._embed(inputs)
        outputs = self._heads({t.name: x for t in self.task_specs}, tower_units, dropout)
        if self.imputation_tower is not None:
            name = self.imputation_name
            outputs[name] = keras.layers.Reshape((), name=name)(self.imputation_tower(x))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.variant = variant
        self.counterfactual_weight = counterfactual_weight
        self.propensity_clip = float(propensity_clip)
        self.tower_units = tower_units
        self.dropout = dropout

    @property
    def imputation_name(self):
        """The output key of the DR imputation tower's error estimate e^."""
        return f"{self._cvr_task.name}_imputation"

    def _cvr_error(self, labels, outputs):
        """e = BCE(conversion, pCVR) per row, from the CVR tower's logit."""
        conversion = ops.reshape(ops.cast(labels[self._cvr_task.label], "float32"), (-1,))
        z_cvr = ops.reshape(ops.cast(outputs[logit_name(self._cvr_task.name)], "float32"), (-1,))
        return binary_crossentropy_from_logits(conversion, z_cvr)

    def auxiliary_losses(self, labels, outputs):
        """lambda_c R ("counterfactual_cvr") and, for DR, lambda_c L_imp ("imputation")."""
        click = ops.reshape(ops.cast(labels[self._ctr_task.label], "float32"), (-1,))
        p_ctr = ops.reshape(ops.cast(outputs[self._ctr_task.name], "float32"), (-1,))
        propensity = ops.stop_gradient(ops.clip(p_ctr, self.propensity_clip, 1.0))
        error = self._cvr_error(labels, outputs)
        if self.variant == "ips":
            return {RISK: self.counterfactual_weight * ops.mean(click * error / propensity)}
        imputed = ops.reshape(ops.cast(outputs[self.imputation_name], "float32"), (-1,))
        fixed = ops.stop_gradient(imputed)
        risk = ops.mean(fixed + click * (error - fixed) / propensity)
        imputation = ops.mean(click * ops.square(ops.stop_gradient(error) - imputed) / propensity)
        return {
            RISK: self.counterfactual_weight * risk,
            IMPUTATION: self.counterfactual_weight * imputation,
        }

    def evaluation_counts(self, labels, predictions):
        """What an evaluation reports of the propensity clip, from one batch (numpy):
        ``{(cvr, "propensity_clipped_share"): (impressions with pCTR < propensity_clip,
        impressions), (cvr, "propensity_clipped_share_clicked"): (the same among clicked
        impressions, clicked impressions)}``; a clicked one's IPS weight 1/p^ is capped
        at 1/propensity_clip (``mtlrec.training.evaluation.evaluate_model`` sums them
        over the day into the CVR task's metrics)."""
        p_ctr = np.asarray(predictions[self._ctr_task.name], dtype=np.float64).reshape(-1)
        clicked = np.asarray(labels[self._ctr_task.label]).reshape(-1) == 1
        clipped = p_ctr < self.propensity_clip
        name = self._cvr_task.name
        return {
            (name, "propensity_clipped_share"): (int(clipped.sum()), int(clipped.size)),
            (name, "propensity_clipped_share_clicked"): (int((clipped & clicked).sum()), int(clicked.sum())),
        }

    def _task_layers(self):
        extra = [] if self.imputation_tower is None else [(self._cvr_task.name, self.imputation_tower)]
        return super()._task_layers() + extra

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "variant": self.variant,
                "counterfactual_weight": self.counterfactual_weight,
                "propensity_clip": self.propensity_clip,
                "tower_units": list(self.tower_units),
                "dropout": self.dropout,
            }
        )
        return config
