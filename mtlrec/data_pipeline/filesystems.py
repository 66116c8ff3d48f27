"""Where day partitions live: a local (or mounted) path, or a URI that `pyarrow.fs` resolves
(``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://namenode:8020/prefix``, ...).

Every reader lists and opens data through this module. A local path goes through `os` and
`pyarrow.parquet` exactly as it always did; a URI through the `pyarrow.fs.FileSystem` of its
``scheme://netloc?query``, resolved once per process and environment (an S3 resolution may
ask the server for the bucket's region). Locations under a URI keep its ``?query`` (``endpoint_override=``,
``region=``, ...) so each of them resolves to the same file system. Credentials and endpoints
come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ...) or the URI's query; credentials in the URI itself are refused
(they would be printed in messages and logs).

TFRecord files are read by TensorFlow, which reads only the schemes it registers
(`tf.io.gfile.get_registered_schemes()`; TensorFlow 2.21: local paths, ``file://``, ``gs://``,
``ram://``).
"""

import functools
import os
import re
from urllib.parse import urlsplit

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mtlrec.data_pipeline.data_validation_error import DataValidationError

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CREDENTIAL_ERRORS = re.compile(r"ACCESS_DENIED|INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|EXPIRED_TOKEN|"
                                r"INVALID_TOKEN|MISSING_AUTHENTICATION_TOKEN")
_CREDENTIAL_VARIABLES = ("AWS_", "GOOGLE_", "HADOOP_")  # what the clients read: a new value, a new client
_STORAGE_FAILURE = re.compile(r"AWS Error|curlCode")  # how pyarrow's S3 client reports a failed request
_CONNECT_ON_RESOLVE = ("hdfs", "viewfs")  # resolving these connects to the cluster: not probed


def scheme_of(location):
    """The ``scheme`` of a ``scheme://`` URI, None for a local path."""
    match = _URI.match(str(location or ""))
    return match.group(1) if match else None


def uri_problem(location):
    """What is wrong with a data root URI that shows without any I/O (None when nothing is,
    or when `location` is a local path): an unknown scheme, credentials in the URI,
    options that pyarrow refuses."""
    scheme = scheme_of(location)
    if scheme is None:
        return None
    parts = urlsplit(str(location))
    if "@" in parts.netloc and scheme in ("s3", "gs", "gcs"):
        return (f"expected a URI without credentials (give them in the environment, e.g. "
                f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), got a {scheme}:// URI with user info")
    if scheme in _CONNECT_ON_RESOLVE:
        return None
    try:
        pafs.FileSystem.from_uri(f"{scheme}://" + (f"?{parts.query}" if parts.query else ""))
    except (OSError, ValueError) as err:  # pyarrow.ArrowInvalid is a ValueError
        reason = _reason(err)
        if reason.startswith("Unrecognized filesystem type"):
            return (f"expected a local path or a URI that pyarrow.fs reads (s3://, gs://, hdfs://, ...), "
                    f"got the unknown scheme {scheme!r} in {str(location)!r}")
        if "query parameter" in reason:
            return f"expected {scheme}:// options that pyarrow.fs accepts: {reason}"
    return None


def tensorflow_problem(location):
    """Why TensorFlow cannot read TFRecord files under `location` (None when it can)."""
    scheme = scheme_of(location)
    if scheme is None:
        return None
    import tensorflow as tf

    readable = [s for s in tf.io.gfile.get_registered_schemes() if s]  # "": local paths
    if scheme not in readable:
        return (f"TensorFlow {tf.__version__} reads TFRecord files only from local paths and "
                f"{', '.join(s + '://' for s in sorted(readable))}; convert the days to Parquet or mount the storage")
    if urlsplit(str(location)).query:
        return "TensorFlow's file systems take no ?options in the URI"
    return None


def check_tensorflow_reads(location):
    problem = tensorflow_problem(location)
    if problem:
        raise ValueError(f"cannot read TFRecord files under {location}: {problem}")


