"""Convert a day partition between Parquet and TFRecord (what `mtlrec convert` runs)."""

import os

import pyarrow as pa
import pyarrow.parquet as pq

from mtlrec.data_pipeline.data_validation_error import DataValidationError
from mtlrec.data_pipeline.filesystems import require_local
from mtlrec.data_pipeline.partitions import check_fmt, day_dir, day_files, file_format
from mtlrec.data_pipeline.parquet_reader import open_parquet
from mtlrec.data_pipeline.tfrecord_io import peek_kinds, read_tfrecord_batches, write_tfrecord
from mtlrec.schema import Schema

_BATCH = 65536


def _stem(path):
    name = os.path.basename(path)
    for ext in (".tfrecord.gz", ".tfrecord", ".parquet"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def convert_day(src_root, dst_root, day, schema, to_fmt, compression=None):
    """Convert every file of partition `day` from the other format into `to_fmt`.

    Parquet -> TFRecord keeps every column (one feature per column, nulls as absent keys);
    TFRecord -> Parquet reads the keys found in the first records of each file, with the
    schema's sequence features as list columns and the others as scalars (float_list
    values come back as float32). One output file per input file, same stem, written
    atomically; existing `to_fmt` files of the destination day are replaced.

    Args:
        src_root, dst_root: dataset roots (may be the same directory); `src_root` may be a
            URI (see `filesystems`), `dst_root` is a local or mounted path.
        day: "YYYY-MM-DD".
        schema: schema dict.
        to_fmt: "tfrecord" or "parquet".
        compression: TFRecord: None / "" or "GZIP" (writes `.tfrecord.gz`);
            Parquet: a codec name (default snappy).

    Returns the list of files written.
    """
    check_fmt(to_fmt)
    require_local(dst_root, "dst_root")
    s = Schema.from_dict(schema)
    src_fmt = "parquet" if to_fmt == "tfrecord" else "tfrecord"
    sources = day_files(src_root, day, src_fmt)
    out_dir = day_dir(dst_root, day)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        if file_format(name) == to_fmt and not name.startswith((".", "_")):
            os.remove(os.path.join(out_dir, name))
    written = []
    for src in sources:
        if to_fmt == "tfrecord":
            gz = (compression or "").upper() == "GZIP"
            if compression not in (None, "", "GZIP", "gzip"):
                raise ValueError(f'Expected compression None, "" or "GZIP" for TFRecord. Received: compression={compression!r}')
            dst = os.path.join(out_dir, _stem(src) + (".tfrecord.gz" if gz else ".tfrecord"))
            pf = open_parquet(src)
            try:
                write_tfrecord(dst, pf.iter_batches(batch_size=_BATCH), compression="GZIP" if gz else "")
            except (OSError, pa.ArrowException) as e:
                raise DataValidationError(f"truncated or corrupt Parquet file ({e})", file=src) from None
        else:
            dst = os.path.join(out_dir, _stem(src) + ".parquet")
            _tfrecord_to_parquet(src, dst, s, compression)
        written.append(dst)
    return written


def _tfrecord_to_parquet(src, dst, schema, compression):
    kinds = peek_kinds(src, max_records=1024)
    order = ([schema.key] if schema.key else []) + schema.column_names
    names = [n for n in order if n in kinds] + sorted(k for k in kinds if k not in order)
    lists = {f.name for f in schema.sequence}
    tmp = os.path.join(os.path.dirname(dst), "." + os.path.basename(dst) + ".tmp")
    writer = None
    try:
        for batch in read_tfrecord_batches(src, kinds, lists, batch_size=_BATCH):
            table = pa.Table.from_batches([batch]).select(names)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression=compression or "snappy")
            writer.write_table(table)
        if writer is None:  # no records: an empty file with the columns' types
            fields = [pa.field(n, _arrow_type(kinds[n], n in lists)) for n in names]
            writer = pq.ParquetWriter(tmp, pa.schema(fields), compression=compression or "snappy")
        writer.close()
        writer = None
        os.replace(tmp, dst)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)


def _arrow_type(kind, is_list):
    t = {"int64": pa.int64(), "float": pa.float32(), "bytes": pa.string()}[kind]
    return pa.list_(t) if is_list else t
