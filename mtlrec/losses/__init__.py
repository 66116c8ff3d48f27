"""Task losses and loss-weighting strategies.

``task_losses`` turns outputs into per-task scalars; a strategy
(``FixedWeighting``, ``UncertaintyWeighting``, ``GradNorm``, ``PCGrad``,
``MetaBalance``, built by ``make_weighting``) turns them into a total and gradients.
"""

from mtlrec.losses.factory import make_weighting
from mtlrec.losses.fixed_weighting import FixedWeighting
from mtlrec.losses.functions import (
    binary_crossentropy_from_logits,
    categorical_crossentropy_from_logits,
    masked_mean,
    task_loss,
    task_losses,
)
from mtlrec.losses.grad_norm import GradNorm
from mtlrec.losses.loss_weighting import LossWeighting
from mtlrec.losses.meta_balance import MetaBalance
from mtlrec.losses.objective import objective_terms, weighted_objective
from mtlrec.losses.pc_grad import PCGrad, project_conflicting
from mtlrec.losses.uncertainty_weighting import UncertaintyWeighting

__all__ = [
    "FixedWeighting",
    "GradNorm",
    "LossWeighting",
    "MetaBalance",
    "PCGrad",
    "UncertaintyWeighting",
    "binary_crossentropy_from_logits",
    "categorical_crossentropy_from_logits",
    "make_weighting",
    "masked_mean",
    "objective_terms",
    "project_conflicting",
    "task_loss",
    "task_losses",
    "weighted_objective",
]
