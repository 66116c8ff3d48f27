"""The sections of an experiment config as pydantic models (keys, defaults, value checks).

Every model forbids unknown keys; values go through the checkers of ``values`` so a bad
value reads ``expected ..., got ...``. ``Document`` is the whole file before the
cross-section checks of ``loading`` turn its schema, tasks, model, optimizers and loss
weighting into typed objects.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from mtlrec.conventions.key_paths import show
from mtlrec.training.config import values as v

FORMATS = ("parquet", "tfrecord")


def _check(check):
    return Annotated[Any, v.checked(check)]


def keys_of(model: type[BaseModel]) -> list[str]:
    """The config keys of a section, in declaration order."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _section(model: type[BaseModel]):
    """A nested section: null means all defaults; anything but a mapping is refused."""

    def before(value):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "section", "expected a mapping with keys {keys}, got {got}",
                {"keys": ", ".join(keys_of(model)), "got": show(value)},
            )
        return value

    return Annotated[model, BeforeValidator(before)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    """``data``: where the day partitions are and which days to train on."""

    root: _check(v.name) = Field(
        description="directory of dt=YYYY-MM-DD partitions: a local path or a URI (s3://, gs://, hdfs://, ...)"
    )
    format: _check(v.choice(*FORMATS)) = "parquet"
    train_days: _check(v.optional(v.days)) = Field(None, description='"A:B", a day or a list')
    eval_day: _check(v.optional(v.day)) = Field(None, description="default day of `evaluate`")
    funnel: _check(v.optional(v.funnel)) = Field(
        None, description="[parent label, child label] pairs refused as child=1 with parent=0; default: "
        "the pair of each task with a parent, and [click, conversion] when the schema has both labels"
    )
    non_finite_numeric: _check(v.choice("replace", "refuse")) = Field(
        "replace", description="NaN/inf in a numeric feature: default + count, or error"
    )
    sample_weight: _check(v.optional(v.name)) = Field(
        None, description="a column of row weights for every task's loss and metrics (a task's own sample_weight wins)"
    )
    partitioning: _check(v.choice("day", "hour")) = Field(
        "day", description="day: dt=YYYY-MM-DD/ partitions; hour: dt=YYYY-MM-DD/hour=HH/ (what `train --follow` reads)"
    )
    done_marker: _check(v.optional(v.name)) = Field(
        "_SUCCESS", description="the file that makes a partition complete for `train --follow` (null: any "
        "partition with data files)"
    )


class TrainingConfig(Section):
    """``training``: batches, steps, checkpoints and logging."""

    batch_size: _check(v.positive_int) = 1024
    epochs_per_day: _check(v.positive_int) = 1
    steps_per_day: _check(v.optional(v.positive_int)) = None
    checkpoint_every: _check(v.positive_int) = 1000
    seed: _check(v.non_negative_int) = 0
    shuffle_buffer: _check(v.non_negative_int) = 10000
    log_every: _check(v.positive_int) = 100
    strategy: _check(v.choice("auto", "default", "mirrored", "multi_worker", "parameter_server")) = Field(
        "auto", description="tf.distribute strategy"
    )
    jit_compile: _check(v.boolean) = Field(
        False, description="compile the network after the embedding (and the losses) with XLA"
    )
    mixed_precision: _check(v.optional(v.choice("bfloat16", "float16"))) = Field(
        None, description="compute the network after the embedding in bfloat16 (variables stay float32)"
    )
    intra_op_threads: _check(v.threads) = Field(
        "auto", description="threads one TensorFlow op may use (0: one per core, TensorFlow's default; "
        "auto: 1 on machines of up to 2 cores, else 0)"
    )
    inter_op_threads: _check(v.threads) = Field(
        "auto", description="TensorFlow ops run at once (0 or auto: one per core, TensorFlow's default)"
    )


class EvaluationConfig(Section):
    """``evaluation``: batch size and extra columns passed to the metrics."""

    batch_size: _check(v.positive_int) = 4096
    extras: _check(v.string_list) = Field(default_factory=list)


class ExportConfig(Section):
    """``export``: how many SavedModel versions to keep; how often `train --follow` exports."""

    keep: _check(v.positive_int) = 3
    every: _check(v.export_every) = Field(
        1, description='`train --follow`: export every N partitions, or every N minutes ("30min")'
    )


class FollowConfig(Section):
    """``follow``: how `train --follow` waits for partitions."""

    poll_seconds: _check(v.positive_number) = Field(30.0, description="seconds between two looks at the data root")
    missing_wait_seconds: _check(v.non_negative_number) = Field(
        3600.0, description="how long a missing partition is waited for, once a later one is complete, "
        "before it is skipped"
    )
    start: _check(v.optional(v.partition)) = Field(
        None, description="the first partition of a run that has none (default: the oldest complete one)"
    )
    recheck_hours: _check(v.non_negative_int) = Field(
        24, description="trained partitions this recent are checked for rewrites before each new one"
    )


class OptimizerConfig(Section):
    """``optimizer``: one optimizer for dense weights, one for embedding tables; each an
    ``OptimizerSpec`` once loaded."""

    dense: _check(v.mapping) = Field(default_factory=lambda: {"name": "adam", "learning_rate": 0.001})
    embedding: _check(v.mapping) = Field(default_factory=lambda: {"name": "lazy_adam", "learning_rate": 0.001})


class Document(Section):
    """A whole experiment document, sections checked one by one (schema, tasks, model and
    loss weighting only for their shape here)."""

    name: _check(v.name)
    data: _section(DataConfig)
    schema_: _check(v.mapping) = Field(alias="schema")
    tasks: _check(v.task_list)
    model: _check(v.mapping)
    run_dir: _check(v.optional(v.name)) = None
    optimizer: _section(OptimizerConfig) = Field(default_factory=OptimizerConfig)
    loss_weighting: _check(v.mapping) = Field(default_factory=lambda: {"type": "fixed"})
    training: _section(TrainingConfig) = Field(default_factory=TrainingConfig)
    evaluation: _section(EvaluationConfig) = Field(default_factory=EvaluationConfig)
    export: _section(ExportConfig) = Field(default_factory=ExportConfig)
    follow: _section(FollowConfig) = Field(default_factory=FollowConfig)


SECTIONS = {
    "data": DataConfig, "optimizer": OptimizerConfig, "training": TrainingConfig,
    "evaluation": EvaluationConfig, "export": ExportConfig, "follow": FollowConfig,
}
