"""Numeric features as embeddings (`normalize: bucketize | piecewise_linear`): the
encodings of a raw value, and its embedding read from the feature's table.

With cuts c_1 < ... < c_{K-1} (a feature's `boundaries`, compared as float32):

- `bucket_ids`: the bucket of x, b(x) = #{i : c_i <= x} in [0, K). The embedding is row
  b(x) of a (K, dim) table.
- `piecewise_linear` (Gorishniy, Rubachev and Babenko, "On Embeddings for Numerical
  Features in Tabular Deep Learning", NeurIPS 2022, PLE): one component per bucket
  between two cuts, t = 1..K-2,

      e_t(x) = clip((x - c_t) / (c_{t+1} - c_t), 0, 1),

  so a value below c_1 encodes as zeros, one in the bucket [c_t, c_{t+1}) as ones
  before t, its position inside the bucket at t and zeros after, one at or above
  c_{K-1} as ones. The paper lets the first and last components go below 0 / above 1
  outside [c_1, c_{K-1}]; here they are clipped, so a heavy tail far beyond the first
  day's range cannot blow the embedding up. The embedding is the paper's linear layer,
  W_0 + sum_t e_t(x) W_t, from a (K-1, dim) table whose row 0 is the bias W_0: a value
  keeps its order and distance inside a bucket, where `bucketize` only keeps its bucket.

Both read their table with `gather_rows` (row-sparse gradients, any tf.distribute
variable), so the embedding optimizer updates them like the id tables. TensorFlow only
(the tables' reads); the encodings themselves are `keras.ops`.
"""

from keras import ops

from mtlrec.layers.embedding.sparse_reads import gather_rows


def bucket_ids(x, boundaries):
    """The bucket of each value of `x` (int32, same shape): the number of `boundaries`
    (strictly increasing floats) at or below it."""
    return ops.digitize(ops.cast(x, "float32"), [float(b) for b in boundaries])


def piecewise_linear(x, boundaries):
    """PLE components of `x` `(B,)`: `(B, len(boundaries) - 1)` values in [0, 1] (see
    the module docstring)."""
    cuts = ops.convert_to_tensor([float(b) for b in boundaries], dtype="float32")
    left, width = cuts[:-1], cuts[1:] - cuts[:-1]
    x = ops.expand_dims(ops.cast(x, "float32"), -1)
    return ops.clip((x - left) / width, 0.0, 1.0)


def table_rows(feature) -> int:
    """Rows of an embedded numeric feature's table: one per bucket (`bucketize`), or one
    per bucket between two cuts plus the bias row (`piecewise_linear`)."""
    buckets = len(feature.boundaries) + 1
    return buckets if feature.normalize == "bucketize" else buckets - 1


def numeric_embedding(feature, table, x, dtype):
    """The embedding `(B, dim)` of the raw values `x` `(B,)` of an embedded numeric
    `feature` (a `mtlrec.schema.NumericFeature`) from its `table`."""
    if feature.normalize == "bucketize":
        return gather_rows(table, bucket_ids(x, feature.boundaries))
    components = piecewise_linear(x, feature.boundaries)
    weights = ops.concatenate([ops.ones_like(components[:, :1]), components], axis=-1)
    rows = gather_rows(table, ops.arange(table_rows(feature)))
    return ops.matmul(ops.cast(weights, dtype), ops.cast(rows, dtype))
