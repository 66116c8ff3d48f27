"""`validate_day`: check a day partition against its schema before training starts."""

import re

import numpy as np
import pyarrow as pa
import tensorflow as tf

from mtlrec.data_pipeline import parquet_reader
from mtlrec.data_pipeline.columns import column_plan
from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.id_collisions import IdCounter
from mtlrec.data_pipeline.partitions import check_fmt, compression_of, day_dir, day_files
from mtlrec.data_pipeline.tfrecord_io import corrupt_file_error, peek_kinds, tf_error_detail
from mtlrec.data_pipeline import weight_columns as weights
from mtlrec.schema import Schema

_SCAN_BATCH = 65536
# stored TFRecord kinds each output kind accepts (mirrors what the readers can cast)
_ACCEPTED = {
    "int64": ("int64",),
    "string": ("bytes", "int64"),
    "float32": ("int64", "float"),
    "int64_seq": ("int64",),
    "string_seq": ("bytes", "int64"),
}
_TF = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}


NON_FINITE = ("replace", "refuse")


def validate_day(root, day, schema, fmt="parquet", funnel=(("click", "conversion"),),
                 non_finite="replace", counts=None, stats=None, far=None, id_counts=None,
                 weight_columns=()):
    """Check partition `day` under `root`; raise `DataValidationError` naming file and column.

    Checked: the day exists and has rows; every file opens and reads to the end (not
    truncated or corrupt); every schema column is present and readable as declared; labels
    have no nulls; binary labels are 0/1, multiclass labels integers in [0, num_classes),
    regression labels finite; for each `(parent, child)` in `funnel` whose columns are both
    schema labels, no row has child = 1 with parent = 0 (e.g. a conversion without a click).
    Nulls in features are fine: they read as the declared default. NaN or infinite values in
    a numeric feature are counted into `counts` (column -> number, when a dict is given)
    with `non_finite="replace"` (the readers turn them into the feature's default), and
    refused with `non_finite="refuse"`. `stats` ({column: (mean, std)}, the statistics a
    standardized feature was trained with): values more than `FAR_STDS` standard deviations
    from the mean are counted into `far` ({column: (count, largest value)}), not refused.
    When `id_counts` is a dict it receives the distinct ids of each hashed embedding table
    (owner feature name -> count; see `id_collisions`). `weight_columns`
    (`weight_columns.WeightColumn`s): columns of row weights, each present in every file,
    numbers without nulls, sample weights finite and >= 0, keep rates in (0, 1].

    Returns the number of rows of the day.
    """
    check_fmt(fmt)
    if non_finite not in NON_FINITE:
        raise ValueError(f"Expected non_finite to be one of {NON_FINITE}. Received: non_finite={non_finite!r}")
    counts = {} if counts is None else counts
    s = Schema.from_dict(schema)
    pairs = _funnel_pairs(funnel, s)
    plan = column_plan(s)
    ids = IdCounter(s) if id_counts is not None else None
    rows = 0
    for path in day_files(root, day, fmt):
        scan = _scan_parquet if fmt == "parquet" else _scan_tfrecord
        rows += scan(path, plan, s, pairs, _NonFinite(non_finite, counts, _FarOutside(stats, far)), ids,
                     tuple(weight_columns))
    if rows == 0:
        raise DataValidationError(f"day {day} is empty: its files hold no rows", file=day_dir(root, day))
    if ids is not None:
        id_counts.update(ids.counts())
    return rows


def _funnel_pairs(funnel, schema):
    pairs = []
    for pair in funnel or ():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"Expected funnel as (parent, child) label name pairs. Received: funnel={funnel!r}")
        if all(p in schema.label_names for p in pair):
            pairs.append(tuple(pair))
    return pairs


def _check_labels(path, labels, schema, pairs, first_row):
    """Value checks of one batch of labels (name -> float array)."""
    for spec in schema.labels:
        v = labels[spec.name]
        if spec.kind == "binary":
            bad = (v != 0) & (v != 1)
            expected = "binary label values in {0, 1}"
        elif spec.kind == "multiclass":
            bad = (v != np.floor(v)) | (v < 0) | (v >= spec.num_classes) | ~np.isfinite(v)
            expected = f"integer class labels in [0, {spec.num_classes})"
        else:
            bad = ~np.isfinite(v)
            expected = "finite regression labels"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"expected {expected}; found {v[i]:g} at row {first_row + i} ({int(bad.sum())} bad rows in this batch)",
                file=path, column=spec.name)
    for parent, child in pairs:
        bad = (labels[child] == 1) & (labels[parent] == 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"funnel inconsistency: {child}=1 with {parent}=0 at row {first_row + i} "
                f"({int(bad.sum())} such rows in this batch); expected {child} only inside {parent}",
                file=path, column=child)


