"""Input-shape helpers and the gates' expert mixing shared by the core multi-task layers
(argument checks: `mtlrec.conventions.arg_checks`)."""

from keras import ops
import numpy as np


def _is_dim(value):
    return value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool))


def as_shape_list(input_shape):
    """The shapes of a list input as a list of tuples; None when `input_shape` is one shape.

    Accepts tuples, lists (as JSON build configs give them) and `TensorShape`s.
    """
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        return None
    if all(_is_dim(d) for d in input_shape):
        return None
    try:
        return [tuple(s) for s in input_shape]
    except TypeError:
        return None


def gate_shapes(owner, num_experts, input_shape):
    """(gate_input shape, experts shape) of a gate's `[gate_input (B, d), experts (B, E, h)]`
    input; ValueError naming `owner` (the gate class) for anything else."""
    shapes = as_shape_list(input_shape)
    if shapes is None or len(shapes) != 2:
        raise ValueError(
            f"{owner} expects inputs [gate_input (B, d), experts (B, E, h)]. "
            f"Received input shape: {input_shape}"
        )
    gate_shape, experts_shape = shapes
    if len(experts_shape) != 3 or experts_shape[1] not in (None, num_experts):
        raise ValueError(
            f"{owner} expects experts of shape (B, {num_experts}, h) "
            f"(num_experts={num_experts}). Received: experts shape={experts_shape}"
        )
    if len(gate_shape) != 2 or gate_shape[-1] is None:
        raise ValueError(
            f"{owner} expects a gate input of shape (B, d) with a known d. "
            f"Received: gate_input shape={gate_shape}"
        )
    return gate_shape, experts_shape


def gate_output_shape(owner, num_experts, input_shape, return_weights):
    """Output shape of a gate: the mixture (B, h), and the weights (B, E) when returned."""
    gate_shape, experts_shape = gate_shapes(owner, num_experts, input_shape)
    mixed = (experts_shape[0], experts_shape[2])
    if return_weights:
        return mixed, (gate_shape[0], num_experts)
    return mixed


def mix_experts(weights, experts, return_weights):
    """sum_i weights_i * experts_i: (B, E) x (B, E, h) -> (B, h) (and the weights)."""
    mixed = ops.sum(ops.expand_dims(weights, -1) * experts, axis=1)
    if return_weights:
        return mixed, weights
    return mixed


def field_stack_shape(owner, input_shape, known_fields=False):
    """The shape of stacked field embeddings `(B, F, k)` with F >= 2 (and F known when
    `known_fields`); ValueError naming `owner` (the interaction layer class) otherwise."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{owner} expects stacked field embeddings of rank 3 (B, F, k). "
            f"Received input shape: {shape}"
        )
    if (known_fields and shape[1] is None) or (shape[1] is not None and shape[1] < 2):
        needs = "a known number of fields, at least 2" if known_fields else "at least 2 fields to interact"
        raise ValueError(f"{owner} needs {needs} (F >= 2). Received input shape: {shape}")
    return shape