def require_local(location, name):
    """Writers (synthetic data, conversion) write local or mounted paths only."""
    if scheme_of(location) is not None:
        raise ValueError(f"Expected {name} to be a local or mounted path (data is written there). "
                         f"Received: {name}={str(location)!r}")


def join(location, *names):
    """`location`/name/...; a URI keeps its ``?query`` at the end."""
    if scheme_of(location) is None:
        return os.path.join(os.fspath(location), *names)
    head, sep, query = str(location).partition("?")
    return "/".join([head.rstrip("/"), *names]) + sep + query


def list_dir(location):
    """[(name, is_directory)] of the entries directly under `location`; None when it does
    not exist (or, in an object store, holds nothing)."""
    if scheme_of(location) is None:
        path = os.fspath(location)
        if not os.path.isdir(path):
            return None
        return [(name, os.path.isdir(os.path.join(path, name))) for name in os.listdir(path)]
    infos = _remote_entries(location)
    return None if infos is None else [(info.base_name, info.type == pafs.FileType.Directory) for info in infos]


def _remote_entries(location):
    """pyarrow's file infos of the entries directly under a URI `location`; None when it
    does not exist."""
    fs, path = resolve(location)
    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=False))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise storage_error(err, location) from None


def file_stats(location):
    """[(name, size in bytes, modification time in ns)] of the files directly under
    `location` (directories left out); None when it does not exist."""
    if scheme_of(location) is None:
        path = os.fspath(location)
        if not os.path.isdir(path):
            return None
        out = []
        for entry in os.scandir(path):
            if entry.is_file():
                st = entry.stat()
                out.append((entry.name, st.st_size, st.st_mtime_ns))
        return out
    infos = _remote_entries(location)
    if infos is None:
        return None
    return [
        (info.base_name, int(info.size or 0), int(info.mtime_ns or 0))
        for info in infos if info.type == pafs.FileType.File
    ]


def is_dir(location):
    return list_dir(location) is not None if scheme_of(location) else os.path.isdir(os.fspath(location))


def parquet_file(location):
    """A `pyarrow.parquet.ParquetFile` (raises what pyarrow raises for an unreadable file)."""
    if scheme_of(location) is None:
        return pq.ParquetFile(location)
    fs, path = resolve(location)
    try:  # pre_buffer: one ranged request per row group's columns instead of one per column chunk
        return pq.ParquetFile(path, filesystem=fs, pre_buffer=True)
    except OSError as err:
        if _STORAGE_FAILURE.search(str(err)):  # not the file's fault: say so, not "corrupt"
            raise storage_error(err, location) from None
        raise


def resolve(location):
    """(pyarrow FileSystem, path inside it) of a URI."""
    parts = urlsplit(str(location))
    credentials = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_CREDENTIAL_VARIABLES)))
    fs, base = _file_system(parts.scheme, parts.netloc, parts.query, credentials)
    base = base.rstrip("/")  # the bucket (s3, gs), nothing (hdfs: the path is absolute)
    return fs, (base + parts.path) if base else parts.path


@functools.lru_cache(maxsize=None)
def _file_system(scheme, netloc, query, credentials):
    """One file system per URI base and environment (`credentials`: the variables it read)."""
    uri = f"{scheme}://{netloc}/" + (f"?{query}" if query else "")
    try:
        return pafs.FileSystem.from_uri(uri)
    except OSError as err:
        raise storage_error(err, uri) from None
    except ValueError as err:
        raise ValueError(f"cannot use the data location {uri}: {_reason(err)}") from None


def storage_error(err, location):
    """A storage failure (missing bucket, refused credentials, unreachable endpoint) as one line."""
    reason = _reason(err)
    hint = ""
    if _CREDENTIAL_ERRORS.search(reason):
        hint = "; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE)"
    return DataValidationError(f"cannot read the {scheme_of(location)}:// storage: {reason}{hint}", file=location)


def _reason(err):
    text = " ".join((str(err).strip().splitlines() or [type(err).__name__])[0].split())
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
