"""Arrow -> batch-shaped numpy conversion and the shuffle buffer's row store, by hand."""

import numpy as np
import pyarrow as pa

from mtlrec.data_pipeline.batching.batch_arrays import ListLayout, aligned_empty, chunk_arrays
from mtlrec.data_pipeline.columns import Col
from mtlrec.data_pipeline.batching.row_shuffler import RowShuffler


def test_list_layout_keeps_the_last_items_of_each_row():
    arr = pa.array([[1, 2, 3, 4], None, [], [5], [6, 7, 8]], pa.list_(pa.int64()))
    layout = ListLayout(arr, 3)
    out = layout.pad(arr.values.to_numpy(), -1, np.int64)
    np.testing.assert_array_equal(out, [[2, 3, 4], [-1, -1, -1], [-1, -1, -1], [5, -1, -1], [6, 7, 8]])
    assert out.ctypes.data % 64 == 0


def test_list_layout_of_a_slice_reads_from_its_offsets():
    arr = pa.array([[9, 9], [1, 2], [3], [4, 5, 6]], pa.list_(pa.int64())).slice(1, 2)
    layout = ListLayout(arr, 2)
    assert layout.src == slice(2, 5)  # every row fits: one slice of the values, no index array
    np.testing.assert_array_equal(layout.pad(arr.values.to_numpy(), 0, np.int64), [[1, 2], [3, 0]])


def test_chunk_arrays_strings_as_distinct_values_and_codes():
    plan = [Col("s", "feature", "string", ""), Col("h", "feature", "string_seq", "", 2)]
    batch = pa.record_batch({"s": pa.array(["b", "a", "b", "b"]),
                             "h": pa.array([["x"], [], ["y", "x", "z"], ["x", "x"]])})
    out = chunk_arrays(batch, plan)
    assert out["s#data"] == b"ba"
    np.testing.assert_array_equal(out["s#offsets"], [0, 1, 2])
    np.testing.assert_array_equal(out["s#codes"], [0, 1, 0, 0])
    assert out["h#data"] == b"xyz"
    np.testing.assert_array_equal(out["h#codes"], [[0, -1], [-1, -1], [0, 2], [0, 0]])
    assert out["h#codes"].dtype == np.int32


def test_row_shuffler_draws_in_the_order_of_the_permutation_and_keeps_the_rest():
    s = RowShuffler()
    s.add({"x": np.array([0, 1, 2]), "h": np.array([[0, 0], [1, 1], [2, 2]])}, pa.table({"s": ["a", "b", "c"]}))
    s.add({"x": np.array([3, 4]), "h": np.array([[3, 3], [4, 4]])}, pa.table({"s": ["d", "e"]}))
    chunk, strings = s.draw(np.array([4, 1, 0, 3, 2]), 2)
    np.testing.assert_array_equal(chunk["x"], [4, 1])
    np.testing.assert_array_equal(chunk["h"], [[4, 4], [1, 1]])
    assert strings.column("s").to_pylist() == ["e", "b"] and s.rows == 3
    s.add({"x": np.array([5, 6, 7]), "h": np.array([[5, 5], [6, 6], [7, 7]])}, pa.table({"s": ["f", "g", "h"]}))
    # waiting now, in order: 0, 3, 2 (what stayed, as the draw left them), then 5, 6, 7;
    # the store grew by as many slots as it lacked and reuses the two freed ones
    chunk, strings = s.draw(np.array([1, 5, 0, 2, 3, 4]), 6)
    np.testing.assert_array_equal(chunk["x"], [3, 7, 0, 2, 5, 6])
    assert strings.column("s").to_pylist() == ["d", "h", "a", "c", "f", "g"] and s.rows == 0
    assert chunk["h"].ctypes.data % 64 == 0 and chunk["h"].shape == (6, 2)


def test_aligned_empty():
    for shape, dtype in [((7,), np.float32), ((3, 5), np.int64), ((4, 2), np.int32)]:
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.ctypes.data % 64 == 0
