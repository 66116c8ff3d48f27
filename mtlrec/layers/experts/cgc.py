"""Customized gate control (CGC), one extraction level of PLE."""

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers import _core_utils as cu
from mtlrec.layers.experts.expert import Expert
from mtlrec.layers.experts._gate_config import check_gate, make_gate
from mtlrec.conventions.seeding import derive_seed


@keras.saving.register_keras_serializable(package="mtlrec")
class CGC(keras.layers.Layer):
    """CGC (Tang et al., RecSys 2020): task-specific plus shared experts, one gate per task.

    For task k with experts E_k,1..m_t (input: task k's input x_k) and shared experts
    E_s,1..m_s (input: the shared input x_s):
        g^k(x_k) = softmax(W_k x_k) over [E_k,1..m_t, E_s,1..m_s],
        h^k = sum_i g^k_i(x_k) E_i.
    Unless `is_last`, a shared gate g^s(x_s) over *all* experts (every task's, then the
    shared ones) gives h^s, appended last, which feeds the next level's shared experts.
    Stacking levels (the last with `is_last=True`) gives PLE (progressive layered
    extraction).

    `gate={"type": "dselect_k", "k": 2}` makes every gate (the tasks' and the shared one)
    a `DSelectKGate` (Hazimeh et al., 2021) instead of the softmax `Gate`.

    With `seed`, every expert and gate is seeded with `mtlrec.conventions.seeding.derive_seed(seed,
    <its name>)`; PLE seeds each level the same way from the model seed, so no two
    experts of any level start alike. With `seed=None` each draws fresh initializers.

    Args:
        num_tasks: K.
        num_task_experts: m_t, experts per task.
        num_shared_experts: m_s, shared experts.
        expert_units: list of positive ints, every expert's layer widths (h = last).
        is_last: last level: no shared gate and no shared output.
        return_gate_weights: also return each task gate's weights (B, m_t + m_s).
        expert_activation: activation of the expert layers.
        dropout: dropout rate inside the experts.
        gate: None or `{"type": "softmax"}`, or `{"type": "dselect_k", "k": 2, ...}`.
        seed: optional non-negative int.

    Inputs: `x (B, d)` (first level: the input of every task and of the shared part) or
    a list of K + 1 tensors `[x_1..x_K, x_s]`. Output: a list of K tensors `(B, h)`, plus
    h^s last when `is_last=False`; with gate weights `(outputs, task_gate_weights_list)`.
    """

    def __init__(
        self,
        num_tasks,
        num_task_experts,
        num_shared_experts,
        expert_units,
        is_last=False,
        return_gate_weights=False,
        expert_activation="relu",
        dropout=0.0,
        gate=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = checks.check_positive_int("num_tasks", num_tasks)
        self.num_task_experts = checks.check_positive_int("num_task_experts", num_task_experts, 0)
        self.num_shared_experts = checks.check_positive_int(
            "num_shared_experts", num_shared_experts, 0
        )
        if self.num_task_experts + self.num_shared_experts == 0:
            raise ValueError(
                "Expected at least one expert per task gate. Received: "
                f"num_task_experts={num_task_experts}, num_shared_experts={num_shared_experts}"
            )
        self.expert_units = checks.check_units("expert_units", expert_units)
        self.is_last = checks.check_bool("is_last", is_last)
        self.return_gate_weights = checks.check_bool("return_gate_weights", return_gate_weights)
        checks.check_activation("expert_activation", expert_activation)
        self.expert_activation = expert_activation
        self.dropout = checks.check_rate("dropout", dropout)
        self.gate = check_gate(gate)
        self.seed = checks.check_seed(seed)

    def _input_shapes(self, input_shape):
        """[task_1..task_K, shared] shapes from a single shape or a list of K + 1."""
        shapes = cu.as_shape_list(input_shape)
        if shapes is not None:
            if len(shapes) != self.num_tasks + 1:
                raise ValueError(
                    f"CGC with num_tasks={self.num_tasks} expects one tensor or a list of "
                    f"{self.num_tasks + 1} tensors [task_1..task_{self.num_tasks}, shared]. "
                    f"Received a list of {len(shapes)}: {shapes}"
                )
        else:
            shapes = [tuple(input_shape)] * (self.num_tasks + 1)
        for s in shapes:
            if len(s) != 2:
                raise ValueError(f"CGC expects inputs of shape (B, d). Received: {s}")
        return shapes

    def _make_expert(self, name, shape):
        expert = Expert(
            self.expert_units,
            activation=self.expert_activation,
            dropout=self.dropout,
            seed=derive_seed(self.seed, name),
            dtype=self.dtype_policy,
            name=name,
        )
        expert.build(shape)
        return expert

    def build(self, input_shape):
        shapes = self._input_shapes(input_shape)
        m_t, m_s, n_tasks = self.num_task_experts, self.num_shared_experts, self.num_tasks
        h = self.expert_units[-1]
        # Flat (task-major) list: Keras saving walks lists of layers, not lists of lists.
        self.task_experts = [
            self._make_expert(f"task_{k}_expert_{j}", shapes[k])
            for k in range(n_tasks)
            for j in range(m_t)
        ]
        self.shared_experts = [
            self._make_expert(f"shared_expert_{j}", shapes[-1])
            for j in range(m_s)
        ]
        self.task_gates = []
        for k in range(n_tasks):
            gate = make_gate(
                self.gate,
                m_t + m_s,
                return_weights=True,
                seed=derive_seed(self.seed, f"task_{k}_gate"),
                dtype=self.dtype_policy,
                name=f"task_{k}_gate",
            )
            gate.build([shapes[k], (shapes[k][0], m_t + m_s, h)])
            self.task_gates.append(gate)
        if self.is_last:
            self.shared_gate = None
        else:
            total = n_tasks * m_t + m_s
            self.shared_gate = make_gate(
                self.gate,
                total,
                return_weights=False,
                seed=derive_seed(self.seed, "shared_gate"),
                dtype=self.dtype_policy,
                name="shared_gate",
            )
            self.shared_gate.build([shapes[-1], (shapes[-1][0], total, h)])

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            task_inputs, shared_input = list(inputs[:-1]), inputs[-1]
        else:
            task_inputs, shared_input = [inputs] * self.num_tasks, inputs
        shared_out = [e(shared_input, training=training) for e in self.shared_experts]
        m_t = self.num_task_experts
        task_out = [
            [e(x, training=training) for e in self.task_experts[k * m_t : (k + 1) * m_t]]
            for k, x in enumerate(task_inputs)
        ]
        outputs, weights = [], []
        for x, own, gate in zip(task_inputs, task_out, self.task_gates):
            mixed, w = gate([x, ops.stack(own + shared_out, axis=1)])
            outputs.append(mixed)
            weights.append(w)
        if self.shared_gate is not None:
            everything = [o for own in task_out for o in own] + shared_out
            outputs.append(self.shared_gate([shared_input, ops.stack(everything, axis=1)]))
        if self.return_gate_weights:
            return outputs, weights
        return outputs

    def compute_output_shape(self, input_shape):
        batch = self._input_shapes(input_shape)[0][0]
        n_out = self.num_tasks + (0 if self.is_last else 1)
        outputs = [(batch, self.expert_units[-1]) for _ in range(n_out)]
        if self.return_gate_weights:
            n_w = self.num_task_experts + self.num_shared_experts
            return outputs, [(batch, n_w) for _ in range(self.num_tasks)]
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "num_task_experts": self.num_task_experts,
                "num_shared_experts": self.num_shared_experts,
                "expert_units": list(self.expert_units),
                "is_last": self.is_last,
                "return_gate_weights": self.return_gate_weights,
                "expert_activation": checks.serialize_identifier(self.expert_activation),
                "dropout": self.dropout,
                "gate": dict(self.gate),
                "seed": self.seed,
            }
        )
        return config
