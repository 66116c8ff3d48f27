"""Quantiles of a stream of numbers in bounded memory, and the bucket boundaries of a
numeric feature taken from them (`normalize: bucketize | piecewise_linear`).

`QuantileSketch` keeps a uniform random sample of at most `capacity` finite values
(Vitter's reservoir sampling, "Algorithm R", one batch at a time) plus the exact count,
minimum and maximum. While at most `capacity` values were seen its quantiles are exact;
after that each quantile is the quantile of the sample: the rank of an estimated
q-quantile among all values has a standard deviation of sqrt(q (1 - q) / capacity),
at most 0.5 / sqrt(capacity) = 0.0014 at the default 131,072 (1 MiB of float64): a cut
meant for the 0.5 quantile lands between the 0.4986 and 0.5014 quantiles two times in
three. The sample is drawn with a fixed seed: the same values in the same order give
the same quantiles. This module imports nothing from mtlrec.
"""

from __future__ import annotations

import numpy as np

#: Values a sketch keeps by default.
RESERVOIR_SIZE = 1 << 17


class QuantileSketch:
    """Quantiles of the finite values given to `add` (NaN and infinities are skipped).

    Args:
        capacity: the most values kept (the sample size once more were seen).
        seed: seed of the sample's draws.
    """

    def __init__(self, capacity: int = RESERVOIR_SIZE, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"Expected capacity to be a positive integer. Received: capacity={capacity!r}")
        self.capacity = capacity
        self._sample = np.empty(capacity, dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        self.count = 0
        self.minimum = np.inf
        self.maximum = -np.inf

    def add(self, values) -> None:
        """Add a batch of values (any array-like; flattened)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if not x.size:
            return
        self.minimum = min(self.minimum, float(x.min()))
        self.maximum = max(self.maximum, float(x.max()))
        room = max(self.capacity - self.count, 0)
        head, tail = x[:room], x[room:]
        self._sample[self.count : self.count + head.size] = head
        if tail.size:
            # value number n (0-based, over the whole stream) replaces slot j ~ U{0..n}
            # when j < capacity; of several values drawing one slot the last one stays
            seen = self.count + head.size + np.arange(tail.size, dtype=np.int64)
            slots = self._rng.integers(0, seen + 1)
            keep = slots < self.capacity
            slots, tail = slots[keep][::-1], tail[keep][::-1]
            slots, last = np.unique(slots, return_index=True)
            self._sample[slots] = tail[last]
        self.count += x.size

    @property
    def sample(self) -> np.ndarray:
        """The values kept (all of them while `count <= capacity`)."""
        return self._sample[: min(self.count, self.capacity)]

    def equal_count_cuts(self, num_buckets: int) -> np.ndarray:
        """For i = 1..K-1 (K = `num_buckets`) the value that starts bucket i of K
        equal-count buckets: the sorted values' number ceil(i n / K) (0-based, at most
        n - 1), so that i n / K values lie below it when the values are distinct. Always
        a value seen (no interpolation): an integer feature gets integer cuts."""
        if not self.count:
            raise ValueError("QuantileSketch.equal_count_cuts: no finite value was added")
        values = np.sort(self.sample)
        n = values.size
        index = np.minimum(-(-np.arange(1, num_buckets, dtype=np.int64) * n // num_buckets), n - 1)
        return values[index]


def quantile_boundaries(sketch: QuantileSketch, num_buckets: int) -> list[float]:
    """The cut points of `num_buckets` equal-count buckets of the sketched values.

    `QuantileSketch.equal_count_cuts`, as float32 (the model compares float32 inputs).
    A value holding more than 1/K of the rows (cuts that coincide, or the first one at
    the minimum: a default filling missing values, a zero count) gets a bucket of
    its own: cuts at it and, unless a cut already follows before it, at the next larger
    value kept. Cuts at or below the minimum
    or above the maximum are dropped (they would leave the first or the last bucket
    empty), so there may be fewer than K-1 cuts; none when every value is the same.

    Returns:
        Strictly increasing floats: bucket b of a value x is the number of cuts <= x.
    """
    qs = sketch.equal_count_cuts(num_buckets).astype(np.float32)
    values, counts = np.unique(qs, return_counts=True)
    lowest, top = np.float32(sketch.minimum), np.float32(sketch.maximum)
    heavy = set(values[counts > 1].tolist()) | ({float(lowest)} if np.any(qs == lowest) else set())
    sample = sketch.sample.astype(np.float32)
    cuts = set(values.tolist())
    for value in sorted(heavy):
        above = sample[sample > value]
        higher = [c for c in cuts if c > value]
        if above.size and (not higher or min(higher) > above.min()):
            cuts.add(float(above.min()))
    return sorted(c for c in cuts if lowest < c <= top)
