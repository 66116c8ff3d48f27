"""`mtlrec.quantiles`: a bounded-memory sample of a stream and the bucket cuts from it."""

import numpy as np
import pytest

from mtlrec.quantiles import QuantileSketch, quantile_boundaries


def _sketch(values, capacity=1 << 17, batch=3):
    sketch = QuantileSketch(capacity=capacity)
    values = np.asarray(values, dtype=np.float64)
    for start in range(0, len(values), batch):
        sketch.add(values[start : start + batch])
    return sketch


def test_exact_while_the_values_fit_and_non_finite_values_are_skipped():
    sketch = _sketch([8, 1, np.nan, 7, 2, np.inf, 6, 3, -np.inf, 5, 4])
    assert (sketch.count, sketch.minimum, sketch.maximum) == (8, 1.0, 8.0)
    # 4 buckets of 1..8: sorted values number ceil(8 i / 4) = 2, 4, 6 start buckets 1, 2, 3
    assert sketch.equal_count_cuts(4).tolist() == [3.0, 5.0, 7.0]
    assert quantile_boundaries(sketch, 4) == [3.0, 5.0, 7.0]  # {1, 2} {3, 4} {5, 6} {7, 8}
    assert sketch.equal_count_cuts(3).tolist() == [4.0, 7.0]  # ceil(8/3) = 3, ceil(16/3) = 6


def test_a_value_holding_more_than_a_bucket_gets_its_own_bucket():
    # six zeros then 1..4: cuts at numbers 3, 5, 8 = 0, 0, 3; the zeros get the bucket
    # [0, 1) (a cut at the next value kept), the cut at the minimum itself is dropped
    assert quantile_boundaries(_sketch([0, 0, 0, 1, 0, 2, 0, 3, 0, 4]), 4) == [1.0, 3.0]
    # a mass in the middle: cuts 3, 3, 5 -> the threes get [3, 4)
    assert quantile_boundaries(_sketch([1, 2, 3, 3, 3, 3, 3, 4, 5, 6]), 4) == [3.0, 4.0, 5.0]
    # cuts 3, 3, 4: [3, 4) holds only the threes already, no other cut needed
    assert quantile_boundaries(_sketch([1, 3, 3, 3, 3, 3, 3, 3, 4, 5]), 4) == [3.0, 4.0]
    assert quantile_boundaries(_sketch([2.5] * 7), 8) == []  # constant: no cut
    assert quantile_boundaries(_sketch([0, 1, 2] * 5), 16) == [1.0, 2.0]  # few distinct values


def test_cuts_are_float32_values():
    cuts = quantile_boundaries(_sketch([0.1, 0.2, 0.3, 0.4]), 2)
    assert cuts == [float(np.float32(0.3))] and cuts != [0.3]


def test_beyond_capacity_a_seeded_uniform_sample_is_kept():
    stream = np.arange(100_000, dtype=np.float64)
    a, b = _sketch(stream, capacity=1000, batch=777), _sketch(stream, capacity=1000, batch=777)
    assert a.count == 100_000 and a.sample.size == 1000 and len(np.unique(a.sample)) == 1000
    np.testing.assert_array_equal(a.sample, b.sample)  # same values, same order: same sample
    assert (a.minimum, a.maximum) == (0.0, 99_999.0)
    # a uniform sample of 0..99999: its mean within 4 sd (28,868 / sqrt(1000)) of 49,999.5,
    # its median within 4 sd (0.5 / sqrt(1000) of the rows) of the true median
    assert abs(a.sample.mean() - 49_999.5) < 4 * 28_868 / np.sqrt(1000)
    assert abs(a.equal_count_cuts(2)[0] - 49_999.5) < 4 * 0.5 / np.sqrt(1000) * 100_000
    # every part of the stream is represented (the late values replace early ones)
    assert (a.sample >= 90_000).sum() > 50 and (a.sample < 10_000).sum() > 50


def test_bad_arguments():
    with pytest.raises(ValueError, match="Expected capacity to be a positive integer. Received: capacity=0"):
        QuantileSketch(capacity=0)
    with pytest.raises(ValueError, match="no finite value was added"):
        _sketch([np.nan]).equal_count_cuts(2)
