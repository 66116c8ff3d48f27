"""TFRecord (tf.train.Example) encoding, writing and reading as Arrow tables.

Every column of an Arrow table becomes one feature: integers and booleans an
``int64_list``, floats a ``float_list`` (float32), strings a ``bytes_list``; a
list column gives a list of its values. A null is an absent key, which
``tf.io.parse_example`` turns into the declared default. Examples are encoded in
bulk with ``tf.io.encode_proto`` (C++), not one Python proto per row.
"""

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.partitions import compression_of

_KIND_FIELDS = {"int64": ("int64_list", "tensorflow.Int64List"), "float": ("float_list", "tensorflow.FloatList"),
                "bytes": ("bytes_list", "tensorflow.BytesList")}
_KIND_TF = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}
_CHUNK = 65536


def arrow_kind(arrow_type, column="?"):
    """Example value kind ('int64' | 'float' | 'bytes') of an Arrow scalar or list type."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return arrow_kind(t.value_type, column)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    raise ValueError(f"column {column!r}: Arrow type {t} cannot be stored in a tf.train.Example")


def _is_list(t):
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def pad_rows(values, lengths, fill):
    """(n, max(lengths)) array of the flattened `values` split by `lengths`, padded with `fill`."""
    n = len(lengths)
    width = int(lengths.max()) if n else 0
    width = max(width, 1)
    out = np.full((n, width), fill, dtype=values.dtype)
    mask = np.arange(width)[None, :] < lengths[:, None]
    out[mask] = values
    return out


def _column_lists(arr, kind):
    """(sizes (n,), values (n, w), present (n,) bool) of one Arrow column chunk."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    n = len(arr)
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    np_dtype = {"int64": np.int64, "float": np.float32, "bytes": object}[kind]
    if _is_list(arr.type):
        offsets = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
        # offsets of null lists may span garbage: count only present rows
        lengths = np.where(present, np.diff(offsets), 0)
        flat = arr.flatten() if arr.null_count == 0 else pc.list_flatten(arr)
        values = _values_numpy(flat, np_dtype, kind)
        return lengths, pad_rows(values, lengths, _fill(kind)), present
    values = _values_numpy(arr, np_dtype, kind)
    lengths = present.astype(np.int64)
    return lengths, values.reshape(n, 1), present


def _fill(kind):
    return {"int64": 0, "float": 0.0, "bytes": b""}[kind]


def _values_numpy(arr, np_dtype, kind):
    if kind == "bytes":
        arr = arr.cast(pa.binary()) if not pa.types.is_binary(arr.type) else arr
        arr = arr.fill_null(b"")
        return arr.to_numpy(zero_copy_only=False).astype(object)
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int64())
    arr = arr.fill_null(0)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np_dtype)


def encode_examples(table):
    """Serialized tf.train.Example strings (numpy object array) of the rows of an Arrow table."""
    n = table.num_rows
    if n == 0:
        return np.array([], dtype=object)
    entries, present = [], []
    for name in table.column_names:
        col = table.column(name)
        kind = arrow_kind(col.type, name)
        field, message = _KIND_FIELDS[kind]
        sizes, values, has = _column_lists(col, kind)
        lists = tf.io.encode_proto(
            sizes=tf.constant(sizes.reshape(n, 1), tf.int32),
            values=[tf.constant(values, _KIND_TF[kind])],
            field_names=["value"],
            message_type=message,
        )
        ones = tf.ones((n, 1), tf.int32)
        feature = tf.io.encode_proto(sizes=ones, values=[tf.reshape(lists, (n, 1))],
                                     field_names=[field], message_type="tensorflow.Feature")
        entry = tf.io.encode_proto(
            sizes=tf.ones((n, 2), tf.int32),
            values=[tf.fill((n, 1), name), tf.reshape(feature, (n, 1))],
            field_names=["key", "value"],
            message_type="tensorflow.Features.FeatureEntry",
        )
        entries.append(entry)
        present.append(has)
    entries = tf.stack(entries, axis=1)
    present = np.stack(present, axis=1)
    if not present.all():  # absent keys for nulls: move present entries first, count them
        order = np.argsort(~present, axis=1, kind="stable")
        entries = tf.gather(entries, order, batch_dims=1)
    counts = present.sum(axis=1).astype(np.int32).reshape(n, 1)
    features = tf.io.encode_proto(sizes=counts, values=[entries], field_names=["feature"],
                                  message_type="tensorflow.Features")
    examples = tf.io.encode_proto(sizes=tf.ones((n, 1), tf.int32), values=[tf.reshape(features, (n, 1))],
                                  field_names=["features"], message_type="tensorflow.Example")
    return examples.numpy()


