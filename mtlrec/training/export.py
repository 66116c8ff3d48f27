"""SavedModel export in the layout TF Serving watches: ``export/<version>/``.

``serving_default`` takes the **raw** features of the schema (string or int64
ids, float32 numerics, padded id lists ``(B, max_len)``) and returns every
probability output of the model by name (``model.probability_names()``: ``(B,)``
for binary and regression outputs, ``(B, C)`` for multiclass; not the ``_logit``
entries). Hashing and normalisation live inside the model, so
a server needs no preprocessing code. A DUPN export also has
``user_representation`` (user-side features -> ``representation``) and
``score_items`` (representation + candidate item features -> scores).

A version is written into ``export/.tmp-*`` and renamed to the next integer,
so TF Serving never sees a half-written version; the newest ``keep`` are kept.
``assets.extra/mtlrec.json`` records the schema, the outputs and the run
(``predict`` reads the row key column from it).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from mtlrec.training import atomic
from mtlrec.training.faults import fault_point

META_PATH = ("assets.extra", "mtlrec.json")
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
    ``<name>_logit`` entries the losses read stay inside); other models' as they are."""
    names = getattr(model, "probability_names", None)
    if not callable(names) or not isinstance(outputs, dict):
        return outputs
    return {name: outputs[name] for name in names()}


def serving_function(model):
    """The function behind ``serving_default``: raw features -> probabilities by name."""

    def serve(features):
        return _flatten_outputs(probability_outputs(model, model(features, training=False)))

    return serve


def _user_function(user_model):
    def user_representation(features):
        return {"representation": tf.cast(user_model(features, training=False), tf.float32)}

    return user_representation


def _scorer_function(item_scorer):
    """Scores N candidates against one representation ``(1, d)`` (broadcast) or ``(N, d)``."""

    def score_items(features):
        features = dict(features)
        candidates = next(tf.shape(v)[0] for k, v in features.items() if k != "representation")
        rep = features["representation"]
        features["representation"] = tf.broadcast_to(rep, [candidates, tf.shape(rep)[1]])
        return _flatten_outputs(item_scorer(features, training=False))

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
        "score_items": (scorer, _scorer_function(scorer)),
    }


def export_model(model, export_root, keep: int = 3, metadata: dict | None = None) -> Path:
    """Write a new SavedModel version of ``model`` under ``export_root``.

    Args:
        model: a functional mtlrec model (dict inputs, dict outputs).
        export_root: ``run_dir/export``.
        keep: how many versions to keep (older ones are deleted after the new
            one is in place).
        metadata: JSON-serialisable facts stored in ``assets.extra/mtlrec.json``.

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
    tmp = atomic.temp_dir(root, str(version))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        signature = input_signature(model)
        archive.add_endpoint(
            "serving_default", serving_function(model), input_signature=[signature]
        )
        signatures = {"serving_default": sorted(signature)}
        for name, (sub, function) in _dupn_endpoints(model).items():
            archive.track(sub)
            sub_signature = input_signature(sub)
            archive.add_endpoint(name, function, input_signature=[sub_signature])
            signatures[name] = sorted(sub_signature)
        archive.write_out(str(tmp), verbose=False)
        meta = dict(metadata or {})
        meta["version"] = version
        meta["signatures"] = signatures
        meta["inputs"] = {
            name: {"dtype": spec.dtype.name, "shape": list(spec.shape)}
            for name, spec in signature.items()
        }
        meta_path = tmp.joinpath(*META_PATH)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        fault_point("export.write")
        final = atomic.publish(tmp, root / str(version))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in versions(root)[:-keep]:
        shutil.rmtree(root / str(old), ignore_errors=True)
    return final


def read_metadata(export_dir) -> dict:
    """``assets.extra/mtlrec.json`` of an export (empty when absent)."""
    path = Path(export_dir).joinpath(*META_PATH)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
