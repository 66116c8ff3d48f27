"""``ExperimentConfig``: the one typed tree a config file loads into."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json

from pydantic import BaseModel

from mtlrec.schema import Schema
from mtlrec.conventions.specs import ModelSpec, WeightingSpec
from mtlrec.training.config.sections import (
    DataConfig,
    EvaluationConfig,
    ExportConfig,
    FollowConfig,
    OptimizerConfig,
    TrainingConfig,
)


@dataclasses.dataclass
class ExperimentConfig:
    """A validated experiment config (see ``mtlrec.training.config`` for the keys).

    Parsed and checked once by ``load_config`` / ``config_from_dict``; nothing in it is
    built (no model, optimizer, weighting or TensorFlow object), so it can be read before
    a ``tf.distribute`` strategy exists.

    Attributes:
        name, run_dir: strings (``run_dir`` absolute once loaded).
        data, training, evaluation, export, follow: the sections (pydantic models).
        schema: an ``mtlrec.schema.Schema``.
        tasks: a list of ``mtlrec.tasks.Task``.
        model: a ``ModelSpec`` (``.type``, ``.args``; reads as the ``model`` mapping).
        optimizer: ``.dense`` and ``.embedding``, each an ``OptimizerSpec``
            (``.name``, ``.args``; reads as its mapping).
        loss_weighting: a ``WeightingSpec`` (``.type``, ``.args``).
        source, lines: the config file and key path -> line, for messages.
        raw: the ``schema`` and ``tasks`` sections as written (``to_dict``).
    """

    name: str
    data: DataConfig
    schema: Schema
    tasks: list
    model: ModelSpec
    run_dir: str | None
    optimizer: OptimizerConfig
    loss_weighting: WeightingSpec
    training: TrainingConfig
    evaluation: EvaluationConfig
    export: ExportConfig
    follow: FollowConfig = dataclasses.field(default_factory=FollowConfig)
    source: str | None = None
    lines: dict | None = dataclasses.field(default=None, repr=False, compare=False)
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The config as plain data, sections as written (what ``config_from_dict`` reads back)."""
        return {
            "name": self.name,
            "data": _plain(self.data),
            "schema": copy.deepcopy(self.raw["schema"]),
            "tasks": copy.deepcopy(self.raw["tasks"]),
            "model": self.model.to_dict(),
            "run_dir": self.run_dir,
            "optimizer": {part: getattr(self.optimizer, part).to_dict() for part in ("dense", "embedding")},
            "loss_weighting": self.loss_weighting.to_dict(),
            "training": _plain(self.training),
            "evaluation": _plain(self.evaluation),
            "export": _plain(self.export),
            "follow": _plain(self.follow),
        }

    def training_digest(self) -> str:
        """A digest of what decides the trained weights (schema, tasks, model, optimizer,
        loss weighting, training, data format, funnel and sample weights); paths, days,
        evaluation and export settings and TensorFlow's thread pools are left out."""
        data = self.to_dict()
        kept = {k: data[k] for k in ("schema", "tasks", "model", "optimizer", "loss_weighting", "training")}
        kept["data"] = {k: data["data"][k] for k in ("format", "funnel", "non_finite_numeric")}
        if data["data"].get("sample_weight") is not None:  # absent: the digests of older runs
            kept["data"]["sample_weight"] = data["data"]["sample_weight"]
        # the step options count only when set: at their defaults, the digests of older runs
        for key, default in (("jit_compile", False), ("mixed_precision", None)):
            if kept["training"].get(key, default) == default:
                kept["training"].pop(key, None)
        for key in ("intra_op_threads", "inter_op_threads"):  # the machine's, not the model's
            kept["training"].pop(key, None)
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(section: BaseModel) -> dict:
    return copy.deepcopy(section.model_dump())
