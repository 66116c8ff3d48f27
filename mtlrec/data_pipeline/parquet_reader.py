"""Parquet day files -> tf.data, streamed by record batch with column projection.

Design (profiled with benchmarks/data_throughput.py): reader threads (`read_in_parallel`,
`READ_WORKERS` files at once; none on 2 cores) read Arrow record batches of only the needed
columns (`ParquetFile.iter_batches`), normalise their types in Arrow (C++) and convert each into
batch-shaped numpy arrays (`batch_arrays.chunk_arrays`: padded sequences by one scatter,
strings dictionary-encoded); a Python generator yields them in file order, each record
batch as *one* element, so the per-element cost of `Dataset.from_generator` is paid once
per ~65k rows, or shuffles them first in a buffer of numpy rows (`RowShuffler`). The
arrays handed to TensorFlow are 64-byte aligned (Arrow buffers, and the padded sequences
and shuffled chunks are allocated so), which lets `from_generator` use them without a
copy; `Dataset.rebatch` then cuts the exact batches. Strings never become Python objects.
"""

import os
import queue
import threading

import numpy as np
import pyarrow as pa
import tensorflow as tf

from mtlrec.data_pipeline import filesystems
from mtlrec.data_pipeline.batching import batch_arrays
from mtlrec.data_pipeline.columns import EXTRA_FILL, extra_kind, type_problem
from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.batching.row_shuffler import RowShuffler

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


#: files read and converted at once by background threads; 0: in the consuming thread.
#: On a machine of 2 cores or fewer the threads cost more CPU than they save (measured
#: with benchmarks/data_throughput.py on a shared 2-core machine), so none run there.
READ_WORKERS = 0 if (os.cpu_count() or 1) <= 2 else min(4, max(2, (os.cpu_count() or 1) // 4))
READ_AHEAD = 1  # converted record batches a worker may hold ready beyond the one it works on


def read_in_parallel(files, read, workers=None, depth=None):
    """The items of `read(path)` for each path, in file order, produced by up to `workers`
    (default `READ_WORKERS`) background threads, each on its own file and at most `depth`
    (default `READ_AHEAD`) items ahead; with 0 workers, by the consuming thread.

    Arrow's reading and decoding and numpy's copies release the GIL, so files are decoded
    and converted on several cores while the consumer works; at most about
    `workers * (depth + 1)` items exist at once. An exception is raised where its item
    would have been; closing the generator stops the threads."""
    workers = READ_WORKERS if workers is None else workers
    depth = READ_AHEAD if depth is None else depth
    if workers <= 0:
        for path in files:
            yield from read(path)
        return
    stop = threading.Event()
    done = object()
    queues = [queue.Queue(maxsize=depth) for _ in files]

    def put(q, entry):
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run(i):
        try:
            for item in read(files[i]):
                if not put(queues[i], (item, None)):
                    return
            put(queues[i], (done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(queues[i], (None, e))

    def start(i):
        if i < len(files):
            threading.Thread(target=run, args=(i,), daemon=True, name="mtlrec-parquet-reader").start()

    try:
        for i in range(min(workers, len(files))):
            start(i)
        for i in range(len(files)):
            while True:
                item, error = queues[i].get()
                if error is not None:
                    raise error
                if item is done:
                    break
                yield item
            queues[i] = None
            start(i + workers)
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


def stream_pass(files, plan, batch_size, shuffle_buffer=0, seed=None, epoch=0, skip_rows=0):
    """One pass over `files` as numpy chunks in the layout of `batch_arrays.chunk_arrays`
    (`Dataset.rebatch` cuts the batches; a batch may span two chunks).

    Files are read, decoded and converted by record batch in parallel
    (`read_in_parallel`), and come out in file order.
    Without shuffling, each record batch is one chunk.
    With `shuffle_buffer`, rows wait in a buffer of that many rows and leave in random
    order (`RowShuffler`) in chunks of whole batches; file order is shuffled too, with
    seed [seed, epoch]. The order is a function of (seed, epoch, files, batch_size,
    shuffle_buffer, READ_BATCH_ROWS) only, not of the threads.
    The first `skip_rows` rows of the pass are dropped (before conversion when unshuffled)."""
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
        for batch in read_in_parallel(files, lambda path: _converted(path, plan, columns)):
            rows, arrays, without_first = batch
            k = skipped(rows)
            if k is not None:
                yield without_first(k) if k else arrays
        return
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    order = rng.permutation(len(files))
    numeric = [c for c in plan if not c.kind.startswith("string")]
    strings = [c.name for c in plan if c.kind.startswith("string")]
    string_plan = [c for c in plan if c.kind.startswith("string")]

    def pieces(path):  # runs in a reader thread
        for batch in _read_batches(path, plan, columns):
            if batch.num_rows:
                yield batch_arrays.chunk_arrays(batch, numeric), \
                    (pa.Table.from_batches([batch.select(strings)]) if strings else None)

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
    for arrays, table in read_in_parallel([files[i] for i in order], pieces):
        buffer.add(arrays, table)
        if buffer.rows < threshold:
            continue
        out = ((buffer.rows - shuffle_buffer) // batch_size) * batch_size  # these leave, the rest stay
        yield from emit(*buffer.draw(rng.permutation(buffer.rows), out))
    if buffer.rows:
        yield from emit(*buffer.draw(rng.permutation(buffer.rows), buffer.rows))


def _converted(path, plan, columns):
    """(rows, converted arrays, convert(skip)) for each record batch of a file: converted in
    the reader thread; `convert(k)` converts the batch without its first k rows instead
    (a resumed pass drops rows before conversion)."""
    for batch in _read_batches(path, plan, columns):
        if batch.num_rows:
            yield batch.num_rows, batch_arrays.chunk_arrays(batch, plan), \
                (lambda k, b=batch: batch_arrays.chunk_arrays(b.slice(k), plan))
