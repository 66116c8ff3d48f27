"""Schema-driven input layer: ids -> rows -> embeddings, normalised numerics, sequences + masks."""

import keras
import tensorflow as tf
from keras import ops

from mtlrec.conventions import arg_checks as checks
from mtlrec.layers.embedding._id_hashing import hash_ids
from mtlrec.layers.embedding.dynamic_id_map import DynamicIdMap
from mtlrec.layers.embedding.numeric_encodings import numeric_embedding, table_rows
from mtlrec.schema import Schema
from mtlrec.conventions.seeding import derive_seed
from mtlrec.layers.embedding.sparse_reads import gather_rows

__all__ = ["FeatureEmbedding", "hash_ids"]

#: Range of the uniform initialisation of every table row (and of re-initialised rows).
INIT_RANGE = 0.05


@keras.saving.register_keras_serializable(package="mtlrec")
class FeatureEmbedding(keras.layers.Layer):
    """Turns a dict of raw features into model inputs, as declared by a schema.

    Categorical and sequence ids (int or string) become rows inside the layer, by
    their table's `lookup` (`mtlrec.schema.LookupSpec`): `hash` (`hash_ids` into
    `num_buckets` rows), `identity` (the id is the row; other ids read
    `oov_buckets` hashed rows after them) or `dynamic` (a `DynamicIdMap` per table in
    `self.id_maps`, capacity `num_buckets`, then `oov_buckets` rows). One table per
    categorical feature without `shared_with` and per sequence feature with its own
    `num_buckets`; a `shared_with` feature reads its owner's table (and map). Tables
    live in `self.tables` (owner name -> variable named `embedding_<owner>`).

    Training keeps the `identity` and `dynamic` lookups' state with `observe`
    (counts, admissions; once per global batch, before the forward pass) and
    `start_day` (expiry and eviction, re-initialising the freed rows); calling the
    layer only reads it.
    Numerics: a NaN or infinite value reads as the feature's `default` (as the data
    readers read it, so a SavedModel export, `model(...)` and `model.fit` on raw data
    agree with training), then `none` x, `log1p` sign(x)·log(1+|x|), `standardize`
    (x - mean) / std; `bucketize` and `piecewise_linear` numerics are embeddings of the
    raw value (`mtlrec.layers.embedding.numeric_encodings`), each from its own table
    `self.numeric_tables[name]` (variable `embedding_<name>`, seeded like the id tables).
    Sequences `(B, T)` padded with -1 / "" give embeddings `(B, T, dim)` (zero at
    padded steps) and a mask `(B, T)` (True on real steps).

    Returns a dict: `dense` (B, D) = [categorical embeddings..., numeric embeddings...,
    numerics], `fields` (B, F, k) of the categorical then numeric embeddings when all
    their dims are equal, `embeddings` name -> (B, dim) (categorical and embedded
    numeric features), `numeric` (B, n) when there are numerics that are not embedded,
    `sequences` name -> (B, T, dim) and `masks` name -> (B, T).

    Tables start uniform in [-0.05, 0.05]; with `seed`, table `embedding_<owner>` is
    seeded with `mtlrec.conventions.seeding.derive_seed(seed, "embedding_<owner>")` (same seed,
    same tables), with `seed=None` each draws a fresh random seed.

    Args:
        schema: the schema dict (see `mtlrec.schema`); `standardize` numerics need
            `mean` and `std`, `bucketize` and `piecewise_linear` ones `boundaries`
            (see `mtlrec.schema.compute_numeric_stats`).
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
            if f.embedded and f.boundaries is None:
                raise ValueError(
                    f"schema.numeric[{i}] ({f.name}): normalize: {f.normalize} needs boundaries "
                    "(compute them with mtlrec.schema.compute_numeric_stats). Received: boundaries=None"
                )
        self._schema = parsed
        self.schema = parsed.to_dict()
        self.seed = checks.check_seed(seed)
        self.tables = {}
        self.id_maps = {}
        self.lookup_counts = {}
        self.numeric_tables = {}
        # ids are hashed as strings and dynamic ids looked up in hash tables: no XLA kernels,
        # so Keras' jit_compile="auto" (on a GPU) must not compile a model reading them
        self.supports_jit = not (parsed.categorical or parsed.sequence)

    def _owners(self):
        s = self._schema
        return [f for f in s.categorical if f.shared_with is None] + [f for f in s.sequence if f.shared_with is None]

    def build(self, input_shape=None):
        s = self._schema
        for f in self._owners():
            num_buckets, dim = s.table_size(f)
            lookup = s.lookup_of(f)
            self.tables[f.name] = self.add_weight(
                shape=(num_buckets + lookup.oov_rows, dim),
                initializer=keras.initializers.RandomUniform(
                    -INIT_RANGE, INIT_RANGE, seed=derive_seed(self.seed, f"embedding_{f.name}")
                ),
                name=f"embedding_{f.name}",
            )
            if lookup.lookup == "dynamic":
                id_map = DynamicIdMap(
                    key_dtype=f.dtype,
                    capacity=num_buckets,
                    oov_buckets=lookup.oov_rows,
                    min_count=lookup.admission_count,
                    ttl_days=lookup.ttl_days,
                    count_half_life_days=lookup.half_life_days,
                    max_waiting=lookup.waiting_bound(num_buckets),
                    name=f"id_map_{f.name}",
                )
                id_map.build()
                self.id_maps[f.name] = id_map
            elif lookup.lookup == "identity":  # (lookups, out of range) since the day began
                self.lookup_counts[f.name] = self.add_weight(
                    shape=(2,), dtype="int64", initializer="zeros", trainable=False, name=f"lookups_{f.name}"
                )
        for f in s.numeric:  # after the id tables: the weights of schemas without them keep their order
            if f.embedded:
                self.numeric_tables[f.name] = self.add_weight(
                    shape=(table_rows(f), s.numeric_dim(f)),
                    initializer=keras.initializers.RandomUniform(
                        -INIT_RANGE, INIT_RANGE, seed=derive_seed(self.seed, f"embedding_{f.name}")
                    ),
                    name=f"embedding_{f.name}",
                )
        self.built = True

    @staticmethod
    def _owner(feature):
        return feature.name if feature.shared_with is None else feature.shared_with

    def _table(self, feature):
        return self.tables[self._owner(feature)]

    def _rows(self, feature, ids):
        num_buckets, _ = self._schema.table_size(feature)
        lookup = self._schema.lookup_of(feature).lookup
        if lookup == "dynamic":
            return self.id_maps[self._owner(feature)].rows(ids)
        if lookup == "identity":
            oov = num_buckets + hash_ids(ids, self._schema.lookup_of(feature).oov_rows)
            return tf.where(self._in_range(ids, num_buckets), tf.cast(ids, tf.int64), oov)
        return hash_ids(ids, num_buckets)

    @staticmethod
    def _in_range(ids, num_buckets):
        return tf.logical_and(ids >= 0, ids < num_buckets)

    def _lookup(self, feature, ids):
        # A ResourceGather reads only the looked-up rows (ops.take, or tf.gather on a
        # mirrored variable, would read the whole table densely: a full copy per step once
        # a lazy optimizer has updated it sparsely); its gradient is IndexedSlices.
        return gather_rows(self._table(feature), self._rows(feature, ids))

    # ------------------------------------------------------------ lookup state (training)

    @property
    def has_lookup_state(self) -> bool:
        """Whether some table has an `identity` or `dynamic` lookup (state kept by training)."""
        return bool(self.id_maps or self.lookup_counts)

    def observed_ids(self, features):
        """Feature name -> 1-D ids (row-major, pads of sequences dropped) of every feature
        in `features` reading an `identity` or `dynamic` table, in schema order: what
        `observe` counts. `observe` takes this dict too (a multi-worker trainer gathers
        every worker's share of it)."""
        s = self._schema
        out = {}
        for f in s.categorical + s.sequence:
            owner = self._owner(f)
            if (owner not in self.id_maps and owner not in self.lookup_counts) or f.name not in features:
                continue
            ids = tf.reshape(tf.convert_to_tensor(features[f.name]), [-1])
            if f in s.sequence:
                ids = tf.boolean_mask(ids, tf.not_equal(ids, f.pad))
            out[f.name] = ids
        return out

    def _ids_by_table(self, features):
        """Owner name -> 1-D ids of every feature reading that table (pads of sequences dropped)."""
        owners = {f.name: self._owner(f) for f in self._schema.categorical + self._schema.sequence}
        out = {}
        for name, ids in self.observed_ids(features).items():
            out.setdefault(owners[name], []).append(ids)
        return {owner: tf.concat(parts, axis=0) for owner, parts in out.items()}

    def lookup_state(self, older: bool = False) -> dict:
        """The state of the identity/dynamic lookups by name, for a `tf.train.Checkpoint`
        (Keras keeps layer weights out of TensorFlow's object graph; the trainer's
        checkpoint reaches the trainable tables through the optimizers, this state here).
        `older`: the id maps as checkpoints written before their added variables hold
        them (`DynamicIdMap.older_state`)."""
        state = {f"id_map_{owner}": id_map.older_state() if older else id_map for owner, id_map in self.id_maps.items()}
        state.update({f"lookups_{owner}": counts for owner, counts in self.lookup_counts.items()})
        return state

    def observe(self, features):
        """Count one global batch's ids (data order) and admit the dynamic tables' new ids.

        Call once per training step, before the forward pass, on the whole batch.
        """
        for owner, ids in self._ids_by_table(features).items():
            if owner in self.id_maps:
                self.id_maps[owner].observe(ids)
            else:
                num_buckets, _ = self._schema.table_size(self._schema_feature(owner))
                outside = tf.reduce_sum(tf.cast(tf.logical_not(self._in_range(ids, num_buckets)), tf.int64))
                self.lookup_counts[owner].assign_add(tf.stack([tf.size(ids, tf.int64), outside]))

    def _schema_feature(self, owner):
        return next(f for f in self._owners() if f.name == owner)

    def start_day(self, day, seed=None):
        """Open `day` (an integer day number) in every dynamic table: expire and evict ids,
        re-initialise the freed rows: uniform in [-0.05, 0.05] like the table, drawn with
        the seed pair `(derive_seed(base, "embedding_<owner>", "reinit"), day)`, `base`
        the layer's `seed` (the model seed's derivation), else `seed` (the trainer passes
        `training.seed`), else 0: a resumed run re-initialises exactly as an
        uninterrupted one.

        Returns:
            `{table variable name: freed rows}` for the tables that freed rows: their
            optimizer slots must be reset too (`mtlrec.optimizers.reset_slot_rows`).
        """
        for counts in self.lookup_counts.values():
            counts.assign(tf.zeros([2], tf.int64))
        freed = {}
        for owner, id_map in self.id_maps.items():
            rows = id_map.start_day(day)
            if int(tf.size(rows)) == 0:
                continue
            table = self.tables[owner]
            base = self.seed if self.seed is not None else (seed or 0)
            row_seed = tf.constant([derive_seed(base, f"embedding_{owner}", "reinit"), int(day)], tf.int64)
            values = tf.random.stateless_uniform(
                [int(tf.size(rows)), table.shape[-1]], seed=row_seed, minval=-INIT_RANGE, maxval=INIT_RANGE, dtype=table.dtype
            )
            table.value.scatter_update(tf.IndexedSlices(values, rows))  # the tf.Variable
            freed[owner] = rows
        return freed

    def lookup_report(self) -> dict:
        """Table name -> this day's lookup figures (`dynamic` and `identity` tables)."""
        out = {}
        for owner, id_map in self.id_maps.items():
            report = id_map.report()
            report["oov_share"] = report["oov_lookups"] / report["lookups"] if report["lookups"] else 0.0
            out[owner] = {"lookup": "dynamic", **report}
        for owner, counts in self.lookup_counts.items():
            lookups, outside = (int(v) for v in counts.numpy())
            out[owner] = {
                "lookup": "identity",
                "lookups": lookups,
                "oov_lookups": outside,
                "oov_share": outside / lookups if lookups else 0.0,
            }
        return out

    @staticmethod
    def _scalar(features, name):
        if name not in features:
            raise ValueError(f"FeatureEmbedding: input feature {name!r} missing. Received keys: {sorted(features)}")
        x = features[name]
        if len(x.shape) == 2 and x.shape[-1] == 1:
            x = ops.squeeze(x, axis=-1)
        return x

    def _normalize(self, f, x):
        x = self._finite_or_default(f, ops.cast(x, self.compute_dtype))
        if f.normalize == "log1p":
            return ops.sign(x) * ops.log1p(ops.abs(x))
        if f.normalize == "standardize":
            return (x - f.mean) / f.std
        return x

    @staticmethod
    def _finite_or_default(f, x):
        """`x` with NaN and ±inf replaced by the feature's `default` (the readers' rule,
        here so that every input path, a SavedModel's serving signature included, reads
        them alike); finite values pass unchanged, bit for bit."""
        return ops.where(ops.isfinite(x), x, ops.full_like(x, f.default))

    def call(self, features, subset=None):
        """Embed every schema feature, or only the features named in `subset` (its
        outputs then hold those: `dense` = their categorical embeddings then numerics)."""
        s = self._schema
        categorical, numeric, sequence = s.categorical, s.numeric, s.sequence
        if subset is not None:
            names = self._check_subset(subset)
            categorical, numeric, sequence = (
                [f for f in part if f.name in names] for part in (categorical, numeric, sequence)
            )
        out = {"embeddings": {}, "sequences": {}, "masks": {}}
        for f in categorical:
            out["embeddings"][f.name] = self._lookup(f, self._scalar(features, f.name))
        for f in [f for f in numeric if f.embedded]:
            table = self.numeric_tables[f.name]
            x = self._finite_or_default(f, ops.cast(self._scalar(features, f.name), "float32"))
            out["embeddings"][f.name] = numeric_embedding(f, table, x, self.compute_dtype)
        numeric = [f for f in numeric if not f.embedded]
        embedded = list(out["embeddings"].values())
        if numeric:
            out["numeric"] = ops.stack([self._normalize(f, self._scalar(features, f.name)) for f in numeric], axis=-1)
        dense = embedded + ([out["numeric"]] if numeric else [])
        if dense:
            out["dense"] = ops.concatenate(dense, axis=-1) if len(dense) > 1 else dense[0]
        if embedded and len({int(e.shape[-1]) for e in embedded}) == 1:
            out["fields"] = ops.stack(embedded, axis=1)
        for f in sequence:
            if f.name not in features:
                raise ValueError(f"FeatureEmbedding: input feature {f.name!r} missing. Received keys: {sorted(features)}")
            ids = features[f.name]
            mask = ops.not_equal(ids, f.pad)
            emb = self._lookup(f, ids)
            out["sequences"][f.name] = emb * ops.expand_dims(ops.cast(mask, emb.dtype), -1)
            out["masks"][f.name] = mask
        return out

    def _check_subset(self, subset):
        names = [subset] if isinstance(subset, str) else list(subset)
        unknown = [n for n in names if n not in self._schema.feature_names]
        if not names or unknown:
            raise ValueError(
                f"{self.name}: expected subset to name features of the schema "
                f"({', '.join(self._schema.feature_names)}). Received: subset={subset!r}"
            )
        return set(names)

    def load_own_variables(self, store):
        # DUPN's .keras files written by earlier versions hold this layer's weights under the
        # path of its former subclass (PartialFeatureEmbedding) (Keras names a layer's path after its class).
        if not len(store.keys()) and getattr(store, "h5_file", None) is not None:
            path = getattr(store, "_h5_entry_path", "")
            legacy = path[: -len("feature_embedding")] + "partial_feature_embedding"
            if path.endswith("feature_embedding") and f"{legacy}/vars" in store.h5_file:
                old = store.h5_file[f"{legacy}/vars"]
                return super().load_own_variables({k: old[k][()] for k in old.keys()})
        return super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config["schema"] = self._schema.to_dict()
        config["seed"] = self.seed
        return config
