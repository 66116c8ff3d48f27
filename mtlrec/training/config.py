"""Experiment configs: one YAML file is one reproducible run.

``load_config(path)`` reads the file with ``mtlrec.yaml_loader`` (a safe loader:
nothing in it is evaluated as code; numbers read as YAML 1.2 writes them, ``1e-3``), checks every key before any work starts and returns an
``ExperimentConfig``. A bad config raises ``ConfigError`` naming the file, the
line, the key path (``training.batch_size``, ``tasks[1].label``) and what was
expected. Relative paths (``run_dir``, ``data.root``) resolve against the
directory of the config file.

Sections (see the README for every key)::

    name: esmm_synthetic
    run_dir: ../runs/esmm            # default: runs/<name> next to the config
    data: {root: ../data, format: parquet, train_days: "2024-01-01:2024-01-02",
           eval_day: null, funnel: [[click, conversion]], non_finite_numeric: replace}
    schema: {...}                    # mtlrec.schema.Schema.from_dict
    tasks: [{name: ctr, label: click}, {name: cvr, label: conversion, parent: ctr}]
    model: {type: esmm, <hyperparameters>, interaction: null}
    optimizer: {dense: {name: adam, learning_rate: 0.001},
                embedding: {name: lazy_adam, learning_rate: 0.001}}
    loss_weighting: {type: fixed}
    training: {batch_size: 1024, epochs_per_day: 1, steps_per_day: null,
               checkpoint_every: 1000, seed: 0, shuffle_buffer: 10000, log_every: 100,
               strategy: auto}
    evaluation: {batch_size: 4096, extras: [user_id, true_ctr, true_cvr]}
    export: {keep: 3}
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import inspect
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from mtlrec import yaml_loader
from mtlrec.training.errors import ConfigError

FORMATS = ("parquet", "tfrecord")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PATH_RE = re.compile(r"^[A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*")


class _Expected(Exception):
    """Raised by a value checker: ``expected`` says what a valid value looks like."""

    def __init__(self, expected: str, key: str | None = None):
        super().__init__(expected)
        self.expected = expected
        self.key = key


# ----------------------------------------------------------------- checkers


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _name(value):
    if not isinstance(value, str) or not value.strip():
        raise _Expected("a non-empty string")
    return value


def _positive_int(value):
    if not _is_int(value) or value <= 0:
        raise _Expected("a positive integer")
    return int(value)


def _non_negative_int(value):
    if not _is_int(value) or value < 0:
        raise _Expected("a non-negative integer")
    return int(value)


def _optional(check: Callable) -> Callable:
    def checker(value):
        if value is None:
            return None
        try:
            return check(value)
        except _Expected as err:
            raise _Expected(f"{err.expected} or null", err.key) from None

    return checker


def _choice(*choices) -> Callable:
    def checker(value):
        if value not in choices:
            raise _Expected("one of " + ", ".join(map(str, choices)))
        return value

    return checker


def _day(value) -> str:
    """A day as ``YYYY-MM-DD`` (YAML turns an unquoted date into a ``date``)."""
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str) and _DAY_RE.match(value):
        try:
            datetime.date.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise _Expected("a day as YYYY-MM-DD")


def parse_days(value):
    """``"A:B"`` (inclusive range), one day, or a list of days -> ``str`` range or list.

    Raises ``ValueError`` saying what was expected.
    """
    try:
        return _days(value)
    except _Expected as err:
        raise ValueError(f"expected {err.expected}, got {_show(value)}") from None


def _days(value):
    expected = 'a day range "YYYY-MM-DD:YYYY-MM-DD", a day, or a list of days'
    if isinstance(value, (list, tuple)):
        if not value:
            raise _Expected(expected + " (got an empty list)")
        try:
            return [_day(v) for v in value]
        except _Expected:
            raise _Expected(expected) from None
    if isinstance(value, str) and ":" in value:
        parts = value.split(":")
        if len(parts) != 2:
            raise _Expected(expected)
        try:
            start, end = _day(parts[0].strip()), _day(parts[1].strip())
        except _Expected:
            raise _Expected(expected) from None
        if start > end:
            raise _Expected(expected + f" with start <= end ({start} > {end})")
        return f"{start}:{end}"
    try:
        return [_day(value)]
    except _Expected:
        raise _Expected(expected) from None


def _funnel(value):
    expected = "a list of [upper, lower] label pairs, e.g. [[click, conversion]]"
    if not isinstance(value, (list, tuple)):
        raise _Expected(expected)
    pairs = []
    for pair in value:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(x, str) and x for x in pair)
        ):
            raise _Expected(expected)
        pairs.append([pair[0], pair[1]])
    return pairs


def _string_list(value):
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, str) and v for v in value
    ):
        raise _Expected("a list of column names")
    return list(value)


def _mapping(value):
    if not isinstance(value, dict):
        raise _Expected("a mapping")
    return value


def _task_list(value):
    if not isinstance(value, list) or not value:
        raise _Expected("a non-empty list of tasks ({name, label, ...})")
    return value


def _field(default, check, doc=""):
    if isinstance(default, (list, dict)):
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(default),
            metadata={"check": check, "doc": doc},
        )
    return dataclasses.field(default=default, metadata={"check": check, "doc": doc})


def _required(check, doc=""):
    return dataclasses.field(metadata={"check": check, "doc": doc})


# ----------------------------------------------------------------- sections


@dataclasses.dataclass
class DataConfig:
    """``data``: where the day partitions are and which days to train on."""

    root: str = _required(_name, "directory of dt=YYYY-MM-DD partitions")
    format: str = _field("parquet", _choice(*FORMATS))
    train_days: Any = _field(None, _optional(_days), '"A:B", a day or a list')
    eval_day: str | None = _field(None, _optional(_day), "default day of `evaluate`")
    funnel: list | None = _field(
        None, _optional(_funnel), "default: [[click, conversion]] when the schema has both labels, else []"
    )
    non_finite_numeric: str = _field(
        "replace", _choice("replace", "refuse"), "NaN/inf in a numeric feature: default + count, or error"
    )


@dataclasses.dataclass
class TrainingConfig:
    """``training``: batches, steps, checkpoints and logging."""

    batch_size: int = _field(1024, _positive_int)
    epochs_per_day: int = _field(1, _positive_int)
    steps_per_day: int | None = _field(None, _optional(_positive_int))
    checkpoint_every: int = _field(1000, _positive_int)
    seed: int = _field(0, _non_negative_int)
    shuffle_buffer: int = _field(10000, _non_negative_int)
    log_every: int = _field(100, _positive_int)
    strategy: str = _field(
        "auto", _choice("auto", "default", "mirrored", "multi_worker"), "tf.distribute strategy"
    )


@dataclasses.dataclass
class EvaluationConfig:
    """``evaluation``: batch size and extra columns passed to the metrics."""

    batch_size: int = _field(4096, _positive_int)
    extras: list = _field([], _string_list)


@dataclasses.dataclass
class ExportConfig:
    """``export``: how many SavedModel versions to keep."""

    keep: int = _field(3, _positive_int)


@dataclasses.dataclass
class OptimizerConfig:
    """``optimizer``: one optimizer for dense weights, one for embedding tables."""

    dense: dict = _field({"name": "adam", "learning_rate": 0.001}, _mapping)
    embedding: dict = _field({"name": "lazy_adam", "learning_rate": 0.001}, _mapping)


@dataclasses.dataclass
class ExperimentConfig:
    """A validated experiment config (see the module docstring for the keys)."""

    name: str = _required(_name)
    data: DataConfig = _required(None)
    schema: dict = _required(_mapping)
    tasks: list = _required(_task_list)
    model: dict = _required(_mapping)
    run_dir: str | None = _field(None, _optional(_name))
    optimizer: OptimizerConfig = _field(None, None)
    loss_weighting: dict = _field({"type": "fixed"}, _mapping)
    training: TrainingConfig = _field(None, None)
    evaluation: EvaluationConfig = _field(None, None)
    export: ExportConfig = _field(None, None)
    source: str | None = None  # the config file, for messages and relative paths
    lines: dict | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The config as plain data (what ``load_config`` reads back)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "lines"):
                continue
            value = getattr(self, f.name)
            out[f.name] = (
                dataclasses.asdict(value)
                if dataclasses.is_dataclass(value)
                else copy.deepcopy(value)
            )
        return out

    def training_digest(self) -> str:
        """A digest of what decides the trained weights (schema, tasks, model, optimizer,
        loss weighting, training, data format and funnel); paths, days, evaluation and
        export settings are left out."""
        import hashlib
        import json

        data = self.to_dict()
        kept = {k: data[k] for k in ("schema", "tasks", "model", "optimizer", "loss_weighting", "training")}
        kept["data"] = {k: data["data"][k] for k in ("format", "funnel", "non_finite_numeric")}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


_SECTIONS = {
    "data": DataConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "export": ExportConfig,
    "optimizer": OptimizerConfig,
}


# ----------------------------------------------------------------- line numbers


def _line_map(node, path="", lines=None) -> dict:
    """Key path -> 1-based line, from a composed YAML node tree."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            child = f"{path}.{name}" if path else name
            lines[child] = key.start_mark.line + 1
            _line_map(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            _line_map(item, child, lines)
    return lines


class _Context:
    """Builds ``ConfigError``s with the file and the line of a key path."""

    def __init__(self, source, lines):
        self.source = source
        self.lines = lines or {}

    def line(self, path: str | None):
        while path:
            if path in self.lines:
                return self.lines[path]
            last = re.search(r"(\[\d+\]|\.[^.\[\]]+)$", path)
            path = path[: last.start()] if last else ""
        return None

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, path=path, source=self.source, line=self.line(path))

    def wrap(self, err: Exception, default_path: str) -> ConfigError:
        """A ``ValueError`` from another module's validator, with our file and line."""
        message = str(err)
        match = _PATH_RE.match(message)
        path = default_path
        if match and (match.group(0) == default_path or match.group(0).startswith(
            (default_path + ".", default_path + "[")
        )):
            path = match.group(0)
        if not message.startswith(path):
            message = f"{path}: {message}"
        return ConfigError(message, path=path, source=self.source, line=self.line(path))


