"""Which days a ``train`` command trains and evaluates, and where it resumes.

A command names its days (``--day``, ``--days`` or ``data.train_days``). Each trained day
is evaluated on the day after it in the data root (none after the last one). Against the
run's ``state.json`` the command is one of:

- **done**: every day is trained with this config (a scheduler's retry): nothing to do;
- **resumed**: the same day list as the command in progress (``pending``) that crashed:
  the days it finished are skipped, the interrupted one continues from its checkpoint;
- **new**: refused when it names a trained day, unless forced.
"""

from __future__ import annotations

import dataclasses
import logging

from mtlrec.training.days.day_position import DayPosition
from mtlrec.training.errors import RunError
from mtlrec.training.run.run_state import RunState

logger = logging.getLogger("mtlrec.training")


def _data():
    import mtlrec.data_pipeline as data_pipeline

    return data_pipeline


@dataclasses.dataclass(frozen=True)
class DayPlan:
    """The days of one ``train`` command.

    Attributes:
        days: the days asked, in order.
        to_train: the days still to train (all of ``days`` unless resuming).
        eval_days: ``{day: the day it is evaluated on}`` for every asked day (None: no
            later day in the data root).
        resuming: the command is the interrupted command in progress run again.
    """

    days: tuple
    to_train: tuple
    eval_days: dict
    resuming: bool = False

    @property
    def validation_days(self) -> list[str]:
        """The days to check before anything is written: the days asked, then the days
        they are evaluated on."""
        following = {d for d in self.eval_days.values() if d and d not in self.days}
        return list(self.days) + sorted(following)

    @classmethod
    def make(cls, config, state: RunState, days: list[str], force: bool) -> "DayPlan":
        """The plan of ``days`` against ``state``; refuses a trained day unless forced or
        resuming (``RunError``)."""
        present = _data().list_days(config.data.root)
        eval_days = {d: next((p for p in present if p > d), None) for d in days}
        if state.matches_pending(days):
            to_train = [d for d in days if d not in state.pending["done"]]
            return cls(tuple(days), tuple(to_train), eval_days, resuming=True)
        trained = [d for d in days if state.is_trained(d)]
        if trained and not force:
            entry = state.entry(trained[0])
            changed = entry.get("config") not in (None, config.training_digest())
            raise RunError(
                f"day {trained[0]} is already trained in {state.run_dir} (global step "
                f"{entry.get('global_step')})"
                + (" with a config that differs from this one" if changed else "")
                + "; pass --force to train it again"
            )
        return cls(tuple(days), tuple(days), eval_days)


def asked_days(config, day=None, days=None) -> list[str]:
    """The days of ``--day D`` / ``--days A:B`` / ``data.train_days``, checked against the data root."""
    from mtlrec.training.config import config_error, parse_days

    root = config.data.root
    if config.data.partitioning == "hour":
        raise config_error(
            config, "data.partitioning",
            "hourly partitions are trained with `train --follow [--until dt=YYYY-MM-DD/hour=HH]`",
        )
    if day is not None and days is not None:
        raise ValueError("give --day or --days, not both")
    if day is not None:
        wanted = parse_days(day)
    elif days is not None:
        wanted = parse_days(days)
    elif config.data.train_days is not None:
        wanted = config.data.train_days
    else:
        raise config_error(config, "data.train_days", "no days to train: give --day/--days or set data.train_days")
    if not _data().filesystems.is_dir(root):
        raise _data().DataValidationError("data root does not exist", file=root)
    return _data().resolve_days(root, wanted)


def one_eval_day(config, day=None) -> str:
    """The day of ``evaluate --day D`` (default: ``data.eval_day``)."""
    from mtlrec.training.config import config_error, parse_days

    day = day or config.data.eval_day
    if day is None:
        raise config_error(config, "data.eval_day", "no day to evaluate: give --day or set data.eval_day")
    parsed = parse_days(day)
    if not isinstance(parsed, list) or len(parsed) != 1:
        raise ValueError(f"expected one day as YYYY-MM-DD to evaluate, got {day!r}")
    return parsed[0]


def already_trained(config, state: RunState, days: list[str]) -> bool:
    """Every day asked is trained with this config (a scheduler's retry of a finished
    command): nothing to do."""
    if state.matches_pending(days):
        return False
    digest = config.training_digest()
    if not all(state.is_trained(d) and state.entry(d).get("config") == digest for d in days):
        return False
    logger.info(
        "nothing to train: %s already trained in %s with this config (global step %d); "
        "--force trains again", ", ".join(days), state.run_dir, state.global_step,
    )
    return True


def interrupted_day(plan: DayPlan, state: RunState, latest, force: bool) -> dict | None:
    """The meta of the newest checkpoint (``latest``: ``(path, meta)`` or None) when it was
    taken mid-way through a day this plan continues; refuses (``RunError``) a checkpoint of
    an unfinished day the plan does not start with, unless forced."""
    meta = latest[1] if latest else None
    if meta is None:
        return None
    pending = state.pending
    own = pending is not None and meta.get("command") == pending.get("id")
    if not ((own and meta["day"] not in pending["done"]) or not state.is_trained(meta["day"])):
        return None
    if plan.to_train and plan.to_train[0] == meta["day"]:
        return meta
    if not force:
        raise RunError(
            f"day {meta['day']} was interrupted at step {meta['steps']} "
            f"of the day (checkpoint {latest[0].name}); train it first "
            f"(`mtlrec train CONFIG --day {meta['day']}` or the same command "
            f"again) or pass --force to continue from that checkpoint"
        )
    logger.warning("continuing from a checkpoint taken mid-day %s (forced)", meta["day"])
    return None


def start_position(day: str, interrupted: dict | None) -> DayPosition:
    """Where training of ``day`` starts: the interrupted checkpoint's position, else the start."""
    if interrupted is None or interrupted["day"] != day:
        return DayPosition(day=day)
    fields = {f.name: interrupted[f.name] for f in dataclasses.fields(DayPosition) if f.name in interrupted}
    position = DayPosition(**fields)
    logger.info(
        "resuming day %s after %d steps (epoch %d, %d batches consumed)",
        day, position.steps, position.epoch, position.batch_in_epoch,
    )
    return position
