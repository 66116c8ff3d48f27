"""mtlrec.optimizers: sparse-aware optimizers and the optimizer config.

`LazyAdam` and `LazyAdagrad` update only the embedding rows (and their slots)
present in a batch; dense variables get the stock update. `Adam`, `Adagrad` and `SGD` are
Keras' own. In all five, `clipnorm`, `global_clipnorm` and `clipvalue` clip the gradient
summed over the replicas and over duplicate ids (`SummedGradientClipping`). The trainer gives the
model's embedding tables (`variable_groups().embedding_tables`) a lazy optimizer and
the rest a dense one, both built by `make_optimizer`.
"""

from collections.abc import Mapping

from mtlrec.conventions.constructor_args import constructor_args
from mtlrec.conventions.key_paths import KeyPathError

from mtlrec.optimizers.adagrad import Adagrad
from mtlrec.optimizers.adam import Adam
from mtlrec.optimizers.lazy_adagrad import LazyAdagrad
from mtlrec.optimizers.lazy_adam import LazyAdam
from mtlrec.optimizers.sgd import SGD
from mtlrec.optimizers.slot_rows import reset_slot_rows
from mtlrec.optimizers.summed_gradients import SummedGradientClipping

__all__ = ["Adagrad", "Adam", "LazyAdam", "LazyAdagrad", "OPTIMIZERS", "SGD", "SummedGradientClipping",
           "make_optimizer", "optimizer_arguments", "reset_slot_rows"]

OPTIMIZERS = {
    "adam": Adam,
    "adagrad": Adagrad,
    "sgd": SGD,
    "lazy_adam": LazyAdam,
    "lazy_adagrad": LazyAdagrad,
}

# Constructor arguments a config may not set: "name" is the optimizer's type
# in the config, not the Keras object name.
_RESERVED = {"self", "name", "kwargs"}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _config_keys(cls):
    """Constructor argument name -> default, for the keys a config may set."""
    return constructor_args(cls, exclude=_RESERVED)


def optimizer_arguments(config, path="optimizer"):
    """Checks an optimizer config section without building the optimizer.

    Args:
        config: `{"name": "adam" | "adagrad" | "sgd" | "lazy_adam" |
            "lazy_adagrad", "learning_rate": float, ...}` plus any constructor
            argument of that optimizer (e.g. `beta_1`, `epsilon`, `clipnorm`).
        path: the key path of the section, used in error messages.

    Returns:
        `(optimizer class, keyword arguments)`.

    Raises:
        KeyPathError: naming the key path (e.g. `optimizer.beta_1`) for a missing
            or unknown name, an unknown key or a value of the wrong type.
    """
    if not isinstance(config, Mapping):
        raise KeyPathError(
            path, f"expected a mapping with keys name, learning_rate, ...; got {type(config).__name__} {config!r}"
        )
    if "name" not in config:
        raise KeyPathError(f"{path}.name", f"missing; expected one of {sorted(OPTIMIZERS)}")
    name = config["name"]
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise KeyPathError(f"{path}.name", f"expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    cls = OPTIMIZERS[name]
    allowed = _config_keys(cls)
    kwargs = {}
    for key, value in config.items():
        if key == "name":
            continue
        if key not in allowed:
            raise KeyPathError(
                f"{path}.{key}", f"unknown key for optimizer {name!r}; expected one of {sorted(allowed)}"
            )
        kwargs[key] = _checked(f"{path}.{key}", key, value, allowed[key],
                               getattr(cls, "ARGUMENT_CHOICES", {}).get(key))
    return cls, kwargs


def _checked(where, key, value, default, choices=None):
    if choices is not None:
        if not isinstance(value, str) or value not in choices:
            raise KeyPathError(where, f"expected one of {list(choices)}, got {value!r}")
        return value
    if key == "learning_rate":
        if not _is_number(value) or value <= 0:
            raise KeyPathError(where, f"expected a positive number, got {value!r}")
        return float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise KeyPathError(where, f"expected true or false, got {value!r}")
    elif _is_number(default):
        if not _is_number(value):
            raise KeyPathError(where, f"expected a number, got {value!r}")
        return float(value) if isinstance(default, float) else value
    elif default is None:
        if value is not None and not _is_number(value):
            raise KeyPathError(where, f"expected a number or null, got {value!r}")
    return value


def make_optimizer(config, path="optimizer"):
    """Builds an optimizer from its config section (checked by `optimizer_arguments`).

    Returns:
        A `keras.optimizers.Optimizer`. Create it under the
        `tf.distribute` strategy's scope when training distributed.

    Raises:
        KeyPathError: as `optimizer_arguments`, or the optimizer's own refusal of a
            value (e.g. `clipnorm` and `clipvalue` together) under `path`.
    """
    cls, kwargs = optimizer_arguments(config, path)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise KeyPathError(path, str(err), shown=f"{path} ({config['name']})") from err
