"""Multi-gate mixture of experts (MMoE)."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers.experts.expert import Expert
from mtlrec.layers.experts._gate_config import check_gate, make_gate
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class MixtureOfExperts(keras.layers.Layer):
    """MMoE (Ma et al., KDD 2018): n shared experts and one softmax gate per task.

    f_i(x), i = 1..n;  g^k(x) = softmax(W_k x);  h^k = sum_i g^k_i(x) f_i(x).

    The experts normalise their pre-activations by default (`batch_norm=True`: Dense ->
    BatchNormalization -> activation), so each expert unit is active on part of every batch
    whatever the scale of the input (raw numerics, small embeddings) and of the draw; with
    the near-uniform initial gates (`Gate`) this is what makes MMoE train reliably on the
    paper's synthetic task (docs/results/papers.md, MMoE synthetic data). The `MMoE` model turns it
    off when embeddings feed the experts, where it lost AUC (`MMoE(expert_batch_norm=...)`).

    `gate={"type": "dselect_k", "k": 2}` replaces each softmax `Gate` by a
    `DSelectKGate` (Hazimeh et al., 2021), which mixes at most k experts per example.

    With `seed`, each expert and gate is seeded with `mtlrec.conventions.seeding.derive_seed(seed,
    <its name>)` ("expert_<i>", "gate_<k>"), so all start differently and reproducibly;
    with `seed=None` each draws fresh initializers.

    Args:
        num_experts: n, the number of shared experts.
        expert_units: list of positive ints, every expert's layer widths (h = last).
        num_tasks: number of tasks (gates).
        expert_activation: activation of the expert layers.
        dropout: dropout rate inside the experts.
        batch_norm: BatchNormalization before each expert activation (default True).
        return_gate_weights: also return every task's gate weights g^k(x) (B, n).
        gate: None or `{"type": "softmax"}` (the MMoE gate), or `{"type": "dselect_k",
            "k": 2, "gamma": 1.0, "entropy_reg": 0.1}` (options optional).
        seed: optional non-negative int.

    Input `(B, d)`; output a list of `num_tasks` tensors `(B, h)`, or
    `(outputs, gate_weights)` with `gate_weights` a list of `num_tasks` `(B, n)`.
    """

    def __init__(
        self,
        num_experts,
        expert_units,
        num_tasks,
        expert_activation="relu",
        dropout=0.0,
        return_gate_weights=False,
        gate=None,
        seed=None,
        batch_norm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = checks.check_positive_int("num_experts", num_experts)
        self.expert_units = checks.check_units("expert_units", expert_units)
        self.num_tasks = checks.check_positive_int("num_tasks", num_tasks)
        checks.check_activation("expert_activation", expert_activation)
        self.expert_activation = expert_activation
        self.dropout = checks.check_rate("dropout", dropout)
        self.return_gate_weights = checks.check_bool("return_gate_weights", return_gate_weights)
        self.batch_norm = checks.check_bool("batch_norm", batch_norm)
        self.gate = check_gate(gate)
        self.seed = checks.check_seed(seed)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(
                f"MixtureOfExperts expects an input of shape (B, d). Received: {input_shape}"
            )
        self.experts = []
        for i in range(self.num_experts):
            expert = Expert(
                self.expert_units,
                activation=self.expert_activation,
                dropout=self.dropout,
                batch_norm=self.batch_norm,
                seed=derive_seed(self.seed, f"expert_{i}"),
                dtype=self.dtype_policy,
                name=f"expert_{i}",
            )
            expert.build(input_shape)
            self.experts.append(expert)
        experts_shape = (input_shape[0], self.num_experts, self.expert_units[-1])
        self.gates = []
        for k in range(self.num_tasks):
            gate = make_gate(
                self.gate,
                self.num_experts,
                return_weights=True,
                seed=derive_seed(self.seed, f"gate_{k}"),
                dtype=self.dtype_policy,
                name=f"gate_{k}",
            )
            gate.build([input_shape, experts_shape])
            self.gates.append(gate)

    def call(self, inputs, training=None):
        experts = ops.stack([e(inputs, training=training) for e in self.experts], axis=1)
        outputs, weights = [], []
        for gate in self.gates:
            mixed, w = gate([inputs, experts])
            outputs.append(mixed)
            weights.append(w)
        if self.return_gate_weights:
            return outputs, weights
        return outputs

    def compute_output_shape(self, input_shape):
        batch = tuple(input_shape)[0]
        outputs = [(batch, self.expert_units[-1]) for _ in range(self.num_tasks)]
        if self.return_gate_weights:
            return outputs, [(batch, self.num_experts) for _ in range(self.num_tasks)]
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": list(self.expert_units),
                "num_tasks": self.num_tasks,
                "expert_activation": checks.serialize_identifier(self.expert_activation),
                "dropout": self.dropout,
                "return_gate_weights": self.return_gate_weights,
                "gate": dict(self.gate),
                "seed": self.seed,
                "batch_norm": self.batch_norm,
            }
        )
        return config
