"""Private mask helper shared by the sequence layers."""

import keras


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
