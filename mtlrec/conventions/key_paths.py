"""Errors that carry the config key or constructor argument they are about.

The config loader turns them into ``CONFIG:LINE: key.path: ...`` messages by reading
``.path`` / ``.argument``, never by parsing the message text.

- ``KeyPathError``: a bad value at a config key path (``schema.categorical[0].dim``,
  ``tasks[1].label``, ``optimizer.dense.beta_1``); ``str()`` is ``"<path>: <detail>"``.
- ``ArgumentError``: a constructor argument a layer, model or weighting refuses
  (``Expected units to be ... Received: units=-3``); ``.argument`` is its name.
"""

from __future__ import annotations


class KeyPathError(ValueError):
    """A bad value at ``path`` of a config; ``detail`` says what was expected."""

    def __init__(self, path: str, detail: str, shown: str | None = None):
        self.path = path
        self.detail = detail
        self.shown = shown  # what the message names instead of the bare path, if anything
        where = shown or path
        super().__init__(f"{where}: {detail}" if where else detail)

    def under(self, prefix: str) -> "KeyPathError":
        """The same error with ``prefix`` before its path (``gate.k`` -> ``model.gate.k``)."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return KeyPathError(path, self.detail, self.shown and f"{prefix}.{self.shown}")


class ArgumentError(ValueError):
    """A constructor argument with a value the constructor refuses."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(message)


def show(value) -> str:
    """``repr(value)``, cut to 60 characters, for ``got ...`` in messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
