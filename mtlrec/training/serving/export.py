"""SavedModel export in the layout TF Serving watches: ``export/<version>/``.

``serving_default`` takes the **raw** features of the schema (string or int64
ids, float32 numerics, id lists ``(B, L)`` padded after their items with -1 or
"" to any length ``L``: the graph keeps the most recent ``max_len`` items of each
row, as training reads them) and returns every probability output of the model by
name (``model.probability_names()``: ``(B,)`` for binary and regression outputs,
``(B, C)`` for multiclass; not the ``_logit`` entries); a task trained on data whose
negatives were kept at a ``negative_keep_rate`` serves its corrected probability
(``mtlrec.models.base.downsampling_correction``). Hashing and normalisation
live inside the model, so
a server needs no preprocessing code. A DUPN export also has
``user_representation`` (user-side features -> ``representation``) and
``score_items`` (representation + candidate item features -> scores).

A version is written into ``export/.tmp-*`` and renamed to the next integer,
so TF Serving never sees a half-written version; the newest ``keep`` are kept.
``assets.extra/mtlrec.json`` records the schema, the outputs and the run
(``predict`` reads the row key column from it);
``assets.extra/tf_serving_warmup_requests`` holds ``PredictionLog`` records
(``tensorflow-serving-api`` protos) of a few real rows, one request per row and
one with all of them, which TF Serving runs when it loads the version.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from mtlrec.data_pipeline.recent_items import fit_padded
from mtlrec.models.base.downsampling_correction import corrected_outputs
from mtlrec.schema import PAD
from mtlrec.conventions import atomic
from mtlrec.training.faults import fault_point

META_PATH = ("assets.extra", "mtlrec.json")
WARMUP_PATH = ("assets.extra", "tf_serving_warmup_requests")
_VERSION = re.compile(r"^\d+$")


def versions(export_root) -> list[int]:
    """Integer versions present under ``export_root``, ascending."""
    root = Path(export_root)
    if not root.is_dir():
        return []
    return sorted(
        int(p.name) for p in root.iterdir() if p.is_dir() and _VERSION.match(p.name)
    )


def latest_export(export_root) -> Path | None:
    found = versions(export_root)
    return Path(export_root) / str(found[-1]) if found else None


def input_signature(model) -> dict:
    """``{name: tf.TensorSpec}`` of a functional model's dict inputs."""
    inputs = model.input
    if not isinstance(inputs, dict):
        names = getattr(model, "input_names", None) or [t.name for t in model.inputs]
        inputs = dict(zip(names, model.inputs))
    specs = {}
    for name, tensor in inputs.items():
        shape = list(tensor.shape)
        shape[0] = None
        specs[name] = tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name)
    return specs


def _sequence_pads(specs: dict) -> dict:
    """``{name: (max_len, pad)}`` of the id-list inputs among ``specs``."""
    return {
        name: (int(spec.shape[1]), PAD["string" if spec.dtype == tf.string else "int64"])
        for name, spec in specs.items()
        if spec.shape.rank == 2 and spec.dtype in (tf.int64, tf.string)
    }


def serving_signature(specs: dict) -> dict:
    """The model's input specs with id lists of any length: ``(None, None)``."""
    pads = _sequence_pads(specs)
    return {
        name: tf.TensorSpec((None, None), spec.dtype, name=name) if name in pads else spec
        for name, spec in specs.items()
    }


def _fitting(function, specs: dict):
    """``function`` taking id lists of any length, fitted to each input's ``max_len``."""
    pads = _sequence_pads(specs)

    def fitted(features):
        features = dict(features)
        for name, (max_len, pad) in pads.items():
            features[name] = fit_padded(features[name], max_len, pad)
        return function(features)

    return fitted


def _flatten_outputs(outputs) -> dict:
    if not isinstance(outputs, dict):
        outputs = {"output": outputs}
    out = {}
    for name, value in outputs.items():
        value = tf.convert_to_tensor(value)
        if value.shape.rank == 2 and value.shape[-1] == 1:
            value = tf.squeeze(value, axis=-1)
        out[name] = tf.cast(value, tf.float32) if value.dtype.is_floating else value
    return out


def probability_outputs(model, outputs):
    """The user-facing part of a model's outputs: ``model.probability_names()`` (the
    ``<name>_logit`` entries the losses read stay inside), with a task's
    ``negative_keep_rate`` corrected for (``downsampling_correction``: the probabilities
    of the full traffic); other models' as they are."""
    names = getattr(model, "probability_names", None)
    if not callable(names) or not isinstance(outputs, dict):
        return outputs
    published = {name: outputs[name] for name in names()}
    return corrected_outputs(getattr(model, "task_specs", ()), outputs, published)


def serving_function(model):
    """The function behind ``serving_default``: raw features -> probabilities by name."""

    def serve(features):
        return _flatten_outputs(probability_outputs(model, model(features, training=False)))

    return serve


def _user_function(user_model):
    def user_representation(features):
        return {"representation": tf.cast(user_model(features, training=False), tf.float32)}

    return user_representation


def _scorer_function(item_scorer, tasks=()):
    """Scores N candidates against one representation ``(1, d)`` (broadcast) or ``(N, d)``
    (a task's ``negative_keep_rate`` corrected for, as in ``serving_default``)."""

    def score_items(features):
        features = dict(features)
        candidates = next(tf.shape(v)[0] for k, v in features.items() if k != "representation")
        rep = features["representation"]
        features["representation"] = tf.broadcast_to(rep, [candidates, tf.shape(rep)[1]])
        return _flatten_outputs(corrected_outputs(tasks, item_scorer(features, training=False)))

    return score_items


