"""The log lines of a trained day."""

from __future__ import annotations

import logging

logger = logging.getLogger("mtlrec.training")


def warn_full_tables(day: str, tables: dict) -> None:
    """A warning per identity/dynamic table that ran out of rows (``Trainer.lookup_report``)."""
    for name, figures in tables.items():
        if figures.get("overflow_lookups"):
            logger.warning(
                "day %s: table %s is full (%d of %d rows in use): %d lookups of ids due for "
                "admission read out-of-vocabulary rows; raise num_buckets or set ttl_days",
                day, name, figures["rows_in_use"], figures["capacity"], figures["overflow_lookups"],
            )


def log_day_done(name: str, position, step: int, eval_day, evaluation, version) -> None:
    """``[name] day D done: N steps, global step S; on E: ctr auc ...; export V``."""
    summary = ""
    if evaluation is not None:
        summary = " ".join(
            f"{task} auc {values.get('auc', float('nan')):.4f}"
            for task, values in evaluation.metrics.items()
            if "auc" in values
        )
    logger.info(
        "[%s] day %s done: %d steps, global step %d%s%s",
        name,
        position.day,
        position.steps,
        step,
        f"; on {eval_day}: {summary}" if summary else "",
        f"; export {version}" if version is not None else "",
    )
