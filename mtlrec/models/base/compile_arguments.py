"""What `compile` of a multi-task model takes from Keras' arguments, and what it refuses:
the losses are the tasks' own (their kind, weight, sample space and row weights)."""

from __future__ import annotations

import warnings

import keras

_WHERE = (
    "each task's loss follows from its kind and weight in the model's `tasks` (the config's "
    "`tasks` section), combined by `loss_weighting`"
)


def refuse_losses(loss, loss_weights, weighted_metrics) -> None:
    """One line for a `compile` argument a multi-task model would otherwise ignore."""
    if loss is not None:
        raise ValueError(f"compile(loss=...) is not used by mtlrec models: {_WHERE}. Received: loss={loss!r}")
    if loss_weights is not None:
        raise ValueError(
            "compile(loss_weights=...) is not used by mtlrec models: set each task's `weight` in "
            f"`tasks`. Received: loss_weights={loss_weights!r}"
        )
    if weighted_metrics is not None:
        raise ValueError(
            "compile(weighted_metrics=...) is not used by mtlrec models: pass them as metrics=, "
            "which weigh rows by each task's sample_weight column and downsampling. "
            f"Received: weighted_metrics={weighted_metrics!r}"
        )


def saved_compile_arguments(config: dict) -> dict:
    """The `compile` arguments of a `.keras` file's compile config. Files written before
    `compile` refused losses may hold one that was ignored then: it is dropped with a
    warning, so that they keep loading."""
    config = keras.saving.deserialize_keras_object(config)
    for key in ("loss", "loss_weights", "weighted_metrics"):
        if config.get(key) is not None:
            warnings.warn(
                f"the saved compile({key}=...) is dropped: mtlrec models never used it ({_WHERE})",
                stacklevel=3,
            )
        config.pop(key, None)
    return config
