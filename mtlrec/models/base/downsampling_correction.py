"""Probabilities of a model trained on negatively downsampled data, recalibrated to the
full traffic (He et al. 2014, "Practical Lessons from Predicting Clicks on Ads at
Facebook", section 6.2).

A task whose negatives the data kept with probability w learns the odds of the kept rows,
p' / (1 - p') = (p / (1 - p)) / w. The correction

    q = p' / (p' + (1 - p') / w)

undoes it; in logits it is a shift, logit(q) = logit(p') + log w, which is how it is
computed here from a model's logits (exact at any logit, where the formula on
probabilities loses the digits of a p' near 1). A funnel step below the task (ESMM's
pCTCVR = pCTR x pCVR) is corrected through it: its conditional probability learned on the
kept rows is unbiased (every row of its space, a click, was kept), so its joint is
q x pCVR, computed in log space like the model's own joint.

Only a single ``negative_keep_rate`` is corrected this way: with a keep-rate column there
is no one rate to correct with, and the losses weigh the negatives by 1 / w_i instead
(``mtlrec.row_weights``), so the model's outputs are already those of the full traffic.
The model's outputs and the logits its losses read stay those it was trained on; the
evaluation, the export and ``mtlrec predict`` publish the corrected probabilities.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from keras import ops

from mtlrec.row_weights import downsampled_task, in_funnel_of
from mtlrec.tasks import Task, funnel_chain, logit_name


def corrected_logit(logit, keep_rate: float):
    """logit(q) = logit + log(keep_rate): the full-traffic log-odds of a downsampled model's logit."""
    return ops.add(ops.cast(logit, "float32"), math.log(keep_rate))


def corrected_probability(probability, keep_rate: float):
    """q = p / (p + (1 - p) / keep_rate), for outputs that come without their logits."""
    p = ops.cast(probability, "float32")
    return p / (p + (1.0 - p) / keep_rate)


def corrected_outputs(tasks: Iterable[Task], outputs: Mapping, published: Mapping | None = None) -> dict:
    """``published`` (default: ``outputs``) with the probability of the task declaring a
    ``negative_keep_rate`` and the joints of the funnel steps below it corrected.

    Args:
        tasks: the model's ``Task`` objects.
        outputs: the model's outputs (probabilities, and the ``<name>_logit`` entries
            when it has them: then the correction is computed from the logits).
        published: the outputs to return corrected (e.g. only the probabilities).

    Returns:
        A new dict; ``published`` unchanged when no task declares one keep rate.
    """
    tasks = list(tasks)
    published = dict(outputs if published is None else published)
    top = downsampled_task(tasks)
    if top is None or top.negative_keep_rate is None:
        return published
    rate = top.negative_keep_rate
    if top.name in published:
        published[top.name] = _corrected(top, outputs, rate)
    for task in tasks:
        joint = task.joint_name
        if joint is None or joint not in published or not in_funnel_of(task, top, tasks):
            continue
        chain = funnel_chain(task, tasks)
        if all(logit_name(t.name) in outputs for t in chain):
            log_p = sum(
                ops.log_sigmoid(
                    corrected_logit(outputs[logit_name(t.name)], rate)
                    if t.name == top.name
                    else ops.cast(outputs[logit_name(t.name)], "float32")
                )
                for t in chain
            )
            published[joint] = ops.exp(log_p)
        else:
            product = _corrected(top, outputs, rate)
            for t in chain[1:]:
                product = product * ops.cast(outputs[t.name], "float32")
            published[joint] = product
    return published


def _corrected(task: Task, outputs: Mapping, rate: float):
    logit = outputs.get(logit_name(task.name))
    if logit is not None:
        return ops.sigmoid(corrected_logit(logit, rate))
    return corrected_probability(outputs[task.name], rate)
