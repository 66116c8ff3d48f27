"""Build a loss-weighting strategy from its config section."""

from __future__ import annotations

from typing import Iterable, Mapping

from mtlrec.losses.fixed_weighting import FixedWeighting
from mtlrec.losses.grad_norm import GradNorm
from mtlrec.losses.meta_balance import MetaBalance
from mtlrec.losses.pc_grad import PCGrad
from mtlrec.losses.uncertainty_weighting import UncertaintyWeighting

STRATEGIES = {
    "fixed": (FixedWeighting, ()),
    "uncertainty": (UncertaintyWeighting, ("init_log_var",)),
    "gradnorm": (GradNorm, ("alpha", "learning_rate", "optimizer")),
    "pcgrad": (PCGrad, ("seed",)),
    "metabalance": (MetaBalance, ("target", "relax_factor", "beta")),
}


def make_weighting(config: Mapping | None, tasks: Iterable, path: str = "loss_weighting"):
    """A weighting strategy from ``{"type": ..., <its options>}``.

    ``type`` is one of ``fixed`` (default when the config is None or has no
    type), ``uncertainty`` (``init_log_var``), ``gradnorm`` (``alpha``,
    ``learning_rate``, ``optimizer``), ``pcgrad`` (``seed``), ``metabalance``
    (``target``, ``relax_factor``, ``beta``). Unknown types,
    unknown keys and bad values raise ValueError naming ``<path>.<key>``.
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {type(config).__name__}")
    kind = config.get("type", "fixed")
    if kind not in STRATEGIES:
        raise ValueError(
            f"{path}.type: expected one of {', '.join(STRATEGIES)}, got {kind!r}"
        )
    cls, allowed = STRATEGIES[kind]
    options = {}
    for key, value in config.items():
        if key == "type":
            continue
        if key not in allowed:
            hint = ", ".join(allowed) if allowed else "none"
            raise ValueError(
                f"{path}.{key}: unknown key for type {kind!r} (allowed: {hint})"
            )
        options[key] = value
    try:
        return cls(list(tasks), **options)
    except ValueError as err:
        message = str(err)
        for key in options:
            if f"Received: {key}=" in message:
                raise ValueError(f"{path}.{key}: {message}") from None
        raise
