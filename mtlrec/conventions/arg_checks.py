"""Constructor argument checks of every layer and model: one module, one argument order.

Each check takes ``(name, value, ...)``, returns the value normalised (a plain ``int``,
``float``, ``bool`` or ``list``) and raises ``ArgumentError`` quoting the value as the
layer contract asks: ``Expected units to be an integer >= 1. Received: units=-3``.
``ArgumentError`` (``mtlrec.conventions.key_paths``) is a ``ValueError`` whose ``argument`` names the
argument, so a config reader names the key without parsing the message.
"""

import numpy as np

from mtlrec.conventions.key_paths import ArgumentError


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse(name, expected, value):
    raise ArgumentError(name, f"Expected {name} to be {expected}. Received: {name}={value!r}")


def check_positive_int(name, value, minimum=1):
    """An int >= ``minimum`` (numpy ints accepted, bools not)."""
    if not _is_int(value) or value < minimum:
        _refuse(name, f"an integer >= {minimum}", value)
    return int(value)


def check_seed(value):
    """None or an int >= 0."""
    if value is None:
        return None
    return check_positive_int("seed", value, minimum=0)


def check_units(name, value, allow_empty=False, int_as_list=False):
    """A list of positive ints, one width per layer.

    A bare int is one layer's width when ``int_as_list`` (model configs: ``tower_units: 8``)
    and refused otherwise (layers: one layer of 8 units is ``[8]``)."""
    if _is_int(value):
        if not int_as_list:
            _refuse(
                name,
                f"a non-empty list of positive integers, one width per layer "
                f"(one layer of {int(value)} units: [{int(value)}])",
                value,
            )
        value = [value]
    ok = isinstance(value, (list, tuple)) and (allow_empty or len(value) > 0)
    if not ok or not all(_is_int(u) and u > 0 for u in value):
        what = "a list of positive integers" if allow_empty else "a non-empty list of positive integers"
        _refuse(name, what, value)
    return [int(u) for u in value]


def check_rate(name, value):
    """A float in [0, 1) (a dropout rate)."""
    if not _is_number(value) or not 0 <= value < 1:
        _refuse(name, "a float in [0, 1)", value)
    return float(value)


def check_non_negative(name, value):
    if not _is_number(value) or value < 0:
        _refuse(name, "a non-negative float", value)
    return float(value)


def check_positive(name, value):
    if not _is_number(value) or value <= 0:
        _refuse(name, "a positive number", value)
    return float(value)


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        _refuse(name, "a bool", value)
    return bool(value)


def check_activation(name, value):
    """The activation function Keras resolves ``value`` to."""
    import keras  # here, so that data-side modules checking ints do not load Keras

    try:
        return keras.activations.get(value)
    except (ValueError, TypeError) as err:
        raise ArgumentError(
            name, f"Expected {name} to be a Keras activation. Received: {name}={value!r}"
        ) from err


def check_initializer(name, value):
    """``value`` unchanged once Keras resolves it to an initializer."""
    import keras

    try:
        initializer = keras.initializers.get(value)
    except (ValueError, TypeError) as err:
        raise ArgumentError(
            name, f"Expected {name} to be a Keras initializer. Received: {name}={value!r}"
        ) from err
    if initializer is None:  # keras.initializers.get(None)
        _refuse(name, "a Keras initializer", value)
    return value


def serialize_identifier(value):
    """For ``get_config``: strings, None and dicts stay as they are; objects become their
    Keras config."""
    if value is None or isinstance(value, (str, dict)):
        return value
    import keras

    return keras.saving.serialize_keras_object(value)


def check_names(name, value, known, allow_empty=True):
    """A list of names each in ``known`` (a dict or set of valid names); a str is one name."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        _refuse(name, "a list of names", value)
    if not allow_empty and not value:
        _refuse(name, "a non-empty list", value)
    for v in value:
        if v not in known:
            described = "one of: " + ", ".join(sorted(known)) if known else "nothing (none available)"
            raise ArgumentError(
                name,
                f"Expected {name} to name {described}; {v!r} is not one. "
                f"Received: {name}={list(value)!r}",
            )
    return list(value)
