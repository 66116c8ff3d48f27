"""Private helpers shared by the sequence and interaction layers."""

import keras
import numpy as np

from mtlrec.key_paths import ArgumentError


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive_int(value, arg_name):
    if not _is_int(value) or value <= 0:
        raise ArgumentError(
            arg_name,
            f"Expected {arg_name} to be a positive integer. "
            f"Received: {arg_name}={value!r}"
        )
    return int(value)


def check_bool(value, arg_name):
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(
            arg_name,
            f"Expected {arg_name} to be a bool. Received: {arg_name}={value!r}"
        )
    return bool(value)


def check_seed(seed):
    if seed is None:
        return None
    if not _is_int(seed) or seed < 0:
        raise ArgumentError(
            "seed",
            "Expected seed to be None or a non-negative integer. "
            f"Received: seed={seed!r}"
        )
    return int(seed)


def check_initializer(identifier, arg_name):
    """Validate an initializer; return it as a string/dict fit for get_config."""
    try:
        initializer = keras.initializers.get(identifier)
    except (ValueError, TypeError) as err:
        initializer = None
        cause = err
    else:
        cause = None
    if initializer is None:
        raise ArgumentError(
            arg_name,
            f"Expected {arg_name} to be a Keras initializer (name, config or "
            f"instance). Received: {arg_name}={identifier!r}"
        ) from cause
    if isinstance(identifier, (str, dict)):
        return identifier
    return keras.initializers.serialize(initializer)


def combine_masks(mask, positions=None):
    """Reduce a mask argument to one (B, T) bool tensor or None.

    Keras passes a list of per-input masks when it propagates `_keras_mask`
    automatically for list inputs; `positions` selects the entries that are
    time masks (e.g. not the query of an attention layer), and the chosen
    non-None entries are AND-ed.
    """
    if mask is None:
        return None
    if isinstance(mask, (list, tuple)):
        chosen = [
            m
            for i, m in enumerate(mask)
            if m is not None and (positions is None or i in positions)
        ]
        if not chosen:
            return None
        result = keras.ops.cast(chosen[0], "bool")
        for m in chosen[1:]:
            result = keras.ops.logical_and(result, keras.ops.cast(m, "bool"))
        return result
    return keras.ops.cast(mask, "bool")
