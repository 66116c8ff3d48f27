"""Argument checks shared by the models (messages quote the received value)."""

import numpy as np

from mtlrec.key_paths import ArgumentError


def units_list(name, value, allow_empty=False):
    """A list of positive ints (an int is taken as a one-layer list)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, (list, tuple)) and (allow_empty or len(value) > 0)
    ok = ok and all(
        isinstance(u, (int, np.integer)) and not isinstance(u, bool) and u > 0 for u in value
    )
    if not ok:
        what = "a list of positive integers" if allow_empty else "a non-empty list of positive integers"
        raise ArgumentError(name, f"Expected {name} to be {what}. Received: {name}={value!r}")
    return [int(u) for u in value]


def positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(
            name,
            f"Expected {name} to be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ArgumentError(name, f"Expected {name} to be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ArgumentError(
            name,
            f"Expected {name} to be a non-negative float. Received: {name}={value!r}"
        )
    return float(value)


def seed(value):
    if value is None:
        return None
    return positive_int("seed", value, minimum=0)


def names_list(name, value, known, allow_empty=True):
    """A list of names each in `known` (a dict or set of valid names)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ArgumentError(name, f"Expected {name} to be a list of names. Received: {name}={value!r}")
    if not allow_empty and not value:
        raise ArgumentError(name, f"Expected {name} to be a non-empty list. Received: {name}={value!r}")
    for v in value:
        if v not in known:
            raise ArgumentError(
                name,
                f"Expected {name} to name {_describe(known)}; {v!r} is not one. "
                f"Received: {name}={list(value)!r}"
            )
    return list(value)


def _describe(known):
    return "one of: " + ", ".join(sorted(known)) if known else "nothing (none available)"
