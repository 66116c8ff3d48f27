"""Experiment configs: one YAML file is one reproducible run.

``load_config(path)`` reads the file with ``mtlrec.conventions.yaml_loader`` (a safe loader:
nothing in it is evaluated as code; numbers read as YAML 1.2 writes them, ``1e-3``),
checks every key once, before any work starts, and returns an ``ExperimentConfig``: one
typed tree (``.schema`` a ``Schema``, ``.tasks`` a list of ``Task``, ``.model``,
``.loss_weighting`` and ``.optimizer.dense`` / ``.embedding`` checked ``Spec``s). Nothing
is built while loading (no model, optimizer, weighting or TensorFlow object): the
trainer builds them inside the ``tf.distribute`` strategy's scope.

A bad config raises ``ConfigError`` naming the file, the line, the key path
(``training.batch_size``, ``tasks[1].label``) and what was expected; the key path comes
from where the check failed (pydantic's error location, ``KeyPathError.path``), never
from the message text. Relative paths (``run_dir``, ``data.root``) resolve against the
directory of the config file.

Modules: ``values`` (checks of one value), ``sections`` (the pydantic sections),
``source`` (YAML reading, line of each key), ``loading`` (the typed tree),
``experiment_config`` (``ExperimentConfig``).

Sections (docs/guide/configs.md lists every key)::

    name: esmm_synthetic
    run_dir: ../runs/esmm            # default: runs/<name> next to the config
    data: {root: ../data, format: parquet, train_days: "2024-01-01:2024-01-02",
           eval_day: null, funnel: [[click, conversion]], non_finite_numeric: replace}
    schema: {...}                    # -> mtlrec.schema.Schema
    tasks: [{name: ctr, label: click}, {name: cvr, label: conversion, parent: ctr}]  # -> [Task]
    model: {type: esmm, <hyperparameters>, interaction: null}  # -> ModelSpec
    optimizer: {dense: {name: adam, learning_rate: 0.001},
                embedding: {name: lazy_adam, learning_rate: 0.001}}
    loss_weighting: {type: fixed}
    training: {batch_size: 1024, epochs_per_day: 1, steps_per_day: null,
               checkpoint_every: 1000, seed: 0, shuffle_buffer: 10000, log_every: 100,
               strategy: auto}
    evaluation: {batch_size: 4096, extras: [user_id, true_ctr, true_cvr]}
    export: {keep: 3}
"""

from mtlrec.training.config.experiment_config import ExperimentConfig
from mtlrec.training.config.loading import config_error, config_from_dict, load_config, load_configs
from mtlrec.training.config.sections import (
    FORMATS,
    DataConfig,
    EvaluationConfig,
    ExportConfig,
    OptimizerConfig,
    TrainingConfig,
)
from mtlrec.training.config.values import parse_days
from mtlrec.training.errors import ConfigError

__all__ = [
    "FORMATS",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ExportConfig",
    "OptimizerConfig",
    "TrainingConfig",
    "config_error",
    "config_from_dict",
    "load_config",
    "load_configs",
    "parse_days",
]
