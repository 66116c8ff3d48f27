"""Which history encoders a run's model was built with, and the refusal to change them.

A run records its model's `model.sequence_encoders` (each history with its encoder,
features, query and settings, defaults filled) in ``state.json`` when a ``train``
command begins; a run without the record was trained before sequence encoders existed,
with every history mean-pooled. A config that asks for other encoders on a trained
run is refused (exit 2, naming the history, the setting and both values), as a changed
lookup is: the trained weights belong to the encoders they were trained with (a new
encoder's weights would start untrained, a changed one's would no longer fit).
"""

from __future__ import annotations

from mtlrec.models.base.history_specs import history_specs, specs_as_config

#: The key of the record in ``state.json``.
RECORD_KEY = "sequence_encoders"


def wanted_encoders(config) -> dict:
    """The config's histories as full entries (`{}`: every history mean-pooled alone)."""
    return specs_as_config(history_specs(config.model.get("sequence_encoders"), config.schema))


def recorded_encoders(state) -> dict:
    """The histories a run's model was built with (`{}` for a run trained before the record)."""
    return state.data.get(RECORD_KEY) or {}


def record_encoders(config, state) -> None:
    """Keep the config's histories in ``state`` (saved with it when the command begins)."""
    state.data[RECORD_KEY] = wanted_encoders(config)


def _first_change(before: dict, after: dict) -> tuple[str, str]:
    """``(key path below model.sequence_encoders, what changed)`` of the first difference."""
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            return "", (
                f"history {name!r} ({old['encoder']} over {', '.join(old['features'])}) is not in the config "
                f"(its features would be mean-pooled alone)"
            )
        for key in ("encoder", "features", "query"):
            if old[key] != new[key]:
                return f".{name}.{key}", f"history {name!r} was trained with {key} {_show(old[key])}, the config asks for {_show(new[key])}"
        for key in sorted(set(old["options"]) | set(new["options"])):
            was, now = old["options"].get(key), new["options"].get(key)
            if was != now:
                return f".{name}.options.{key}", f"history {name!r} ({old['encoder']}) was trained with {key} {_show(was)}, the config asks for {_show(now)}"
    for name, new in after.items():
        if name not in before:
            return f".{name}", (
                f"history {name!r} was trained with {', '.join(new['features'])} mean-pooled alone "
                f"(not in the run's sequence_encoders), the config asks for {new['encoder']}"
            )
    raise AssertionError("the histories differ in order only: history_specs orders them by the schema")


def _show(value) -> str:
    return ", ".join(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) and value else repr(value)


def check_encoders(config, run, state) -> None:
    """Refuse (``ConfigError``, exit 2) a config whose histories differ from those the run
    was trained with; a new run (no saved schema) takes any."""
    if run.saved_schema() is None:
        return
    before, after = recorded_encoders(state), wanted_encoders(config)
    if before == after:
        return
    from mtlrec.training.config import config_error

    where, what = _first_change(before, after)
    message = (
        f"{what} in {run.path}; changing a trained run's sequence encoders is refused (its weights "
        f"were trained for the encoders it was built with); keep them, or train into a new run_dir"
    )
    raise config_error(config, f"model.sequence_encoders{where}", message)
