"""Transformer encoder over a behavior history and the candidate (BST, Chen et al., 2019)."""

import math

import keras
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.conventions.seeding import derive_seed, fresh_initializer
from mtlrec.layers.sequence._masks import combine_masks

#: LayerNormalization's epsilon.
EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="mtlrec")
class SelfAttentionEncoder(keras.layers.Layer):
    """The Behavior Sequence Transformer's encoder: self-attention over the history and
    the candidate, read out at the candidate.

    The sequence is the history steps x_1..x_T (each a d-vector) and the candidate x_c
    (d), each concatenated with a learned position embedding p (BST concatenates, where
    the original Transformer adds):

        e_j = [x_j; p_{pos(j)}]     pos(c) = 0, pos(j) = the steps from x_j to the
                                    candidate (1 for the most recent behavior)

    (BST's position is the time between a behavior and the candidate; without
    timestamps, the order is the time). Then `num_layers` encoder blocks, each

        S = LayerNorm(E + Dropout(MH(E)))
        E = LayerNorm(S + Dropout(LeakyReLU(S W_1 + b_1) W_2 + b_2))
        MH(E) = [head_1, ..., head_H] W_O + b_O,
        head_i = softmax(E W_Q^i (E W_K^i)^T / sqrt(D / H) + M) E W_V^i

    with D = d + `position_dim` and M = -inf on padded history steps (no position
    attends to them). The output is the last block's output at the candidate, (B, D):
    BST feeds the Transformer's output for the target item to its MLP. The last block
    computes only that row (the other rows of its output are never read).

    Padded steps (`mask` False) reach no output: they are zeroed, no query attends to
    them, and the candidate itself is always present, so every softmax has a term.
    Histories of up to `max_len` steps have their own positions; longer ones share the
    last position.

    Weights of block l: `block_<l>_query_kernel`, `_key_kernel`, `_value_kernel`,
    `_output_kernel` (D, D) with biases, `_ffn_kernel_1` (D, F), `_ffn_kernel_2` (F, D)
    with biases, `_norm_1_gamma` / `_beta`, `_norm_2_gamma` / `_beta`; the positions
    table `position_embeddings` (max_len + 1, position_dim).

    Args:
        num_layers: encoder blocks (BST: 1 worked best).
        num_heads: attention heads H; must divide D.
        position_dim: width of the position embedding.
        ffn_units: hidden width F of the feed-forward net (None: 4 D).
        dropout: dropout rate on both residual branches.
        max_len: positions learned (None: the history's length when built).
        kernel_initializer: for every kernel (each its own instance).
        seed: optional int making the initial weights (and the dropout) reproducible.

    Call: `layer([history (B, T, d), candidate (B, d)], mask=(B, T))` -> (B, D).
    """

    def __init__(
        self,
        num_layers=1,
        num_heads=1,
        position_dim=8,
        ffn_units=None,
        dropout=0.0,
        max_len=None,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = checks.check_positive_int("num_layers", num_layers)
        self.num_heads = checks.check_positive_int("num_heads", num_heads)
        self.position_dim = checks.check_positive_int("position_dim", position_dim)
        self.ffn_units = None if ffn_units is None else checks.check_positive_int("ffn_units", ffn_units)
        self.dropout = checks.check_rate("dropout", dropout)
        self.max_len = None if max_len is None else checks.check_positive_int("max_len", max_len)
        self.kernel_initializer = checks.serialize_identifier(
            checks.check_initializer("kernel_initializer", kernel_initializer)
        )
        self.seed = checks.check_seed(seed)
        self.supports_masking = True

    @staticmethod
    def _split_shapes(input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "SelfAttentionEncoder expects inputs [history (B, T, d), candidate (B, d)]. "
                f"Received input shapes: {input_shape}"
            )
        history, candidate = (tuple(s) for s in input_shape)
        if len(history) != 3 or len(candidate) != 2 or history[-1] is None or history[-1] != candidate[-1]:
            raise ValueError(
                "SelfAttentionEncoder expects a history (B, T, d) and a candidate (B, d) of "
                f"the same known width d. Received: history shape={history}, candidate shape={candidate}"
            )
        return history, candidate

    def model_dim(self, width):
        """D: the width of a step once its position embedding is appended."""
        return width + self.position_dim

    def build(self, input_shape):
        history, _ = self._split_shapes(input_shape)
        max_len = self.max_len if self.max_len is not None else history[1]
        if max_len is None:
            raise ValueError(
                "SelfAttentionEncoder needs max_len (the positions it learns) when the history's "
                f"length is unknown. Received: history shape={history}"
            )
        self._positions = int(max_len) + 1
        dim = self.model_dim(history[-1])
        if dim % self.num_heads:
            raise ValueError(
                f"Expected num_heads to divide the model width {dim} (the step width "
                f"{history[-1]} + position_dim {self.position_dim}). Received: num_heads={self.num_heads}"
            )
        ffn = self.ffn_units or 4 * dim
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self._positions, self.position_dim),
            initializer=fresh_initializer("random_uniform", self.seed, "position_embeddings"),
        )

        def kernel(name, shape):
            return self.add_weight(
                name=name, shape=shape, initializer=fresh_initializer(self.kernel_initializer, self.seed, name)
            )

        def constant(name, shape, value):
            return self.add_weight(name=name, shape=shape, initializer=value)

        self.blocks = []
        for i in range(self.num_layers):
            p = f"block_{i}_"
            block = {}
            for part in ("query", "key", "value", "output"):
                block[f"{part}_kernel"] = kernel(f"{p}{part}_kernel", (dim, dim))
                block[f"{part}_bias"] = constant(f"{p}{part}_bias", (dim,), "zeros")
            block["ffn_kernel_1"] = kernel(f"{p}ffn_kernel_1", (dim, ffn))
            block["ffn_bias_1"] = constant(f"{p}ffn_bias_1", (ffn,), "zeros")
            block["ffn_kernel_2"] = kernel(f"{p}ffn_kernel_2", (ffn, dim))
            block["ffn_bias_2"] = constant(f"{p}ffn_bias_2", (dim,), "zeros")
            for norm in ("norm_1", "norm_2"):
                block[f"{norm}_gamma"] = constant(f"{p}{norm}_gamma", (dim,), "ones")
                block[f"{norm}_beta"] = constant(f"{p}{norm}_beta", (dim,), "zeros")
            self.blocks.append(block)
        # Two per block, after the attention and after the feed-forward net (one flat list,
        # which Keras tracks).
        self.dropouts = [
            keras.layers.Dropout(self.dropout, seed=derive_seed(self.seed, f"block_{i}_dropout_{j}"))
            for i in range(self.num_layers)
            for j in (1, 2)
        ] if self.dropout > 0 else []

    @staticmethod
    def _positions_from_candidate(mask):
        """(B, T) int: steps from each step to the candidate (1 for the last real step)."""
        present = ops.cast(mask, "int32")
        # 1 on every step up to a row's last real one (a null inside a history counts).
        before_last = ops.cast(ops.flip(ops.cumsum(ops.flip(present, 1), axis=1), 1) > 0, "int32")
        return ops.flip(ops.cumsum(ops.flip(before_last, 1), axis=1), 1)

    @staticmethod
    def _norm(x, gamma, beta):
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) / ops.sqrt(var + EPSILON) * gamma + beta

    def _heads(self, x):
        """(B, L, D) -> (B, H, L, D / H)."""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.num_heads, x.shape[-1] // self.num_heads))
        return ops.transpose(x, (0, 2, 1, 3))

    def _block(self, i, x, keep, last, training):
        """One encoder block on x (B, L, D); `keep` (B, 1, 1, L) the keys attended to;
        `last`: only the candidate's row (the last) is computed and returned (B, 1, D)."""
        b = self.blocks[i]
        rows = x[:, -1:, :] if last else x
        q = self._heads(ops.matmul(rows, b["query_kernel"]) + b["query_bias"])
        k = self._heads(ops.matmul(x, b["key_kernel"]) + b["key_bias"])
        v = self._heads(ops.matmul(x, b["value_kernel"]) + b["value_bias"])
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(q.shape[-1])
        # Masked softmax: exponentiate only the kept keys (shifted by their max), so a
        # padded step's weight is exactly 0.
        row_max = ops.stop_gradient(
            ops.max(ops.where(keep, scores, ops.full_like(scores, -1e9)), axis=-1, keepdims=True)
        )
        exps = ops.where(keep, ops.exp(ops.where(keep, scores - row_max, ops.zeros_like(scores))), 0.0)
        attention = exps / ops.sum(exps, axis=-1, keepdims=True)
        heads = ops.transpose(ops.matmul(attention, v), (0, 2, 1, 3))
        merged = ops.reshape(heads, (ops.shape(rows)[0], ops.shape(rows)[1], rows.shape[-1]))
        attended = ops.matmul(merged, b["output_kernel"]) + b["output_bias"]
        drop_1, drop_2 = self.dropouts[2 * i : 2 * i + 2] if self.dropouts else (None, None)
        if drop_1 is not None:
            attended = drop_1(attended, training=training)
        s = self._norm(rows + attended, b["norm_1_gamma"], b["norm_1_beta"])
        hidden = ops.leaky_relu(ops.matmul(s, b["ffn_kernel_1"]) + b["ffn_bias_1"])
        fed = ops.matmul(hidden, b["ffn_kernel_2"]) + b["ffn_bias_2"]
        if drop_2 is not None:
            fed = drop_2(fed, training=training)
        return self._norm(s + fed, b["norm_2_gamma"], b["norm_2_beta"])

    def call(self, inputs, mask=None, training=None):
        history, candidate = inputs
        mask = combine_masks(mask, positions=(0,))
        if mask is None:
            mask = ops.ones(ops.shape(history)[:2], dtype="bool")
        history = ops.where(ops.expand_dims(mask, -1), history, ops.zeros_like(history))
        positions = ops.minimum(self._positions_from_candidate(mask), self._positions - 1)
        steps = ops.concatenate([history, ops.expand_dims(candidate, 1)], axis=1)
        batch = ops.shape(history)[0]
        position_ids = ops.concatenate([positions, ops.zeros((batch, 1), dtype=positions.dtype)], axis=1)
        x = ops.concatenate([steps, ops.take(self.position_embeddings, position_ids, axis=0)], axis=-1)
        present = ops.concatenate([mask, ops.ones((batch, 1), dtype="bool")], axis=1)
        keep = ops.expand_dims(ops.expand_dims(present, 1), 1)  # (B, 1, 1, T + 1)
        for i in range(self.num_layers):
            x = self._block(i, x, keep, last=i == self.num_layers - 1, training=training)
        return x[:, -1, :]

    def compute_output_shape(self, input_shape):
        history, _ = self._split_shapes(input_shape)
        return (history[0], self.model_dim(history[-1]))

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "position_dim": self.position_dim,
                "ffn_units": self.ffn_units,
                "dropout": self.dropout,
                "max_len": self.max_len,
                "kernel_initializer": self.kernel_initializer,
                "seed": self.seed,
            }
        )
        return config
