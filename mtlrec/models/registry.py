"""Build a model from the `model` section of a config."""

import keyword
from collections.abc import Mapping

from mtlrec.conventions.constructor_args import REQUIRED, constructor_args
from mtlrec.conventions.key_paths import ArgumentError, KeyPathError, show
from mtlrec.layers.experts._gate_config import check_gate
from mtlrec.models.base.history_specs import history_specs

from mtlrec.models.aitm import AITM
from mtlrec.models.cross_stitch_net import CrossStitchNet
from mtlrec.models.dupn import DUPN
from mtlrec.models.escm2 import ESCM2
from mtlrec.models.esmm import ESMM
from mtlrec.models.mmoe import MMoE
from mtlrec.models.ple import PLE
from mtlrec.models.shared_bottom import SharedBottom
from mtlrec.models.single_task import SingleTask
from mtlrec.models.soft_sharing import SoftSharing
from mtlrec.conventions.specs import ModelSpec

MODELS = {
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "esmm": ESMM,
    "mmoe": MMoE,
    "ple": PLE,
    "cross_stitch": CrossStitchNet,
    "soft_sharing": SoftSharing,
    "dupn": DUPN,
    "aitm": AITM,
    "escm2": ESCM2,
}


def config_key(parameter):
    """The config key of a constructor parameter: a Python keyword's parameter carries a
    trailing underscore (AITM's `lambda_`), its config key does not (`lambda`)."""
    if parameter.endswith("_") and keyword.iskeyword(parameter[:-1]):
        return parameter[:-1]
    return parameter


def _parameter(key):
    return f"{key}_" if keyword.iskeyword(key) else key


# Constructor parameters that are not `model` keys (the builder passes schema and tasks;
# `loss_weighting` is a section of its own, which the trainer hands to the model).
_NOT_HYPERPARAMETERS = ("self", "schema", "tasks", "name", "kwargs", "args")


def hyperparameters(model_type):
    """The keys a `model` config of `model_type` may set besides `type`."""
    return [config_key(name) for name in constructor_args(MODELS[model_type], _NOT_HYPERPARAMETERS)]


def _expected(default, value):
    """What `value` should be, judged by the type of the parameter's default (None: fine)."""
    if value is None or default is None or default is REQUIRED:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "a list"
    return None


def model_spec(config, path="model", reserved=("loss_weighting",), schema=None):
    """A `ModelSpec` of a `model` section, checked against the constructor's signature
    without building the model: a known `type`, only its parameters (less `reserved`),
    each of the type of the parameter's default, a valid `gate` and, given the `schema`,
    valid `sequence_encoders` (`mtlrec.models.base.history_specs`).

    Raises:
        KeyPathError: naming `model.type` / `model.<key>` (`path` for `model`).
    """
    if isinstance(config, ModelSpec):
        return config
    if not isinstance(config, Mapping):
        raise KeyPathError(path, f"expected a mapping with a 'type' key, got {config!r}")
    if "type" not in config:
        raise KeyPathError(f"{path}.type", "required key is missing")
    kind = config["type"]
    if kind not in MODELS:
        raise KeyPathError(f"{path}.type", f"expected one of {', '.join(sorted(MODELS))}, got {show(kind)}")
    params = {
        config_key(name): default
        for name, default in constructor_args(MODELS[kind], _NOT_HYPERPARAMETERS).items()
        if config_key(name) not in reserved
    }
    options = {k: v for k, v in config.items() if k != "type"}
    for key, value in options.items():
        if key not in params:
            raise KeyPathError(
                f"{path}.{key}",
                f"unknown hyperparameter of model type {kind!r}; expected one of {', '.join(sorted(params))}",
            )
        expected = _expected(params[key], value)
        if expected:
            raise KeyPathError(f"{path}.{key}", f"expected {expected}, got {show(value)}")
    if options.get("gate") is not None:
        check_gate(options["gate"], f"{path}.gate")
    if schema is not None and options.get("sequence_encoders") is not None:
        history_specs(options["sequence_encoders"], schema, f"{path}.sequence_encoders")
    return ModelSpec(kind, {_parameter(k): v for k, v in options.items()}, dict(config))


def build_model(model_config, schema, tasks, path="model"):
    """A model from `{"type": <name>, <hyperparameters>}` (or its `ModelSpec`), the schema
    and the tasks.

    `type` is one of single_task, shared_bottom, esmm, mmoe, ple, cross_stitch,
    soft_sharing, dupn, aitm, escm2; the other keys are that model's constructor arguments
    (e.g. `num_experts`, `tower_units`, `interaction`, `loss_weighting`). An unknown type or
    key raises KeyPathError naming `model.type` / `model.<key>` (`model_spec`); a value the
    model refuses raises KeyPathError on `model.<argument>` (the `ArgumentError`'s argument).
    """
    spec = model_spec(model_config, path, reserved=())
    try:
        return MODELS[spec.type](schema=schema, tasks=tasks, **spec.args)
    except KeyPathError as err:
        head = err.path.split(".")[0].split("[")[0]
        if head in spec.args:  # a nested key of an argument (`gate.k`)
            raise err.under(path) from None
        raise KeyPathError(err.path, err.detail, shown=f"{path}: {err.shown or err.path}") from None
    except ArgumentError as err:
        head = err.argument.split(".")[0]
        head = _parameter(head) if _parameter(head) in spec.args else head  # `lambda` -> `lambda_`
        key = f"{path}.{config_key(head)}" if head in spec.args else path
        raise KeyPathError(key, str(err)) from None
    except ValueError as err:
        raise KeyPathError(path, str(err)) from None