def _dupn_endpoints(model) -> dict:
    """``{signature name: (sub-model, serving function)}`` for DUPN's user/item split."""
    user_model = getattr(model, "user_model", None)
    item_scorer = getattr(model, "item_scorer", None)
    if not (callable(user_model) and callable(item_scorer)):
        return {}
    users, scorer = user_model(), item_scorer()
    return {
        "user_representation": (users, _user_function(users)),
        "score_items": (scorer, _scorer_function(scorer, getattr(model, "task_specs", ()))),
    }


def _trimmed(value, pad):
    """One row's id list without the padding after its last item."""
    pads = (pad, pad.encode()) if isinstance(pad, str) else (pad,)
    real = [i for i, v in enumerate(value[0]) if v not in pads]
    return value[:, : (real[-1] + 1 if real else 0)]


def warmup_records(rows: dict, specs: dict, model_name: str = "") -> list[bytes]:
    """Serialized ``PredictionLog``s for ``serving_default`` (``specs``: the model's input
    specs): one request per row (each id list as long as the row's own items) and one
    request with every row."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    pads = _sequence_pads(specs)
    rows = {name: rows[name] for name in specs}
    count = len(next(iter(rows.values())))
    requests = [
        {n: _trimmed(v[i:i + 1], pads[n][1]) if n in pads else v[i:i + 1] for n, v in rows.items()}
        for i in range(count)
    ] + [rows]
    records = []
    for inputs in requests:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
        )
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=specs[name].dtype))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def export_model(
    model, export_root, keep: int = 3, metadata: dict | None = None, warmup: dict | None = None
) -> Path:
    """Write a new SavedModel version of ``model`` under ``export_root``.

    Args:
        model: a functional mtlrec model (dict inputs, dict outputs).
        export_root: ``run_dir/export``.
        keep: how many versions to keep (older ones are deleted after the new
            one is in place).
        metadata: JSON-serialisable facts stored in ``assets.extra/mtlrec.json``.
        warmup: a few rows of raw features (``{input name: array (n, ...)}``, id lists
            padded as the data pipeline gives them) for ``tf_serving_warmup_requests``;
            None writes no warmup file.

    Returns:
        The directory of the new version.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1. Received: keep={keep}")
    root = Path(export_root)
    root.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(root)
    present = versions(root)
    version = present[-1] + 1 if present else 1
    with atomic.new_directory(root, str(version)) as tmp:
        specs, signatures = _write_archive(model, tmp)
        meta = dict(metadata or {}, version=version, signatures=signatures, inputs=_input_facts(specs))
        meta_path = tmp.joinpath(*META_PATH)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        if warmup is not None:
            with tf.io.TFRecordWriter(str(tmp.joinpath(*WARMUP_PATH))) as writer:
                for record in warmup_records(warmup, specs, str(meta.get("name") or "")):
                    writer.write(record)
        fault_point("export.write")
    for old in versions(root)[:-keep]:
        shutil.rmtree(root / str(old), ignore_errors=True)
    return root / str(version)


def _write_archive(model, directory) -> tuple[dict, dict]:
    """The SavedModel of ``model`` in ``directory``; ``(input specs, {signature: input names})``."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = input_signature(model)
    signature = serving_signature(specs)
    archive.add_endpoint(
        "serving_default", _fitting(serving_function(model), specs), input_signature=[signature]
    )
    signatures = {"serving_default": sorted(signature)}
    for name, (sub, function) in _dupn_endpoints(model).items():
        archive.track(sub)
        sub_specs = input_signature(sub)
        archive.add_endpoint(
            name, _fitting(function, sub_specs), input_signature=[serving_signature(sub_specs)]
        )
        signatures[name] = sorted(sub_specs)
    _one_copy_of_each_variable(archive)
    archive.write_out(str(directory), verbose=False)
    return specs, signatures


def _one_copy_of_each_variable(archive) -> None:
    """Make the SavedModel hold each variable's value once.

    ``ExportArchive.track`` lists the model's Keras variables, and ``write_out`` adds the
    ``tf.Variable`` behind each of them (what the endpoints capture): two objects, both
    saved, so every table was written, and loaded by a server, twice (426 MB instead of
    213 MB for 53M embedding parameters). Listing the ``tf.Variable`` objects instead
    leaves one object per variable; the loaded model's ``variables`` still lists them all.
    """
    holder = archive._tf_trackable
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        setattr(holder, name, [getattr(v, "value", v) for v in getattr(holder, name)])


def _input_facts(specs: dict) -> dict:
    """``{input: {dtype, shape, max_len (id lists)}}`` of the serving signature."""
    max_lens = {name: max_len for name, (max_len, _) in _sequence_pads(specs).items()}
    return {
        name: {"dtype": spec.dtype.name, "shape": list(spec.shape)}
        | ({"max_len": max_lens[name]} if name in max_lens else {})
        for name, spec in serving_signature(specs).items()
    }


def read_metadata(export_dir) -> dict:
    """``assets.extra/mtlrec.json`` of an export (empty when absent)."""
    path = Path(export_dir).joinpath(*META_PATH)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
