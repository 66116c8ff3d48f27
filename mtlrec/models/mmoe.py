"""MMoE: Multi-gate Mixture-of-Experts."""

import keras

from mtlrec.layers.experts.mixture_of_experts import MixtureOfExperts
from mtlrec.layers.experts._gate_config import check_gate
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.model_format import MODEL_FORMAT, READABLE_FORMATS
from mtlrec.models.base.multi_task_model import MultiTaskModel, all_inputs_numeric, schema_inputs
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class MMoE(MultiTaskModel):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

    Experts f_i(x), i = 1..n, shared by all tasks; task k mixes them with its own gate
    g^k(x) = softmax(W_k x): h^k = sum_i g^k_i(x) f_i(x), y_k = t_k(h^k).
    `gate_model()` exposes the gate weights.

    Args:
        schema: the schema dict.
        tasks: list of task dicts.
        num_experts: n.
        expert_units: layer widths of each expert.
        tower_units: hidden widths of each task tower (before its output layer).
        dropout: dropout rate inside the experts and towers.
        interaction: None, `{"type": "fm"}`, `{"type": "dot"}` or `{"type": "dcn", ...}`.
        sequence_encoders: None (each behavior history mean-pooled) or history name ->
            encoder (`mean`, `target_attention`, `self_attention`, `property_gated_lstm`;
            see `mtlrec.models.base.history_specs`).
        loss_weighting: None (fixed task weights) or `{"type": "uncertainty"}`.
        gate: None (softmax gates) or `{"type": "dselect_k", "k": 2}` (DSelect-k gates,
            options `gamma`, `entropy_reg`; see `mtlrec.layers.DSelectKGate`).
        expert_batch_norm: batch-normalise the experts' pre-activations. None (default):
            only when every input is numeric (no categorical or sequence feature). On
            dense inputs it keeps MMoE from stalling (the MMoE paper's synthetic task);
            on embedding inputs it cost 0.01 to 0.03 AUC on the CVR and CTCVR of the
            funnel benchmark (docs/results/quality.md, "MMoE's experts and batch norm").
        seed: optional int for the initializers.
    """

    def __init__(
        self,
        schema,
        tasks,
        num_experts=4,
        expert_units=(64,),
        tower_units=(32,),
        dropout=0.0,
        interaction=None,
        sequence_encoders=None,
        loss_weighting=None,
        gate=None,
        expert_batch_norm=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        self._setup(schema, tasks, interaction, loss_weighting, seed, sequence_encoders)
        num_experts = checks.check_positive_int("num_experts", num_experts)
        expert_units = checks.check_units("expert_units", expert_units, int_as_list=True)
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)
        gate = check_gate(gate)
        if expert_batch_norm is None:
            expert_batch_norm = all_inputs_numeric(self._parsed_schema)
        expert_batch_norm = checks.check_bool("expert_batch_norm", expert_batch_norm)
        self.mixture = MixtureOfExperts(
            num_experts,
            expert_units,
            num_tasks=len(self.task_specs),
            dropout=dropout,
            return_gate_weights=True,
            gate=gate,
            batch_norm=expert_batch_norm,
            seed=derive_seed(self.seed, "mixture_of_experts"),
            name="mixture_of_experts",
        )

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        mixed, gate_weights = self.mixture(self._embed(inputs))
        names = [t.name for t in self.task_specs]
        outputs = self._heads(dict(zip(names, mixed)), tower_units, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_experts = num_experts
        self.expert_units = expert_units
        self.tower_units = tower_units
        self.dropout = dropout
        self.gate = gate
        self.expert_batch_norm = expert_batch_norm
        # Symbolic tensors for gate_model(); not state, so kept out of Keras tracking.
        object.__setattr__(self, "_gate_tensors", dict(zip(names, gate_weights)))

    def gate_model(self):
        """A model from the same inputs to `{task: (B, num_experts)}` gate weights."""
        return keras.Model(self.input, dict(self._gate_tensors), name=f"{self.name}_gates")

    def _balance_layer_variables(self):
        """GradNorm's W: the output layer of every expert (the last layer the tasks
        share; the gates are per task)."""
        return [v for e in self.mixture.experts for v in e.last_layer_variables()]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": list(self.expert_units),
                "tower_units": list(self.tower_units),
                "dropout": self.dropout,
                "gate": dict(self.gate),
                "expert_batch_norm": self.expert_batch_norm,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # files of model format 3 record no expert_batch_norm: their experts always had it
        return cls(**{"expert_batch_norm": True, **config})

    def readable_model_formats(self):
        # format 3 differs from 4 only in MMoE's expert batch norm, always on in format 3
        return READABLE_FORMATS if self.expert_batch_norm else (MODEL_FORMAT,)
