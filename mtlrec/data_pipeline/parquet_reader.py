"""Parquet day files -> tf.data, streamed by record batch with column projection.

Design (profiled with benchmarks/data_throughput.py and perf): a Python generator reads
Arrow record batches of only the needed columns (`ParquetFile.iter_batches`), normalises
their types in Arrow (C++), shuffles with a row buffer using Arrow `take`, and yields
each record batch as *one* element of numpy arrays holding whole batches, so the
per-element cost of `Dataset.from_generator` is paid once per ~65k rows; then
`Dataset.rebatch` cuts the exact batches. The arrays handed to TensorFlow are 64-byte
aligned (Arrow buffers, and the padded sequences are allocated so), which lets
`from_generator` use them without a copy. Strings never become Python objects: a
string column travels as its Arrow data buffer and offsets and is cut back into a
`tf.string` tensor with `tf.strings.substr` inside the graph. Sequences are padded with
one boolean-mask assignment per column, no per-row Python.
"""

import numpy as np
import pyarrow as pa
import tensorflow as tf

from mtlrec.data_pipeline import filesystems
from mtlrec.data_pipeline.columns import EXTRA_FILL, extra_kind, type_problem
from mtlrec.data_pipeline.data_validation_error import DataValidationError

READ_BATCH_ROWS = 65536  # rows per Arrow record batch read

_CANONICAL = {
    "int64": pa.int64(),
    "float32": pa.float32(),
    "string": pa.string(),
    "int64_seq": pa.list_(pa.int64()),
    "string_seq": pa.list_(pa.string()),
}


def open_parquet(path):
    try:
        return filesystems.parquet_file(path)
    except (OSError, pa.ArrowException) as e:
        raise DataValidationError(f"truncated or corrupt Parquet file ({e})", file=path) from None


def resolve_plan(plan, arrow_schema, path):
    """Check that every planned column exists in a file and is readable as declared;
    fill in the kind of extra columns from the file's types."""
    out = []
    for col in plan:
        idx = arrow_schema.get_field_index(col.name)
        if idx < 0:
            what = {"feature": "schema feature", "label": "schema label", "extra": "requested extra"}[col.role]
            raise DataValidationError(f"{what} column missing from the file", file=path, column=col.name)
        t = arrow_schema.field(idx).type
        problem = type_problem(col, t)
        if problem:
            raise DataValidationError(f"type not readable as declared: expected {problem}", file=path, column=col.name)
        if col.role == "extra" and col.kind is None:
            col = col._replace(kind=extra_kind(t))
        out.append(col)
    return out


def _decode_dictionary(arr):
    if pa.types.is_dictionary(arr.type):
        return arr.dictionary_decode()
    if (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) and pa.types.is_dictionary(arr.type.value_type):
        return arr.cast(pa.list_(arr.type.value_type.value_type))
    return arr


def normalize_batch(batch, plan, path):
    """Record batch -> canonical types (int64 / float32 / string / list<int64> / list<string>),
    nulls in features replaced by their default; a null label raises DataValidationError."""
    arrays = []
    for col in plan:
        arr = _decode_dictionary(batch.column(col.name))
        try:
            if col.role == "label" and arr.null_count:
                first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataValidationError(f"{arr.null_count} null label value(s) (first at row {first} of a batch)",
                                          file=path, column=col.name)
            if pa.types.is_fixed_size_list(arr.type):
                arr = arr.cast(pa.list_(arr.type.value_type))
            target = _CANONICAL[col.kind]
            arr = arr.cast(target, safe=col.kind != "float32")  # int64 -> float32 may round
            if arr.null_count and not col.kind.endswith("_seq"):
                fill = col.fill if col.role == "feature" else EXTRA_FILL[col.kind]
                arr = arr.fill_null(pa.scalar(fill, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise DataValidationError(f"values not readable as {col.declared or col.kind}: {e}", file=path, column=col.name) from None
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in plan])


