"""Batch scoring with an exported SavedModel: Parquet or TFRecord in, Parquet out.

``predict_file(model_dir, input_path, output_path)`` streams the input (one
Parquet or TFRecord file, or every data file of a directory such as a day
partition, in name order: the names ``mtlrec.data_pipeline.partitions`` reads)
in record batches, converts their feature columns with the training pipeline's
converters (``mtlrec.data_pipeline.dataset.arrow_features``: the same types, null and
non-finite defaults, and sequences cut to their last ``max_len`` items and padded, as
``make_dataset`` reads a Parquet file), feeds them to ``serving_default`` and writes one
output row per input row: the schema's key column (or ``row``, the input row number,
when the schema has no key or the input lacks it) followed by one column per model
output. The output is written aside and renamed, so a failed run leaves no partial file.
The model does its own hashing and normalisation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.partitions import EXTENSIONS, file_format
from mtlrec.data_pipeline.dataset import arrow_features
from mtlrec.data_pipeline.tfrecord_io import peek_kinds, read_tfrecord_batches
from mtlrec.training.serving.export import read_metadata
from mtlrec.training.progress import row_progress



def input_files(path) -> list[Path]:
    """The files to score: ``path`` itself or the Parquet and TFRecord files under it."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if file_format(p.name) is not None and p.is_file()
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not files:
            names = ", ".join(e for fmt in EXTENSIONS.values() for e in fmt)
            raise DataValidationError(f"no data files in this directory (reading names ending {names})", file=path)
        return files
    raise DataValidationError("no such file or directory", file=path)


def _known_rows(files) -> int | None:
    """Rows of the input from the Parquet footers (None when a TFRecord file is among them)."""
    if any(file_format(f.name) == "tfrecord" for f in files):
        return None
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except (pa.ArrowInvalid, OSError):
        return None  # reading the file reports it


def _record_batches(file: Path, columns: list, sequences: set, batch_size: int):
    """Arrow record batches of ``columns`` of one Parquet or TFRecord file."""
    if file_format(file.name) == "tfrecord":
        kinds = {k: v for k, v in peek_kinds(file).items() if k in columns}
        yield from read_tfrecord_batches(file, kinds, list_columns=sequences, batch_size=batch_size)
        return
    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(f"not a readable Parquet file ({err})", file=file) from None
    names = parquet.schema_arrow.names
    yield from parquet.iter_batches(batch_size=batch_size, columns=[c for c in columns if c in names])


def _column(batch: pa.RecordBatch, name: str, file):
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise DataValidationError(
            f"missing (the model needs it; columns present: "
            f"{', '.join(batch.schema.names[:12])}{', ...' if len(batch.schema.names) > 12 else ''})",
            file=file,
            column=name,
        )
    return batch.column(index)


def _tensors(batch: pa.RecordBatch, inputs: dict, schema: dict, file=None) -> dict:
    """The model's inputs from one Arrow record batch, converted by the training pipeline
    (``mtlrec.data_pipeline.dataset.arrow_features``)."""
    for name in inputs:
        _column(batch, name, file)  # a missing column: named with the columns present
    return arrow_features(batch, schema, names=set(inputs), file=file)


def batch_inputs(batch: pa.RecordBatch, inputs: dict, schema: dict, file=None) -> dict:
    """numpy arrays for the model's inputs from one Arrow record batch (strings as ``str``)."""
    out = {}
    for name, value in _tensors(batch, inputs, schema, file).items():
        value = value.numpy()
        if value.dtype == object:
            value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
        out[name] = value
    return out


def _output_array(name: str, value: np.ndarray) -> pa.Array:
    if value.ndim == 1:
        return pa.array(value)
    flat = pa.array(value.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, value.shape[1])


def _open_export(model_dir):
    """(serving function, inputs as the metadata lists them, schema dict, key column or
    None) of an export version or, for an export root, of its newest version."""
    import tensorflow as tf

    model_dir = Path(model_dir)
    if not (model_dir / "saved_model.pb").exists():
        from mtlrec.training.serving.export import latest_export

        latest = latest_export(model_dir)  # an export root: its newest version
        model_dir = latest if latest is not None else model_dir
    if not (model_dir / "saved_model.pb").exists():
        raise DataValidationError("not a SavedModel directory (no saved_model.pb)", file=model_dir)
    meta = read_metadata(model_dir)
    serve = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    inputs = meta.get("inputs") or {
        name: {"dtype": spec.dtype.name, "shape": list(spec.shape)} for name, spec in specs.items()
    }
    return serve, inputs, meta.get("schema", {}), meta.get("key")


def _scores(batch: pa.RecordBatch, outputs: dict, key, first_row: int, file) -> pa.Table:
    """The output rows of one batch: its key column (or ``row`` numbers from ``first_row``
    when there is no key or the file lacks it), then the outputs by name."""
    table = {}
    if key is not None and key in batch.schema.names:
        table[key] = _column(batch, key, file)
    else:
        table["row"] = pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))
    for name in sorted(outputs):
        table[name] = _output_array(name, outputs[name].numpy())
    return pa.table(table)


def predict_file(model_dir, input_path, output_path, batch_size: int = 4096) -> int:
    """Score ``input_path`` with the SavedModel at ``model_dir`` into ``output_path``.

    ``model_dir`` is an export version (``RUN/export/3``) or an export root
    (``RUN/export``, whose newest version is used).

    Returns:
        The number of rows written (= rows read).

    Raises:
        DataValidationError: a missing input, a missing column or one of the wrong type.
    """
    serve, inputs, schema, key = _open_export(model_dir)
    files = input_files(input_path)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.parent / f".tmp-{output_path.name}.{os.getpid()}"
    writer = None
    rows = 0
    try:
        sequences = {n for n, spec in inputs.items() if len(spec["shape"]) == 2}
        columns = list(inputs) + ([key] if key is not None else [])
        bar = row_progress(_known_rows(files), "predict")
        for file in files:
            for batch in _record_batches(file, columns, sequences, batch_size):
                outputs = serve(**_tensors(batch, inputs, schema, file))
                out = _scores(batch, outputs, key, rows, file)
                if writer is None:
                    writer = pq.ParquetWriter(str(tmp), out.schema)
                elif out.schema != writer.schema:
                    out = out.cast(writer.schema)
                writer.write_table(out)
                rows += batch.num_rows
                bar.update(batch.num_rows)
        bar.close()
        if writer is None:  # no rows at all: still an (empty) output with the columns
            empty = {("row" if key is None else key): pa.array([], pa.int64())}
            for name in sorted(serve.structured_outputs):
                empty[name] = pa.array([], pa.float32())
            pq.write_table(pa.table(empty), str(tmp))
        else:
            writer.close()
            writer = None
        os.replace(tmp, output_path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return rows
