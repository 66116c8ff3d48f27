"""Loading a config: sections by pydantic, then the typed schema, tasks, model,
optimizers and loss weighting, each checked once against what its constructor takes."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from mtlrec.conventions.key_paths import KeyPathError, show
from mtlrec.conventions.specs import OptimizerSpec, WeightingSpec
from mtlrec.training.config import source as yaml_source
from mtlrec.training.config.experiment_config import ExperimentConfig
from mtlrec.training.config.sections import SECTIONS, Document, keys_of
from mtlrec.training.errors import ConfigError


def _key_path(loc) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _section_error(err: ValidationError, src: yaml_source.Source) -> ConfigError:
    """The first error pydantic found, as ``key.path: expected ..., got ...``."""
    first = err.errors()[0]
    loc, kind = first["loc"], first["type"]
    if kind == "extra_forbidden":
        owner = SECTIONS[loc[0]] if len(loc) > 1 else Document
        message = f"unknown key; expected one of {', '.join(keys_of(owner))}"
    elif kind == "missing":
        message = f"required {'section' if loc[-1] in SECTIONS else 'key'} is missing"
    else:
        message = first["msg"]
    return src.error(_key_path(loc), message)


def _checked(src, default_path: str, check, *args):
    """``check(*args)``; its ``KeyPathError`` (or any ``ValueError``, on ``default_path``)
    as a ``ConfigError`` with the line of the key."""
    try:
        return check(*args)
    except KeyPathError as err:
        raise src.error(err.path, str(err)) from None
    except (ValueError, TypeError) as err:
        raise src.error(default_path, str(err)) from None


def default_funnel(tasks, labels) -> list[list[str]]:
    """``data.funnel`` when the config sets none: ``[parent's label, label]`` of every task
    with a ``parent`` (in task order), then ``[click, conversion]`` when the schema has both
    labels and no task pair names it already."""
    by_name = {task.name: task for task in tasks}
    pairs = []
    for task in tasks:
        if task.parent is None:
            continue
        pair = [by_name[task.parent].label, task.label]
        if pair[0] != pair[1] and pair not in pairs:
            pairs.append(pair)
    if {"click", "conversion"} <= set(labels) and ["click", "conversion"] not in pairs:
        pairs.append(["click", "conversion"])
    return pairs


def _funnel(data, schema, tasks, src) -> None:
    """Default the funnel (``default_funnel``); check its labels."""
    labels = [label.name for label in schema.labels]
    if data.funnel is None:
        data.funnel = default_funnel(tasks, labels)
    for i, pair in enumerate(data.funnel):
        for label in pair:
            if label not in labels:
                raise src.error(
                    f"data.funnel[{i}]", f"{label!r} is not a label of the schema (labels: {', '.join(labels)})"
                )


def _row_weights(data, schema, tasks, src) -> None:
    """``data.sample_weight`` becomes the ``sample_weight`` of every task without its own;
    a weight or keep-rate column must be a number column, not an id feature."""
    for task in tasks:
        if task.sample_weight is None and data.sample_weight is not None:
            task.sample_weight = data.sample_weight
    ids = {f.name for f in schema.categorical} | {f.name for f in schema.sequence}
    places = [("data.sample_weight", data.sample_weight)] + [
        (f"tasks[{i}].{key}", getattr(t, key))
        for i, t in enumerate(tasks)
        for key in ("sample_weight", "negative_keep_rate_column")
    ]
    for path, column in places:
        if column in ids:
            raise src.error(path, f"expected a column of numbers, got {column!r}, an id feature of the schema")


def _optimizers(section, src) -> None:
    from mtlrec.optimizers import optimizer_arguments

    for part in ("dense", "embedding"):
        raw = getattr(section, part)
        _, args = _checked(src, f"optimizer.{part}", optimizer_arguments, raw, f"optimizer.{part}")
        setattr(section, part, OptimizerSpec(raw["name"], args, dict(raw)))


def _accelerator_options(training, src) -> None:
    """The step options that cannot apply: float16 (no loss scaling in the step) and XLA
    under parameter servers."""
    if training.mixed_precision == "float16":
        raise src.error(
            "training.mixed_precision", "float16 needs loss scaling, which the training step does "
            "not do (the loss weightings take per-task gradients); use bfloat16 (float32's exponent "
            "range, no scaling)"
        )
    if training.jit_compile and training.strategy == "parameter_server":
        raise src.error(
            "training.jit_compile", "XLA cannot compile a step whose variables live on parameter "
            "servers; set it to false under strategy parameter_server"
        )


def _weighting(raw: dict, tasks, src) -> WeightingSpec:
    from mtlrec.losses.factory import weighting_arguments

    if "type" not in raw:
        raise src.error("loss_weighting.type", "required key is missing")
    kind, args = _checked(src, "loss_weighting", weighting_arguments, raw, [t.name for t in tasks])
    return WeightingSpec(kind, args, dict(raw))


def _typed(doc: Document, src) -> ExperimentConfig:
    from mtlrec.models.registry import model_spec
    from mtlrec.schema import Schema
    from mtlrec.tasks import validate_tasks

    schema = _checked(src, "schema", Schema.from_dict, doc.schema_, "schema")
    tasks = _checked(src, "tasks", validate_tasks, doc.tasks, schema)
    _funnel(doc.data, schema, tasks, src)
    _row_weights(doc.data, schema, tasks, src)
    model = _checked(src, "model", model_spec, doc.model, "model", ("loss_weighting",), schema)
    _optimizers(doc.optimizer, src)
    _accelerator_options(doc.training, src)
    return ExperimentConfig(
        name=doc.name, data=doc.data, schema=schema, tasks=tasks, model=model, run_dir=doc.run_dir,
        optimizer=doc.optimizer, loss_weighting=_weighting(doc.loss_weighting, tasks, src),
        training=doc.training, evaluation=doc.evaluation, export=doc.export, follow=doc.follow,
        source=src.source, lines=src.lines, raw={"schema": doc.schema_, "tasks": doc.tasks},
    )


def _local_path(src, key: str, value, base_dir: Path) -> str | None:
    """``value`` resolved against ``base_dir``; a ``scheme://`` URI is refused: a run directory
    is locked and written by atomic renames."""
    from mtlrec.data_pipeline import filesystems

    scheme = filesystems.scheme_of(value)
    if scheme:
        raise src.error(key, f"expected a local or mounted path, got the URI {value!r} (a run directory is locked "
                             f"and written by atomic renames, which {scheme}:// cannot do; mount the storage and "
                             f"give its path)")
    path = Path(value).expanduser()
    return os.path.normpath(str(path if path.is_absolute() else base_dir / path))


def _data_root(src, data, base_dir: Path) -> str:
    """``data.root``: a local path, or a URI (``mtlrec.data_pipeline.filesystems``) kept as written."""
    from mtlrec.data_pipeline import filesystems

    if filesystems.uri_problem(data.root):
        raise src.error("data.root", filesystems.uri_problem(data.root))
    if data.format == "tfrecord" and filesystems.tensorflow_problem(data.root):
        raise src.error("data.format", f"expected parquet for a {filesystems.scheme_of(data.root)}:// data.root "
                                       f"({filesystems.tensorflow_problem(data.root)}), got tfrecord")
    return data.root if filesystems.scheme_of(data.root) else _local_path(src, "data.root", data.root, base_dir)


def config_from_dict(data, source=None, lines=None, base_dir=None) -> ExperimentConfig:
    """Validate a config mapping (what ``yaml_loader.load`` returns) into the typed tree.

    Args:
        data: the parsed config.
        source: name of the file, for messages.
        lines: key path -> line (from ``yaml.compose``), for messages.
        base_dir: directory that relative paths resolve against (default: the
            directory of ``source``, else the working directory).

    Raises:
        ConfigError: naming the key path, the line and what was expected.
    """
    src = yaml_source.Source(source, lines)
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping of sections (name, data, schema, tasks, model, ...), got {show(data)}",
            source=source,
            line=1,
        )
    try:
        doc = Document.model_validate(data)
    except ValidationError as err:
        raise _section_error(err, src) from None
    config = _typed(doc, src)
    if base_dir is None:
        base_dir = Path(source).resolve().parent if source is not None else Path.cwd()
    config.data.root = _data_root(src, config.data, Path(base_dir))
    config.run_dir = _local_path(src, "run_dir", config.run_dir or f"runs/{config.name}", Path(base_dir))
    return config


def config_error(config: ExperimentConfig, path: str, message: str) -> ConfigError:
    """A ``ConfigError`` about ``path`` of an already loaded config (with its line)."""
    return yaml_source.Source(config.source, config.lines).error(path, message)


def load_configs(path, base_dir=None) -> list[ExperimentConfig]:
    """All experiments of a (possibly multi-document, ``---``-separated) YAML file.

    ``base_dir``: where relative paths resolve (default: the file's directory).
    """
    documents = yaml_source.documents(yaml_source.read(path), path)
    if not documents:
        raise ConfigError("the config file is empty", source=path, line=1)
    return [config_from_dict(d, source=path, lines=lines, base_dir=base_dir) for d, lines in documents]


def load_config(path) -> ExperimentConfig:
    """The experiment of a one-document YAML config file, validated.

    Raises:
        ConfigError: a missing or unreadable file, a YAML syntax error, or any
            invalid key (with the key path, line and what was expected).
    """
    configs = load_configs(path)
    if len(configs) != 1:
        raise ConfigError(
            f"expected one experiment in the file, found {len(configs)} YAML documents", source=path
        )
    return configs[0]
