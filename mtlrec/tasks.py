"""Task specifications: what each head predicts and where its loss counts.

A task names a label column and a kind (``binary``, ``multiclass`` with
``num_classes``, ``regression``). Two optional fields restrict or extend where
the task's loss is computed:

- ``sample_space``: a binary label that must be 1 for a row to count (CVR
  trained on clicked rows only, PLE section 4.3). ``loss_normalization`` says what
  its loss is divided by: the batch's row count (``batch``, the default: Keras'
  ``sample_weight`` convention, so the task weighs on the shared parameters in
  proportion to how often its space occurs) or the rows of its space
  (``sample_space``).
- ``parent``: the task is a funnel step (ESMM, Ma et al. 2018). The model
  outputs the conditional probability under ``name`` and the product along the
  parent chain under ``joint_name`` (e.g. pCTCVR = pCTR x pCVR); the loss is
  BCE(joint output, joint label) over *all* rows, computed from the joint's logit, where
  the joint label is the AND of the labels along the chain (click AND conversion). A
  training or evaluation command refuses a day with a row whose label is 1 while its
  parent's is 0 (``data.funnel``, which defaults to the tasks' parent pairs).

Three more say how much each row counts (``mtlrec.row_weights``): ``sample_weight``, a
column of non-negative row weights for the task's loss and metrics; and, on one binary
task at the top of its funnel, ``negative_keep_rate`` (the share of its negatives the
data kept) or ``negative_keep_rate_column`` (a column holding each row's keep rate).

Beside each binary/multiclass probability output ``name`` (and each joint) a model
outputs its logits under ``logit_name(name)`` (``name + "_logit"``), which the losses
read; those names are reserved.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Iterable, Mapping

from mtlrec.conventions.key_paths import KeyPathError

KINDS = ("binary", "multiclass", "regression")
LOSS_NORMALIZATIONS = ("batch", "sample_space")
LOGIT_SUFFIX = "_logit"

_FIELDS = (
    "name",
    "label",
    "kind",
    "weight",
    "num_classes",
    "sample_space",
    "parent",
    "joint",
    "loss_normalization",
    "sample_weight",
    "negative_keep_rate",
    "negative_keep_rate_column",
)


def require(mapping: Mapping, key: str, what: str, task_name: str):
    """``mapping[key]``, or ValueError ``task 'cvr': label 'click' is missing (have: ...)``."""
    if key not in mapping:
        raise ValueError(
            f"task {task_name!r}: {what} {key!r} is missing "
            f"(have: {', '.join(sorted(map(str, mapping)))})"
        )
    return mapping[key]


@dataclasses.dataclass(frozen=True)
class EvaluationSpace:
    """One output a task is evaluated on, against which label, over which rows.

    Attributes:
        task: the task's name (for messages).
        output: the model output evaluated (the task's name, or its joint output).
        label: the label it is compared with.
        condition: a binary label that must be 1 for a row to count; None: every row.
        joint: True for the joint output of a funnel step.
    """

    task: str
    output: str
    label: str
    condition: str | None
    joint: bool = False

    def rows(self, labels: Mapping, flatten: Callable):
        """Which rows count: ``flatten(labels[condition]) == 1`` (a bool (N,) array or
        tensor, whatever ``flatten`` returns compares elementwise), None for every row."""
        if self.condition is None:
            return None
        return flatten(require(labels, self.condition, "label", self.task)) == 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_str(path: str, key: str, value, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        kind = "a non-empty string or null" if optional else "a non-empty string"
        raise KeyPathError(f"{path}.{key}", f"expected {kind}, got {value!r}")


@dataclasses.dataclass
class Task:
    """One prediction task of a multi-task model.

    Args:
        name: output name (the key of the model's output dict).
        label: the label column this task is trained on.
        kind: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        weight: fixed loss weight (used by ``FixedWeighting`` and as the
            initial / static weight of the other strategies).
        num_classes: number of classes, required for (and only for)
            ``multiclass``.
        sample_space: a binary label that must be 1 for a row to count in
            this task's loss and metrics.
        parent: name of the upstream funnel task (ESMM); binary tasks only.
        joint: name of the joint output; defaults to ``f"{parent}_{name}"``.
        loss_normalization: with ``sample_space``, what the summed loss of its rows
            is divided by: ``"batch"`` (the batch's row count, default) or
            ``"sample_space"`` (the number of rows in the space: a per-space mean,
            which weighs a rare space's few, noisy rows like a full batch).
        sample_weight: a column of finite non-negative row weights; the task's loss and
            metrics are weighted means (``mtlrec.row_weights``).
        negative_keep_rate: the share in (0, 1] of this task's negatives (rows of its
            space with label 0) that the data kept; its probability is corrected for it
            when evaluated and served (He et al. 2014). Binary tasks without a parent.
        negative_keep_rate_column: instead of one rate, a column holding each row's keep
            rate in (0, 1]; the negatives then weigh 1 / rate in every loss and metric.
    """

    name: str
    label: str
    kind: str = "binary"
    weight: float = 1.0
    num_classes: int | None = None
    sample_space: str | None = None
    parent: str | None = None
    joint: str | None = None
    loss_normalization: str = "batch"
    sample_weight: str | None = None
    negative_keep_rate: float | None = None
    negative_keep_rate_column: str | None = None

    def __post_init__(self):
        path = f"task {self.name!r}" if isinstance(self.name, str) else "task"
        self._check(path)

    def _check(self, path: str) -> None:
        _check_str(path, "name", self.name, optional=False)
        _check_str(path, "label", self.label, optional=False)
        if self.kind not in KINDS:
            raise KeyPathError(
                f"{path}.kind", f"expected one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if not _is_number(self.weight) or self.weight < 0:
            raise KeyPathError(
                f"{path}.weight", f"expected a non-negative number, got {self.weight!r}"
            )
        if self.kind == "multiclass":
            if self.num_classes is None:
                raise KeyPathError(
                    f"{path}.num_classes", f"required for a multiclass task "
                    f"(expected an integer >= 2), got None"
                )
            if not _is_int(self.num_classes) or self.num_classes < 2:
                raise KeyPathError(
                    f"{path}.num_classes", f"expected an integer >= 2, "
                    f"got {self.num_classes!r}"
                )
        elif self.num_classes is not None:
            raise KeyPathError(
                f"{path}.num_classes", f"only allowed for a multiclass task "
                f"(kind is {self.kind!r}), got {self.num_classes!r}"
            )
        _check_str(path, "sample_space", self.sample_space, optional=True)
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise KeyPathError(
                f"{path}.loss_normalization",
                f"expected one of {', '.join(LOSS_NORMALIZATIONS)}, got {self.loss_normalization!r}",
            )
        if self.loss_normalization != "batch" and self.sample_space is None:
            raise KeyPathError(
                f"{path}.loss_normalization",
                f"only applies to a task with a sample_space (without one every row counts), "
                f"got {self.loss_normalization!r}",
            )
        _check_str(path, "parent", self.parent, optional=True)
        _check_str(path, "joint", self.joint, optional=True)
        if self.parent is not None:
            if self.kind != "binary":
                raise KeyPathError(
                    f"{path}.parent", f"a funnel step must be a binary task "
                    f"(kind is {self.kind!r}), got parent={self.parent!r}"
                )
            if self.sample_space is not None:
                raise KeyPathError(
                    f"{path}.sample_space", f"a funnel step (parent={self.parent!r}) "
                    f"is trained over all rows and cannot have a sample space, "
                    f"got {self.sample_space!r}"
                )
        elif self.joint is not None:
            raise KeyPathError(
                f"{path}.joint", f"only allowed together with parent, got {self.joint!r}"
            )
        self._check_row_weights(path)

    def _check_row_weights(self, path: str) -> None:
        _check_str(path, "sample_weight", self.sample_weight, optional=True)
        _check_str(path, "negative_keep_rate_column", self.negative_keep_rate_column, optional=True)
        rate = self.negative_keep_rate
        if rate is not None and (not _is_number(rate) or not 0 < rate <= 1):
            raise KeyPathError(
                f"{path}.negative_keep_rate",
                f"expected a number in (0, 1] (the share of negatives kept), got {rate!r}",
            )
        if rate is not None and self.negative_keep_rate_column is not None:
            raise KeyPathError(
                f"{path}.negative_keep_rate_column",
                f"give negative_keep_rate or negative_keep_rate_column, not both "
                f"(negative_keep_rate is {rate!r})",
            )
        key = "negative_keep_rate" if rate is not None else "negative_keep_rate_column"
        if self.downsampled and self.kind != "binary":
            raise KeyPathError(
                f"{path}.{key}", f"negative downsampling applies to a binary task "
                f"(kind is {self.kind!r})"
            )
        if self.downsampled and self.parent is not None:
            raise KeyPathError(
                f"{path}.{key}", f"a funnel step's rows are those of its funnel: declare the "
                f"downsampling on the top of the funnel (parent={self.parent!r}); the joint "
                f"output is corrected through it"
            )

    @property
    def downsampled(self) -> bool:
        """Whether the task declares negative downsampling (a rate or a rate column)."""
        return self.negative_keep_rate is not None or self.negative_keep_rate_column is not None

    @property
    def joint_name(self) -> str | None:
        """Name of the joint output of a funnel step (None without a parent)."""
        if self.parent is None:
            return None
        return self.joint or f"{self.parent}_{self.name}"

    @property
    def loss_name(self) -> str:
        """What the task's loss is named in progress lines and plots: the output it is
        computed on (the joint, e.g. ``ctcvr``, for a funnel step)."""
        return self.joint_name or self.name

    def evaluation_spaces(self, tasks: Iterable["Task"]) -> list[EvaluationSpace]:
        """Where this task is evaluated (``metrics.evaluate``, ``DayMetrics``,
        ``StreamingTaskMetrics`` and ``evaluate_model`` all read it from here).

        Its output ``name`` against ``label`` on the rows where its ``sample_space`` label
        is 1, or its parent's label is 1 for a funnel step (the clicked rows of
        CTR -> CVR), every row otherwise; a funnel step's joint output (``joint_name``)
        against the same label over every row.

        Args:
            tasks: all tasks of the model (to find the parent's label).
        """
        condition = self.sample_space
        if self.parent is not None:
            condition = next(t for t in tasks if t.name == self.parent).label
        spaces = [EvaluationSpace(self.name, self.name, self.label, condition)]
        if self.parent is not None:
            spaces.append(EvaluationSpace(self.name, self.joint_name, self.label, None, joint=True))
        return spaces

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "task") -> "Task":
        """Build from a config mapping; errors name the key path (``tasks[1].kind``)."""
        if isinstance(d, Task):
            return d
        if not isinstance(d, Mapping):
            raise KeyPathError(path, f"expected a mapping, got {type(d).__name__}")
        unknown = [k for k in d if k not in _FIELDS]
        if unknown:
            raise KeyPathError(
                f"{path}.{unknown[0]}", f"unknown key (allowed: {', '.join(_FIELDS)})"
            )
        for key in ("name", "label"):
            if key not in d:
                raise KeyPathError(f"{path}.{key}", "required key is missing")
        task = cls.__new__(cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key in _FIELDS:
            setattr(task, key, d.get(key, defaults[key]))
        task._check(path)
        if _is_int(task.weight):
            task.weight = float(task.weight)
        if _is_int(task.negative_keep_rate):
            task.negative_keep_rate = float(task.negative_keep_rate)
        return task

    def to_dict(self) -> dict:
        """Plain dict; optional fields left at their default are omitted."""
        out = {"name": self.name, "label": self.label, "kind": self.kind}
        out["weight"] = float(self.weight)
        for key in ("num_classes", "sample_space", "parent", "joint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.loss_normalization != "batch":
            out["loss_normalization"] = self.loss_normalization
        for key in ("sample_weight", "negative_keep_rate", "negative_keep_rate_column"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def _schema_labels(schema) -> dict[str, dict]:
    """label name -> {"kind": ..., "num_classes": ...} from a Schema or its dict."""
    if isinstance(schema, Mapping):
        labels = schema.get("labels")
        if labels is None:
            raise KeyPathError("schema.labels", "required to validate tasks, got nothing")
    else:
        labels = getattr(schema, "labels", None)
        if labels is None:
            raise KeyPathError(
                "schema", f"expected a Schema or its dict with 'labels', "
                f"got {type(schema).__name__}"
            )
    out = {}
    for i, label in enumerate(labels):
        if isinstance(label, Mapping):
            name = label.get("name")
            kind = label.get("kind", "binary")
            num_classes = label.get("num_classes")
        else:
            name = getattr(label, "name", None)
            kind = getattr(label, "kind", "binary")
            num_classes = getattr(label, "num_classes", None)
        if not isinstance(name, str):
            raise KeyPathError(f"schema.labels[{i}].name", f"expected a string, got {name!r}")
        out[name] = {"kind": kind, "num_classes": num_classes}
    return out


def logit_name(output_name: str) -> str:
    """The key of an output's logits in a model's outputs dict (``ctr`` -> ``ctr_logit``)."""
    return output_name + LOGIT_SUFFIX


def validate_tasks(tasks: Iterable, schema) -> list[Task]:
    """Check tasks against each other and against the schema's labels.

    Args:
        tasks: ``Task`` objects or their config dicts.
        schema: an ``mtlrec.schema.Schema`` (anything with ``.labels`` whose
            items have ``.name``/``.kind``) or its dict form (``{"labels": [...]}``).

    Returns:
        The tasks as ``Task`` objects.

    Raises:
        ValueError naming ``tasks[i].<key>`` and the task for: a duplicate
        name, a label the schema lacks or whose kind differs, an unknown parent
        or a parent cycle, a non-binary parent, a sample space that is not a
        binary label, a joint name that collides with another output, a name
        or joint ending in ``_logit`` (reserved for the logits outputs), a second
        task declaring negative downsampling.
    """
    tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
    if not tasks:
        raise KeyPathError("tasks", "expected at least one task, got an empty list")
    labels = _schema_labels(schema)
    known = ", ".join(sorted(labels)) or "none"

    def error(i, key, detail):
        path = f"tasks[{i}].{key}"
        return KeyPathError(path, detail, shown=f"{path} (task {tasks[i].name!r})")

    index = {}
    for i, task in enumerate(tasks):
        if task.name in index:
            raise error(
                i, 'name', f"duplicate task name, already used by "
                f"tasks[{index[task.name]}]"
            )
        index[task.name] = i

    for i, task in enumerate(tasks):
        if task.label not in labels:
            raise error(
                i, 'label', f"{task.label!r} is not a label of the "
                f"schema (labels: {known})"
            )
        spec = labels[task.label]
        if spec["kind"] in KINDS and spec["kind"] != task.kind:
            raise error(
                i, 'kind', f"{task.kind!r} does not match the kind of "
                f"label {task.label!r} in the schema ({spec['kind']!r})"
            )
        if (
            task.kind == "multiclass"
            and spec["num_classes"] is not None
            and spec["num_classes"] != task.num_classes
        ):
            raise error(
                i, 'num_classes', f"{task.num_classes} does not match "
                f"label {task.label!r} in the schema ({spec['num_classes']})"
            )
        if task.sample_space is not None:
            if task.sample_space not in labels:
                raise error(
                    i, 'sample_space', f"{task.sample_space!r} is not a "
                    f"label of the schema (labels: {known})"
                )
            ss_kind = labels[task.sample_space]["kind"]
            if ss_kind != "binary":
                raise error(
                    i, 'sample_space', f"{task.sample_space!r} must be "
                    f"a binary label, but its kind is {ss_kind!r}"
                )
        if task.parent is not None:
            if task.parent not in index:
                raise error(
                    i, 'parent', f"{task.parent!r} is not a task "
                    f"(tasks: {', '.join(t.name for t in tasks)})"
                )
            parent = tasks[index[task.parent]]
            if parent.kind != "binary":
                raise error(
                    i, 'parent', f"parent {task.parent!r} must be a "
                    f"binary task, but its kind is {parent.kind!r}"
                )

    downsampled = [i for i, task in enumerate(tasks) if task.downsampled]
    if len(downsampled) > 1:
        i, first = downsampled[1], downsampled[0]
        key = "negative_keep_rate" if tasks[i].negative_keep_rate is not None else "negative_keep_rate_column"
        raise error(
            i, key, f"only one task may declare negative downsampling, already declared by "
            f"tasks[{first}] ({tasks[first].name!r}): a row is kept or dropped once, on "
            f"the label of one task"
        )

    for i, task in enumerate(tasks):
        seen = [task.name]
        current = task
        while current.parent is not None:
            if current.parent in seen:
                chain = " -> ".join(seen + [current.parent])
                raise error(i, 'parent', f"parent cycle {chain}")
            seen.append(current.parent)
            current = tasks[index[current.parent]]

    outputs = {t.name: i for i, t in enumerate(tasks)}
    for i, task in enumerate(tasks):
        joint = task.joint_name
        if joint is None:
            continue
        if joint in outputs:
            other = outputs[joint]
            raise error(
                i, 'joint', f"joint output name {joint!r} is already "
                f"used by tasks[{other}] ({tasks[other].name!r})"
            )
        outputs[joint] = i
    for i, task in enumerate(tasks):
        for key, name in (("name", task.name), ("joint", task.joint_name)):
            if name is not None and name.endswith(LOGIT_SUFFIX):
                raise error(
                    i, key, f"output names ending in {LOGIT_SUFFIX!r} are reserved "
                    f"for the logits beside each probability output, got {name!r}"
                )
    return tasks


def evaluation_labels(tasks: Iterable[Task]) -> set[str]:
    """Every label the tasks' evaluation spaces read (their labels and conditions) and
    the columns of their row weights (sample weights, keep rates)."""
    tasks = list(tasks)
    spaces = {
        name
        for task in tasks
        for space in task.evaluation_spaces(tasks)
        for name in (space.label, space.condition)
        if name is not None
    }
    weights = {
        name
        for task in tasks
        for name in (task.sample_weight, task.negative_keep_rate_column)
        if name is not None
    }
    return spaces | weights


def funnel_chain(task: Task, tasks: Iterable[Task]) -> list[Task]:
    """The tasks from the top of the funnel down to ``task`` (inclusive)."""
    by_name = {t.name: t for t in tasks}
    chain = [task]
    while chain[-1].parent is not None:
        chain.append(by_name[chain[-1].parent])
        if len(chain) > len(by_name):
            raise ValueError(f"task {task.name!r}: parent cycle")
    return chain[::-1]
