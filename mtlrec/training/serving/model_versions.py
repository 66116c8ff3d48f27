"""The export versions a server answers with: loading one, and following the export root.

``ServedVersion.load(path)`` loads a SavedModel version (``RUN/export/<n>``), reads its
signatures' inputs and runs its TF Serving warmup requests
(``assets.extra/tf_serving_warmup_requests``), so a version that cannot answer them is
never served. ``ExportVersions`` follows an export root as daily training writes new
versions into it: ``refresh()`` loads the newest version completely, then replaces the
served one in a single assignment (requests already holding the old version finish on
it); when a new version fails to load it logs one line and keeps serving the old one
(it tries that version again only if its directory changes). Like TF Serving's default
version policy, one version is served: the newest that loads.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from mtlrec.training.serving.export import WARMUP_PATH, read_metadata, versions
from mtlrec.training.serving.request_parsing import InputSpec

logger = logging.getLogger("mtlrec.serve")


class ExportNotFound(ValueError):
    """No loadable SavedModel at the path a server was given."""


def _numeric_defaults(meta: dict) -> dict:
    """``{numeric feature: default}`` of the export's schema: what a non-finite value reads
    as, by the data pipeline's column plan."""
    schema = meta.get("schema")
    if not schema:
        return {}
    from mtlrec.data_pipeline.columns import column_plan

    return {c.name: c.fill for c in column_plan(schema) if c.role == "feature" and c.kind == "float32"}


class ServedVersion:
    """One loaded export version: ``call(signature, arrays)`` -> numpy outputs by name."""

    def __init__(self, version: int, path: Path, loaded, meta: dict):
        self.version = version
        self.path = path
        self.meta = meta
        self._loaded = loaded  # keeps the variables of the signatures alive
        self._signature_defs = None
        self.functions = dict(loaded.signatures)
        fills = _numeric_defaults(meta)
        self.inputs = {
            name: {
                key: InputSpec.of(key, spec, fills.get(key))
                for key, spec in sorted(fn.structured_input_signature[1].items())
            }
            for name, fn in self.functions.items()
        }

    @classmethod
    def load(cls, path) -> "ServedVersion":
        """Load the SavedModel at ``path`` (a version directory) and run its warmup requests."""
        import tensorflow as tf

        path = Path(path)
        if not (path / "saved_model.pb").exists():
            raise ExportNotFound(f"{path}: not a SavedModel directory (no saved_model.pb)")
        version = int(path.name) if path.name.isdigit() else 1
        served = cls(version, path, tf.saved_model.load(str(path)), read_metadata(path))
        served.warm_up()
        return served

    def call(self, signature: str, arrays: dict) -> dict:
        """Run ``signature`` on numpy inputs; numpy outputs by name."""
        import tensorflow as tf

        specs = self.inputs[signature]
        tensors = {name: tf.constant(value, dtype=specs[name].dtype) for name, value in arrays.items()}
        return {name: value.numpy() for name, value in self.functions[signature](**tensors).items()}

    def warm_up(self) -> int:
        """Run the export's TF Serving warmup requests (if any); returns how many ran."""
        path = self.path.joinpath(*WARMUP_PATH)
        if not path.exists():
            return 0
        import tensorflow as tf

        try:
            from tensorflow_serving.apis import prediction_log_pb2
        except ImportError:  # the protos are not installed: nothing to read the records with
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
            signature = request.model_spec.signature_name or "serving_default"
            arrays = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            self.call(signature, arrays)
            count += 1
        return count

    def signature_defs(self) -> dict:
        """The SavedModel's ``SignatureDef``s as TF Serving's metadata API writes them."""
        if self._signature_defs is None:
            self._signature_defs = self._read_signature_defs()
        return self._signature_defs

    def _read_signature_defs(self) -> dict:
        from google.protobuf import json_format
        from tensorflow.core.protobuf import saved_model_pb2

        model = saved_model_pb2.SavedModel.FromString((self.path / "saved_model.pb").read_bytes())
        graph = model.meta_graphs[0]
        return {
            name: json_format.MessageToDict(graph.signature_def[name], preserving_proto_field_name=True)
            for name in sorted(graph.signature_def)
            if not name.startswith("__")
        }


