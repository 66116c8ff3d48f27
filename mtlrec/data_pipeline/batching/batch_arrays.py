"""Arrow columns -> batch-shaped numpy arrays, vectorised (no per-row Python).

What the Parquet reader hands to `tf.data`, one chunk of whole batches at a time:

- int64 / float32 columns: the Arrow buffer itself (zero-copy);
- padded sequences `(n, max_len)`: one 64-byte aligned array per column, filled with the
  pad and written by a single scatter `out.flat[dest] = values[src]`, where `dest` / `src`
  come from the list offsets once per distinct offsets (the columns of one behavior
  history share them) — each row keeps its last `max_len` items;
- strings: dictionary-encoded in Arrow (C++): the distinct values travel as one data
  buffer + offsets (rebuilt as a small `tf.string` vector in the graph) and each row as
  an int32 code, so TensorFlow builds a `tf.string` per row by `tf.gather` of the distinct
  values instead of cutting one substring per row.

Aligned arrays are taken by `Dataset.from_generator` without a copy.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def aligned_empty(shape, dtype=np.int64):
    """np.empty on a 64-byte aligned buffer: `from_generator` then hands the array to
    TensorFlow without a copy (unaligned arrays are copied into fresh tensor memory)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def string_parts(arr):
    """(data bytes, offsets int64 (n+1,)) of a StringArray, rebased to start at 0."""
    bufs = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    start, end = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    data = bufs[2].slice(start, end - start).to_pybytes() if bufs[2] is not None and end > start else b""
    return data, offsets - start


def dictionary_codes(arr):
    """(distinct values as (data, offsets), int32 code per value) of a StringArray without nulls."""
    encoded = pc.dictionary_encode(arr)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return string_parts(encoded.dictionary), codes


class ListLayout:
    """Where the kept items of a list column go in its padded (n, max_len) form.

    Row r keeps its last k_r = min(len_r, max_len) items, in slots 0..k_r-1. Over all kept
    items in row-major order, `dest` is the flat slot (r * max_len + j) and `src` the index
    into the list's flat values (a slice when every row fits and the values are contiguous,
    else an index array). Null lists are empty."""

    def __init__(self, list_arr, max_len):
        offsets = np.asarray(list_arr.offsets.to_numpy(), dtype=np.int64)
        lengths = np.diff(offsets)
        if list_arr.null_count:
            lengths = np.where(list_arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
        self.offsets, self.max_len, self.rows = offsets, max_len, len(lengths)
        kept = np.minimum(lengths, max_len)
        total = int(kept.sum())
        first_out = np.cumsum(kept) - kept  # position of each row's first kept item among all kept
        within = np.arange(total, dtype=np.int64)
        self.dest = np.repeat(np.arange(self.rows, dtype=np.int64) * max_len - first_out, kept) + within
        start, end = int(offsets[0]), int(offsets[-1])
        if total == end - start:  # every row fits, nothing skipped: the values in one slice
            self.src = slice(start, end)
        else:
            self.src = np.repeat(offsets[:-1] + lengths - kept - first_out, kept) + within

    def matches(self, list_arr, max_len):
        return max_len == self.max_len and not list_arr.null_count and \
            np.array_equal(np.asarray(list_arr.offsets.to_numpy()), self.offsets)

    def pad(self, flat_values, fill, dtype):
        """(rows, max_len) aligned array: `fill`, then the kept values in their slots."""
        out = aligned_empty((self.rows, self.max_len), dtype)
        out.fill(fill)
        out.reshape(-1)[self.dest] = flat_values[self.src]
        return out


def _layout(arr, max_len, cache):
    for layout in cache:
        if layout.matches(arr, max_len):
            return layout
    layout = ListLayout(arr, max_len)
    if not arr.null_count:
        cache.append(layout)
    return layout


def _column(table, name):
    arr = table.column(name)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def chunk_arrays(table, plan):
    """The columns `plan` of a canonical Arrow table or record batch (see
    `parquet_reader.normalize_batch`) -> flat dict of numpy arrays. Strings as '#data' /
    '#offsets' (distinct values) and '#codes' (int32, -1 for the padding of a string
    sequence)."""
    out, layouts = {}, []
    for col in plan:
        arr = _column(table, col.name)
        if col.kind in ("int64", "float32"):
            out[col.name] = arr.to_numpy(zero_copy_only=False)
        elif col.kind == "string":
            (out[col.name + "#data"], out[col.name + "#offsets"]), out[col.name + "#codes"] = dictionary_codes(arr)
        else:
            layout = _layout(arr, col.max_len, layouts)
            values = arr.values
            if values.null_count:
                values = values.fill_null(col.fill)
            if col.kind == "int64_seq":
                out[col.name] = layout.pad(values.to_numpy(zero_copy_only=False), col.fill, np.int64)
            else:
                (out[col.name + "#data"], out[col.name + "#offsets"]), codes = dictionary_codes(values)
                out[col.name + "#codes"] = layout.pad(codes, -1, np.int32)
    return out