def _aligned_full(shape, fill, dtype=np.int64):
    """np.full on a 64-byte aligned buffer: `from_generator` then hands the array to
    TensorFlow without a copy (unaligned arrays are copied into fresh tensor memory)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start:start + nbytes].view(dtype).reshape(shape)
    out.fill(fill)
    return out


def _string_parts(arr):
    """(data bytes, offsets int64 (n+1,)) of a StringArray, rebased to start at 0."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    start, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    data = bufs[2].slice(start, end - start).to_pybytes() if bufs[2] is not None and end > start else b""
    return data, offsets - start


class _Layout:
    """Where the kept items of a list column go in its padded (n, max_len) form.

    `mask` (n, max_len) marks the filled slots (the first min(len, max_len) of each row);
    `values(flat)` picks, in row-major order, the flat values that fill them: the last
    max_len items of each row. When every row fits, that is just the slice between the
    first and last offsets (no index array). List columns of a block often share their
    offsets (one behavior history), so a layout is reused when the offsets are equal."""

    def __init__(self, list_arr, max_len):
        offsets = np.asarray(list_arr.offsets.to_numpy(), dtype=np.int64)
        lengths = np.diff(offsets)
        if list_arr.null_count:
            lengths = np.where(list_arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
        self.offsets, self.max_len = offsets, max_len
        kept = np.minimum(lengths, max_len)
        self.mask = np.arange(max_len)[None, :] < kept[:, None]
        self.start, self.end = int(offsets[0]), int(offsets[-1])
        if (lengths > max_len).any() or int(lengths.sum()) != self.end - self.start:
            row_start = np.repeat(offsets[:-1] + lengths - kept, kept)
            within = np.arange(len(row_start)) - np.repeat(np.cumsum(kept) - kept, kept)
            self.take = row_start + within
        else:
            self.take = None

    def matches(self, list_arr, max_len):
        return max_len == self.max_len and np.array_equal(np.asarray(list_arr.offsets.to_numpy()), self.offsets) \
            and not list_arr.null_count

    def values(self, flat):
        """Flat numpy values (indexed like `list_arr.values`) -> the ones filling `mask`."""
        return flat[self.start:self.end] if self.take is None else flat[self.take]


def _layout(arr, max_len, cache):
    for layout in cache:
        if layout.matches(arr, max_len):
            return layout
    layout = _Layout(arr, max_len)
    if not arr.null_count:
        cache.append(layout)
    return layout


def block_to_numpy(table, plan):
    """A canonical Arrow table -> flat dict of numpy arrays (strings as '#data'/'#offsets'/'#index')."""
    out, layouts = {}, []
    for col in plan:
        arr = table.column(col.name)
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        if col.kind in ("int64", "float32"):
            out[col.name] = arr.to_numpy(zero_copy_only=False)
        elif col.kind == "string":
            out[col.name + "#data"], out[col.name + "#offsets"] = _string_parts(arr)
        else:
            layout = _layout(arr, col.max_len, layouts)
            values = arr.values
            if values.null_count:
                values = values.fill_null(col.fill)
            if col.kind == "int64_seq":
                padded = _aligned_full(layout.mask.shape, col.fill)
                padded[layout.mask] = layout.values(values.to_numpy(zero_copy_only=False))
                out[col.name] = padded
            else:  # strings: the flat values once, and where each slot reads them (-1: padding)
                index = np.full(layout.mask.shape, -1, dtype=np.int64)
                index[layout.mask] = layout.values(np.arange(len(values), dtype=np.int64))
                out[col.name + "#data"], out[col.name + "#offsets"] = _string_parts(values)
                out[col.name + "#index"] = index
    return out


def block_signature(plan):
    sig = {}
    for col in plan:
        if col.kind == "int64":
            sig[col.name] = tf.TensorSpec((None,), tf.int64)
        elif col.kind == "float32":
            sig[col.name] = tf.TensorSpec((None,), tf.float32)
        elif col.kind == "int64_seq":
            sig[col.name] = tf.TensorSpec((None, col.max_len), tf.int64)
        else:
            sig[col.name + "#data"] = tf.TensorSpec((), tf.string)
            sig[col.name + "#offsets"] = tf.TensorSpec((None,), tf.int64)
            if col.kind == "string_seq":
                sig[col.name + "#index"] = tf.TensorSpec((None, col.max_len), tf.int64)
    return sig


@tf.autograph.experimental.do_not_convert  # plain Python loops over columns
def decode_block(block, plan):
    """Graph side of `block_to_numpy`: rebuild tf.string tensors from data + offsets."""
    out = {}
    for col in plan:
        if col.kind in ("string", "string_seq"):
            offsets = block[col.name + "#offsets"]
            strings = tf.strings.substr(block[col.name + "#data"], offsets[:-1], offsets[1:] - offsets[:-1])
            if col.kind == "string_seq":
                strings = tf.concat([strings, tf.constant([col.fill])], axis=0)
                index = block[col.name + "#index"]
                index = tf.where(index < 0, tf.shape(strings, out_type=tf.int64)[0] - 1, index)
                strings = tf.gather(strings, index)
            out[col.name] = strings
        else:
            out[col.name] = block[col.name]
    return out


def _read_batches(path, plan, columns):
    pf = open_parquet(path)
    if not pf.metadata.num_rows:  # pandas types the columns of a 0-row frame `null`
        return
    local = resolve_plan(plan, pf.schema_arrow, path)
    try:
        for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns, use_threads=True):
            yield normalize_batch(batch, local, path)
    except DataValidationError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataValidationError(f"truncated or corrupt Parquet file ({e})", file=path) from None


