"""Build a model from the `model` section of a config."""

import inspect
import keyword

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


def hyperparameters(model_type):
    """The keys a `model` config of `model_type` may set besides `type`."""
    params = inspect.signature(MODELS[model_type].__init__).parameters
    return [
        config_key(name)
        for name, p in params.items()
        if name not in ("self", "schema", "tasks") and p.kind is p.POSITIONAL_OR_KEYWORD
    ]


def build_model(model_config, schema, tasks):
    """A model from `{"type": <name>, <hyperparameters>}`, the schema dict and task dicts.

    `type` is one of single_task, shared_bottom, esmm, mmoe, ple, cross_stitch,
    soft_sharing, dupn, aitm, escm2; the other keys are that model's constructor arguments
    (e.g. `num_experts`, `tower_units`, `interaction`). An unknown type or key raises
    ValueError naming `model.type` / `model.<key>`; a bad value raises the model's
    ValueError prefixed with `model:`.
    """
    if not isinstance(model_config, dict):
        raise ValueError(f"model: expected a mapping with a 'type' key, got {model_config!r}")
    valid = ", ".join(MODELS)
    if "type" not in model_config:
        raise ValueError(f"model.type: missing; expected one of {valid}")
    model_type = model_config["type"]
    if model_type not in MODELS:
        raise ValueError(f"model.type: unknown model type {model_type!r}; expected one of {valid}")
    allowed = hyperparameters(model_type)
    options = {k: v for k, v in model_config.items() if k != "type"}
    for key in options:
        if key not in allowed:
            raise ValueError(
                f"model.{key}: unknown hyperparameter for model type {model_type!r} "
                f"(allowed: {', '.join(allowed)})"
            )
    try:
        return MODELS[model_type](
            schema=schema, tasks=tasks, **{_parameter(k): v for k, v in options.items()}
        )
    except ValueError as err:
        message = str(err)
        for key in options:
            if message.startswith((f"{key}.", f"{key}:")):  # already a key path
                raise ValueError(f"model.{message}") from err
            if any(mark in message for mark in (f"Received: {key}=", f"Received: {key}.")):
                raise ValueError(f"model.{key}: {message}") from err
        raise ValueError(f"model: {message}") from err
