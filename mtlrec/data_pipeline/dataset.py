"""`make_dataset`: day partitions -> tf.data.Dataset of (features, labels) batches."""

import tensorflow as tf

from mtlrec.conventions.arg_checks import check_positive_int
from mtlrec.data_pipeline import parquet_reader, tfrecord_reader
from mtlrec.data_pipeline.batching import batch_arrays
from mtlrec.data_pipeline.columns import column_plan
from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.partitions import check_fmt, day_files, resolve_days

PREFETCH_BATCHES = 2  # batches made ready while the step runs


def make_dataset(root, days, schema, fmt="parquet", batch_size=1024, shuffle_buffer=0, seed=None,
                 deterministic=False, extra_columns=(), repeat=False, skip_batches=0, shard=None):
    """Batches `(features, labels)` of the day partitions `days` under `root`.

    Args:
        root: dataset root holding `dt=YYYY-MM-DD` directories.
        days: one day "YYYY-MM-DD", an inclusive range "A:B", a list of days, or None (all).
        schema: schema dict (or `mtlrec.schema.Schema`).
        fmt: "parquet" or "tfrecord".
        batch_size: rows per batch; each pass over the data ends with one partial batch.
        shuffle_buffer: rows held for shuffling (0: file order). File order is shuffled too.
        seed: shuffle seed; pass p of a repeated dataset reshuffles with a seed derived from it.
        deterministic: fixed element order even when shuffling without a seed (seed None
            then means 0). Without shuffling, or with a seed, the order is always fixed;
            only unseeded shuffling lets parallel parsing return batches out of order.
        extra_columns: more columns (e.g. `true_ctr`, `user_id`) added to `labels` under their
            own names, in their stored type (int64 / float32 / string; nulls 0 / NaN / "").
        repeat: cycle over the days forever.
        skip_batches: drop the first batches of the stream (resume mid-day with the same seed).
        shard: `(index, count)`: read only files index, index + count, ... of the days (one
            worker's share of a multi-worker run); None reads every file.

    `features`: name -> (B,) int64 / string / float32, sequences (B, max_len) padded with -1 / "";
    nulls, NaN and infinities of a numeric feature read as its declared default;
    `labels`: label name -> (B,) float32, plus the extra columns.
    """
    check_fmt(fmt)
    check_positive_int("batch_size", batch_size)
    check_positive_int("shuffle_buffer", shuffle_buffer, minimum=0)
    check_positive_int("skip_batches", skip_batches, minimum=0)
    if seed is None and deterministic:
        seed = 0
    files = [f for day in resolve_days(root, days) for f in day_files(root, day, fmt)]
    if shard is not None:
        index, count = shard
        if not 0 <= index < count or len(files) < count:
            raise ValueError(f"Expected shard (index, count) with 0 <= index < count <= {len(files)} files. "
                             f"Received: shard={shard!r}")
        files = files[index::count]
    plan = column_plan(schema, extra_columns)
    options = tf.data.Options()
    # order may vary only where randomness was asked for anyway: shuffling without a seed
    options.deterministic = bool(deterministic) or seed is not None or not shuffle_buffer
    # No autotuning: deleting a finished iterator waits for its model thread to end its
    # sleep between optimizations (a period that grows as the pass runs), so a day, an
    # evaluation or a prediction could end in 9 to 21 s of idle time.
    # The prefetch depth is set below; the TFRecord parse's AUTOTUNE parallelism is still
    # resolved without that thread (its throughput did not change).
    options.autotune.enabled = False

    if fmt == "parquet":
        first = next((f for f in files if parquet_reader.open_parquet(f).metadata.num_rows), files[0])
        plan = parquet_reader.resolve_plan(plan, parquet_reader.open_parquet(first).schema_arrow, first)
        ds = _parquet_stream(files, plan, batch_size, shuffle_buffer, seed, repeat, skip_batches)
    else:
        plan, stored = tfrecord_reader.resolve_plan(plan, files)
        spec = tfrecord_reader.parse_spec(plan, stored)
        ds = tfrecord_reader.record_batches(files, batch_size, shuffle_buffer, seed, repeat, skip_batches)
        ds = ds.map(lambda s: _features_labels(tfrecord_reader.parse_batch(s, plan, spec), plan),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


def _parquet_stream(files, plan, batch_size, shuffle_buffer, seed, repeat, skip_batches):
    """Passes over the files, each `from_generator` -> decode strings -> `rebatch`, so every
    pass ends with its own partial batch; `skip_batches` skips whole passes by their row
    count (footers) and then rows inside the first pass read, before conversion."""
    rows = parquet_reader.pass_rows(files)
    per_pass = -(-rows // batch_size)
    if repeat and not rows:
        raise DataValidationError("no rows to repeat: the selected days are empty", file=files[0])
    first = skip_batches // per_pass if per_pass else 0
    skip_rows = (skip_batches - first * per_pass) * batch_size
    signature = parquet_reader.block_signature(plan)

    def one_pass(epoch):
        gen = lambda e: parquet_reader.stream_pass(  # noqa: E731
            files, plan, batch_size, shuffle_buffer, seed, int(e), skip_rows if int(e) == first else 0)
        ds = tf.data.Dataset.from_generator(gen, args=(epoch,), output_signature=signature)
        ds = ds.map(lambda b: _features_labels(parquet_reader.decode_block(b, plan), plan))
        return ds.rebatch(batch_size)

    if not repeat:  # one pass: no flat_map (its inner dataset is rebuilt per iteration)
        ds = one_pass(tf.constant(0, tf.int64))
        return ds.take(0) if skip_batches >= per_pass else ds
    return tf.data.Dataset.range(first, 2**62).flat_map(one_pass)


def arrow_features(batch, schema, names=None, file=None):
    """The model features of one Arrow record batch, converted as `make_dataset` converts
    the record batches of a Parquet file (the same plan, types, defaults for nulls and
    non-finite numerics, and sequences: each row's last `max_len` items, padded after them
    with -1 / ""); what `predict` feeds a SavedModel.

    Args:
        batch: a `pyarrow.RecordBatch` holding the feature columns (others are ignored).
        schema: schema dict (or `mtlrec.schema.Schema`).
        names: the features to convert (default: every schema feature).
        file: the file the batch comes from, for error messages.

    Returns:
        dict name -> `tf.Tensor`, as in the `features` of `make_dataset`.
    """
    plan = [c for c in column_plan(schema) if c.role == "feature" and (names is None or c.name in names)]
    plan = parquet_reader.resolve_plan(plan, batch.schema, file)
    arrays = batch_arrays.chunk_arrays(parquet_reader.normalize_batch(batch, plan, file), plan)
    block = {k: tf.constant(v) for k, v in arrays.items()}
    features, _ = _features_labels(parquet_reader.decode_block(block, plan), plan)
    return features


@tf.autograph.experimental.do_not_convert  # plain Python loops over columns
def _features_labels(flat, plan):
    features = {c.name: flat[c.name] for c in plan if c.role == "feature"}
    # NaN / inf in a numeric feature reads as its default (validate_day counts them). The model
    # applies the same rule itself (FeatureEmbedding); it stays here for what reads these
    # features without the model: a day's numeric statistics (stats_from_day), `predict` with
    # an export written before the model applied it, and users' own code.
    for c in plan:
        if c.role == "feature" and c.kind == "float32":
            x = features[c.name]
            features[c.name] = tf.where(tf.math.is_finite(x), x, tf.constant(c.fill, x.dtype))
    labels = {c.name: flat[c.name] for c in plan if c.role in ("label", "extra") or c.also_label}
    return features, labels
