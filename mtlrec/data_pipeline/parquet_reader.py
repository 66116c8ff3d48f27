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

import queue
import threading

import numpy as np
import pyarrow as pa
import tensorflow as tf

from mtlrec.data_pipeline import batch_arrays, filesystems
from mtlrec.data_pipeline.columns import EXTRA_FILL, extra_kind, type_problem
from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.row_shuffler import RowShuffler

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
            shape = (None, col.max_len) if col.kind == "string_seq" else (None,)
            sig[col.name + "#codes"] = tf.TensorSpec(shape, tf.int32)
    return sig


@tf.autograph.experimental.do_not_convert  # plain Python loops over columns
def decode_block(block, plan):
    """Graph side of `batch_arrays.chunk_arrays`: each string column's distinct values cut
    from their data buffer, then one `tf.gather` by the rows' codes (-1: the padding)."""
    out = {}
    for col in plan:
        if col.kind in ("string", "string_seq"):
            offsets = block[col.name + "#offsets"]
            values = tf.strings.substr(block[col.name + "#data"], offsets[:-1], offsets[1:] - offsets[:-1])
            codes = block[col.name + "#codes"]
            if col.kind == "string_seq":
                values = tf.concat([values, tf.constant([col.fill])], axis=0)
                codes = tf.where(codes < 0, tf.shape(values)[0] - 1, codes)
            out[col.name] = tf.gather(values, codes)
        else:
            out[col.name] = block[col.name]
    return out


def _read_ahead(items, depth=2):
    """The items of an iterator, produced up to `depth` ahead by a background thread, in
    order; an exception is raised where its item would have been. Arrow's reading and
    decoding release the GIL, so the next record batch is decoded while this one is
    converted. Closing the generator stops the thread."""
    q, stop, done = queue.Queue(maxsize=depth), threading.Event(), object()

    def put(entry):
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((None, e))

    threading.Thread(target=run, daemon=True, name="mtlrec-parquet-read-ahead").start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


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


def _file_batches(files, plan, columns):
    for path in files:
        yield from _read_batches(path, plan, columns)


def stream_pass(files, plan, batch_size, shuffle_buffer=0, seed=None, epoch=0, skip_rows=0):
    """One pass over `files` as numpy chunks of whole batches (the last one may be partial),
    in the layout of `batch_arrays.chunk_arrays`.

    Chunks hold `k * batch_size` rows, so no batch that `Dataset.rebatch` cuts straddles
    two chunks. Record batches are read and decoded one ahead in a background thread.
    Without shuffling, record batches are converted as read: the aligned part of each is a
    zero-copy slice and the few rows left over are joined to the start of the next one.
    With `shuffle_buffer`, rows wait in a buffer of that many rows and leave in random
    order (`RowShuffler`); file order is shuffled too, with seed [seed, epoch]. The order is
    a function of (seed, epoch, files, batch_size, shuffle_buffer, READ_BATCH_ROWS) only.
    The first `skip_rows` rows of the pass are dropped."""
    columns = [c.name for c in plan]
    skip = [skip_rows]

    def skipped(n):
        """How many of the next n rows to drop (None: all of them)."""
        if skip[0] >= n:
            skip[0] -= n
            return None
        k, skip[0] = skip[0], 0
        return k

    if not shuffle_buffer:
        for table in _whole_batches(_read_ahead(_file_batches(files, plan, columns)), batch_size):
            k = skipped(table.num_rows)
            if k is not None:
                yield batch_arrays.chunk_arrays(table.slice(k) if k else table, plan)
        return
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    order = rng.permutation(len(files))
    numeric = [c for c in plan if not c.kind.startswith("string")]
    strings = [c.name for c in plan if c.kind.startswith("string")]
    string_plan = [c for c in plan if c.kind.startswith("string")]

    def pieces():  # converted in the read-ahead thread
        for batch in _file_batches([files[i] for i in order], plan, columns):
            if batch.num_rows:
                yield batch_arrays.chunk_arrays(batch, numeric), (pa.Table.from_batches([batch.select(strings)]) if strings else None)

    def emit(arrays, table):
        k = skipped(len(next(iter(arrays.values()))) if arrays else table.num_rows)
        if k is None:
            return
        if k:
            arrays = {name: v[k:] for name, v in arrays.items()}
            table = table.slice(k) if table is not None else None
        if table is not None:
            arrays.update(batch_arrays.chunk_arrays(table, string_plan))
        yield arrays

    buffer = RowShuffler()
    threshold = shuffle_buffer + max(READ_BATCH_ROWS // 2, batch_size)
    for arrays, table in _read_ahead(pieces()):
        buffer.add(arrays, table)
        if buffer.rows < threshold:
            continue
        out = ((buffer.rows - shuffle_buffer) // batch_size) * batch_size  # these leave, the rest stay
        yield from emit(*buffer.draw(rng.permutation(buffer.rows), out))
    if buffer.rows:
        yield from emit(*buffer.draw(rng.permutation(buffer.rows), buffer.rows))


def _whole_batches(batches, batch_size):
    """Arrow record batches -> Arrow tables of whole batches (the last one the rest): the
    aligned part of each record batch is a zero-copy slice, the rows left over join the
    start of the next one."""
    carry = None  # < batch_size rows waiting for the next record batch
    for batch in batches:
        if carry is not None:
            need = batch_size - carry.num_rows
            head = pa.Table.from_batches([carry, batch.slice(0, need)])
            if head.num_rows < batch_size:  # a tiny record batch: keep collecting
                carry = head.combine_chunks().to_batches()[0] if head.num_rows else None
                continue
            yield head
            batch = batch.slice(need)
        aligned = (batch.num_rows // batch_size) * batch_size
        if aligned:
            yield batch.slice(0, aligned)
        carry = batch.slice(aligned) if aligned < batch.num_rows else None
    if carry is not None:
        yield carry