def write_tfrecord(path, table, compression=None):
    """Write an Arrow table (or iterable of record batches) as tf.train.Example records,
    atomically (temporary name, then rename). `compression`: None or "GZIP"; None takes
    GZIP when `path` ends with .gz. Returns the number of rows written."""
    path = os.fspath(path)
    if compression is None:
        compression = compression_of(path)
    if compression not in ("", "GZIP"):
        raise ValueError(f'Expected compression to be None, "" or "GZIP". Received: compression={compression!r}')
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    batches = table.to_batches(max_chunksize=_CHUNK) if isinstance(table, pa.Table) else table
    rows = 0
    try:
        with tf.io.TFRecordWriter(tmp, tf.io.TFRecordOptions(compression_type=compression)) as writer:
            for batch in batches:
                for record in encode_examples(pa.Table.from_batches([batch])):
                    writer.write(record)
                rows += batch.num_rows
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows


def tf_error_detail(err) -> str:
    """What a TensorFlow data error says, without its internals (``{{function_node ...}}``,
    ``[Op:...]``): the byte offset of a corrupted record when TensorFlow gives it."""
    text = (getattr(err, "message", "") or str(err)).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    offset = re.search(r"corrupted record at (\d+)", text)
    if offset:
        return f"the record at byte offset {offset.group(1)} is corrupted; expected TFRecord-framed tf.train.Example records"
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()


def corrupt_file_error(err, path) -> DataValidationError:
    return DataValidationError(f"truncated or corrupt TFRecord file ({tf_error_detail(err)})", file=path)


def peek_kinds(path, max_records=256):
    """{key: kind} seen in the first `max_records` examples of a TFRecord file."""
    kinds = {}
    ds = tf.data.TFRecordDataset(path, compression_type=compression_of(path)).take(max_records)
    index = 0
    try:
        for index, record in enumerate(ds.as_numpy_iterator()):
            ex = tf.train.Example.FromString(record)
            for key, feat in ex.features.feature.items():
                which = feat.WhichOneof("kind")
                if which is not None:
                    kinds.setdefault(key, which.split("_")[0])
    except (tf.errors.DataLossError, tf.errors.OpError) as e:
        raise corrupt_file_error(e, path) from None
    except Exception:  # protobuf DecodeError
        raise DataValidationError(f"record {index} is not a tf.train.Example", file=path) from None
    return kinds


def read_tfrecord_batches(path, kinds, list_columns=(), batch_size=_CHUNK):
    """Arrow record batches of a TFRecord file: `kinds` {key: 'int64'|'float'|'bytes'}; keys in
    `list_columns` become list columns, the others scalars (null where absent)."""
    spec = {k: tf.io.RaggedFeature(_KIND_TF[v], row_splits_dtype=tf.int64) for k, v in kinds.items()}
    ds = tf.data.TFRecordDataset(path, compression_type=compression_of(path)).batch(batch_size)
    ds = ds.map(lambda s: tf.io.parse_example(s, spec))
    it = iter(ds)
    while True:
        try:
            parsed = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            raise corrupt_file_error(e, path) from None
        arrays = {}
        for key, rt in parsed.items():
            values = rt.flat_values.numpy()
            splits = rt.row_splits.numpy()
            lengths = np.diff(splits)
            if kinds[key] == "bytes":
                values = pa.array(values.tolist(), pa.binary())
                try:
                    values = values.cast(pa.string())
                except pa.ArrowInvalid:
                    pass
            else:
                values = pa.array(values)
            if key in list_columns:
                arrays[key] = pa.ListArray.from_arrays(pa.array(splits.astype(np.int32)), values)
            else:
                if lengths.max(initial=0) > 1:
                    raise DataValidationError(f"expected one value per row, found a row with {lengths.max()}", file=path, column=key)
                mask = lengths == 0
                idx = np.cumsum(~mask) - 1
                arrays[key] = values.take(pa.array(np.where(mask, 0, idx), mask=mask)) if len(values) else pa.nulls(len(lengths), values.type)
        yield pa.record_batch(arrays)
