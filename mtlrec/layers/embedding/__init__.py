"""Schema-driven embedding of the inputs: id lookups (hash, identity, dynamic), numerics and sequences; TensorFlow only."""

import keras

if keras.backend.backend() != "tensorflow":
    # Every module here runs TensorFlow ops (string hashing, hash tables, row gathers on
    # variables): one line at import beats a TensorFlow error deep inside the first call.
    raise ImportError(
        "mtlrec.layers.embedding (FeatureEmbedding, DynamicIdMap) needs the TensorFlow backend "
        f"(KERAS_BACKEND=tensorflow); this process runs Keras on {keras.backend.backend()!r}"
    )