def pass_rows(files):
    """Rows of one pass over `files`, from the Parquet footers."""
    return sum(open_parquet(path).metadata.num_rows for path in files)


def stream_pass(files, plan, batch_size, shuffle_buffer=0, seed=None, epoch=0, skip_rows=0):
    """One pass over `files` as numpy chunks of whole batches (the last one may be partial).

    Chunks hold `k * batch_size` rows, so no batch that `Dataset.rebatch` cuts straddles
    two chunks. Without shuffling, record batches are converted as read: the aligned part
    of each is a zero-copy slice and the few rows left over are joined to the start of the
    next one.
    With `shuffle_buffer`, rows wait in a buffer of that many rows and leave in random
    order (Arrow `take`); file order is shuffled too, with seed [seed, epoch]. The first
    `skip_rows` rows of the pass are dropped before conversion."""
    columns = [c.name for c in plan]
    skip = [skip_rows]

    def emit(table):
        if skip[0] >= table.num_rows:
            skip[0] -= table.num_rows
            return
        if skip[0]:
            table, skip[0] = table.slice(skip[0]), 0
        yield block_to_numpy(table, plan)

    if not shuffle_buffer:
        carry = None  # < batch_size rows waiting for the next record batch
        for path in files:
            for batch in _read_batches(path, plan, columns):
                if carry is not None:
                    need = batch_size - carry.num_rows
                    head = pa.Table.from_batches([carry, batch.slice(0, need)])
                    if head.num_rows < batch_size:  # a tiny record batch: keep collecting
                        carry = head.combine_chunks().to_batches()[0]
                        continue
                    yield from emit(head)
                    batch = batch.slice(need)
                aligned = (batch.num_rows // batch_size) * batch_size
                if aligned:
                    yield from emit(batch.slice(0, aligned))
                carry = batch.slice(aligned) if aligned < batch.num_rows else None
        if carry is not None:
            yield from emit(carry)
        return
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    pending, rows = [], 0
    threshold = shuffle_buffer + max(READ_BATCH_ROWS // 2, batch_size)
    for i in rng.permutation(len(files)):
        for batch in _read_batches(files[i], plan, columns):
            pending.append(batch)
            rows += batch.num_rows
            if rows < threshold:
                continue
            table = pa.Table.from_batches(pending)
            perm = rng.permutation(rows)
            out = ((rows - shuffle_buffer) // batch_size) * batch_size  # these leave, the rest stay
            rest = table.take(perm[out:])
            yield from emit(table.take(perm[:out]))
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        table = pa.Table.from_batches(pending)
        yield from emit(table.take(rng.permutation(rows)))