FAR_STDS = 100.0  # a standardized value this far out saturates every unit it feeds


class _FarOutside:
    """Counts values far outside what a standardized feature's statistics describe."""

    def __init__(self, stats, found):
        self.stats = stats or {}
        self.found = {} if found is None else found

    def check(self, column, values):
        if column not in self.stats:
            return
        mean, std = self.stats[column]
        values = values[np.isfinite(values)]
        far = values[np.abs(values.astype(np.float64) - mean) > FAR_STDS * std]
        if far.size:
            count, largest = self.found.get(column, (0, 0.0))
            big = float(far[np.argmax(np.abs(far))])
            self.found[column] = (count + int(far.size), big if abs(big) > abs(largest) else largest)


class _NonFinite:
    """Counts (or refuses) NaN / infinite values of numeric features (and passes the values
    on to the `_FarOutside` count)."""

    def __init__(self, policy, counts, far):
        self.policy, self.counts, self.far = policy, counts, far

    def check(self, path, column, values, first_row):
        self.far.check(column, values)
        bad = ~np.isfinite(values)
        if not bad.any():
            return
        n = int(bad.sum())
        if self.policy == "refuse":
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"{n} non-finite value(s) in a numeric feature (first {values[i]} at row {first_row + i}); "
                f"expected finite numbers (data.non_finite_numeric: refuse)", file=path, column=column)
        self.counts[column] = self.counts.get(column, 0) + n


def _numeric_features(plan):
    return [c for c in plan if c.role == "feature" and c.kind == "float32"]


def _scan_parquet(path, plan, schema, pairs, non_finite, ids, weight_cols=()):
    pf = parquet_reader.open_parquet(path)
    if not pf.metadata.num_rows:  # nothing to check (pandas types a 0-row frame's columns `null`)
        return 0
    local = parquet_reader.resolve_plan(plan, pf.schema_arrow, path)
    columns = [c.name for c in local]
    for col in weight_cols:
        index = pf.schema_arrow.get_field_index(col.name)
        if index < 0:
            raise weights.missing_error(col, path)
        weights.check_type(col, pf.schema_arrow.field(index).type, path)
    columns += [c.name for c in weight_cols if c.name not in columns]
    rows = 0
    try:
        for batch in pf.iter_batches(batch_size=_SCAN_BATCH, columns=columns, use_threads=True):
            for col in weight_cols:
                weights.check_arrow(col, batch.column(col.name), path, rows)
            batch = parquet_reader.normalize_batch(batch, local, path)  # types, null labels
            labels = {c.name: batch.column(c.name).to_numpy(zero_copy_only=False) for c in local if c.role == "label"}
            _check_labels(path, labels, schema, pairs, rows)
            for c in _numeric_features(local):
                values = batch.column(c.name).to_numpy(zero_copy_only=False)
                non_finite.check(path, c.name, values, rows)
            for name in ids.columns if ids is not None else ():
                ids.add(name, batch.column(name))
            rows += batch.num_rows
    except DataValidationError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataValidationError(f"truncated or corrupt Parquet file ({e})", file=path) from None
    if rows != pf.metadata.num_rows:
        raise DataValidationError(f"truncated file: read {rows} rows, footer says {pf.metadata.num_rows}", file=path)
    return rows


_LISTS = {"int64": "an int64_list", "bytes": "a bytes_list", "float": "a float_list"}
_KIND_OF = {tf.int64: "int64", tf.float32: "float", tf.string: "bytes"}


def _allowed(col):
    return " or ".join(_LISTS[k] for k in _ACCEPTED[col.kind])


def _first_bad_record(path, plan, spec):
    """The error naming the first record of `path` that `spec` cannot parse (None if none is
    found): one that is not a tf.train.Example, or a column stored in another list type."""
    records = tf.data.TFRecordDataset(str(path), compression_type=compression_of(path))
    for i, record in enumerate(records.as_numpy_iterator()):
        try:
            example = tf.train.Example.FromString(record)
        except Exception:  # protobuf's DecodeError
            return DataValidationError(f"record {i} is not a tf.train.Example", file=path)
        for col in plan:
            feature = example.features.feature.get(col.name)
            which = feature.WhichOneof("kind") if feature is not None else None
            if which is None or which.split("_")[0] == _KIND_OF[spec[col.name].dtype]:
                continue
            found = which.split("_")[0]
            expected = _allowed(col) if found not in _ACCEPTED[col.kind] else \
                f"{_LISTS[_KIND_OF[spec[col.name].dtype]]} (as in the file's first records)"
            return DataValidationError(f"record {i} does not read as declared (expected {expected}, found {_LISTS[found]})",
                                       file=path, column=col.name)
    return None


