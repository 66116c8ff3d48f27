"""Which numeric feature's encoding a config changes on an existing run, and the refusal.

A trained model reads each numeric feature as its ``normalize`` says; a ``bucketize`` or
``piecewise_linear`` feature's embedding rows mean the buckets its ``boundaries`` cut
(taken from the config, or computed from the first training day for its
``num_buckets``). A config that changes them on an existing run is refused (exit 2,
naming the feature and both values) as a changed lookup is; unlike a lookup, no flag
migrates it: the rows would start afresh in a model trained around them, so a new
encoding takes a new run directory. Leaving ``boundaries`` out of the config keeps the
ones the run computed (``schema.json``), as with ``standardize``'s statistics.
"""

from __future__ import annotations

import dataclasses

from mtlrec.schema import DEFAULT_NUMERIC_BUCKETS, Schema


@dataclasses.dataclass(frozen=True)
class NumericChange:
    """A numeric feature whose encoding the config changes.

    Attributes:
        feature: its name.
        path: the config key path of the changed setting (``schema.numeric[i].<key>``).
        trained: what the run was trained with, as the message shows it.
        asked: what the config asks for, as the message shows it.
    """

    feature: str
    path: str
    trained: str
    asked: str

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]


def _cuts(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _boundary_change(path, name, old, new) -> NumericChange:
    if len(old) != len(new):
        return NumericChange(name, path, f"{len(old)} boundaries {_cuts(old)}", f"{len(new)} {_cuts(new)}")
    i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    return NumericChange(name, f"{path}[{i}]", f"boundaries[{i}] {old[i]:g}", f"{new[i]:g}")


def numeric_change(saved: dict, wanted: dict) -> NumericChange | None:
    """The first numeric feature of ``wanted`` whose ``normalize``, ``boundaries`` or
    (boundaries left out) ``num_buckets`` differ from those ``saved`` was trained with."""
    trained = {f.name: f for f in Schema.from_dict(saved).numeric}
    for i, f in enumerate(Schema.from_dict(wanted).numeric):
        old = trained.get(f.name)
        where = f"schema.numeric[{i}]"
        if old is None:
            continue
        if old.normalize != f.normalize:
            return NumericChange(f.name, f"{where}.normalize", f"normalize {old.normalize}", f.normalize)
        if not f.embedded:
            continue
        if f.boundaries is not None and f.boundaries != old.boundaries:
            return _boundary_change(f"{where}.boundaries", f.name, old.boundaries, f.boundaries)
        buckets_now = f.num_buckets or DEFAULT_NUMERIC_BUCKETS
        buckets_then = old.num_buckets or DEFAULT_NUMERIC_BUCKETS
        if f.boundaries is None and buckets_now != buckets_then:
            return NumericChange(
                f.name, f"{where}.num_buckets",
                f"num_buckets {buckets_then} (boundaries {_cuts(old.boundaries)})", str(buckets_now),
            )
    return None


def numeric_refusal(config, run_dir, change: NumericChange):
    """The ``ConfigError`` (exit 2) refusing ``change``, on its config line."""
    from mtlrec.training.config import config_error

    what = "how the model reads its values" if change.key == "normalize" else "which values its embedding rows mean"
    message = (
        f"feature {change.feature!r} was trained with {change.trained} in {run_dir}, the config asks "
        f"for {change.asked}; changing a numeric feature's {change.key.split('[')[0]} on an existing run "
        f"is refused (it changes {what}); keep the run's setting, or use a new run_dir"
    )
    return config_error(config, change.path, message)
