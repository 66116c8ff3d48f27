"""TFRecord day files -> tf.data: records batched, then parsed with `tf.io.parse_example`."""

import tensorflow as tf

from mtlrec.data_pipeline.columns import EXTRA_FILL
from mtlrec.data_pipeline.partitions import compression_of
from mtlrec.data_pipeline.recent_items import last_items
from mtlrec.data_pipeline.tfrecord_io import peek_kinds

_TF = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}


def resolve_plan(plan, files):
    """Extra columns get their kind from the first file; returns (plan, stored tf dtype by column).

    Numbers may be stored as int64_list or float_list, string ids as int64_list (read as
    their decimal strings, like the Parquet reader casts them)."""
    kinds = peek_kinds(files[0])
    out, stored = [], {}
    for col in plan:
        kind = kinds.get(col.name)
        if col.role == "extra" and col.kind is None:
            col = col._replace(kind={"int64": "int64", "float": "float32", "bytes": "string"}.get(kind, "float32"))
        if col.kind in ("int64", "int64_seq"):
            stored[col.name] = tf.int64
        elif col.kind in ("string", "string_seq"):
            stored[col.name] = tf.int64 if kind == "int64" else tf.string
        else:
            stored[col.name] = tf.int64 if kind == "int64" else tf.float32
        out.append(col)
    return out, stored


def _fill(col):
    return EXTRA_FILL[col.kind] if col.role == "extra" else col.fill


_OUT = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}


def parse_spec(plan, stored):
    """tf.io.parse_example features: FixedLenFeature for labels (validated: one value per
    row); for a scalar stored in its output type a FixedLenSequenceFeature padded with the
    column's default (parsed straight into a dense (B, k) tensor, about a fifth cheaper than
    ragged), RaggedFeature for the rest. Either way an absent key and an empty list (a common
    way to write a null) both read as the declared default."""
    spec = {}
    for col in plan:
        dtype = stored[col.name]
        if col.role == "label":
            spec[col.name] = tf.io.FixedLenFeature([], dtype)
        elif not col.kind.endswith("_seq") and _OUT[col.kind] == dtype:
            spec[col.name] = tf.io.FixedLenSequenceFeature([], dtype, allow_missing=True, default_value=_fill(col))
        else:
            spec[col.name] = tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64)
    return spec


@tf.autograph.experimental.do_not_convert  # plain Python loops over columns
def parse_batch(serialized, plan, spec):
    """Batch of serialized examples -> flat dict name -> tensor in output types."""
    parsed = tf.io.parse_example(serialized, spec)
    out = {}
    for col in plan:
        x = parsed[col.name]
        if isinstance(x, tf.RaggedTensor):
            if x.dtype != tf.string and col.kind.startswith("string"):
                x = tf.strings.as_string(x)
            elif x.dtype != tf.float32 and col.kind == "float32":  # numbers stored as int64
                x = tf.cast(x, tf.float32)
            if col.kind.endswith("_seq"):
                x = last_items(x.flat_values, x.row_splits, col.max_len, _fill(col))
            else:  # validated: at most one value a row; none (absent or empty) reads as the fill
                x = x.to_tensor(default_value=_fill(col), shape=[None, 1])[:, 0]
        elif col.role != "label":  # dense (B, k), k the most values of a row in the batch (0 if none)
            first = x[:, :1]
            x = tf.pad(first, [[0, 0], [0, 1 - tf.shape(first)[1]]], constant_values=_fill(col))[:, 0]
        elif col.kind == "float32":
            x = tf.cast(x, tf.float32)
        out[col.name] = x
    return out


def record_batches(files, batch_size, shuffle_buffer=0, seed=None, repeat=False, skip_batches=0):
    """Serialized records of `files` in batches (shuffled files and records when shuffle_buffer)."""
    ds = tf.data.Dataset.from_tensor_slices(([str(f) for f in files], [compression_of(f) for f in files]))
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.flat_map(lambda f, c: tf.data.TFRecordDataset(f, compression_type=c, buffer_size=1 << 20))
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    if skip_batches:
        ds = ds.skip(skip_batches)
    return ds
