"""Build a loss-weighting strategy from its config section.

``weighting_arguments`` checks a section against the declared arguments of its type
without building anything (a weighting creates variables, which must happen inside the
``tf.distribute`` strategy's scope); ``make_weighting`` builds it.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Mapping

from mtlrec.conventions.key_paths import ArgumentError, KeyPathError
from mtlrec.losses.fixed_weighting import FixedWeighting
from mtlrec.losses.grad_norm import _OPTIMIZERS as GRADNORM_OPTIMIZERS
from mtlrec.losses.grad_norm import GradNorm
from mtlrec.losses.meta_balance import MetaBalance
from mtlrec.losses.pc_grad import PCGrad
from mtlrec.losses.uncertainty_weighting import UncertaintyWeighting


def _number(value, low=None, high=None, low_open=False, high_open=False) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


# type -> (class, {argument: (default, what it must be, test(value, task names))}); the
# constructor checks the same (the layer contract), these let a config be checked unbuilt.
STRATEGIES = {
    "fixed": (FixedWeighting, {}),
    "uncertainty": (UncertaintyWeighting, {"init_log_var": (0.0, "a number", lambda v, _: _number(v))}),
    "gradnorm": (GradNorm, {
        "alpha": (1.5, "a non-negative number", lambda v, _: _number(v, low=0)),
        "learning_rate": (0.025, "a positive number", lambda v, _: _number(v, low=0, low_open=True)),
        "optimizer": ("adam", f"one of {GRADNORM_OPTIMIZERS}", lambda v, _: v in GRADNORM_OPTIMIZERS),
    }),
    "pcgrad": (PCGrad, {
        "seed": (None, "an integer or None", lambda v, _: v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool))),
    }),
    "metabalance": (MetaBalance, {
        "target": (None, "one of the task names {names}", lambda v, names: v in names),
        "relax_factor": (0.7, "a number in (0, 1]", lambda v, _: _number(v, 0, 1, low_open=True)),
        "beta": (0.9, "a number in [0, 1)", lambda v, _: _number(v, 0, 1, high_open=True)),
    }),
}


def weighting_arguments(config: Mapping | None, task_names: list, path: str = "loss_weighting"):
    """``(type, options)`` of a ``loss_weighting`` section, checked without building it.

    ``type`` is one of ``fixed`` (default when the config is None or has no type),
    ``uncertainty`` (``init_log_var``), ``gradnorm`` (``alpha``, ``learning_rate``,
    ``optimizer``), ``pcgrad`` (``seed``), ``metabalance`` (``target``, ``relax_factor``,
    ``beta``). Unknown types, unknown keys and bad values raise ``KeyPathError`` naming
    ``<path>.<key>``.
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise KeyPathError(path, f"expected a mapping, got {type(config).__name__}")
    kind = config.get("type", "fixed")
    if kind not in STRATEGIES:
        raise KeyPathError(f"{path}.type", f"expected one of {', '.join(STRATEGIES)}, got {kind!r}")
    declared = STRATEGIES[kind][1]
    options = {k: v for k, v in config.items() if k != "type"}
    for key in options:
        if key not in declared:
            hint = ", ".join(declared) if declared else "none"
            raise KeyPathError(f"{path}.{key}", f"unknown key for type {kind!r} (allowed: {hint})")
    for key, (default, what, ok) in declared.items():
        value = options.get(key, default)
        if not ok(value, list(task_names)):
            what = what.format(names=list(task_names))
            raise KeyPathError(f"{path}.{key}", f"Expected {key} to be {what}. Received: {key}={value!r}")
    return kind, options


def make_weighting(config: Mapping | None, tasks: Iterable, path: str = "loss_weighting"):
    """A weighting strategy from ``{"type": ..., <its options>}`` (see ``weighting_arguments``)."""
    from mtlrec.tasks import Task

    tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    kind, options = weighting_arguments(config, [t.name for t in tasks], path)
    try:
        return STRATEGIES[kind][0](tasks, **options)
    except ArgumentError as err:
        raise KeyPathError(f"{path}.{err.argument}" if err.argument in options else path, str(err)) from None
