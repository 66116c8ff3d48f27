"""mtlrec.training: experiment configs, the training loop, daily increments, export.

    from mtlrec.training import Experiment, load_config

    experiment = Experiment(load_config("experiments/esmm.yaml"))
    experiment.train(days="2024-01-01:2024-01-05")   # full training
    experiment.train(day="2024-01-06")               # the daily update
    experiment.evaluate("2024-01-07").metrics

Names are imported on first use, so ``mtlrec generate`` does not load TensorFlow.

Here: the experiment (``experiment``), the training loop (``trainer``), evaluation, the run's
schema, the report and the demo. Below: ``config/`` (the YAML config), ``days/`` (which days a
command trains, their checks and datasets), ``run/`` (the run directory), ``distribute/``
(strategies, parameter servers), ``lookups/`` (changing a run's lookups), ``serving/`` (exports
and batch scoring).
"""

import importlib

_EXPORTS = {
    "ConfigError": "mtlrec.training.errors",
    "RunError": "mtlrec.training.errors",
    "NonFiniteLossError": "mtlrec.training.errors",
    "ExperimentConfig": "mtlrec.training.config",
    "load_config": "mtlrec.training.config",
    "load_configs": "mtlrec.training.config",
    "config_from_dict": "mtlrec.training.config",
    "Experiment": "mtlrec.training.experiment",
    "Trainer": "mtlrec.training.trainer",
    "DayPosition": "mtlrec.training.days.day_position",
    "EvaluationResult": "mtlrec.training.evaluation",
    "CheckpointManager": "mtlrec.training.run.checkpoints",
    "RunState": "mtlrec.training.run.run_state",
    "export_model": "mtlrec.training.serving.export",
    "latest_export": "mtlrec.training.serving.export",
    "evaluate_model": "mtlrec.training.evaluation",
    "predict_file": "mtlrec.training.serving.predict",
    "make_report": "mtlrec.training.report",
    "run_demo": "mtlrec.training.demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtlrec.training' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
