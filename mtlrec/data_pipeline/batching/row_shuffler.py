"""The shuffle buffer of the Parquet stream: rows wait as batch-shaped numpy rows in a fixed store."""

import numpy as np
import pyarrow as pa

from mtlrec.data_pipeline.batching.batch_arrays import aligned_empty


class RowShuffler:
    """Rows waiting to be shuffled, in bounded memory.

    Rows arrive in pieces: numpy columns (one row per leading index; padded sequences are
    (m, max_len)) and, for the string columns, an Arrow table. The waiting rows have an
    order: those that stayed from the last draw first (in the order the draw left them),
    then the new pieces in arrival order. `draw(perm, out)` lets rows `perm[:out]` of that
    order leave as one chunk and keeps rows `perm[out:]`, in that order.

    Numpy rows are copied once into a store of slots and once out of it (`np.take` into
    an aligned chunk); what stays never moves, only its slot numbers are permuted. The
    store grows to the largest number of rows that waited at once, then slots are reused.
    String columns (variable width) are concatenated and taken in Arrow."""

    def __init__(self):
        self._store = None  # name -> array (capacity, ...)
        self._live = np.empty(0, np.int64)  # slot of each waiting row, in order
        self._free = np.empty(0, np.int64)
        self._strings = []  # Arrow tables of the string columns, in the same order

    @property
    def rows(self):
        return len(self._live)

    def add(self, arrays, strings=None):
        """Append a piece: dict name -> numpy array of m rows; `strings` a pa.Table of m rows or None."""
        m = len(next(iter(arrays.values()))) if arrays else strings.num_rows
        if self._store is None:
            self._store = {k: np.empty((0,) + v.shape[1:], v.dtype) for k, v in arrays.items()}
        if len(self._free) < m:
            self._grow(m - len(self._free))
        slots, self._free = self._free[:m], self._free[m:]
        for k, v in arrays.items():
            self._store[k][slots] = v
        self._live = np.concatenate([self._live, slots])
        if strings is not None:
            self._strings.append(strings)

    def _grow(self, need):
        capacity = len(self._live) + len(self._free)
        new = max(need, capacity)  # at least double
        for k, v in self._store.items():
            grown = np.empty((capacity + new,) + v.shape[1:], v.dtype)
            grown[:capacity] = v
            self._store[k] = grown
        self._free = np.concatenate([self._free, np.arange(capacity, capacity + new, dtype=np.int64)])

    def draw(self, perm, out):
        """Rows perm[:out] leave: (dict name -> aligned numpy array, pa.Table of the strings or None)."""
        leaving = self._live[perm[:out]]
        chunk = {}
        for k, v in self._store.items():
            dest = aligned_empty((out,) + v.shape[1:], v.dtype)
            chunk[k] = np.take(v, leaving, axis=0, out=dest, mode="clip")  # in range: clip skips the buffered check
        strings = None
        if self._strings:
            table = pa.concat_tables(self._strings)
            strings = table.take(perm[:out])
            self._strings = [table.take(perm[out:])] if out < len(perm) else []
        # sorted, the next pieces are written into the store in ascending slots (fewer cache misses)
        self._free = np.sort(np.concatenate([self._free, leaving]))
        self._live = self._live[perm[out:]]
        return chunk, strings