def _scan_tfrecord(path, plan, schema, pairs, non_finite, ids, weight_cols=()):
    kinds = peek_kinds(path)
    spec = {}
    for col in plan:
        kind = kinds.get(col.name)
        if kind is not None and kind not in _ACCEPTED[col.kind]:
            raise DataValidationError(f"type not readable as declared: expected {_allowed(col)} ({col.declared}), "
                                      f"found {_LISTS[kind]}", file=path, column=col.name)
        dtype = _TF[kind] if kind else _TF[_ACCEPTED[col.kind][0]]
        spec[col.name] = tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64)
    for col in weight_cols:
        kind = kinds.get(col.name)
        if kind is None and kinds:  # the file's first records lack it
            raise weights.missing_error(col, path)
        if kind == "bytes":
            raise DataValidationError(f"type not readable as declared: expected numbers ({col.key}), found a "
                                      f"bytes_list", file=path, column=col.name)
        spec.setdefault(col.name, tf.io.RaggedFeature(_TF[kind or "float"], row_splits_dtype=tf.int64))
    ds = tf.data.TFRecordDataset(path, compression_type=compression_of(path)).batch(_SCAN_BATCH)
    ds = ds.map(lambda s: tf.io.parse_example(s, spec))
    rows, seen = 0, {c.name: 0 for c in plan}
    it = iter(ds)
    while True:
        try:
            parsed = next(it)
        except StopIteration:
            break
        except tf.errors.DataLossError as e:
            raise corrupt_file_error(e, path) from None
        except tf.errors.InvalidArgumentError as e:
            bad = _first_bad_record(path, plan, spec)
            if bad is not None:
                raise bad from None
            m = re.search(r"Key: ([^\s,.]+)", e.message)
            column = m.group(1) if m else None
            raise DataValidationError(f"type not readable as declared ({tf_error_detail(e)[:200]})",
                                      file=path, column=column) from None
        except tf.errors.OpError as e:
            raise corrupt_file_error(e, path) from None
        n = int(parsed[plan[0].name].nrows())
        labels = {}
        for col in plan:
            lengths = parsed[col.name].row_lengths().numpy()
            seen[col.name] += int(lengths.sum())
            if ids is not None and col.name in ids.columns:
                ids.add(col.name, parsed[col.name].flat_values.numpy())
                if not col.kind.endswith("_seq") and (lengths == 0).any():
                    ids.add(col.name, [col.fill])  # a missing id reads as the default, as in Parquet
            if col.kind.endswith("_seq"):
                continue
            if (lengths > 1).any():
                i = int(np.flatnonzero(lengths > 1)[0])
                raise DataValidationError(f"expected one value per row (a scalar column), found {lengths[i]} at row {rows + i}",
                                          file=path, column=col.name)
            if col.role == "label":
                if (lengths == 0).any():
                    i = int(np.flatnonzero(lengths == 0)[0])
                    raise DataValidationError(f"{int((lengths == 0).sum())} null label value(s) (first at row {rows + i})",
                                              file=path, column=col.name)
                labels[col.name] = parsed[col.name].flat_values.numpy().astype(np.float64)
            elif col.kind == "float32" and kinds.get(col.name) == "float":
                present = np.flatnonzero(lengths == 1)  # rows that hold a value
                values = parsed[col.name].flat_values.numpy()
                non_finite.far.check(col.name, values)
                bad = ~np.isfinite(values)
                if bad.any():
                    rows_of = np.full(n, 0.0, dtype=np.float32)
                    rows_of[present] = values
                    non_finite.check(path, col.name, rows_of, rows)
        _check_labels(path, labels, schema, pairs, rows)
        for col in weight_cols:
            _check_weight_records(path, col, parsed[col.name], rows)
        rows += n
    for col in plan:
        if rows and not seen[col.name] and not col.kind.endswith("_seq"):
            raise DataValidationError("schema column missing from the file (no record has it)", file=path, column=col.name)
        if rows and col.kind.endswith("_seq") and col.name not in kinds and not seen[col.name]:
            raise DataValidationError("schema column missing from the file (no record has it)", file=path, column=col.name)
    return rows


def _check_weight_records(path, col, ragged, first_row):
    """One value per record, numbers as the weight column's kind requires."""
    lengths = ragged.row_lengths().numpy()
    if (lengths != 1).any():
        i = int(np.flatnonzero(lengths != 1)[0])
        what = "no value (a null)" if lengths[i] == 0 else f"{lengths[i]} values"
        raise DataValidationError(f"expected one value per row ({col.key}), found {what} at row {first_row + i}",
                                  file=path, column=col.name)
    weights.check_values(col, ragged.flat_values.numpy(), path, first_row)