# ----------------------------------------------------------------- validation


def _section(cls, value, path: str, ctx: _Context):
    if value is None:
        value = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("source", "lines")}
    if not isinstance(value, dict):
        raise ctx.error(
            path,
            f"expected a mapping with keys {', '.join(fields)}, got {_show(value)}",
        )
    for key in value:
        if key not in fields:
            raise ctx.error(
                f"{path}.{key}" if path else str(key),
                f"unknown key; expected one of {', '.join(fields)}",
            )
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name in _SECTIONS:
            if missing and name not in value:
                raise ctx.error(key_path, "required section is missing")
            kwargs[name] = _section(_SECTIONS[name], value.get(name), key_path, ctx)
            continue
        if name not in value:
            if missing:
                raise ctx.error(key_path, "required key is missing")
            continue
        check = f.metadata.get("check")
        try:
            kwargs[name] = check(value[name]) if check else value[name]
        except _Expected as err:
            raise ctx.error(
                key_path, f"expected {err.expected}, got {_show(value[name])}"
            ) from None
    return cls(**kwargs)


def _model_classes() -> dict:
    """Model type -> class, from ``mtlrec.models`` (empty if it has no registry)."""
    import mtlrec.models as models

    for attr in ("MODELS", "MODEL_TYPES", "REGISTRY"):
        registry = getattr(models, attr, None)
        if isinstance(registry, dict) and registry:
            return registry
    return {}


