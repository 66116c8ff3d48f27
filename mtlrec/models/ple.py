"""PLE: Progressive Layered Extraction."""

import keras

from mtlrec.layers.experts.cgc import CGC
from mtlrec.layers.experts._gate_config import check_gate
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class PLE(MultiTaskModel):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): stacked `CGC` levels.

    At each level task k mixes its own experts and the shared ones,
    g^k(x) = softmax(W_k x) over [E_k,1..m_k, E_s,1..m_s]; above the first level each
    gate's input is the previous level's output for that task, and a shared gate over
    all experts feeds the next level's shared experts (not at the last level). The
    towers read the last level's task outputs. Each task's loss is masked to its
    sample space (PLE section 4.3, done by `mtlrec.losses.task_losses`).
    `gate_model()` exposes the last level's gate weights.

    Args:
        schema: the schema dict.
        tasks: list of task dicts.
        num_levels: number of stacked CGC levels.
        num_task_experts: experts per task at each level.
        num_shared_experts: shared experts at each level.
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
        seed: optional int for the initializers.
    """

    def __init__(
        self,
        schema,
        tasks,
        num_levels=2,
        num_task_experts=1,
        num_shared_experts=1,
        expert_units=(64,),
        tower_units=(32,),
        dropout=0.0,
        interaction=None,
        sequence_encoders=None,
        loss_weighting=None,
        gate=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        self._setup(schema, tasks, interaction, loss_weighting, seed, sequence_encoders)
        num_levels = checks.check_positive_int("num_levels", num_levels)
        num_task_experts = checks.check_positive_int("num_task_experts", num_task_experts)
        num_shared_experts = checks.check_positive_int("num_shared_experts", num_shared_experts)
        expert_units = checks.check_units("expert_units", expert_units, int_as_list=True)
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)
        gate = check_gate(gate)
        self.levels = []
        for level in range(num_levels):
            last = level == num_levels - 1
            self.levels.append(
                CGC(
                    num_tasks=len(self.task_specs),
                    num_task_experts=num_task_experts,
                    num_shared_experts=num_shared_experts,
                    expert_units=expert_units,
                    is_last=last,
                    return_gate_weights=last,
                    dropout=dropout,
                    gate=gate,
                    seed=derive_seed(self.seed, f"cgc_{level}"),
                    name=f"cgc_{level}",
                )
            )

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        h = self._embed(inputs)
        for level in self.levels[:-1]:
            h = level(h)
        mixed, gate_weights = self.levels[-1](h)
        names = [t.name for t in self.task_specs]
        outputs = self._heads(dict(zip(names, mixed)), tower_units, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_levels = num_levels
        self.num_task_experts = num_task_experts
        self.num_shared_experts = num_shared_experts
        self.expert_units = expert_units
        self.tower_units = tower_units
        self.dropout = dropout
        self.gate = gate
        # Symbolic tensors for gate_model(); not state, so kept out of Keras tracking.
        object.__setattr__(self, "_gate_tensors", dict(zip(names, gate_weights)))

    def gate_model(self):
        """A model from the same inputs to the last level's gate weights
        `{task: (B, num_task_experts + num_shared_experts)}` (own experts first)."""
        return keras.Model(self.input, dict(self._gate_tensors), name=f"{self.name}_gates")

    def _balance_layer_variables(self):
        """GradNorm's W: the output layer of every expert of the last level, the layer
        whose outputs the task gates mix (its shared experts and each task's own)."""
        last = self.levels[-1]
        experts = list(last.task_experts) + list(last.shared_experts)
        return [v for e in experts for v in e.last_layer_variables()]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_levels": self.num_levels,
                "num_task_experts": self.num_task_experts,
                "num_shared_experts": self.num_shared_experts,
                "expert_units": list(self.expert_units),
                "tower_units": list(self.tower_units),
                "dropout": self.dropout,
                "gate": dict(self.gate),
            }
        )
        return config
