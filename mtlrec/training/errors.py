"""Errors the experiment runner reports to the user (the CLI prints them in one line).

- ``ConfigError``: a config that is not valid (exit code 2), with the key path and line.
- ``RunError``: a run that cannot go on as asked (a day already trained, a locked or
  inconsistent run directory, a non-finite loss); the run directory is left as it was
  after the last good step (exit code 1).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid experiment config.

    Args:
        message: what was expected and what was found.
        path: the key path, e.g. ``training.batch_size`` or ``tasks[1].label``.
        source: the config file (or None for a dict).
        line: 1-based line of the key in ``source`` when known.
    """

    def __init__(self, message: str, path: str | None = None, source=None, line=None):
        self.message = message
        self.path = path
        self.source = None if source is None else str(source)
        self.line = line
        where = self.source or "config"
        if line is not None:
            where = f"{where}:{line}"
        text = message if not path or message.startswith(path) else f"{path}: {message}"
        super().__init__(f"{where}: {text}")


class RunError(RuntimeError):
    """A run that stops without changing the last good checkpoint, state or export."""


class NonFiniteLossError(RunError):
    """The training loss became NaN or infinite; names the day and the step."""

    def __init__(self, day: str, step: int, day_step: int, losses: dict):
        self.day = day
        self.step = step
        self.day_step = day_step
        self.losses = losses
        detail = ", ".join(f"{k}={v:.6g}" for k, v in losses.items())
        super().__init__(
            f"non-finite loss on day {day} at step {day_step} of the day "
            f"(global step {step}): {detail}; the day was stopped, the last good "
            f"checkpoint is kept and nothing was exported"
        )