def _stamp(path: Path):
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class ExportVersions:
    """The version a server answers with, following ``model_path``.

    ``model_path`` is an export root (``RUN/export``: its newest version is served and
    new ones are picked up by ``refresh()``) or one version directory (served as it is).
    """

    def __init__(self, model_path):
        self.path = Path(model_path)
        self.fixed = (self.path / "saved_model.pb").exists()
        self.current: ServedVersion | None = None
        self._failed: dict[int, object] = {}  # version -> directory stamp when it failed
        self._states: dict[int, tuple] = {}  # version -> (state, error code, message)
        self._lock = threading.Lock()

    def _set(self, version: int, state: str, code: str = "OK", message: str = "") -> None:
        with self._lock:
            self._states[version] = (state, code, message)

    def status(self, version: int | None = None) -> list[dict]:
        """TF Serving's ``model_version_status`` entries, newest first."""
        with self._lock:
            states = dict(self._states)
        chosen = sorted(states, reverse=True) if version is None else [version]
        return [
            {"version": str(v), "state": states[v][0], "status": {"error_code": states[v][1], "error_message": states[v][2]}}
            for v in chosen if v in states
        ]

    def _load(self, version: int, path: Path) -> ServedVersion | None:
        self._set(version, "LOADING")
        start = time.perf_counter()
        try:
            served = ServedVersion.load(path)
        except Exception as err:  # noqa: BLE001  (any failure keeps the served version)
            message = " ".join(str(err).split()) or type(err).__name__
            self._failed[version] = _stamp(path)
            self._set(version, "END", "UNKNOWN", message)
            keeping = f"still serving version {self.current.version}" if self.current else "nothing to serve yet"
            logger.warning("version %d (%s) failed to load, %s: %s", version, path, keeping, message[:500])
            return None
        served.version = version
        logger.info("loaded version %d from %s in %.1f s", version, path, time.perf_counter() - start)
        return served

    def refresh(self) -> bool:
        """Serve the newest version present, if it is not the one served and loads;
        returns whether the served version changed."""
        if self.fixed:
            if self.current is None:
                served = self._load(int(self.path.name) if self.path.name.isdigit() else 1, self.path)
                if served is None:
                    return False
                self._swap(served)
                return True
            return False
        present = versions(self.path)
        with self._lock:  # versions gone from the directory leave the status (kept: the served one)
            for gone in set(self._states) - set(present) - {getattr(self.current, "version", None)}:
                del self._states[gone]
        if self.current is None:  # first load: the newest version that loads
            for version in reversed(present):
                if self._try(version):
                    return True
            return False
        if not present or present[-1] == self.current.version:
            return False
        return self._try(present[-1])

    def _try(self, version: int) -> bool:
        path = self.path / str(version)
        if version in self._failed and self._failed[version] == _stamp(path):
            return False
        served = self._load(version, path)
        if served is None:
            return False
        self._swap(served)
        return True

    def _swap(self, served: ServedVersion) -> None:
        old = self.current
        self.current = served  # one assignment: a request reads the old or the new version
        self._set(served.version, "AVAILABLE")
        if old is not None and old.version != served.version:
            self._set(old.version, "END")
            logger.info("serving version %d (was %d)", served.version, old.version)

    def first_load(self) -> ServedVersion:
        """Load the version to serve at start; raises ``ExportNotFound`` naming the path."""
        if not self.path.is_dir():
            problem = "not a directory" if self.path.exists() else "no such directory"
            raise ExportNotFound(f"{self.path}: {problem} (expected an export root RUN/export "
                                 f"or a version RUN/export/<n>)")
        if not self.fixed and not versions(self.path):
            raise ExportNotFound(f"{self.path}: no export versions in it (expected <n>/saved_model.pb, "
                                 f"as `mtlrec train` and `mtlrec export` write them)")
        if not self.refresh():
            tried = "; ".join(f"version {s['version']}: {s['status']['error_message']}" for s in self.status())
            raise ExportNotFound(f"{self.path}: no version could be loaded ({tried[:400]})")
        return self.current

