import keras
import numpy as np
import pytest

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.optimizers import Adagrad
from mtlrec.optimizers import Adam
from mtlrec.optimizers import LazyAdagrad
from mtlrec.optimizers import LazyAdam
from mtlrec.optimizers import SGD
from mtlrec.optimizers import SummedGradientClipping
from mtlrec.optimizers import make_optimizer
from mtlrec.optimizers import optimizer_arguments


@pytest.mark.parametrize(
    "name, cls, keras_cls",
    [("adam", Adam, keras.optimizers.Adam), ("adagrad", Adagrad, keras.optimizers.Adagrad),
     ("sgd", SGD, keras.optimizers.SGD), ("lazy_adam", LazyAdam, keras.optimizers.Adam),
     ("lazy_adagrad", LazyAdagrad, keras.optimizers.Adagrad)],
)
def test_builds_each_optimizer_with_its_learning_rate(name, cls, keras_cls):
    opt = make_optimizer({"name": name, "learning_rate": 0.25})
    assert type(opt) is cls
    # Keras' optimizer, with clipping on the summed gradient
    assert isinstance(opt, keras_cls) and isinstance(opt, SummedGradientClipping)
    assert np.isclose(float(opt.learning_rate.numpy()), 0.25)


def test_passes_the_optimizers_own_keys():
    opt = make_optimizer(
        {"name": "lazy_adam", "learning_rate": 1, "beta_1": 0.8, "epsilon": 1e-6,
         "amsgrad": True, "clipnorm": 2}
    )
    config = opt.get_config()
    assert (config["beta_1"], config["epsilon"], config["amsgrad"], config["clipnorm"]) == (
        0.8, 1e-6, True, 2)
    assert config["learning_rate"] == 1.0
    sgd = make_optimizer({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True})
    assert sgd.momentum == 0.9 and sgd.nesterov is True
    assert make_optimizer({"name": "adagrad"}).get_config()["learning_rate"] == pytest.approx(0.001)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"learning_rate": 0.1}, r"^optimizer\.name: missing; expected one of \['adagrad', 'adam', "),
        ({"name": "adamw"}, r"^optimizer\.name: expected one of .*got 'adamw'"),
        ({"name": "adam", "beta_3": 0.9}, r"^optimizer\.beta_3: unknown key for optimizer 'adam'"),
        ({"name": "sgd", "beta_1": 0.9}, r"^optimizer\.beta_1: unknown key for optimizer 'sgd'"),
        ({"name": "adam", "learning_rate": 0}, r"^optimizer\.learning_rate: expected a positive number, got 0"),
        ({"name": "adam", "learning_rate": "fast"}, r"optimizer\.learning_rate: .*got 'fast'"),
        ({"name": "adam", "amsgrad": "yes"}, r"^optimizer\.amsgrad: expected true or false, got 'yes'"),
        ({"name": "adam", "beta_1": "0.9"}, r"^optimizer\.beta_1: expected a number, got '0.9'"),
        ({"name": "adam", "clipnorm": "1"}, r"^optimizer\.clipnorm: expected a number or null"),
        ({"name": "adam", "clipnorm": 1.0, "clipvalue": 1.0}, r"^optimizer \(adam\): Only one of"),
        ({"name": "lazy_adam", "beta_2": 1.0}, r"^optimizer \(lazy_adam\): .*Received: beta_2=1.0"),
        ({"name": "lazy_adam", "row_momentum": 1},
         r"^optimizer\.row_momentum: expected one of \['per_step', 'per_lookup'\], got 1$"),
        ({"name": "lazy_adam", "row_momentum": "dense"},
         r"^optimizer\.row_momentum: expected one of \['per_step', 'per_lookup'\], got 'dense'$"),
    ],
)
def test_bad_config_names_the_key_path(config, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(config)


def test_key_path_prefix_and_non_mapping():
    with pytest.raises(ValueError, match=r"^train\.dense_optimizer\.foo: unknown key"):
        make_optimizer({"name": "adam", "foo": 1}, path="train.dense_optimizer")
    with pytest.raises(ValueError, match=r"^optimizer: expected a mapping.*got str 'adam'"):
        make_optimizer("adam")


def test_row_momentum_is_checked_without_building_the_optimizer():
    cls, kwargs = optimizer_arguments({"name": "lazy_adam", "row_momentum": "per_lookup"})
    assert cls is LazyAdam and kwargs == {"row_momentum": "per_lookup"}
    with pytest.raises(KeyPathError) as err:
        optimizer_arguments({"name": "lazy_adam", "row_momentum": "dense"}, path="optimizer.embedding")
    assert err.value.path == "optimizer.embedding.row_momentum"
    assert err.value.detail == "expected one of ['per_step', 'per_lookup'], got 'dense'"