_NOT_HYPERPARAMETERS = {"self", "schema", "tasks", "name", "kwargs", "args", "loss_weighting"}


def _check_model(model: dict, ctx: _Context) -> None:
    if "type" not in model:
        raise ctx.error("model.type", "required key is missing")
    registry = _model_classes()
    kind = model["type"]
    if registry and kind not in registry:
        raise ctx.error(
            "model.type", f"expected one of {', '.join(sorted(registry))}, got {_show(kind)}"
        )
    if not registry:
        return
    params = inspect.signature(registry[kind].__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and all(
        p.kind is inspect.Parameter.VAR_KEYWORD or n in _NOT_HYPERPARAMETERS
        for n, p in params.items()
    ):
        return  # a model that takes **kwargs only: its constructor checks them
    from mtlrec.models.registry import config_key

    allowed = {
        config_key(n): p.default
        for n, p in params.items()
        if n not in _NOT_HYPERPARAMETERS
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    for key, value in model.items():
        if key == "type":
            continue
        if key not in allowed:
            raise ctx.error(
                f"model.{key}",
                f"unknown hyperparameter of model type {kind!r}; expected one of "
                f"{', '.join(sorted(allowed))}",
            )
        default = allowed[key]
        if value is None or default is None or default is inspect.Parameter.empty:
            continue
        expected = None
        if isinstance(default, bool):
            expected = None if isinstance(value, bool) else "true or false"
        elif _is_int(default) and not isinstance(default, bool):
            expected = None if _is_int(value) else "an integer"
        elif isinstance(default, float):
            expected = None if _is_number(value) else "a number"
        elif isinstance(default, str):
            expected = None if isinstance(value, str) else "a string"
        elif isinstance(default, (list, tuple)):
            expected = None if isinstance(value, (list, tuple)) else "a list"
        if expected:
            raise ctx.error(f"model.{key}", f"expected {expected}, got {_show(value)}")
    if model.get("gate") is not None:
        from mtlrec.layers._gate_config import check_gate

        try:
            check_gate(model["gate"], "model.gate")
        except ValueError as err:
            raise ctx.wrap(err, "model.gate") from None


def _check_names(config: ExperimentConfig, ctx: _Context) -> None:
    """Cross-section checks: schema, tasks, funnel labels, model, optimizers, weighting."""
    from mtlrec.schema import Schema
    from mtlrec.tasks import validate_tasks

    try:
        schema = Schema.from_dict(config.schema, path="schema")
    except (ValueError, TypeError, KeyError) as err:
        raise ctx.wrap(err, "schema") from None
    try:
        validate_tasks(config.tasks, config.schema)
    except (ValueError, TypeError) as err:
        raise ctx.wrap(err, "tasks") from None

    labels = [label.name for label in schema.labels]
    if config.data.funnel is None:  # not set: the click -> conversion funnel where it applies
        has_both = "click" in labels and "conversion" in labels
        config.data.funnel = [["click", "conversion"]] if has_both else []
    for i, pair in enumerate(config.data.funnel):
        for j, label in enumerate(pair):
            if label not in labels:
                raise ctx.error(
                    f"data.funnel[{i}]",
                    f"{label!r} is not a label of the schema (labels: {', '.join(labels)})",
                )
    _check_model(config.model, ctx)

    from mtlrec.optimizers import make_optimizer

    for part in ("dense", "embedding"):
        path = f"optimizer.{part}"
        try:
            make_optimizer(getattr(config.optimizer, part), path=path)
        except (ValueError, TypeError) as err:
            raise ctx.wrap(err, path) from None

    from mtlrec.losses import make_weighting
    from mtlrec.tasks import Task

    if "type" not in config.loss_weighting:
        raise ctx.error("loss_weighting.type", "required key is missing")
    try:
        tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(config.tasks)]
        make_weighting(config.loss_weighting, tasks)
    except (ValueError, TypeError, KeyError) as err:
        raise ctx.wrap(err, "loss_weighting") from None


def config_error(config: ExperimentConfig, path: str, message: str) -> ConfigError:
    """A ``ConfigError`` about ``path`` of an already loaded config (with its line)."""
    return _Context(config.source, config.lines).error(path, message)


def _refuse_uri(ctx: "_Context", key: str, value) -> None:
    """Roots are local (or mounted) paths: a ``scheme://`` URI would otherwise resolve as a
    relative directory named after the scheme."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]+)://", str(value or ""))
    if match:
        raise ctx.error(
            key,
            f"expected a local or mounted path, got the URI {value!r} "
            f"(scheme {match.group(1)!r} is not supported; mount the storage and give its path)",
        )


def _resolve(path: str | None, base: Path | None) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return os.path.normpath(str(p))


def config_from_dict(data, source=None, lines=None, base_dir=None) -> ExperimentConfig:
    """Validate a config mapping (what ``yaml_loader.load`` returns).

    Args:
        data: the parsed config.
        source: name of the file, for messages.
        lines: key path -> line (from ``yaml.compose``), for messages.
        base_dir: directory that relative paths resolve against (default: the
            directory of ``source``, else the working directory).

    Raises:
        ConfigError: naming the key path, the line and what was expected.
    """
    ctx = _Context(source, lines)
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of sections (name, data, schema, tasks, model, ...), "
            f"got {_show(data)}",
            source=source,
            line=1,
        )
    config = _section(ExperimentConfig, data, "", ctx)
    config.source = None if source is None else str(source)
    config.lines = dict(lines or {})
    _check_names(config, ctx)
    if base_dir is None:
        base_dir = Path(source).resolve().parent if source is not None else Path.cwd()
    base_dir = Path(base_dir)
    for key in ("data.root", "run_dir"):
        _refuse_uri(ctx, key, config.data.root if key == "data.root" else config.run_dir)
    config.data.root = _resolve(config.data.root, base_dir)
    config.run_dir = _resolve(config.run_dir or f"runs/{config.name}", base_dir)
    return config


def _parse(text: str, source) -> tuple[list, list]:
    try:
        documents = yaml_loader.load_all(text)
        nodes = yaml_loader.compose_all(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", source=source, line=line) from None
    return documents, nodes


def _read(path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", source=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the config file: {err}", source=path) from None


def load_configs(path, base_dir=None) -> list[ExperimentConfig]:
    """All experiments of a (possibly multi-document, ``---``-separated) YAML file.

    ``base_dir``: where relative paths resolve (default: the file's directory).
    """
    text = _read(path)
    documents, nodes = _parse(text, path)
    documents = [d for d in documents if d is not None]
    nodes = [n for n in nodes if n is not None]
    if not documents:
        raise ConfigError("the config file is empty", source=path, line=1)
    return [
        config_from_dict(doc, source=path, lines=_line_map(node), base_dir=base_dir)
        for doc, node in zip(documents, nodes)
    ]


def load_config(path) -> ExperimentConfig:
    """The experiment of a one-document YAML config file, validated.

    Raises:
        ConfigError: a missing or unreadable file, a YAML syntax error, or any
            invalid key (with the key path, line and what was expected).
    """
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError(
            f"expected one experiment in the file, found {len(configs)} YAML documents",
            source=path,
        )
    return configs[0]


__all__ = [
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ExportConfig",
    "OptimizerConfig",
    "TrainingConfig",
    "config_from_dict",
    "load_config",
    "load_configs",
    "parse_days",
]
