"""The layer suite runs on whichever Keras backend KERAS_BACKEND names (tests/conftest.py keeps
TensorFlow as the default): `make test-layers-jax`, `make test-layers-torch`. Gradients go through
`gradients` below, the one place that knows how each backend differentiates."""

import keras
import pytest

BACKEND = keras.backend.backend()

# The schema-driven embedding and the id map are TensorFlow only (their import says so in one
# line elsewhere: tests/test_layout.py); every other layer's tests run on every backend.
collect_ignore = [] if BACKEND == "tensorflow" else [
    "test_feature_embedding.py", "test_dynamic_id_map.py", "test_numeric_encodings.py",  # the embedding layers: TensorFlow only
]


@pytest.fixture(autouse=True)
def _no_recorded_graph_outside_gradients():
    """On PyTorch every op on a trainable weight records a graph, and such a tensor refuses
    `np.asarray`. TensorFlow and JAX record nothing unless asked, so the tests run PyTorch the
    same way: without autograd, except inside `gradients`."""
    if BACKEND != "torch":
        yield
        return
    import torch

    with torch.no_grad():
        yield


def _split(result):
    return result if isinstance(result, tuple) else (result, None)


def _tensorflow_gradients(forward, weights, inputs):
    import tensorflow as tf

    inputs = [tf.constant(x) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss, aux = _split(forward(*inputs))
    return tape.gradient(loss, list(weights()) + inputs), aux


def _jax_gradients(forward, weights, inputs):
    import jax
    import jax.numpy as jnp

    variables = list(weights())

    def loss_of(values, xs):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return _split(forward(*xs))

    grad = jax.grad(loss_of, argnums=(0, 1), has_aux=True)
    (weight_grads, input_grads), aux = grad([v.value for v in variables], [jnp.asarray(x) for x in inputs])
    return list(weight_grads) + list(input_grads), aux


def _torch_gradients(forward, weights, inputs):
    import torch

    with torch.enable_grad():
        inputs = [torch.tensor(x, requires_grad=True) for x in inputs]
        loss, aux = _split(forward(*inputs))
        targets = [v.value for v in weights()] + inputs
        return torch.autograd.grad(loss, targets, allow_unused=True), aux


_BACKEND_GRADIENTS = {
    "tensorflow": _tensorflow_gradients,
    "jax": _jax_gradients,
    "torch": _torch_gradients,
}


@pytest.fixture
def gradients():
    """`gradients(forward, layer, inputs=())`: the gradients of the scalar `forward(*inputs)`
    (or of the first item of the pair `(loss, aux)` it returns) with respect to the layer's
    trainable weights and then each of `inputs` (float32 arrays, passed to `forward` as the
    backend's tensors), as numpy arrays, None where no path leads, and `aux` in numpy. Constants
    inside `forward` are backend tensors (`keras.ops.convert_to_tensor`): numpy on the left of an
    operator turns a PyTorch tensor that records gradients into numpy, which it refuses.

    The layer is built by one forward call first where it is not built yet: JAX differentiates
    a pure function of the weights, so they must exist before."""

    def compute(forward, layer, inputs=()):
        if not layer.built:
            forward(*inputs)
        grads, aux = _BACKEND_GRADIENTS[BACKEND](forward, lambda: layer.trainable_weights, inputs)
        grads = [None if g is None else keras.ops.convert_to_numpy(g) for g in grads]
        if aux is not None:
            aux = keras.tree.map_structure(keras.ops.convert_to_numpy, aux)
        return grads, aux

    return compute
