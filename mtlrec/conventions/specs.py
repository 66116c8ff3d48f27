"""Checked config sections that name a class to build later.

A ``Spec`` is what the config loader keeps of a ``model``, ``loss_weighting`` or
``optimizer.<part>`` section once it has checked the keys and values against what the
constructor accepts, without building anything: the model, its weighting and the
optimizers are built later, inside the ``tf.distribute`` strategy's scope.

- ``.type``: the model type, weighting type or optimizer name;
- ``.args``: the constructor's keyword arguments (``lambda`` -> ``lambda_``);
- read as a mapping it is the section as written, so ``spec["type"]``, ``dict(spec)``
  and ``spec == {"type": "esmm", ...}`` behave as for the raw dict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)
class Spec(Mapping):
    """A checked section: ``type``, constructor ``args`` and the ``raw`` mapping."""

    type: str
    args: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    def __getitem__(self, key):
        return self.raw[key]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self):
        return len(self.raw)

    def __deepcopy__(self, memo):
        return type(self)(self.type, copy.deepcopy(self.args, memo), copy.deepcopy(self.raw, memo))

    def to_dict(self) -> dict:
        """The section as written (a deep copy)."""
        return copy.deepcopy(self.raw)


class ModelSpec(Spec):
    """The ``model`` section: ``type`` (``esmm``, ``mmoe``, ...) and hyperparameters."""


class WeightingSpec(Spec):
    """The ``loss_weighting`` section: ``type`` (``fixed``, ``gradnorm``, ...) and options."""


class OptimizerSpec(Spec):
    """An ``optimizer.dense`` / ``optimizer.embedding`` section: its ``name`` and arguments."""

    @property
    def name(self) -> str:
        return self.type
