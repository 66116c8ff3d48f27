"""All experts of a mixture layer computed at once: one matmul per MLP layer for the lot."""

from keras import ops


def _same_shape(experts):
    """Whether the experts are built alike (widths, activation, batch norm, dropout, bias),
    so one batched matmul per layer can run them all."""
    first = experts[0].mlp
    for expert in experts[1:]:
        mlp = expert.mlp
        if (
            mlp.units != first.units
            or mlp.activation != first.activation
            or mlp.output_activation != first.output_activation
            or [n is None for n in mlp.norm_layers] != [n is None for n in first.norm_layers]
            or [d is None for d in mlp.dropout_layers] != [d is None for d in first.dropout_layers]
            or [d.use_bias for d in mlp.dense_layers] != [d.use_bias for d in first.dense_layers]
        ):
            return False
    return True


def stacked_expert_outputs(experts, inputs, training=None):
    """`(B, E, h)`: the outputs of E `Expert` layers, expert i on `inputs[i]` (or all on
    `inputs` when it is one tensor), by batched matmuls over their own weights.

    The experts keep their own variables (one `Dense` kernel per expert and layer, as
    saved files hold them); each layer reads them together: with one input for all,
    h_1 = x [W_1,1 | .. | W_E,1] is one (B, d) x (d, E h) matmul whose output already is
    (B, E, h); with an input per expert, and for every deeper layer, h_l = h_{l-1} W_l is
    one batched matmul (E, B, i) x (E, i, o). Activations run on the whole stack; batch
    norm and dropout run per expert on its slice (their statistics and seeds are the
    expert's own), so an expert computes what its own `call` computes, up to the summation
    order of the matmuls. Experts built differently are run one by one and stacked.
    """
    shared = not isinstance(inputs, (list, tuple))
    num = len(experts)
    if num == 1 or not _same_shape(experts):
        return expert_outputs_one_by_one(experts, inputs, training)
    mlps = [e.mlp for e in experts]
    x, axis = None, 1  # axis: where the experts are in x, 1 for (B, E, h), 0 for (E, B, h)
    for layer, act in enumerate(mlps[0]._activations):
        denses = [m.dense_layers[layer] for m in mlps]
        if layer == 0 and shared:
            kernel = ops.concatenate([d.kernel.value for d in denses], axis=1)  # (d, E h)
            x = ops.reshape(ops.matmul(inputs, kernel), (-1, num, denses[0].units))
        else:
            if layer == 0:
                x = ops.stack(list(inputs), axis=0)
            elif axis == 1:
                x = ops.transpose(x, (1, 0, 2))
            axis = 0
            x = ops.matmul(x, ops.stack([d.kernel.value for d in denses], axis=0))
        if denses[0].use_bias:
            x = x + ops.expand_dims(ops.stack([d.bias.value for d in denses], axis=0), 1 - axis)
        norms = [m.norm_layers[layer] for m in mlps]
        if norms[0] is not None:
            x = ops.stack([n(_slice(x, axis, i), training=training) for i, n in enumerate(norms)], axis=axis)
        x = act(x)
        drops = [m.dropout_layers[layer] for m in mlps]
        if drops[0] is not None:
            x = ops.stack([d(_slice(x, axis, i), training=training) for i, d in enumerate(drops)], axis=axis)
    return ops.transpose(x, (1, 0, 2)) if axis == 0 else x


def _slice(x, axis, i):
    return x[:, i] if axis == 1 else x[i]


def expert_outputs_one_by_one(experts, inputs, training=None):
    """`(B, E, h)` as `stacked_expert_outputs` gives it, each expert called on its own."""
    each = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs] * len(experts)
    return ops.stack([e(x, training=training) for e, x in zip(experts, each)], axis=1)
