"""Argument checks, initializer seeding and the gates' expert mixing shared by the core multi-task layers."""

import keras
from keras import ops
import numpy as np

from mtlrec.key_paths import ArgumentError


def check_positive_int(name, value, minimum=1):
    """Raise ValueError unless `value` is an int >= `minimum`; return it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(
            name,
            f"Expected {name} to be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def check_units(name, units):
    """Raise ValueError unless `units` is a non-empty list of positive ints; return a list.

    A bare int is refused like any other non-list (every layer taking a list of widths does
    the same): one layer of 8 units is `[8]`."""
    if isinstance(units, (int, np.integer)) and not isinstance(units, bool):
        raise ArgumentError(
            name,
            f"Expected {name} to be a non-empty list of positive integers, one width per layer "
            f"(one layer of {int(units)} units: [{int(units)}]). Received: {name}={units!r}"
        )
    ok = isinstance(units, (list, tuple)) and len(units) > 0
    ok = ok and all(
        isinstance(u, (int, np.integer)) and not isinstance(u, bool) and u > 0 for u in units
    )
    if not ok:
        raise ArgumentError(
            name,
            f"Expected {name} to be a non-empty list of positive integers. "
            f"Received: {name}={units!r}"
        )
    return [int(u) for u in units]


def check_rate(name, value):
    """Raise ValueError unless 0 <= value < 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ArgumentError(
            name,
            f"Expected {name} to be a float in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ArgumentError(
            name,
            f"Expected {name} to be a non-negative float. Received: {name}={value!r}"
        )
    return float(value)


def check_seed(seed):
    if seed is None:
        return None
    return check_positive_int("seed", seed, minimum=0)


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(name, f"Expected {name} to be a bool. Received: {name}={value!r}")
    return bool(value)


def check_activation(name, activation):
    """Raise ValueError naming the argument when keras cannot resolve `activation`."""
    try:
        return keras.activations.get(activation)
    except (ValueError, TypeError) as err:
        raise ArgumentError(
            name,
            f"Expected {name} to be a Keras activation. Received: {name}={activation!r}"
        ) from err


def serialize_identifier(value):
    """Strings, None and dicts stay as they are; objects become their Keras config."""
    if value is None or isinstance(value, (str, dict)):
        return value
    return keras.saving.serialize_keras_object(value)


def check_initializer(name, identifier):
    try:
        keras.initializers.get(identifier)
    except (ValueError, TypeError) as err:
        raise ArgumentError(
            name,
            f"Expected {name} to be a Keras initializer. Received: {name}={identifier!r}"
        ) from err
    return identifier


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
