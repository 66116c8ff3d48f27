"""Schema-driven input layer: hashed ids -> embeddings, normalised numerics, sequences + masks."""

import keras
import tensorflow as tf
from keras import ops

from mtlrec.layers import _core_utils as cu
from mtlrec.schema import Schema
from mtlrec.seeding import derive_seed
from mtlrec.sparse_reads import gather_rows


def hash_ids(ids, num_buckets):
    """Bucket of each id in [0, num_buckets): FarmHash Fingerprint64 of the id's string form.

    Integers are hashed through their decimal string, so `123` and `"123"` share a bucket.
    The result depends only on the id and `num_buckets` (not on the process, seed or
    platform), which keeps exported models and later training days consistent.
    """
    ids = tf.convert_to_tensor(ids)
    if ids.dtype != tf.string:
        ids = tf.strings.as_string(ids)
    return tf.strings.to_hash_bucket_fast(ids, num_buckets)


@keras.saving.register_keras_serializable(package="mtlrec")
class FeatureEmbedding(keras.layers.Layer):
    """Turns a dict of raw features into model inputs, as declared by a schema.

    Categorical and sequence ids (int or string) are hashed inside the layer
    (`hash_ids`) and looked up in embedding tables: one table per categorical
    feature without `shared_with` and per sequence feature with its own
    `num_buckets`; a `shared_with` feature reads its owner's table. Tables live in
    `self.tables` (owner name -> variable named `embedding_<owner>`).
    Numerics: `none` x, `log1p` sign(x)·log(1+|x|), `standardize` (x - mean) / std.
    Sequences `(B, T)` padded with -1 / "" give embeddings `(B, T, dim)` (zero at
    padded steps) and a mask `(B, T)` (True on real steps).

    Returns a dict: `dense` (B, D) = [categorical embeddings..., numerics],
    `fields` (B, F, k) when all categorical dims are equal, `embeddings`
    name -> (B, dim), `numeric` (B, n) when there are numerics, `sequences`
    name -> (B, T, dim) and `masks` name -> (B, T).

    Tables start uniform in [-0.05, 0.05]; with `seed`, table `embedding_<owner>` is
    seeded with `mtlrec.seeding.derive_seed(seed, "embedding_<owner>")` (same seed,
    same tables), with `seed=None` each draws a fresh random seed.

    Args:
        schema: the schema dict (see `mtlrec.schema`); `standardize` numerics need
            `mean` and `std` (see `mtlrec.schema.compute_numeric_stats`).
        seed: optional non-negative int for the table initializers.
    """

    def __init__(self, schema, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(schema, (dict, Schema)):
            raise ValueError(f"Expected schema to be a dict (the schema section of a config). Received: schema={schema!r}")
        parsed = Schema.from_dict(schema)
        for i, f in enumerate(parsed.numeric):
            if f.normalize == "standardize" and (f.mean is None or f.std is None):
                raise ValueError(
                    f"schema.numeric[{i}] ({f.name}): normalize: standardize needs mean and std "
                    "(compute them with mtlrec.schema.compute_numeric_stats). "
                    f"Received: mean={f.mean}, std={f.std}"
                )
        self._schema = parsed
        self.schema = parsed.to_dict()
        self.seed = cu.check_seed(seed)
        self.tables = {}

    def build(self, input_shape=None):
        s = self._schema
        owners = [f for f in s.categorical if f.shared_with is None]
        owners += [f for f in s.sequence if f.shared_with is None]
        for f in owners:
            num_buckets, dim = s.table_size(f)
            self.tables[f.name] = self.add_weight(
                shape=(num_buckets, dim),
                initializer=keras.initializers.RandomUniform(
                    -0.05, 0.05, seed=derive_seed(self.seed, f"embedding_{f.name}")
                ),
                name=f"embedding_{f.name}",
            )
        self.built = True

    def _table(self, feature):
        owner = feature.name if feature.shared_with is None else feature.shared_with
        return self.tables[owner]

    def _lookup(self, feature, ids):
        num_buckets, _ = self._schema.table_size(feature)
        # A ResourceGather reads only the looked-up rows (ops.take, or tf.gather on a
        # mirrored variable, would read the whole table densely: a full copy per step once
        # a lazy optimizer has updated it sparsely); its gradient is IndexedSlices.
        return gather_rows(self._table(feature), hash_ids(ids, num_buckets))

    @staticmethod
    def _scalar(features, name):
        if name not in features:
            raise ValueError(f"FeatureEmbedding: input feature {name!r} missing. Received keys: {sorted(features)}")
        x = features[name]
        if len(x.shape) == 2 and x.shape[-1] == 1:
            x = ops.squeeze(x, axis=-1)
        return x

    def _normalize(self, f, x):
        x = ops.cast(x, self.compute_dtype)
        if f.normalize == "log1p":
            return ops.sign(x) * ops.log1p(ops.abs(x))
        if f.normalize == "standardize":
            return (x - f.mean) / f.std
        return x

    def call(self, features):
        s = self._schema
        out = {"embeddings": {}, "sequences": {}, "masks": {}}
        for f in s.categorical:
            out["embeddings"][f.name] = self._lookup(f, self._scalar(features, f.name))
        embedded = list(out["embeddings"].values())
        if s.numeric:
            out["numeric"] = ops.stack([self._normalize(f, self._scalar(features, f.name)) for f in s.numeric], axis=-1)
        dense = embedded + ([out["numeric"]] if s.numeric else [])
        out["dense"] = ops.concatenate(dense, axis=-1) if len(dense) > 1 else dense[0] if dense else None
        if out["dense"] is None:
            del out["dense"]
        if embedded and len({int(e.shape[-1]) for e in embedded}) == 1:
            out["fields"] = ops.stack(embedded, axis=1)
        for f in s.sequence:
            if f.name not in features:
                raise ValueError(f"FeatureEmbedding: input feature {f.name!r} missing. Received keys: {sorted(features)}")
            ids = features[f.name]
            mask = ops.not_equal(ids, f.pad)
            emb = self._lookup(f, ids)
            out["sequences"][f.name] = emb * ops.expand_dims(ops.cast(mask, emb.dtype), -1)
            out["masks"][f.name] = mask
        return out

    def get_config(self):
        config = super().get_config()
        config["schema"] = self._schema.to_dict()
        config["seed"] = self.seed
        return config
